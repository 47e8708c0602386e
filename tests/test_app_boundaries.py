"""The house rule on app boundaries, kept by a test that reads the code with `ast`.

Layers, lowest first: pure modules → personalization → segments → experiments → privacy → demo
(config/ is the composition root and stands outside). Outside migrations and tests, in every app
package, the checker fails on:

  (a) another app's models imported (`from X.models ...`, `import X.models`, `from X import models`);
  (b) another app's table named in any string (SQL, f-string parts, docstrings);
  (c) `apps.get_model("<other app>.Model")` or `get_model("<other app>", "Model")`;
  (d) an import, at module level or inside a function, of a higher layer (pure modules, listed in
      tests/test_pure_modules.py, are the lowest layer: anyone may import them, and they import no
      app module that is not pure);
  (e) a function-level import without a comment, on its line or the line above, saying why;
  (f) another app reached other than through its public surface: `services`, `selectors`, `signals`,
      `hooks`, its pure modules, and for personalization also the registry of personal data
      (`people.personal_data`) and the dashboard helpers (`workspace.web`).

Imports are read from the syntax tree, so multi-line imports, imports inside functions and
`importlib.import_module("...")` / `__import__("...")` with a literal name are all seen. Each rule is
proven by a planted violation below (source text fed to the checker), and the real tree must pass.
"""

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.apps import apps

from tests.test_pure_modules import PURE

ROOT = Path(__file__).resolve().parent.parent
LAYER = {"personalization": 1, "segments": 2, "experiments": 3, "privacy": 4, "demo": 5}
APPS = tuple(LAYER)
SURFACE = ("services", "selectors", "signals", "hooks")
EXTRA_SURFACE = {"personalization": ("personalization.people.personal_data", "personalization.workspace.web")}

# Known violations waiting for a fix (none): each entry must still be found (a test fails on a stale
# one), so whoever fixes one takes it off this list.
PENDING: set[tuple[str, str, str]] = set()


@dataclass(frozen=True)
class Violation:
    path: str
    rule: str
    what: str
    line: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: ({self.rule}) {self.what}"


def _is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _module_of(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(node: ast.AST, module: str) -> list[str]:
    """The modules an import statement (or a call of import_module/__import__ with a literal) loads."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        package = module.rsplit(".", node.level)[0] + "." if node.level else ""
        base = package + (node.module or "")
        base = base.rstrip(".")
        # `from X import name`: X.name when that is a module (from personalization import services).
        return [
            f"{base}.{a.name}" if _is_module(f"{base}.{a.name}") or a.name == "models" else base for a in node.names
        ]
    if isinstance(node, ast.Call):
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if name in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant):
            return [str(node.args[0].value)]
    return []


def _get_model_app(node: ast.AST) -> str | None:
    """The app label of `get_model("app.Model")` / `get_model("app", "Model")`, or None."""
    if not isinstance(node, ast.Call) or not node.args or not isinstance(node.args[0], ast.Constant):
        return None
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    if name != "get_model" or not isinstance(node.args[0].value, str):
        return None
    return node.args[0].value.split(".")[0]


def _strings(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.lineno, node.value


def _public(target: str, owner: str) -> bool:
    if target in PURE or target == owner:
        return True
    allowed = [f"{owner}.{name}" for name in SURFACE] + list(EXTRA_SURFACE.get(owner, ()))
    return any(target == a or target.startswith(a + ".") for a in allowed)


def check_source(path: str, text: str, tables: dict[str, set[str]]) -> list[Violation]:
    """Every violation of rules (a) to (f) in one file of an app package (`path` relative to the root)."""
    app = path.split("/")[0]
    module = _module_of(ROOT / path)
    tree = ast.parse(text)
    lines = text.splitlines()
    found: list[Violation] = []

    def add(rule: str, what: str, node) -> None:
        found.append(Violation(path, rule, what, node if isinstance(node, int) else node.lineno))

    in_function: set[int] = set()
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            in_function |= {id(n) for n in ast.walk(fn) if n is not fn}
    # `if TYPE_CHECKING:` imports never run: a pure module may name an impure one's types there.
    type_only = {
        id(n)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and getattr(block.test, "id", getattr(block.test, "attr", "")) == "TYPE_CHECKING"
        for n in ast.walk(block)
    }
    import_lines = {
        line
        for n in ast.walk(tree)
        if isinstance(n, ast.Import | ast.ImportFrom)
        for line in range(n.lineno, n.end_lineno + 1)
    }

    def explained(node) -> bool:
        """A comment on the import's line, or above it (above the block of imports it opens with)."""
        if any("#" in lines[i - 1] for i in range(node.lineno, node.end_lineno + 1)):
            return True
        above = node.lineno - 1
        while above in import_lines:  # one comment may explain a block of imports
            above -= 1
        return above > 0 and lines[above - 1].strip().startswith("#")

    for node in ast.walk(tree):
        targets = list(dict.fromkeys(_imported(node, module)))
        if targets and id(node) in in_function and not explained(node):
            add("e", f"function-level import of {', '.join(targets)} without a comment saying why", node)
        for target in targets:
            owner = target.split(".")[0]
            if owner not in LAYER:
                continue
            if module in PURE and target not in PURE and id(node) not in type_only:
                add("d", f"pure module {module} imports {target}, which is not pure", node)
            if owner == app:
                continue
            if target == f"{owner}.models" or target.startswith(f"{owner}.models."):
                add("a", f"imports {owner}'s models ({target})", node)
            if LAYER[owner] > LAYER[app] and target not in PURE:
                add("d", f"imports {target}: {owner} is a higher layer than {app}", node)
            if not _public(target, owner):
                add("f", f"imports {target}, not part of {owner}'s public surface", node)
        label = _get_model_app(node)
        if label is not None and label in LAYER and label != app:
            add("c", f"get_model of {label}'s model", node)

    others = sorted((t for a, ts in tables.items() if a != app for t in ts), key=len, reverse=True)
    for line, value in _strings(tree):
        for table in others:
            if _names(value, table):
                add("b", f"names {table}", line)
    return found


def _names(text: str, table: str) -> bool:
    """`table` appears as a whole word (personalization_event, not personalization_eventx)."""
    start = text.find(table)
    while start != -1:
        end = start + len(table)
        before = text[start - 1] if start else " "
        after = text[end] if end < len(text) else " "
        if not (before.isalnum() or before == "_") and not (after.isalnum() or after == "_"):
            return True
        start = text.find(table, end)
    return False


def _tables() -> dict[str, set[str]]:
    return {app: {m._meta.db_table for m in apps.get_app_config(app).get_models()} for app in APPS}


def _tree_violations() -> list[Violation]:
    tables = _tables()
    return [
        violation
        for app in APPS
        for path in sorted((ROOT / app).rglob("*.py"))
        if "migrations" not in path.parts
        for violation in check_source(str(path.relative_to(ROOT)), path.read_text(), tables)
    ]


def _pending(violation: Violation) -> bool:
    return any((violation.path, violation.rule) == (p, r) and what in violation.what for p, r, what in PENDING)


def test_real_tree__every_app_package__keeps_the_boundaries():
    problems = [str(v) for v in _tree_violations() if not _pending(v)]
    assert problems == []


def test_pending_exceptions__are_still_violations():
    """An exception that no longer matches anything was fixed: take it off PENDING."""
    found = _tree_violations()
    stale = [p for p in PENDING if not any((v.path, v.rule) == p[:2] and p[2] in v.what for v in found)]
    assert stale == []


def test_checker__reads_the_real_tree():
    """The checker sees the files it is meant to: every app, their function-level imports, the pure list."""
    files = {str(p.relative_to(ROOT)).split("/")[0] for app in APPS for p in (ROOT / app).rglob("*.py")}
    assert files == set(APPS)
    assert (
        "segments_segmentmembership" in _tables()["segments"]
        and "personalization_profile" in _tables()["personalization"]
    )


# --- planted violations: one per rule, fed to the checker as source text ------------------------------

TABLES = {"personalization": {"personalization_profile", "personalization_event"}, "segments": {"segments_segment"}}


def _rules(path: str, text: str) -> list[tuple[str, str]]:
    return [(v.rule, v.what) for v in check_source(path, text, TABLES)]


@pytest.mark.parametrize(
    "text",
    [
        "from personalization.models import Profile\n",
        "import personalization.models\n",
        "from personalization import models\n",
        "from personalization.models.people import (\n    Profile,\n    Event,\n)\n",
    ],
)
def test_rule_a__another_apps_models_imported__fails(text):
    found = _rules("segments/x.py", text)
    assert [r for r, _ in found].count("a") == 1, found
    assert any(what.startswith("imports personalization's models") for _, what in found)
    assert "a" not in [r for r, _ in _rules("personalization/x.py", text)]  # its own models are fine


@pytest.mark.parametrize(
    "text",
    [
        "SQL = 'SELECT id FROM personalization_profile'\n",
        "def f(pk):\n    return f'DELETE FROM personalization_event WHERE id = {pk}'\n",
        '"""Reads personalization_profile directly."""\n',
    ],
)
def test_rule_b__another_apps_table_named__fails(text):
    assert [r for r, _ in _rules("segments/x.py", text)] == ["b"]
    assert _rules("personalization/x.py", text) == []  # its own tables are fine
    assert _rules("segments/x.py", "X = 'personalization_profiles_seen'\n") == []  # a longer word is no table


@pytest.mark.parametrize(
    "text",
    [
        "from django.apps import apps\nM = apps.get_model('personalization.Profile')\n",
        "from django.apps import apps\nM = apps.get_model('personalization', 'Profile')\n",
        "def f(apps):\n    # why: a data migration helper\n    return apps.get_model('segments.Segment')\n",
    ],
)
def test_rule_c__get_model_of_another_app__fails(text):
    assert "c" in [r for r, _ in _rules("privacy/x.py", text)]
    label = "segments" if "segments" in text else "personalization"
    assert "c" not in [r for r, _ in _rules(f"{label}/x.py", text)]  # its own models are fine


@pytest.mark.parametrize(
    "text",
    [
        "from privacy.selectors import suppressed_among\n",
        "def drain():\n    # why: planted\n    from privacy.selectors import suppressed_among\n",
        "from segments import (\n    selectors,\n)\n",
        "import importlib\nS = importlib.import_module('experiments.selectors')\n",
        "def f():\n    # why: planted\n    return __import__('demo.seed')\n",
    ],
)
def test_rule_d__import_against_the_layers__fails(text):
    assert "d" in [r for r, _ in _rules("personalization/x.py", text)]
    assert "d" not in [r for r, _ in _rules("demo/x.py", text.replace("demo.seed", "privacy.services"))]


def test_rule_d__pure_modules__are_the_lowest_layer():
    # Anyone may import a pure module, even of a higher app; a pure module imports nothing impure.
    assert _rules("personalization/x.py", "from segments import kmeans\n") == []
    assert ("d", "pure module personalization.segment_keys imports personalization.models, which is not pure") in (
        _rules("personalization/segment_keys.py", "from personalization.models import Profile\n")
    )
    # Types only (never imported at run time) are allowed.
    type_only = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from personalization.models import Profile\n"
    assert _rules("personalization/segment_keys.py", type_only) == []


def test_rule_e__function_level_import_without_a_reason__fails():
    bare = "def f():\n    from personalization import services\n    return services\n"
    assert [r for r, _ in _rules("segments/x.py", bare)] == ["e"]
    dynamic = "import importlib\ndef f():\n    return importlib.import_module('personalization.services')\n"
    assert [r for r, _ in _rules("segments/x.py", dynamic)] == ["e"]
    above = (
        "def f():\n    # a circular import: services imports this module\n    from personalization import services\n"
    )
    same_line = "def f():\n    from personalization import services  # circular: services imports us\n"
    assert _rules("segments/x.py", above) == [] and _rules("segments/x.py", same_line) == []
    assert _rules("segments/x.py", "from personalization import services\n") == []  # module level needs none


@pytest.mark.parametrize(
    "text",
    [
        "from personalization.people import selectors\n",
        "from personalization.people.subjects import subject_resolve\n",
        "from personalization.decide import runtime\n",
        "import personalization.workspace.audit\n",
        "from personalization import redis_client\n",
    ],
)
def test_rule_f__around_the_public_surface__fails(text):
    assert [r for r, _ in _rules("privacy/x.py", text)] == ["f"]
    assert _rules("personalization/x.py", text) == []  # inside the app anything goes


def test_rule_f__the_public_surface__passes():
    text = (
        "from personalization import hooks, selectors, services, signals\n"
        "from personalization.services import audit_record\n"
        "from personalization.people.personal_data import register\n"
        "from personalization.workspace.web import workspace_view\n"
        "from personalization.decide import hashing\n"
        "from personalization.segment_keys import run_prefix\n"
        "from segments import selectors as segments_selectors\n"
    )
    assert _rules("privacy/x.py", text) == []
