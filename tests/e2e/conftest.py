"""Browser tests: Debian's Chromium driven by Playwright against pytest-django's live server.

Every test gets a fresh browser context whose `BrowserLog` records console errors, uncaught page
errors and any request that tries to leave the machine (those are aborted): the dashboard must work
offline, with htmx and plotly.js served from /static/vendor/.
"""

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from playwright.sync_api import Browser, Page, Playwright, expect, sync_playwright

from personalization.models import Project
from tests.seeded import demo_seed_cached

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
VENDOR_URL = f"{settings.STATIC_URL}vendor/"
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
    starting a Celery worker, so that what the seed queued is in the replayed state, not half taken."""
    return demo_seed_cached(profiles=1500, days=14, seed=11, keys_path=tmp_path / "keys.json", end=DEMO_END)


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
    static_responses: dict[str, int] = field(default_factory=dict)  # path -> HTTP status


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="session")
def browser(playwright: Playwright) -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (`make chromium`)")
    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
    yield browser
    browser.close()


@pytest.fixture(scope="session")
def vendor_answers() -> dict[str, tuple[int, dict[str, str], bytes]]:
    """/static/vendor/ path -> the live server's answer (status, headers, body), kept for the session.

    plotly.min.js is 4.8 MB, sent by the live server in Python on every page of every test (seconds on
    a busy two-core machine). The first request of a session goes to the live server for real; later
    ones, in fresh browser contexts with empty caches, get that same answer replayed, as a browser's
    own cache would give it."""
    return {}


@pytest.fixture
def browser_log() -> BrowserLog:
    return BrowserLog()


@pytest.fixture
def page(browser: Browser, live_server, browser_log: BrowserLog, vendor_answers) -> Iterator[Page]:
    # Depends on live_server so the page closes before pytest-django flushes the database: an htmx
    # poll still in flight must not race the flush.
    context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=live_server.url)
    context.set_default_timeout(TIMEOUT_MS)

    def only_local(route):
        url = urlsplit(route.request.url)
        if url.hostname in LOCAL_HOSTS and url.path.startswith(VENDOR_URL) and route.request.method == "GET":
            if url.path not in vendor_answers:
                answer = route.fetch()
                # The body comes decoded: drop what described its encoding on the wire.
                headers = {k: v for k, v in answer.headers.items() if k not in ("content-encoding", "content-length")}
                vendor_answers[url.path] = (answer.status, headers, answer.body())
            status, headers, body = vendor_answers[url.path]
            route.fulfill(status=status, headers=headers, body=body)
        elif url.hostname in LOCAL_HOSTS:
            route.continue_()
        else:
            browser_log.external_requests.append(route.request.url)
            route.abort()

    def on_response(response):
        path = urlsplit(response.url).path
        if path.startswith(settings.STATIC_URL):
            browser_log.static_responses[path] = response.status

    context.route("**/*", only_local)
    page = context.new_page()
    page.on("console", lambda msg: msg.type == "error" and browser_log.console_errors.append(msg.text))
    page.on("pageerror", lambda exc: browser_log.console_errors.append(f"uncaught: {exc}"))
    page.on("response", on_response)
    yield page
    context.close()


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
