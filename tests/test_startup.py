"""What every Kairos process pays at start: the heavy libraries only the code that needs them imports.

Each process of the suite and of a deployment (web, decide, workers, drains, manage.py) starts Django; scikit-learn,
scipy and DRF's field machinery (with requests and pygments) cost 0.2-1 s each there, and decide and most workers
never use them."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAZY = ("sklearn", "scipy", "requests", "pygments", "drf_spectacular.plumbing", "plotly")


def test_django_setup__heavy_libraries__not_imported():
    code = f"import sys, django; django.setup()\nprint(','.join(m for m in {LAZY!r} if m in sys.modules))\n"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
