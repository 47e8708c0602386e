"""The Overview in a real browser: login, live counters, the plotly chart, and the nav per role."""

import re
import time

import pytest
from playwright.sync_api import Page, expect

from personalization import redis_client, rkeys, services
from personalization.models import Role
from tests import factories

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def metrics_put(*, project_id: int, name: str, per_minute: dict[int, int]) -> None:
    """Per-minute counters as the ingest path writes them; keys are minutes back from now."""
    now_minute = int(time.time() // 60)
    client = redis_client.worker()
    for minutes_ago, value in per_minute.items():
        client.set(rkeys.metric(project_id, name, now_minute - minutes_ago), value, ex=3600)


def test_overview__logged_in_with_traffic__shows_counters_and_chart(
    page: Page, browser_log, log_in, screenshot, polls_every_second
):
    user = factories.user_make()
    project = factories.project_make(name="Shop A", owner=user)
    # The page shows the last complete minute; the same value now and a minute ago keeps the number
    # right even if the clock crosses a minute between seeding and rendering.
    metrics_put(project_id=project.pk, name="events", per_minute={0: 1234, 1: 1234, 2: 800, 5: 600, 12: 300})
    metrics_put(project_id=project.pk, name="decisions", per_minute={0: 56, 1: 56, 3: 20})

    log_in(user.username)

    expect(page).to_have_url(re.compile(r"/$"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Shop A")
    expect(page.locator("#events-per-min")).to_have_text("1,234")
    expect(page.locator("#decisions-per-min")).to_have_text("56")
    expect(page.locator("#live")).to_contain_text("4,168 in the last hour")
    expect(page.locator("#live")).to_contain_text("132 in the last hour")
    expect(page.locator("#events-chart .main-svg").first).to_be_visible()
    expect(page.locator("#events-chart .legend")).to_contain_text("events")
    screenshot("overview")

    # htmx polls the counters (every 5 s, every second in tests): new traffic shows without a reload.
    metrics_put(project_id=project.pk, name="events", per_minute={0: 2000, 1: 2000})
    expect(page.locator("#events-per-min")).to_have_text("2,000")

    assert browser_log.static_responses.get("/static/vendor/htmx.min.js") in (200, 304)
    assert browser_log.static_responses.get("/static/vendor/plotly.min.js") in (200, 304)
    assert browser_log.external_requests == []
    assert browser_log.console_errors == []


def test_overview__no_traffic__shows_how_to_send_events(page: Page, browser_log, log_in, screenshot):
    user = factories.user_make()
    factories.project_make(name="Quiet shop", owner=user)

    log_in(user.username)

    expect(page.locator("#events-per-min")).to_have_text("0")
    expect(page.get_by_role("heading", name="No events in the last hour")).to_be_visible()
    expect(page.locator("#events-chart")).to_have_count(0)
    screenshot("overview_empty")
    assert browser_log.external_requests == []
    assert browser_log.console_errors == []


def test_login__wrong_password__shows_error_and_stays(page: Page, browser_log, log_in, screenshot):
    user = factories.user_make()
    factories.project_make(owner=user)

    log_in(user.username, password="not-the-password", succeed=False)

    expect(page.get_by_role("alert")).to_have_text("Wrong username or password; try again.")
    expect(page.get_by_label("Username")).to_have_value(user.username)
    expect(page.get_by_label("Password")).to_have_value("")
    expect(page).to_have_url(re.compile(r"/accounts/login/"))
    expect(page.locator("nav.nav")).to_have_count(0)
    screenshot("login_error")
    assert browser_log.external_requests == []
    assert browser_log.console_errors == []


def test_nav__compliance_role__sees_privacy_not_experiences_or_settings(page: Page, browser_log, log_in):
    admin = factories.user_make()
    project = factories.project_make(owner=admin)
    officer = factories.user_make()
    services.membership_set(project=project, user=officer, role=Role.COMPLIANCE)

    log_in(officer.username)

    nav = page.locator("nav.nav")
    expect(nav.get_by_role("link", name="Privacy")).to_be_visible()
    expect(nav.get_by_role("link", name="Overview")).to_be_visible()
    expect(nav.get_by_role("link", name="Experiences")).to_have_count(0)
    expect(nav.get_by_role("link", name="Settings")).to_have_count(0)
    expect(page.locator(".who")).to_contain_text("compliance")

    # Hiding the link is not the protection: the page itself refuses the role.
    response = page.goto("/settings/")
    assert response is not None and response.status == 403

    assert browser_log.external_requests == []


def test_topbar__phone_width__wraps_instead_of_overflowing(page: Page, log_in, screenshot):
    user = factories.user_make()
    factories.project_make(name="Shop with a long name", owner=user)
    page.set_viewport_size({"width": 390, "height": 800})

    log_in(user.username)
    page.goto("/privacy/")

    expect(page.locator(".topbar")).to_be_visible()
    screenshot("privacy_phone")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
