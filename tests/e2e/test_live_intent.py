"""Live intent in a real browser, on the demo shop (static/demo/shop.html) with the site snippet: what
the visitor does in this session changes what decide answers next, and the dashboard's live pages
(the visitor timeline, Sessions on the Overview, an experience's "who would match right now") show it."""

import time
from urllib.parse import urlencode

import pytest
from playwright.sync_api import Page, expect

from personalization import redis_client, rkeys, services
from personalization.decide import runtime as decide_runtime
from personalization.models import Exposure
from personalization.people.live_session import live_state_parse, session_view
from tests import factories
from tests.e2e.conftest import page_until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

ABANDONED = "session.cart_adds >= 1 and session.purchases = 0"
BANNER = "Free returns on the shoes in your cart"
TRAIL_SHOES = ("Ridgeline Trail 3", "Summit Trail GTX", "Canyon Trail Lite")  # the shop's trail-shoes products


def _experience(project, key: str, conditions: str, on_payload: dict) -> None:
    services.experience_create(
        project=project,
        key=key,
        name=key.replace("-", " ").title(),
        touchpoint="banner",
        variants=[
            {"key": "off", "payload": {"text": ""}, "is_control": True, "weight": 0},
            {"key": "on", "payload": on_payload, "weight": 1},
        ],
        targeting={"conditions": conditions},
    )
    services.experience_start(experience=project.experiences.get(key=key))


@pytest.fixture
def shop(live_server):
    """A project with no global holdout (every answer says what targeting decided); the shop page on
    127.0.0.1 calls Kairos on localhost, cross-origin as on a customer's site."""
    project = factories.project_make(name="Trailhead")
    services.project_holdout_set(project=project, share=0.0)
    key = factories.key_make(project=project, kind="public")
    page_origin = live_server.url.replace("localhost", "127.0.0.1")
    url = f"{page_origin}/demo/shop/?{urlencode({'key': key, 'endpoint': live_server.url})}"
    return project, url


def _until(condition, timeout: float = 15.0):
    """`condition()` once it returns something truthy; None when the deadline passes first."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.05)


def _view(project, unit: str):
    fields = redis_client.worker().hgetall(rkeys.unit(project.pk, unit))
    state = live_state_parse({k.decode(): v.decode() for k, v in fields.items()})
    return session_view(state, now=time.time()) if state else None


def _answer(page: Page, key: str) -> str:
    """The shop's debug line for `key` once decide has answered this page load: "<variant>  (<reason>)"."""
    expect(page.locator("#debug")).to_contain_text(f"{key} →")
    line = next(x for x in page.locator("#debug").inner_text().splitlines() if x.startswith(f"{key} →"))
    return line.split("→", 1)[1].strip()


def test_live_intent__cart_left_then_back__banner_shows__until_the_purchase(page: Page, browser_log, shop, screenshot):
    project, url = shop
    _experience(project, "shipping-banner", ABANDONED, {"text": BANNER})
    services.snapshot_publish(project_id=project.pk)

    page.goto(url)
    assert _answer(page, "shipping-banner") == "off  (targeting_miss)"
    expect(page.locator("#banner")).to_have_text("")
    visitor = page.evaluate("Kairos.anonymousId()")

    page.get_by_role("button", name="Add to cart").first.click()
    expect(page.locator("#cart-count")).to_have_text("1")
    page.goto("about:blank")  # leaves: the queued cart add goes by sendBeacon on pagehide
    left = _until(lambda: (v := _view(project, visitor)) is not None and v.cart_adds >= 1 and v)
    assert left, "the cart add never reached the live state"

    page.goto(url)  # back, seconds later: well within the 30-minute session
    assert _answer(page, "shipping-banner") == "on  (fixed_split)"
    expect(page.locator("#banner")).to_have_text(BANNER)
    expect(page.locator("#cart-count")).to_have_text("1")  # the shop kept the cart
    screenshot("live_intent_cart_banner")

    with page.expect_response(lambda r: r.url.endswith("/api/v1/events") and r.request.method == "POST") as sent:
        page.get_by_role("button", name="Check out").click()  # the purchase, flushed at once
    assert sent.value.status == 200
    assert _until(lambda: (v := _view(project, visitor)) is not None and v.purchases >= 1)
    page.reload()
    assert _answer(page, "shipping-banner") == "off  (targeting_miss)"
    expect(page.locator("#banner")).to_have_text("")
    assert browser_log.external_requests == [] and browser_log.console_errors == []


def test_live_intent__three_trail_shoes_viewed__comparing_on_the_timeline_and_in_decide(
    page: Page, browser_log, shop, log_in, screenshot
):
    project, url = shop
    _experience(project, "compare-help", "stage = comparing", {"text": "Compare trail shoes side by side"})
    services.snapshot_publish(project_id=project.pk)

    page.goto(url)
    assert _answer(page, "compare-help") == "off  (targeting_miss)"
    visitor = page.evaluate("Kairos.anonymousId()")
    for name in TRAIL_SHOES:
        page.get_by_role("link", name=name).click()
    with page.expect_response(lambda r: r.url.endswith("/api/v1/events") and r.request.method == "POST") as sent:
        page.evaluate("Kairos.flush()")
    assert sent.value.status == 200
    assignments = page.evaluate("Kairos.decide({experiences: ['compare-help']})")
    assert (assignments["compare-help"]["variant"], assignments["compare-help"]["reason"]) == ("on", "fixed_split")

    # decide recorded the stage it used on the exposure
    def exposed():
        decide_runtime.buffer.flush()
        while services.events_drain(claim_idle_ms=0):
            pass
        return Exposure.objects.filter(project=project, experience_key="compare-help", variant_key="on").first()

    exposure = _until(exposed)
    assert exposure is not None and exposure.live["stage"] == "comparing", exposure and exposure.live

    developer = factories.member_make(project=project, role="developer")
    log_in(developer.username)
    page.goto(f"/visitors/?id={visitor}")
    expect(page.locator("#visitor-stage")).to_have_text("Stage comparing")
    expect(page.locator("#visitor-stage-reason")).to_contain_text("3 trail shoes viewed in")
    expect(page.locator("#visitor-facts")).to_contain_text("session.category_item_views[trail-shoes]")
    expect(page.locator("#visitor-events")).to_contain_text("page_view")
    screenshot("live_visitor_timeline")

    page.goto("/")
    expect(page.locator('#sessions-table [data-stage="comparing"]')).to_have_text("1")
    page_until(page, "document.querySelector('#sessions-chart .main-svg') !== null")
    page.locator("#stage-definition summary").click()
    expect(page.locator("#stage-definition")).to_contain_text("Otherwise comparing when any of:")
    screenshot("live_overview_sessions")

    page.goto("/experiences/compare-help/")
    expect(page.locator("#preview-matching")).to_have_text("1")
    screenshot("live_experience_preview")
    assert browser_log.external_requests == [] and browser_log.console_errors == []
