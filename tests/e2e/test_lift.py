"""The Lift page in a real browser, on the demo data, with the report computed by a real Celery worker.

Acceptance: a browser test opens the lift page of the demo and sees the waterfall and forest plot.
"""

import re

import pytest
from playwright.sync_api import Page, expect

from demo import seed as demo_services
from experiments import charts
from experiments.models import LiftReport, ReportStatus
from tests.e2e.conftest import demo_shop
from tests.workers import celery_worker

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

LIFT_URL = "/lift/?experience=signup-popup&comparison=control&segment_by=attribute:planted_intent&days=14"


def test_lift__demo_by_planted_intent__worker_computes_waterfall_and_forest(
    page: Page, browser_log, log_in, screenshot, tmp_path
):
    worker_log = tmp_path / "worker.log"
    project = demo_shop(tmp_path)
    with celery_worker(worker_log, kill=True) as worker:
        log_in("demo", demo_services.DEMO_PASSWORD)

        page.goto(LIFT_URL)
        expect(page.get_by_role("heading", name="No report with these settings yet")).to_be_visible()
        expect(page.locator("#lift-filters select[name=experience]")).to_have_value("signup-popup")
        expect(page.locator("#lift-filters select[name=segment_by]")).to_have_value("attribute:planted_intent")
        navigations = []  # after the click: the redirect back here, then HX-Refresh's reload
        page.on("framenavigated", lambda frame: frame == page.main_frame and navigations.append(frame.url))
        page.get_by_role("button", name="Compute report").click()

        # The worker may finish before the redirect lands; otherwise the progress bar polls until then.
        progress, done = page.get_by_role("progressbar"), page.locator("#waterfall")
        expect(progress.or_(done)).to_be_visible()
        report = LiftReport.objects.get(project=project)
        assert (report.experience_key, report.segment_by, report.comparison) == (
            "signup-popup",
            "attribute:planted_intent",
            "control",
        )
        if progress.is_visible():
            expect(done).to_be_visible()
            assert len(navigations) >= 2, navigations

        report.refresh_from_db()
        assert report.status == ReportStatus.DONE, f"{report.status}: {report.error}\n{worker_log.read_text()}"
        assert worker.poll() is None, worker_log.read_text()
        expect(page.locator("#waterfall .main-svg").first).to_be_visible()
        expect(page.locator("#forest .main-svg").first).to_be_visible()
        expect(page.locator("#over-time .main-svg").first).to_be_visible()
        # The waterfall has a bar per intent plus Mix and Total; the forest a row per intent plus All users.
        intents = [s["name"] for s in report.result["report"]["segments"]]
        assert len(intents) >= 2
        for name in [*intents, "Mix", "Total"]:
            expect(page.locator("#waterfall .xtick text").filter(has_text=re.compile(f"^{name}$"))).to_have_count(1)
        for name in [*intents, "All users"]:
            expect(page.locator("#forest .ytick text").filter(has_text=re.compile(f"^{name}$"))).to_have_count(1)

        rows = page.locator("#lift-table tbody tr")
        expect(rows).to_have_count(len(intents) + 1)
        expect(rows.last.locator("td").first).to_have_text("All users")
        sentences = page.locator("#lift-sentences li")
        expect(sentences).to_have_count(len(report.result["sentences"]))
        expect(sentences.first).to_have_text(report.result["sentences"][0])
        screenshot("lift")

        href = page.get_by_role("link", name="Download CSV").get_attribute("href")
        response = page.request.get(href)
        assert response.status == 200
        assert response.headers["content-type"].startswith("text/csv")
        lines = response.text().splitlines()
        assert lines[0] == ",".join(charts.CSV_HEADER)
        assert len(lines) == 1 + len(intents) + 1
        assert lines[-1].startswith("All users,")

    assert browser_log.static_responses.get("/static/vendor/plotly.min.js") in (200, 304)
    assert browser_log.external_requests == []
    assert browser_log.console_errors == []


def test_lift__fresh_demo__default_view_and_overview_have_no_srm_alarm(
    page: Page, browser_log, log_in, screenshot, tmp_path
):
    """Holdouts record their segment like everyone else, so the first Lift view a new user opens
    (all personalization vs the global holdout, by segment at exposure) fits the configured split."""
    from experiments import services as experiments_services

    worker_log = tmp_path / "worker.log"
    project = demo_shop(tmp_path)
    with celery_worker(worker_log, kill=True) as worker:
        experiments_services.lift_reports_precompute()  # what `make run` queues after seeding
        log_in("demo", demo_services.DEMO_PASSWORD)

        page.goto("/lift/")
        done = page.locator("#waterfall")
        expect(done).to_be_visible()
        report = LiftReport.objects.filter(project=project, experience_key="").latest("created_at")
        assert report.status == ReportStatus.DONE, f"{report.status}: {report.error}\n{worker_log.read_text()}"
        segments = {s["name"] for s in report.result["report"]["segments"]}
        assert len(segments) >= 3, segments  # the stated intents (and "(none)" for the fixed-split experiences)
        # Both checks say OK: the one-off chi-square and the daily always-valid one beside it.
        expect(page.locator(".badge").get_by_text("Sample ratio OK", exact=True)).to_be_visible()
        expect(page.locator("#lift-srm-sequential")).to_have_text("Daily check (always valid): sample ratio OK")
        expect(page.get_by_text(re.compile("Sample ratio mismatch"))).to_have_count(0)
        screenshot("lift-default")

        page.goto("/")
        headline = report.result["sentences"][0]
        assert "mismatch" not in headline.lower(), headline
        expect(page.get_by_text(headline)).to_be_visible()
        screenshot("overview-headline")
        assert worker.poll() is None, worker_log.read_text()

    assert browser_log.external_requests == []
    assert browser_log.console_errors == []
