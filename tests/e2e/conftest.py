"""Browser tests: Debian's Chromium driven by Playwright against pytest-django's live server.

Every test gets a fresh page in the session's browser profile, with no cookies or storage left by an
earlier test, and a `BrowserLog` that records console errors, uncaught page errors and any request
that tries to leave the machine (those fail): the dashboard must work offline, with htmx and plotly.js
served from /static/vendor/.
"""

import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, Playwright, expect, sync_playwright

from personalization.models import Project
from tests.seeded import demo_settled_cached

# Playwright's sync API runs an asyncio event loop in a greenlet of this same thread, so from the
# first browser call to the end of the session `asyncio.get_running_loop()` finds a running loop and
# Django refuses ORM calls here (SynchronousOnlyOperation) — in fixtures and in every later test of
# the session, not only the e2e ones. Nothing runs concurrently on that loop while the test thread
# uses the database, so the check is a false alarm for these tests and we switch it off.
os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
VIEWPORT = {"width": 1280, "height": 900}
SCREENSHOTS = settings.BASE_DIR / "var" / "screenshots"
PASSWORD = "secret-pass-123"  # tests.factories.user_make's default
# Generous waits: a passing test never waits for them, and on a busy two-core machine the live
# server can take several seconds to send plotly.min.js (4.8 MB).
TIMEOUT_MS = 30_000
expect.set_options(timeout=TIMEOUT_MS)
# Today at midnight: a fixed end, so that every browser test asking for the demo gets the same one (seeded
# once per process, replayed in a second after), recent enough for the Lift page's 14 days.
DEMO_END = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def demo_shop(tmp_path: Path) -> Project:
    """The demo shop with 1,500 visitors over 14 days (tests/segments' demo_small): enough for the flows
    these tests follow (segments found, a report with its charts), not for statistics. Call it before
    starting a Celery worker, so that what the seed queued is in the replayed state, not half taken.
    As the demo is after its first day: default metrics backfilled, embedder fitted (demo_settled_cached)."""
    return demo_settled_cached(profiles=1500, days=14, seed=11, keys_path=tmp_path / "keys.json", end=DEMO_END)


def page_until(page: Page, expression: str, timeout_ms: int = TIMEOUT_MS) -> None:
    """Poll a JavaScript expression until it is truthy. Not `page.wait_for_function`: that re-evaluates a
    string with eval() in the page, which the dashboard's and the shop's CSP (no 'unsafe-eval') refuse as
    soon as the first check is false; `page.evaluate` runs through the DevTools protocol."""
    deadline = time.monotonic() + timeout_ms / 1000
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"not true within {timeout_ms} ms: {expression}"
        page.wait_for_timeout(50)


@dataclass
class BrowserLog:
    """What went wrong in the browser during one test; tests assert the lists are empty."""

    console_errors: list[str] = field(default_factory=list)
    external_requests: list[str] = field(default_factory=list)
    # path -> HTTP status; 304 when the server confirmed the copy the browser had from an earlier test
    static_responses: dict[str, int] = field(default_factory=dict)


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="session")
def browser(playwright: Playwright) -> Iterator[Browser]:
    """A plain browser for the tests that need a context of their own (another user agent, touch)."""
    browser = playwright.chromium.launch(executable_path=str(_chromium()), headless=True, args=CHROMIUM_ARGS)
    yield browser
    browser.close()


def _chromium() -> Path:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (`make chromium`)")
    return CHROMIUM


@pytest.fixture(scope="session")
def browser_profile(playwright: Playwright, live_server, tmp_path_factory, django_db_setup) -> Iterator[BrowserContext]:
    """One Chromium profile for the session's pages, as a returning user's browser: the static files it
    fetched stay in its HTTP cache, with V8's code cache beside them. A fresh context per test parsed
    and compiled plotly.min.js (4.8 MB) again on every page that draws a chart, ~2.5 s of CPU each, and
    routing every request through Python (which also turns Chromium's cache off) cost more on top.
    What a test can leave behind (cookies, storage) is cleared between tests by `page`.

    Requests that try to leave the machine go to a proxy that is not there (the loopback hosts bypass
    it), so they fail offline as they would with no network; `page` records them."""
    context = playwright.chromium.launch_persistent_context(
        tmp_path_factory.mktemp("chromium-profile"),
        executable_path=str(_chromium()),
        headless=True,
        args=CHROMIUM_ARGS,
        proxy={"server": "http://127.0.0.1:9", "bypass": ",".join(LOCAL_HOSTS)},
        viewport=VIEWPORT,
        base_url=live_server.url,
        accept_downloads=True,
    )
    context.set_default_timeout(TIMEOUT_MS)
    yield context
    context.close()
    # The profile kept its connections to the live server open from test to test, each with a server
    # thread that holds a database connection until it sees the socket close. Wait for them, or the
    # test database cannot be dropped at the end of the session ("being accessed by other users"):
    # hence also django_db_setup above, so that the database outlives this fixture.
    deadline = time.monotonic() + 10
    while any(t.name.endswith("(process_request_thread)") for t in threading.enumerate()):
        assert time.monotonic() < deadline, "live server threads still serving after the browser closed"
        time.sleep(0.05)


@pytest.fixture
def polls_every_second() -> None:
    """Asked for by a test that watches a page update by itself: its live parts poll every second, as
    config/settings/test.py has them, so the test sees the next update without waiting 5 or 10 s."""


@pytest.fixture(autouse=True)
def polls_at_production_pace(request, settings) -> None:
    """Every other test keeps the production pace (counters every 5 s, an experience's charts every 10 s):
    a page left open while a test seeds or waits for a worker redrew its plotly charts every second,
    costing Chromium and the live server CPU for nothing the test looks at."""
    if "polls_every_second" not in request.fixturenames:
        settings.KAIROS_OVERVIEW_LIVE_SECONDS = 5
        settings.KAIROS_LIVE_CHARTS_SECONDS = 10


@pytest.fixture
def browser_log() -> BrowserLog:
    return BrowserLog()


@pytest.fixture
def page(browser_profile: BrowserContext, live_server, browser_log: BrowserLog) -> Iterator[Page]:
    # Depends on live_server so the page closes before pytest-django flushes the database: an htmx
    # poll still in flight must not race the flush.
    context = browser_profile

    def on_request(request):
        if urlsplit(request.url).hostname not in LOCAL_HOSTS | {None}:
            browser_log.external_requests.append(request.url)

    def on_response(response):
        path = urlsplit(response.url).path
        if path.startswith(settings.STATIC_URL):
            browser_log.static_responses[path] = response.status

    context.on("request", on_request)
    page = context.new_page()
    page.on("console", lambda msg: _console_error(msg) and browser_log.console_errors.append(msg.text))
    page.on("pageerror", lambda exc: browser_log.console_errors.append(f"uncaught: {exc}"))
    page.on("response", on_response)
    yield page
    context.remove_listener("request", on_request)
    for each in context.pages:  # the test's pages and any it opened: no poll outlives the test
        each.close()
    _profile_forget(context, live_server.url)


def _console_error(msg: ConsoleMessage) -> bool:
    """An error the page caused. A profile on disk (unlike a throwaway context) asks every site for
    /favicon.ico by itself; neither the dashboard nor the demo shop has one, and the 404 is the browser's."""
    return msg.type == "error" and urlsplit(msg.location.get("url", "")).path != "/favicon.ico"


def _profile_forget(context: BrowserContext, url: str) -> None:
    """What a test could leave for the next one: cookies (the session, the snippet's) and the storage of
    the dashboard's and the shop's origins (localhost and 127.0.0.1). The HTTP and code caches stay."""
    context.clear_cookies()
    blank = context.new_page()
    cdp = context.new_cdp_session(blank)
    storage = "local_storage,indexeddb,websql,service_workers,cache_storage,file_systems,shared_storage,storage_buckets"
    for host in ("localhost", "127.0.0.1"):
        origin = url.replace("localhost", host)
        cdp.send("Storage.clearDataForOrigin", {"origin": origin, "storageTypes": storage})
    cdp.detach()
    blank.close()


@pytest.fixture
def log_in(page: Page) -> Callable[..., None]:
    """Log in through the real login form, starting from the Overview (so the `next` redirect is used too)."""

    def log_in(username: str, password: str = PASSWORD, *, succeed: bool = True) -> None:
        page.goto("/")
        page.get_by_label("Username").fill(username)
        page.get_by_label("Password").fill(password)
        with page.expect_response(lambda r: r.request.method == "POST" and "/accounts/login/" in r.url):
            page.get_by_role("button", name="Log in").click()
        if succeed:
            # A goto right after the click would cancel the redirect that carries the session.
            page.wait_for_url(lambda url: "/accounts/login/" not in url)

    return log_in


@pytest.fixture
def screenshot(page: Page) -> Callable[[str], Path]:
    """Full-page screenshot to var/screenshots/<name>.png, to look at after the run."""

    def screenshot(name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return screenshot
