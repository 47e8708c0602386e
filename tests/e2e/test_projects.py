"""A new user in a real browser: creates a project on the first-run page, creates its keys, sends
events with curl exactly as docs/api.md shows, and sees them on the Overview."""

import json
import os
import re
import subprocess

import pytest
from django.conf import settings
from playwright.sync_api import Page, expect

from personalization import services
from tests import factories

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def _guide_events_curl() -> str:
    """The API guide's events example, as a shell command (the block under "## events")."""
    guide = (settings.BASE_DIR / "docs" / "api.md").read_text()
    section = guide.split("\n## events\n", 1)[1]
    block = re.search(r"```sh\n(curl .*?)\n```", section, re.S)
    assert block, "the events section of docs/api.md has no curl example"
    return block.group(1)


def _create_key(page: Page, name: str, kind: str) -> str:
    page.get_by_placeholder("name, e.g. website").fill(name)
    page.locator("select[name=kind]").select_option(kind)
    page.get_by_role("button", name="Create key").click()
    raw = page.locator("#new-key")
    expect(raw).to_have_text(re.compile(rf"^k{kind[0]}_[A-Za-z0-9_-]{{20,}}$"))
    return raw.inner_text()


def test_projects__first_run__create_keys_send_with_curl__events_on_overview(
    page: Page, browser_log, log_in, screenshot, live_server
):
    user = factories.user_make()
    log_in(user.username)
    expect(page.get_by_role("heading", name="Create your first project")).to_be_visible()
    screenshot("first-run")
    page.get_by_label("Project name").fill("Acme shop")
    page.get_by_role("button", name="Create project").click()

    expect(page.get_by_text("you are its admin")).to_be_visible()
    expect(page.locator(".who")).to_contain_text("admin")
    public_key = _create_key(page, "website", "public")
    secret_key = _create_key(page, "backend", "secret")
    assert secret_key.startswith("ks_")

    command = _guide_events_curl().replace("http://127.0.0.1:8001", live_server.url)
    done = subprocess.run(
        ["bash", "-c", command],
        env={**os.environ, "KAIROS_PUBLIC_KEY": public_key},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    answer = json.loads(done.stdout)
    assert answer["accepted"] == 2 and answer["rejected"] == [] and answer["warnings"] == [], answer
    while services.events_drain(claim_idle_ms=0):
        pass

    page.get_by_role("navigation").get_by_role("link", name="Overview").click()
    expect(page.get_by_role("heading", name="Acme shop")).to_be_visible()
    expect(page.locator("#live")).to_contain_text("2 in the last hour")
    profiles = page.locator(".card", has_text="Profiles").locator(".value")
    expect(profiles).to_have_text("1")  # the anonymous visitor and the user they became: one person
    expect(page.get_by_role("heading", name="No events in the last hour")).to_have_count(0)
    screenshot("overview-after-curl")

    # Rename, then delete it from Settings: back to the first-run page.
    page.get_by_role("navigation").get_by_role("link", name="Settings").click()
    page.locator("#project-settings input[name=name]").fill("Acme shop EU")
    page.get_by_role("button", name="Rename").click()
    expect(page.locator("select[name=project_id]")).to_contain_text("Acme shop EU")
    screenshot("project-settings")
    page.locator("#project-settings input[name=confirm]").fill("Acme shop EU")
    page.get_by_role("button", name="Delete project").click()
    expect(page.get_by_role("heading", name="Create your first project")).to_be_visible()

    assert browser_log.external_requests == []
    assert browser_log.console_errors == []
