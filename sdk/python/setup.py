"""Build step: copy decide's engine and the pure modules it imports (kairos_sdk/_engine_files.py)
from the repository into the wheel, unchanged, under kairos_sdk/_vendor/. One implementation: the
SDK runs the very files decide runs; nothing is kept in two places in the repository."""

import ast
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
REPOSITORY = HERE.parents[1]


def _engine_files() -> tuple[str, ...]:
    """The list in kairos_sdk/_engine_files.py, read without importing the package."""
    tree = ast.parse((HERE / "kairos_sdk" / "_engine_files.py").read_text())
    (value,) = (
        node.value for node in tree.body if isinstance(node, ast.Assign) and node.targets[0].id == "ENGINE_FILES"
    )
    return ast.literal_eval(value)


class build_py_with_engine(build_py):
    def run(self):
        super().run()
        vendor = Path(self.build_lib) / "kairos_sdk" / "_vendor"
        for name in _engine_files():
            source = REPOSITORY / name
            if not source.is_file():
                raise SystemExit(f"kairos-sdk is built from the Kairos repository: {source} is missing")
            target = vendor / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)


setup(cmdclass={"build_py": build_py_with_engine})
