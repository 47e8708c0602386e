"""Segments in a real browser, with a real Celery worker: run a clustering from the UI, watch the
progress bar finish, see the map, build a lookalike and target an experience with it."""

import re
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from playwright.sync_api import Page, expect

from demo import seed as demo_services
from personalization import redis_client, rkeys
from personalization.models import ProfileIdentity
from segments.models import Segment, SegmentKind, SegmentMembership
from tests import factories
from tests.e2e.conftest import demo_shop
from tests.segments.test_hostile_data import HOSTILE_WORDS, _event, _ingest, _run
from tests.workers import celery_worker, until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def _decide(client, key: str, unit: str) -> dict:
    """Decide's whole answer for signup-popup: its assignment, and the version of the config it used."""
    response = client.post(
        "/api/v1/decide",
        data=orjson.dumps({"anonymous_id": unit, "experiences": ["signup-popup"]}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {key}",
    )
    assert response.status_code == 200, response.content
    return response.json()


def test_segments__cluster_from_ui__map__lookalike__targets_experience(
    page: Page, browser_log, log_in, screenshot, tmp_path, client
):
    project = demo_shop(tmp_path)
    with celery_worker(tmp_path / "worker.log", kill=True):
        keys = orjson.loads((tmp_path / "keys.json").read_bytes())
        log_in("demo", demo_services.DEMO_PASSWORD)

        page.goto("/segments/")
        expect(page.get_by_role("heading", name="No behavior segments yet")).to_be_visible()
        page.get_by_label("Number of segments").fill("8")
        page.get_by_role("button", name="Run clustering").click()
        bar = page.get_by_role("progressbar", name="Clustering progress")
        expect(bar).to_be_visible()
        screenshot("segments-progress")
        # htmx polls every second; HX-Refresh reloads the page with the finished run.
        expect(page.get_by_role("heading", name=re.compile(r"Run #\d+ · 8 segments"))).to_be_visible(timeout=120_000)
        expect(page.locator("#segment-map .main-svg").first).to_be_visible()
        expect(page.locator(".segment-card")).to_have_count(8)
        expect(page.locator("#segment-cards")).to_contain_text("Over-indexes on")
        screenshot("segments-explorer")

        page.get_by_role("link", name="Build a lookalike").click()
        trail = Segment.objects.filter(kind=SegmentKind.BEHAVIOR, name__icontains="trail").order_by("index").first()
        assert trail is not None, list(Segment.objects.values_list("name", flat=True))
        page.get_by_label("Seed segment").select_option(trail.key)
        page.get_by_role("button", name="Estimate quality").click()
        expect(page.locator("#lookalike-curve .main-svg").first).to_be_visible()
        expect(page.locator("#curve-table tbody tr")).to_have_count(11)
        screenshot("segments-lookalike")
        page.get_by_label("Name").fill("Trail lookalike")
        page.get_by_role("button", name="Save lookalike").click()
        # The worker builds it; the page polls its progress and reloads with the finished lookalike.
        expect(page.locator(".messages")).to_contain_text("Lookalike “Trail lookalike” saved", timeout=120_000)
        lookalike = Segment.objects.get(kind=SegmentKind.LOOKALIKE, name="Trail lookalike")
        assert lookalike.size > 0

        page.goto("/experiences/signup-popup/edit")
        page.get_by_role("checkbox", name=re.compile(re.escape(lookalike.key))).check()
        page.get_by_role("button", name=re.compile("Save")).click()
        expect(page.get_by_text(lookalike.key).first).to_be_visible()

        member = SegmentMembership.objects.filter(segment=lookalike).values_list("profile_id", flat=True).first()
        inside = ProfileIdentity.objects.filter(profile_id=member, kind="anon").values_list("value", flat=True).first()
        outside = (
            ProfileIdentity.objects.exclude(
                profile_id__in=SegmentMembership.objects.filter(segment=lookalike).values("profile_id")
            )
            .filter(kind="anon")
            .values_list("value", flat=True)
            .first()
        )
        # Decide serves the saved targeting once it has seen the published version (it looks every second).
        published = redis_client.worker().get(rkeys.snapshot_version(project.pk)).decode()
        until(lambda: str(_decide(client, keys["public_key"], outside)["version"]) == published, "the new config")
        answer = _decide(client, keys["public_key"], outside)["assignments"]["signup-popup"]
        assert answer["reason"] in {"targeting_miss", "holdout_global"}
        assert _decide(client, keys["public_key"], inside)["assignments"]["signup-popup"]["reason"] != "targeting_miss"
    assert browser_log.console_errors == [] and browser_log.external_requests == []


def test_segments__more_segments_asked_than_behaviors__note_map_and_cards(page: Page, browser_log, log_in, screenshot):
    project = factories.project_make(name="Odd shop")
    user = factories.member_make(project=project, role="marketer")
    now = datetime.now(UTC)
    people = {
        f"p-{n}": [
            _event("search", now - timedelta(minutes=1), query=HOSTILE_WORDS[n % 3]),
            *(_event("page_view", now - timedelta(hours=i), category=HOSTILE_WORDS[n % 3][:40]) for i in range(5)),
        ]
        for n in range(30)
    }
    _ingest(project, people)
    run = _run(project, k=40)
    log_in(user.username)
    page.goto(f"/segments/?run={run.pk}")
    expect(page.get_by_text(f"You asked for 40 segments; these people's behavior has only {run.k}")).to_be_visible()
    expect(page.locator("#segment-map .main-svg").first).to_be_visible()
    expect(page.locator(".segment-card")).to_have_count(run.k)
    names = [s.name for s in Segment.objects.filter(run=run)]
    assert run.k == 3 and not any("(2)" in name for name in names), names  # each group named by its own words
    screenshot("segments-fewer-than-asked")
    assert browser_log.console_errors == [] and browser_log.external_requests == []
