"""Experiences in a real browser: create through the form, start, watch the live charts, pause from the list."""

import re
from datetime import timedelta

import numpy as np
import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect

from personalization import services
from personalization.experiences import thompson as bandit
from personalization.models import Arm, BanditWeights, Experience, Exposure, Profile, Role
from tests import factories

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def bandit_simulate(experience: Experience, rates: dict[str, float], *, steps: int = 36, per_step: int = 60) -> None:
    """A few hours of a bandit learning: exposures, conversions and a weights update per step, as the
    drain and the bandit task would have stored them (written directly: there is no worker here)."""
    rng = np.random.default_rng(7)
    keys = list(rates)
    start = timezone.now() - timedelta(minutes=10 * steps)
    weights = [1 / len(keys)] * len(keys)
    totals = {key: [0, 0] for key in keys}
    exposures, history = [], []
    for step in range(steps):
        at = start + timedelta(minutes=10 * step)
        for index in rng.choice(len(keys), size=per_step, p=weights):
            key = keys[index]
            converted = bool(rng.random() < rates[key])
            totals[key][0] += 1
            totals[key][1] += converted
            exposures.append((key, at, converted))
        arms = [bandit.ArmStats(exposures=n, conversions=c) for n, c in totals.values()]
        weights = bandit.allocation_weights(arms, floor=experience.bandit_floor, burn_in=50, rng=rng)
        history.append(
            BanditWeights(
                experience=experience,
                computed_at=at + timedelta(minutes=9),
                weights=dict(zip(keys, weights, strict=True)),
                stats={key: list(value) for key, value in totals.items()},
            )
        )
    BanditWeights.objects.bulk_create(history)
    held = [("control", start, False, Arm.HOLDOUT_GLOBAL)] * 40 + [
        ("control", start, False, Arm.HOLDOUT_EXPERIENCE)
    ] * 90
    rows = [(key, at, converted, Arm.VARIANT) for key, at, converted in exposures] + held
    profiles = factories.rows_copy(
        Profile, (Profile(project_id=experience.project_id, first_seen=at, last_seen=at) for _, at, _, _ in rows)
    )
    factories.rows_copy(
        Exposure,
        (
            Exposure(
                project_id=experience.project_id,
                profile=profile,
                experience_key=experience.key,
                variant_key=key,
                arm=arm,
                exposed_at=at,
                converted=converted,
            )
            for profile, (key, at, converted, arm) in zip(profiles, rows, strict=True)
        ),
    )


def test_experiences__create_start_and_watch_live_charts(
    page: Page, browser_log, log_in, screenshot, polls_every_second
):
    user = factories.user_make()
    factories.project_make(name="Shop A", owner=user)
    log_in(user.username)

    page.get_by_role("navigation").get_by_role("link", name="Experiences").click()
    expect(page.get_by_role("heading", name="No experiences yet")).to_be_visible()
    screenshot("experiences_empty")
    page.get_by_role("link", name="New experience").click()

    page.get_by_label("Key", exact=True).fill("homepage-hero")
    page.get_by_label("Name", exact=True).fill("Homepage hero")
    page.get_by_label("Touchpoint").fill("homepage hero banner")
    page.get_by_label("Policy").select_option("bandit")
    expect(page.get_by_label("Burn-in")).to_be_visible()
    page.get_by_label("Experience holdout").fill("0.1")
    page.get_by_role("button", name="+ Add a condition").click()
    page.get_by_label("Attribute", exact=True).fill("country")
    page.get_by_label("Values").fill("DE, AT, CH")

    keys, names, payloads = (page.get_by_label(label) for label in ("Variant key", "Variant name", "Variant payload"))
    expect(keys).to_have_count(2)
    expect(keys.nth(0)).to_have_value("control")
    keys.nth(1).fill("free-shipping")
    names.nth(1).fill("Free shipping")
    payloads.nth(1).fill('{"headline": "Free shipping today"}')
    page.get_by_role("button", name="+ Add a variant").click()
    page.get_by_role("button", name="+ Add a variant").click()
    expect(keys).to_have_count(4)
    page.locator(".variant-row").nth(3).get_by_role("button", name="Remove").click()
    expect(keys).to_have_count(3)
    keys.nth(2).fill("ten-off")
    payloads.nth(2).fill('{"headline": "10 % off", }')  # a trailing comma: not JSON
    page.get_by_role("button", name="Create experience").click()

    expect(page.locator("#form-errors")).to_contain_text("payload of variant “ten-off” is not valid JSON")
    expect(page.locator(".variant-row.has-error")).to_have_count(1)
    screenshot("experience_form_error")
    payloads.nth(2).fill('{"headline": "10 % off"}')
    page.get_by_role("button", name="Create experience").click()

    expect(page).to_have_url(re.compile(r"/experiences/homepage-hero/$"))
    expect(page.locator(".messages")).to_contain_text("created as a draft")
    expect(page.locator("#experience-status")).to_have_text("Draft")
    expect(page.locator("#no-exposures")).to_contain_text("No exposures yet")
    page.get_by_role("button", name="Start Homepage hero").click()
    expect(page.locator("#experience-status")).to_have_text("Running")
    expect(page.locator("#no-exposures pre")).to_contain_text('"experiences": ["homepage-hero"]')
    screenshot("experience_detail_empty")
    expect(page.locator("#history")).to_contain_text("start")
    expect(page.locator("#history")).to_contain_text(user.username)

    # Traffic arrives while the page is open: the poll (every second in tests, 10 s by default) draws the
    # charts without a reload.
    experience = Experience.objects.get(key="homepage-hero")
    bandit_simulate(experience, {"control": 0.04, "free-shipping": 0.09, "ten-off": 0.05})
    expect(page.locator("#chart-allocation .main-svg").first).to_be_visible(timeout=15_000)
    expect(page.locator("#chart-rate .main-svg").first).to_be_visible()
    expect(page.locator("#chart-posterior .main-svg").first).to_be_visible()
    expect(page.locator("#chart-arms .main-svg").first).to_be_visible()
    expect(page.locator("#chart-allocation .legend")).to_contain_text("free-shipping")
    expect(page.locator("#no-exposures")).to_have_count(0)
    expect(page.locator("#live-held-global")).to_have_text("40")
    expect(page.locator("#variant-results")).to_contain_text("free-shipping")
    page.wait_for_timeout(500)  # let plotly finish its transitions before the picture
    screenshot("experience_detail")

    # The next poll updates the preserved charts in place rather than re-creating them.
    page.evaluate("document.getElementById('chart-rate').dataset.marker = 'kept'")
    with page.expect_response(re.compile(r"/experiences/homepage-hero/live"), timeout=15_000):
        pass
    expect(page.locator("#chart-rate")).to_have_attribute("data-marker", "kept")

    page.get_by_role("link", name="← Experiences").click()
    row = page.locator("#experience-homepage-hero")
    expect(row).to_contain_text("Running")
    expect(row).to_contain_text("Thompson sampling bandit")
    expect(page.locator("#holdout-users")).to_have_text("40")
    screenshot("experiences_list")

    row.get_by_role("button", name="Pause Homepage hero").click()
    expect(row.locator(".badge")).to_have_text("Paused")
    expect(row.get_by_role("button", name="Resume Homepage hero")).to_be_visible()
    assert Experience.objects.get(key="homepage-hero").status == "paused"

    assert browser_log.static_responses.get("/static/vendor/plotly.min.js") in (200, 304)
    assert browser_log.external_requests == []
    assert browser_log.console_errors == []


def test_experiences__analyst__reads_without_edit_buttons(page: Page, browser_log, log_in):
    admin = factories.user_make()
    project = factories.project_make(owner=admin)
    services.experience_create(
        project=project,
        key="hero",
        name="Hero",
        touchpoint="homepage",
        variants=[{"key": "control", "is_control": True}, {"key": "b"}],
    )
    analyst = factories.user_make()
    services.membership_set(project=project, user=analyst, role=Role.ANALYST)
    log_in(analyst.username)

    page.goto("/experiences/")
    expect(page.locator("#experience-hero")).to_contain_text("Draft")
    expect(page.get_by_role("link", name="New experience")).to_have_count(0)
    expect(page.get_by_role("button", name="Start Hero")).to_have_count(0)
    expect(page.get_by_role("button", name="Save holdout")).to_have_count(0)
    page.get_by_role("link", name="Hero", exact=True).click()
    expect(page.locator("#chart-allocation .main-svg").first).to_be_visible()
    expect(page.get_by_role("link", name="Edit")).to_have_count(0)
    response = page.goto("/experiences/hero/edit")
    assert response is not None and response.status == 403
    assert browser_log.external_requests == []


def test_experiences__phone_width__form_and_detail_fit(page: Page, browser_log, log_in, screenshot):
    user = factories.user_make()
    project = factories.project_make(owner=user)
    experience = services.experience_create(
        project=project,
        key="hero",
        name="Homepage hero",
        touchpoint="homepage",
        policy="bandit",
        variants=[
            {"key": "control", "is_control": True, "payload": {"headline": "Welcome back to the shop"}},
            {"key": "free-shipping", "payload": {"headline": "Free shipping on every order today only"}},
        ],
    )
    services.experience_start(experience=experience, by=user)
    bandit_simulate(experience, {"control": 0.04, "free-shipping": 0.08}, steps=6)
    page.set_viewport_size({"width": 390, "height": 800})
    log_in(user.username)

    for path, name in (("/experiences/", "experiences_list_phone"), ("/experiences/hero/", "experience_detail_phone")):
        page.goto(path)
        screenshot(name)
        assert page.evaluate("document.documentElement.scrollWidth") <= 390, path
    expect(page.locator("#chart-posterior .main-svg").first).to_be_visible()
    page.goto("/experiences/hero/edit")
    screenshot("experience_form_phone")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    assert browser_log.console_errors == []
