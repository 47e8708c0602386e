"""Pages under the Content-Security-Policy in a real browser: everything they do still works, and the
browser reports no blocked script."""

import re

import pytest
from playwright.sync_api import Page, expect

from tests import factories

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_api_docs__swagger_ui_renders_every_endpoint_under_the_csp(page: Page, browser_log, screenshot):
    response = page.goto("/api/docs/")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    expect(page.get_by_text("/api/v1/decide", exact=True)).to_be_visible()
    expect(page.get_by_text("/api/v1/events", exact=True)).to_be_visible()
    expect(page.get_by_text("/api/v1/profiles/", exact=True)).to_be_visible()
    screenshot("api_docs")
    assert browser_log.console_errors == []


def test_project_switcher__choosing_a_project_opens_it(page: Page, browser_log, log_in):
    user = factories.user_make()
    factories.project_make(name="Alpha shop", owner=user)
    factories.project_make(name="Beta shop", owner=user)
    log_in(user.username)
    expect(page.get_by_role("heading", level=1)).to_have_text("Alpha shop")

    page.get_by_label("Project").select_option(label="Beta shop")  # submits by itself (data-autosubmit)

    expect(page.get_by_role("heading", level=1)).to_have_text("Beta shop")
    expect(page).to_have_url(re.compile(r"/$"))
    assert browser_log.console_errors == []


def test_login__locked_out_after_wrong_passwords__says_why_and_for_how_long(page: Page, browser_log, screenshot):
    from django.conf import settings

    user = factories.user_make()
    page.goto("/accounts/login/")
    for _ in range(settings.AXES_FAILURE_LIMIT):
        page.get_by_label("Username").fill(user.username)
        page.get_by_label("Password").fill("not-the-password")
        page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Too many wrong passwords")).to_be_visible()
    expect(page.get_by_role("alert")).to_contain_text("locked for 0:15:00")
    screenshot("login_locked_out")


def test_forbidden_page__names_the_role_and_what_to_do(page: Page, log_in, screenshot):
    project = factories.project_make(name="Shop A")
    log_in(factories.member_make(project=project, role="compliance").username)
    response = page.goto("/lift/")
    assert response.status == 403
    expect(page.get_by_role("heading", name="Not allowed")).to_be_visible()
    expect(page.locator("main")).to_contain_text(
        "Your role (compliance) cannot open lift; ask an admin of this project."
    )
    screenshot("forbidden")
