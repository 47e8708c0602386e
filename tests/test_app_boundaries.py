"""The house rule on app boundaries, kept by a test: outside migrations and tests, no app imports
another app's models or names another app's tables in SQL. Apps reach each other only through
their `services` (writes) and `selectors` (reads)."""

import re
from pathlib import Path

import pytest
from django.apps import apps

ROOT = Path(__file__).resolve().parent.parent
APPS = ("personalization", "segments", "experiments", "privacy")
# Apps allowed to break the rule for now (none: experiments moved behind personalization's selectors).
ALLOWED: set[str] = set()


def _sources(app: str) -> list[Path]:
    return [p for p in (ROOT / app).rglob("*.py") if "migrations" not in p.parts]


def _tables_of(app: str) -> set[str]:
    return {model._meta.db_table for model in apps.get_app_config(app).get_models()}


def _text_violations(app: str, text: str) -> list[str]:
    others = [a for a in APPS if a != app]
    imports = re.compile(rf"^\s*(from\s+({'|'.join(others)})\.models\b|import\s+({'|'.join(others)})\.models\b)", re.M)
    tables = sorted(set().union(*(_tables_of(a) for a in others)), key=len, reverse=True)
    named = re.compile(rf"\b({'|'.join(map(re.escape, tables))})\b")
    return [f"imports {m.group(0).strip()}" for m in imports.finditer(text)] + [
        f"names table {m.group(1)}" for m in named.finditer(text)
    ]


def _violations(app: str) -> list[str]:
    return [
        f"{path.relative_to(ROOT)}: {problem}"
        for path in _sources(app)
        for problem in _text_violations(app, path.read_text())
    ]


@pytest.mark.parametrize("app", [a for a in APPS if a not in ALLOWED])
def test_app__outside_migrations_and_tests__uses_no_other_apps_models_or_tables(app):
    assert _violations(app) == []


def test_boundary_check__sees_a_foreign_model_import_and_table_name():
    text = "from personalization.models import Profile\nSQL = 'SELECT id FROM personalization_profile'\n"
    assert _text_violations("segments", text) == [
        "imports from personalization.models",
        "names table personalization_profile",
    ]
    assert _text_violations("personalization", text) == []  # its own models and tables are fine
