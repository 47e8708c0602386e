"""The site snippet (static/kairos.js) on the demo shop (static/demo/shop.html at /demo/shop/), in a
real browser, called cross-origin.

The shop is opened on http://127.0.0.1:<port> and the snippet talks to http://localhost:<port>, so
every decide and events request crosses origins as on a customer's site: fetch with an
Authorization header while the page lives, a CORS-simple text/plain sendBeacon (key in the body) when it goes away.
"""

import time
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlencode

import pytest
from django.core.signals import request_started
from playwright.sync_api import Page, expect

from demo import world as demo
from personalization import redis_client, rkeys, services
from personalization.decide import runtime as decide_runtime
from personalization.models import Event, Exposure, IdentityKind, Profile, ProfileIdentity, Project
from personalization.people import live_session
from tests import factories
from tests.e2e.conftest import page_until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

# The demo seed's hero experience, which the demo shop renders, with all traffic on one variant so
# the hero must change from the page's built-in default.
SHOWN = "trail"
HERO = demo.EXPERIENCE_BY_KEY["homepage-hero"].service_fields() | {"policy": "fixed", "segment_attribute": ""}
HERO["variants"] = [v | {"weight": float(v["key"] == SHOWN)} for v in HERO["variants"]]
PAYLOADS = {v["key"]: v["payload"] for v in HERO["variants"]}
CONTROL = next(v["key"] for v in HERO["variants"] if v["is_control"])
ITEM = "ridgeline-trail-3"  # the shop's first product


@dataclass
class Shop:
    project: Project
    key: str
    api: str  # the Kairos server, http://localhost:<port>
    url: str  # the shop page, on http://127.0.0.1:<port>


@pytest.fixture
def shop(live_server) -> Shop:
    """A project with a public key and the running hero experience (no global holdout, to be exact)."""
    project = factories.project_make(name="Trailhead")
    services.project_holdout_set(project=project, share=0.0)
    key = factories.key_make(project=project, kind="public")
    services.experience_start(experience=services.experience_create(project=project, **HERO))
    services.snapshot_publish(project_id=project.pk)
    api = live_server.url
    page_origin = api.replace("localhost", "127.0.0.1")
    assert page_origin != api
    return Shop(project, key, api, f"{page_origin}/demo/shop/?{urlencode({'key': key, 'endpoint': api})}")


@pytest.fixture
def server_requests(live_server) -> Iterator[list[tuple[str, str, str, str]]]:
    """(method, path, query string, content type) of every request the live server gets in the test."""
    seen: list[tuple[str, str, str, str]] = []

    def note(sender, environ, **kwargs):
        seen.append((environ["REQUEST_METHOD"], environ["PATH_INFO"], environ.get("QUERY_STRING", ""),
                     environ.get("CONTENT_TYPE", "")))  # fmt: skip

    request_started.connect(note, weak=False, dispatch_uid="test_snippet")
    yield seen
    request_started.disconnect(dispatch_uid="test_snippet")


def _drain_until(done, timeout: float = 10.0):
    """Drain the stream into PostgreSQL until `done()` returns something truthy (or time is up)."""
    deadline = time.monotonic() + timeout
    while True:
        decide_runtime.buffer.flush()
        while services.events_drain(claim_idle_ms=0):
            pass
        result = done()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.1)


def _events_of(project: Project, anonymous_id: str) -> list[Event]:
    identity = ProfileIdentity.objects.filter(project=project, kind=IdentityKind.ANONYMOUS, value=anonymous_id).first()
    return list(Event.objects.filter(profile_id=identity.profile_id).order_by("ts", "id")) if identity else []


def _decided(page: Page) -> None:
    expect(page.locator("#debug")).to_contain_text("homepage-hero →")


def test_snippet__demo_shop__hero_from_decide_and_behavior_events_stored(
    page: Page, browser_log, shop: Shop, server_requests, screenshot
):
    project = shop.project
    api_calls: list[tuple[str, str]] = []
    page.on("request", lambda r: "/api/v1/" in r.url and api_calls.append((r.method, r.url)))

    page.goto(shop.url)
    _decided(page)
    variant = page.evaluate("Kairos.variant('homepage-hero')")
    assert variant == SHOWN
    payload = PAYLOADS[variant]
    assert page.evaluate("Kairos.payload('homepage-hero')") == payload
    expect(page.locator("#hero-headline")).to_have_text(payload["headline"])
    expect(page.locator("#hero-cta")).to_have_text(payload["cta"])
    expect(page.locator("#hero-cta")).to_have_attribute("href", payload["cta_url"])
    expect(page.locator("#hero-image")).to_have_attribute("src", payload["image"])
    expect(page.locator("#debug")).to_contain_text(f"homepage-hero → {variant}  (fixed_split)")
    page_until(page, "document.getElementById('hero-image').naturalWidth > 0")  # the image loaded
    anonymous_id = page.evaluate("Kairos.anonymousId()")
    screenshot("demo_shop")

    search = page.get_by_role("searchbox")
    search.fill("trail shoes")
    search.press("Enter")
    page.get_by_role("link", name="Trail", exact=True).click()
    page.mouse.wheel(0, 3000)
    page.get_by_role("button", name="Add to cart").first.click()
    expect(page.locator("#cart-count")).to_have_text("1")
    with page.expect_response(lambda r: r.url == f"{shop.api}/api/v1/events") as sent:
        page.get_by_role("button", name="Check out").click()  # the page calls Kairos.flush(): a fetch
    assert sent.value.status == 200 and sent.value.request.headers["authorization"] == f"Bearer {shop.key}"
    page.evaluate("Kairos.identify('shopper-42', {plan: 'gold'})")
    page.goto("about:blank")  # pagehide: what is still queued leaves by sendBeacon

    want = {"page_view": 1, "search": 1, "click": 3, "add_to_cart": 1, "purchase": 1, "scroll": 1, "dwell": 1}
    want["identify"] = 1

    def stored():
        events = _events_of(project, anonymous_id)
        types = [e.type for e in events]
        return events if all(types.count(t) >= n for t, n in want.items()) else None

    events = _drain_until(stored)
    assert events, [(e.type, e.properties) for e in _events_of(project, anonymous_id)]
    by_type: dict[str, list[Event]] = {}
    for event in events:
        by_type.setdefault(event.type, []).append(event)
    assert {t: len(v) for t, v in by_type.items()} == want  # nothing doubled, no exposure sent by the page

    (view,) = by_type["page_view"]
    assert view.properties["url"].startswith("/demo/shop/?key=")
    assert view.properties["title"] == "Trailhead Outfitters · Kairos demo shop"
    assert by_type["search"][0].properties == {"query": "trail shoes", "url": view.properties["url"]}
    clicks = {c.properties["target"]: c.properties for c in by_type["click"]}
    cart_click = clicks["add-to-cart"]
    assert (cart_click["item"], cart_click["category"], cart_click["text"]) == (ITEM, "trail-shoes", "Add to cart")
    assert clicks["a"]["category"] == "trail-shoes" and clicks["a"]["href"] == "#trail-shoes"
    assert by_type["add_to_cart"][0].properties == {
        "item": "ridgeline-trail-3",
        "category": "trail-shoes",
        "price": 139,
    }
    assert by_type["purchase"][0].value == 139 and by_type["purchase"][0].properties["items"] == [ITEM]
    (scroll,) = by_type["scroll"]
    assert scroll.properties["depth"] == 100 and scroll.properties["page_view_id"] == view.event_id
    assert 0 < by_type["dwell"][0].properties["dwell_ms"] < 60_000
    assert len({e.session_id for e in events}) == 1 and events[0].session_id
    profile = Profile.objects.get(pk=view.profile_id)
    assert (profile.external_id, profile.attributes) == ("shopper-42", {"plan": "gold"})

    exposure = _drain_until(lambda: Exposure.objects.filter(project=project, experience_key="homepage-hero").first())
    assert exposure is not None, "decide recorded no exposure"
    assert (exposure.profile_id, exposure.variant_key, exposure.arm) == (profile.pk, variant, "variant")

    assert ("POST", f"{shop.api}/api/v1/decide") in api_calls
    # Playwright does not report beacons; the server saw them: text/plain, the key in the body, never the URL.
    sends = [r for r in server_requests if r[:2] == ("POST", "/api/v1/events")]
    assert [r for r in sends if r[3].startswith("text/plain")], server_requests
    assert all(r[2] == "" for r in sends), server_requests
    assert browser_log.external_requests == []
    assert browser_log.console_errors == []


def test_snippet__decide_unreachable__shop_shows_defaults_and_page_keeps_working(page: Page, browser_log, shop: Shop):
    page.route("**/api/v1/decide", lambda route: route.abort())

    page.goto(shop.url)

    expect(page.locator("#debug")).to_have_text("Kairos did not answer: showing the defaults.")
    expect(page.locator("#hero-headline")).to_have_text(PAYLOADS[CONTROL]["headline"])
    assert page.evaluate("Kairos.variant('homepage-hero')") is None
    page.get_by_role("button", name="Add to cart").first.click()
    expect(page.locator("#cart-count")).to_have_text("1")
    # The aborted request itself shows as a failed load; nothing is thrown into the page.
    assert [e for e in browser_log.console_errors if not e.startswith("Failed to load resource")] == []


def test_snippet__personalization_consent_withdrawn__control_and_no_exposure(page: Page, browser_log, shop: Shop):
    page.goto(shop.url)
    _decided(page)
    page.evaluate("Kairos.consent({personalization: false})")

    page.reload()

    expect(page.locator("#debug")).to_contain_text(f"homepage-hero → {CONTROL}  (not_personalized)")
    expect(page.locator("#hero-headline")).to_have_text(PAYLOADS[CONTROL]["headline"])
    anonymous_id = page.evaluate("Kairos.anonymousId()")
    page.goto("about:blank")
    assert _drain_until(lambda: len(_events_of(shop.project, anonymous_id)) >= 2)  # the two page views
    exposures = Exposure.objects.filter(project=shop.project).values_list("reason", flat=True)
    assert "not_personalized" not in exposures and len(exposures) <= 1  # only the first visit's, if any
    assert browser_log.console_errors == []


def test_public_api__preflight_from_another_origin__allows_the_snippets_requests(client):
    # Playwright answers CORS preflights itself while it routes requests (the page fixture does), so
    # the browser tests never send one to the server: ask the server as a browser would.
    for path in ("/api/v1/decide", "/api/v1/events"):
        response = client.options(
            path,
            HTTP_ORIGIN="https://shop.example",
            HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
            HTTP_ACCESS_CONTROL_REQUEST_HEADERS="authorization,content-type",
        )
        assert response.status_code in {200, 204}
        assert response["Access-Control-Allow-Origin"] == "*"
        assert "POST" in response["Access-Control-Allow-Methods"]
        allowed = {h.strip().lower() for h in response["Access-Control-Allow-Headers"].split(",")}
        assert {"authorization", "content-type"} <= allowed


def test_demo_shop__no_key_in_address__page_gets_the_demo_public_key_only(client, tmp_path, monkeypatch):
    keys = tmp_path / "demo-keys.json"
    keys.write_text('{"public_key": "kp_demo</script>", "secret_key": "ks_never_in_a_page"}')
    monkeypatch.setattr("demo.views.demo_keys_path", lambda: keys)

    html = client.get("/demo/shop/").content.decode()

    assert '<script type="application/json" id="kairos-demo">{"key": "kp_demo\\u003c/script>"}</script>' in html
    assert "ks_never_in_a_page" not in html
    assert '<script src="/static/kairos.js"></script>' in html

    keys.unlink()  # not seeded: the page asks for ?key= itself
    assert 'id="kairos-demo"' not in client.get("/demo/shop/").content.decode()


def test_snippet__spa_virtual_page__previous_page_sends_its_scroll_and_dwell(page: Page, browser_log, shop: Shop):
    page.goto(shop.url)
    _decided(page)
    page.mouse.wheel(0, 3000)
    page_until(page, "window.scrollY > 0")
    first_url = page.evaluate("location.pathname + location.search")
    page.evaluate("history.pushState({}, '', '/demo/shop/trail?tab=specs'); Kairos.page({section: 'specs'})")
    anonymous_id = page.evaluate("Kairos.anonymousId()")
    page.goto("about:blank")  # the second virtual page reports when the page goes away

    def stored():
        events = _events_of(shop.project, anonymous_id)
        types = [e.type for e in events]
        return events if types.count("page_view") == 2 and types.count("dwell") == 2 else None

    events = _drain_until(stored)
    assert events, [(e.type, e.properties) for e in _events_of(shop.project, anonymous_id)]
    first, second = (e for e in events if e.type == "page_view")
    assert (first.properties["url"], second.properties["url"]) == (first_url, "/demo/shop/trail?tab=specs")
    assert second.properties["section"] == "specs"
    assert second.properties["referrer"] == shop.url.split("/demo/")[0] + first_url  # reached from the page left
    reports = [e for e in events if e.type in ("scroll", "dwell")]
    of_first = {e.type: e for e in reports if e.properties["page_view_id"] == first.event_id}
    assert set(of_first) == {"scroll", "dwell"}, [(e.type, e.properties) for e in reports]
    assert of_first["scroll"].properties["depth"] == 100
    assert of_first["scroll"].properties["url"] == first_url  # the page left, not the address shown now
    assert 0 < of_first["dwell"].properties["dwell_ms"] < 60_000
    assert of_first["dwell"].ts <= second.ts  # sent when the next virtual page began, not at the end
    assert [e for e in reports if e.properties["page_view_id"] == second.event_id and e.type == "dwell"]
    assert browser_log.console_errors == []


def test_snippet__campaign_landing__utm_kept_for_the_session_in_decide_page_views_and_first_touch(browser, shop: Shop):
    context = browser.new_context(viewport={"width": 800, "height": 900})
    try:
        page = context.new_page()
        landing = shop.url + "&utm_source=Newsletter&utm_medium=email&utm_campaign=autumn"
        with page.expect_response(lambda r: r.url == f"{shop.api}/api/v1/decide") as answer:
            page.goto(landing)
        sent = answer.value.request.post_data_json["context"]
        assert sent["utm"] == {"source": "Newsletter", "medium": "email", "campaign": "autumn"}
        assert sent["viewport"] == "tablet"
        # The next page of the session has no tags in its address; the snippet still knows them.
        with page.expect_response(lambda r: r.url == f"{shop.api}/api/v1/decide") as answer:
            page.goto(shop.url)
        assert answer.value.request.post_data_json["context"]["utm"]["source"] == "Newsletter"
        anonymous_id = page.evaluate("Kairos.anonymousId()")
        page.goto("about:blank")  # the page views go by beacon

        def stored():
            views = [e for e in _events_of(shop.project, anonymous_id) if e.type == "page_view"]
            return views if len(views) == 2 else None

        views = _drain_until(stored)
        assert views and [v.properties.get("utm_source") for v in views] == ["Newsletter", "Newsletter"]
        unit = {
            k.decode(): v.decode()
            for k, v in redis_client.worker().hgetall(rkeys.unit(shop.project.pk, anonymous_id)).items()
        }
        state = live_session.session_view(live_session.live_state_parse(unit), now=time.time())
        assert (state.first_touch, state.session_channel) == ("newsletter", "newsletter")
    finally:
        context.close()

    # A new tab is a new session: the tags are not carried over.
    context = browser.new_context()
    try:
        page = context.new_page()
        with page.expect_response(lambda r: r.url == f"{shop.api}/api/v1/decide") as answer:
            page.goto(shop.url)
        assert answer.value.request.post_data_json["context"]["utm"] == {}
        assert answer.value.request.post_data_json["context"]["viewport"] == "desktop"
    finally:
        context.close()


IPAD_UA = "Mozilla/5.0 (iPad; CPU OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1"  # noqa: E501
IPADOS_UA = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Safari/605.1.15"  # noqa: E501
ANDROID_TABLET_UA = (
    "Mozilla/5.0 (Linux; Android 14; SM-X710) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36"
)
IPHONE_UA = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1"  # noqa: E501
ANDROID_PHONE_UA = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Mobile Safari/537.36"
)


@pytest.mark.parametrize(
    ("agent", "screen", "touch", "expected"),
    [
        (IPAD_UA, (820, 1180), True, "tablet"),
        (IPADOS_UA, (1024, 1366), True, "tablet"),  # iPadOS asks for desktop sites: a Mac with touch
        (ANDROID_TABLET_UA, (800, 1280), True, "tablet"),
        (IPHONE_UA, (390, 844), True, "mobile"),
        (ANDROID_PHONE_UA, (412, 915), True, "mobile"),
        (None, (600, 900), False, "desktop"),  # a narrow desktop window is still a desktop
    ],
)
def test_snippet__device_class__targeting_on_mobile_and_tablet_matches(
    browser, shop: Shop, agent, screen, touch, expected
):
    """An experience targeted at `device in [mobile, tablet]` reaches tablets too (the snippet once knew
    only mobile and desktop)."""
    experience = shop.project.experiences.get(key="homepage-hero")
    services.experience_update(
        experience=experience,
        targeting={"attributes": [{"attribute": "device", "op": "in", "values": ["mobile", "tablet"]}]},
    )
    services.snapshot_publish(project_id=shop.project.pk)
    width, height = screen
    options = {"viewport": {"width": width, "height": height}, "screen": {"width": width, "height": height}}
    if agent:
        options["user_agent"] = agent
    context = browser.new_context(has_touch=touch, **options)
    try:
        page = context.new_page()
        with page.expect_response(lambda r: r.url == f"{shop.api}/api/v1/decide") as answer:
            page.goto(shop.url)
        assert answer.value.request.post_data_json["context"]["device"] == expected
        hero = answer.value.json()["assignments"]["homepage-hero"]
        targeted = expected in ("mobile", "tablet")
        assert (hero["variant"], hero["reason"] != "targeting_miss") == (SHOWN if targeted else CONTROL, targeted), hero
    finally:
        context.close()
