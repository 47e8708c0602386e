"""What every Kairos process pays at start: the heavy libraries only the code that needs them imports.

Each process of the suite and of a deployment (web, decide, workers, drains, manage.py) starts Django; scikit-learn,
scipy and DRF's field machinery (with requests and pygments) cost 0.2-1 s each there, and decide and most workers
never use them."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAZY = ("sklearn", "scipy", "requests", "pygments", "drf_spectacular.plumbing", "plotly")


def test_django_setup__heavy_libraries__not_imported():
    code = f"import sys, django; django.setup()\nprint(','.join(m for m in {LAZY!r} if m in sys.modules))\n"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_celery_worker_start__setup_checks_and_task_modules__no_heavy_library_and_no_view():
    """What a worker does before its first task (config.celery): Django set up by Celery's fixup, then every app's
    tasks module imported. No task module loads scipy at its top, and the system checks stay off: their URL check
    imports every view (scipy.stats, plotly), 1.2 of a worker's 2.9 CPU-s at start."""
    code = (
        "import sys\nfrom config.celery import app\napp.loader.import_default_modules()\n"
        f"print(','.join(m for m in {(*LAZY, 'config.urls')!r} if m in sys.modules))\n"
        "print(','.join(sorted(t for t in app.tasks if not t.startswith('celery.'))))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "CELERY_SKIP_CHECKS"}  # the default config.celery sets
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    loaded, tasks = out.stdout.splitlines()
    assert loaded == ""
    # The tasks modules were imported indeed: each app's tasks are registered.
    assert {"experiments.tasks.lift_report_task", "privacy.tasks.dsr_run_task"} <= set(tasks.split(","))
    assert {"segments.tasks.clustering_run_task", "personalization.tasks.events_drain_task"} <= set(tasks.split(","))


def test_long_running_commands__no_system_checks_at_start():
    """The drain and the privacy job start in the crash tests and in operations; the checks would import every view
    (half their start-up). `migrate` runs the checks once per deployment."""
    from django.core.management import load_command_class

    for app, name in (("personalization", "events_drain"), ("privacy", "privacy_run")):
        assert load_command_class(app, name).requires_system_checks == [], name
