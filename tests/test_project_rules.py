"""Rules of the whole project, checked on the files themselves."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = [
    p
    for p in ROOT.rglob("*")
    if p.is_file()
    and ".venv" not in p.parts
    and "var" not in p.parts
    and ".git" not in p.parts
    and p.suffix in {".py", ".html", ".js", ".toml", ".lock", ".yml", ".cfg"}
]
THIS = Path(__file__).resolve()


def test_no_sqlite_and_no_fake_redis_anywhere():
    offenders = [
        str(p.relative_to(ROOT))
        for p in SOURCES
        if p != THIS and re.search(r"sqlite3|fakeredis", p.read_text(errors="ignore"), re.IGNORECASE)
    ]
    assert offenders == []


def test_pages_load_no_asset_from_another_host():
    pattern = re.compile(r"""<(script|link|img)[^>]+(src|href)=["'](https?:)?//""", re.IGNORECASE)
    pages = [p for p in SOURCES if p.suffix == ".html"]
    assert pages, "templates must be found"
    offenders = [str(p.relative_to(ROOT)) for p in pages if pattern.search(p.read_text())]
    assert offenders == []


@pytest.mark.django_db
def test_api_docs__served_with_local_assets(client):
    schema = client.get("/api/schema/")
    assert schema.status_code == 200
    assert b"/api/v1/profiles/" in schema.content and b"/api/v1/lift/" in schema.content
    docs = client.get("/api/docs/")
    assert docs.status_code == 200
    html = docs.content.decode()
    assert "swagger-ui" in html
    assert not re.search(r"""(src|href)=["']https?://""", html), "the docs page must not load from a CDN"
    asset = re.search(r"""src=["'](/static/[^"']+swagger-ui-bundle\.js)["']""", html)
    assert asset, html[:500]
    assert client.get(asset.group(1)).status_code == 200
