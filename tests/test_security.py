"""Browser hardening: CSP without inline scripts, HTTPS settings from the environment, no-store on
pages about people and keys, same-site redirects only, CSV cells a spreadsheet will not run, login
throttling."""

import csv
import io
import json
import os
import re
import subprocess
import sys

import pytest
import yaml
from django.conf import settings

from experiments.models import LiftReport
from tests import factories
from tests.experiments.test_lift_report import _population, hero_report_done

TEMPLATES = settings.BASE_DIR / "templates"
STATIC_PAGES = [settings.BASE_DIR / "static" / "demo" / "shop.html"]


@pytest.fixture
def admin(client, project):
    user = factories.member_make(project=project, role="admin")
    client.force_login(user)
    return user


def _policy(response) -> dict[str, str]:
    header = response["Content-Security-Policy"]
    return {part.split()[0]: part for part in (p.strip() for p in header.split(";")) if part}


@pytest.mark.django_db
@pytest.mark.parametrize("url", ["/", "/experiences/", "/lift/", "/settings/", "/accounts/login/", "/demo/shop/"])
def test_csp__every_page__scripts_only_from_this_site(client, admin, url):
    policy = _policy(client.get(url))
    assert policy["script-src"] == "script-src 'self'"
    assert "unsafe-inline" not in policy["script-src"] and "unsafe-eval" not in policy["script-src"]
    assert policy["object-src"] == "object-src 'none'" and policy["frame-ancestors"] == "frame-ancestors 'none'"


def test_templates__no_inline_script_or_event_handler():
    """Under the CSP an inline script or onclick= would silently not run: none may exist."""
    offenders = []
    for path in [*TEMPLATES.rglob("*.html"), *STATIC_PAGES]:
        text = path.read_text()
        for match in re.finditer(r"<script\b([^>]*)>", text):
            attributes = match.group(1)
            if "src=" not in attributes and 'type="application/json"' not in attributes:
                offenders.append(f"{path.name}: inline <script{attributes}>")
        handlers = re.finditer(r"(?<![\w-])on[a-z]+\s*=|hx-on[:-]", text)
        offenders += [f"{path.name}: {m.group(0)}" for m in handlers]
    assert offenders == []


def _settings_with(env: dict) -> dict:
    # Settings as Django reads them, without django.setup(): importing every app (numpy, sklearn, ...)
    # took ten seconds per process on a busy machine and has no say in what the settings are.
    code = (
        "import json; from django.conf import settings as s; "
        "print(json.dumps([s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.SECURE_HSTS_SECONDS]))"
    )
    environ = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings", **env}
    out = subprocess.run(
        [sys.executable, "-c", code], env=environ, capture_output=True, text=True, check=True, cwd=settings.BASE_DIR
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_https_setting__secure_cookies_and_hsts_from_the_environment():
    assert _settings_with({"DJANGO_HTTPS": "true"}) == [True, True, 31_536_000]
    assert _settings_with({"DJANGO_HTTPS": "false"}) == [False, False, 0]


def test_compose__https_on_by_default():
    compose = yaml.safe_load((settings.BASE_DIR / "docker-compose.yml").read_text())
    assert compose["x-kairos"]["environment"]["DJANGO_HTTPS"] == "${DJANGO_HTTPS:-true}"


@pytest.mark.django_db
def test_https_request__hsts_header(client, admin, settings):
    settings.SECURE_HSTS_SECONDS = 3600
    response = client.get("/", secure=True)
    assert response["Strict-Transport-Security"].startswith("max-age=3600")


@pytest.mark.django_db
def test_new_key_page__not_stored_by_browsers_or_proxies(client, admin):
    client.post("/settings/keys", {"kind": "secret", "name": "ci"})
    response = client.get("/settings/")
    assert "ks_" in response.content.decode()  # the raw key is on this page, once
    assert "no-store" in response["Cache-Control"]


@pytest.mark.django_db
@pytest.mark.parametrize("url", ["/", "/experiences/", "/lift/", "/api/v1/profiles/"])
def test_pages_with_personal_data__no_store(client, admin, url):
    assert "no-store" in client.get(url)["Cache-Control"]


@pytest.mark.django_db
@pytest.mark.parametrize("target", ["https://other.site/", "//other.site/x", "/\\other.site", "javascript:alert(1)"])
def test_next__other_site__redirects_home_instead(client, admin, project, target):
    response = client.post("/project/switch", {"project_id": str(project.pk), "next": target})
    assert response.status_code == 302 and response["Location"] == "/"
    assert client.post("/project/switch", {"next": "/lift/?days=7"})["Location"] == "/lift/?days=7"


@pytest.mark.django_db
def test_login__next_on_other_site__ignored(client, project):
    factories.user_make(username="ann", password="secret-pass-123")
    response = client.post(
        "/accounts/login/", {"username": "ann", "password": "secret-pass-123", "next": "https://other.site/"}
    )
    assert response.status_code == 302 and not response["Location"].startswith(("http", "//"))


@pytest.mark.django_db
def test_lift_csv__formula_like_segment_names__neutralised(client, admin, project):
    _population(project, n=600)
    report = hero_report_done(project)
    hostile = ['=HYPERLINK("https://x.example","x")', "+1+2", "-2+3", "@SUM(A1)", "\tx", "\rx"]
    segments = report.result["report"]["segments"]
    for segment, name in zip(segments, hostile, strict=False):
        segment["name"] = name
    LiftReport.objects.filter(pk=report.pk).update(result=report.result)

    rows = list(csv.reader(io.StringIO(client.get(f"/lift/reports/{report.pk}.csv").content.decode())))

    names = [row[0] for row in rows[1 : 1 + len(segments)]]
    assert names == ["'" + name for name in hostile[: len(segments)]]
    assert all(not cell.startswith(("=", "+", "@", "\t", "\r")) for row in rows for cell in row)
    assert any(cell.startswith("-0.") or cell.startswith("0.") for cell in rows[1][1:])  # numbers stay numbers


@pytest.mark.django_db
def test_login__too_many_wrong_passwords__locked_with_a_clear_message(client, project):
    factories.user_make(username="bob", password="secret-pass-123")
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        response = client.post("/accounts/login/", {"username": "bob", "password": "wrong"})
        assert response.status_code == 200 and "Wrong username or password" in response.content.decode()
    locked = client.post("/accounts/login/", {"username": "bob", "password": "wrong"})
    assert locked.status_code == 429 and "Too many wrong passwords" in locked.content.decode()
    # even the right password is refused while locked
    right = client.post("/accounts/login/", {"username": "bob", "password": "secret-pass-123"})
    assert right.status_code == 429 and "_auth_user_id" not in client.session
