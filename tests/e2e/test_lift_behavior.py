"""The Lift page broken down by behavior segment, in a real browser: demo history, a clustering run
by a real Celery worker, a segment the marketer renamed, live decide traffic that records every
unit's segments in every arm, then the marketer picks the run under "by" and reads names."""

import random
import re
import time

import pytest
from playwright.sync_api import Page, expect

from demo import seed as demo_services
from experiments.models import LiftReport, ReportStatus
from personalization import redis_client, rkeys
from personalization import services as personalization_services
from personalization.decide import runtime as decide_runtime
from personalization.models import Exposure, IdentityKind, ProfileIdentity
from segments import services as segments_services
from segments.models import ClusteringRun, RunStatus, Segment
from tests.e2e.conftest import demo_shop
from tests.workers import celery_worker

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

RENAMED = "Trail devotees"


def _run_finished(run_id: int, worker_log) -> ClusteringRun:
    for _ in range(600):
        run = ClusteringRun.objects.get(pk=run_id)
        if run.status in (RunStatus.DONE, RunStatus.FAILED):
            break
        time.sleep(0.2)
    assert run.status == RunStatus.DONE, f"{run.status}: {run.error}\n{worker_log.read_text()}"
    return run


def _traffic(project, experience_key: str, renamed: Segment) -> None:
    """Every demo visitor asks decide; a share buys afterwards, more of the treated in the renamed segment."""
    rng, hashes = random.Random(5), redis_client.worker()
    units = ProfileIdentity.objects.filter(project=project, kind=IdentityKind.ANONYMOUS).values_list("value", flat=True)
    purchases, reasons = [], []
    for n, unit in enumerate(units):
        answer = decide_runtime.decide(project.pk, {"anonymous_id": unit})["assignments"][experience_key]
        reasons.append(answer["reason"])
        treated = answer["reason"] not in ("holdout_global", "holdout_experience")
        in_renamed = renamed.key in (hashes.hget(rkeys.unit(project.pk, unit), "segs") or b"").decode().split()
        if rng.random() < (0.35 if treated and in_renamed else 0.08):
            purchases.append({"event_id": f"buy-{n}", "type": "purchase", "anonymous_id": unit, "value": 40})
    decide_runtime.buffer.flush()
    assert {"holdout_global", "holdout_experience", "fixed_split"} <= set(reasons), set(reasons)
    for start in range(0, len(purchases), 500):
        result = personalization_services.events_ingest(
            project_id=project.pk, payload={"events": purchases[start : start + 500]}
        )
        assert not result.rejected, result.rejected
    decide_runtime.buffer.flush()
    while personalization_services.events_drain(claim_idle_ms=0):
        pass


def test_lift__by_behavior_segment__names_in_table_and_charts(page: Page, browser_log, log_in, screenshot, tmp_path):
    worker_log = tmp_path / "worker.log"
    project = demo_shop(tmp_path)
    with celery_worker(worker_log, kill=True) as worker:
        log_in("demo", demo_services.DEMO_PASSWORD)

        page.goto("/lift/")  # no clustering run yet: the page says how to get one
        expect(page.locator("#lift-no-runs")).to_contain_text("run a clustering on the Segments page")
        screenshot("lift-no-runs")

        # The demo's embedder is fitted (demo_shop): the worker clusters on it without refitting.
        run = _run_finished(segments_services.clustering_run_request(project=project, k=4).pk, worker_log)
        renamed = segments_services.segment_rename(segment=Segment.objects.get(run=run, index=0), name=RENAMED)
        experience = personalization_services.experience_create(
            project=project,
            key="hero-banner",
            name="Hero banner",
            touchpoint="homepage hero",
            variants=[{"key": "plain", "is_control": True}, {"key": "trail", "payload": {"headline": "Trails"}}],
            holdout_share=0.3,
        )
        personalization_services.experience_start(experience=experience)
        personalization_services.snapshot_publish(project_id=project.pk)
        _traffic(project, "hero-banner", renamed)
        recorded = Exposure.objects.filter(project=project, experience_key="hero-banner")
        units = ProfileIdentity.objects.filter(project=project, kind=IdentityKind.ANONYMOUS).count()
        assert recorded.count() >= 0.8 * units and not recorded.filter(behavior_segments__isnull=True).exists()
        assert recorded.filter(behavior_segments__contains=[renamed.key]).exists()

        page.goto(f"/segments/?run={run.pk}")  # from the run, one click to its lift
        page.get_by_role("link", name="Lift by these segments").click()
        expect(page.locator("#lift-filters select[name=segment_by]")).to_have_value(f"run:{run.pk}")

        page.goto("/lift/?experience=hero-banner&comparison=holdout&days=14")
        option = f"Behavior segments — run #{run.pk} (k=4)"
        page.locator("#lift-filters select[name=segment_by]").select_option(label=option)
        page.get_by_role("button", name="Show").click()
        expect(page.locator("#lift-filters select[name=segment_by]")).to_have_value(f"run:{run.pk}")
        page.get_by_role("button", name="Compute report").click()
        expect(page.locator("#waterfall .main-svg").first).to_be_visible()
        report = LiftReport.objects.get(project=project, segment_by=f"run:{run.pk}", experience_key="hero-banner")
        assert report.status == ReportStatus.DONE, f"{report.status}: {report.error}\n{worker_log.read_text()}"

        table = page.locator("#lift-table")
        expect(table.locator("td", has_text=RENAMED)).to_have_count(1)
        expect(table.locator("td", has_text=RENAMED).locator("small")).to_have_text(renamed.key)
        expect(page.locator("#waterfall .xtick text").filter(has_text=re.compile(f"^{RENAMED}"))).to_have_count(1)
        expect(page.locator("#forest .ytick text").filter(has_text=re.compile(f"^{RENAMED}"))).to_have_count(1)
        expect(page.locator("#lift-missing")).to_have_count(0)  # every exposure here recorded its segments
        screenshot("lift-behavior-segments")

        # All personalization vs the global holdout: the demo's history predates segments, and says so.
        page.goto(f"/lift/?experience=&segment_by=run:{run.pk}&days=14")
        page.get_by_role("button", name="Compute report").click()
        expect(page.locator("#lift-missing")).to_contain_text("were recorded before segments were kept")
        expect(page.locator("#lift-table td", has_text="Recorded before segments were kept")).to_have_count(1)
        screenshot("lift-behavior-segments-global")
        assert worker.poll() is None, worker_log.read_text()

    assert browser_log.external_requests == []
    assert browser_log.console_errors == []
