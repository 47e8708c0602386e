"""Settings in a real browser: an API key is shown once, then only its prefix, and can be revoked."""

import re

import pytest
from playwright.sync_api import Page, expect

from tests import factories

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_settings__create_public_key__raw_key_shown_once_then_revoked(page: Page, browser_log, log_in, screenshot):
    user = factories.user_make()
    factories.project_make(owner=user)
    log_in(user.username)

    page.get_by_role("navigation").get_by_role("link", name="Settings").click()
    expect(page.get_by_role("heading", name="No keys yet")).to_be_visible()
    page.get_by_placeholder("name, e.g. website").fill("website")
    page.locator("select[name=kind]").select_option("public")
    page.get_by_role("button", name="Create key").click()

    raw = page.locator("#new-key")
    expect(raw).to_have_text(re.compile(r"^kp_[A-Za-z0-9_-]{20,}$"))
    raw_key = raw.inner_text()
    row = page.locator("#keys tbody tr", has_text="website")
    expect(row).to_contain_text("public")
    expect(row.locator("code")).to_have_text(raw_key[:10] + "…")
    screenshot("settings_new_key")

    page.reload()
    expect(page.locator("#new-key")).to_have_count(0)
    expect(page.get_by_text(raw_key)).to_have_count(0)
    expect(row).to_be_visible()

    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name="Revoke").click()
    expect(row.locator(".badge")).to_contain_text("revoked")
    expect(row.get_by_role("button", name="Revoke")).to_have_count(0)
    expect(page.locator(".messages")).to_contain_text("revoked")
    screenshot("settings_revoked")

    assert browser_log.external_requests == []
    assert browser_log.console_errors == []


def test_settings__dead_letters__admin_sees_count_retries_one_and_deletes_the_rest(
    page: Page, browser_log, log_in, screenshot
):
    from personalization import services
    from personalization.ingest.dead_letters import dead_letters_write

    user = factories.user_make()
    project = factories.project_make(owner=user)
    services.membership_set(project=project, user=user, role="admin")
    dead_letters_write(
        dead=[
            (project.pk, {"event_id": f"ev-{i}", "anonymous_id": f"visitor\x00{i}", "type": "page_view"}, err)
            for i, err in enumerate(
                ["DataError: PostgreSQL text fields cannot contain NUL (0x00) bytes"] * 3
                + ["NumericValueOutOfRange: numeric field overflow"]
            )
        ]
    )
    log_in(user.username)
    page.get_by_role("navigation").get_by_role("link", name="Settings").click()
    panel = page.locator("#dead-letters")
    expect(panel.locator("#dead-letter-count")).to_have_text("4")
    expect(panel).to_contain_text("numeric field overflow")
    screenshot("settings_dead_letters")

    panel.locator("tbody tr", has_text="ev-3").get_by_role("button", name="Retry").click()
    expect(panel).to_contain_text("1 sent back to the drain")
    expect(panel.locator("#dead-letter-count")).to_have_text("3")
    page.once("dialog", lambda dialog: dialog.accept())
    panel.get_by_role("button", name="Delete all").click()
    expect(panel.get_by_role("heading", name="No dead letters")).to_be_visible()
    screenshot("settings_dead_letters_empty")
    assert browser_log.external_requests == []
    assert browser_log.console_errors == []
