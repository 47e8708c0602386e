"""Unusual and hostile data through the whole segments path (events in over the public ingestion,
embedder, clustering, lookalikes, pages): tiny projects, identical people, one event type, unicode
and very long strings, a huge item catalogue, stale behavior, k above the number of people.
Each either works or ends with a message naming the fix; never a 500, never a run left "running"."""

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from django.db.models import F

from personalization import services as personalization_services
from personalization.models import Event, ProfileIdentity
from segments import services
from segments.embedding import BehaviorEvent, TfidfSvdEmbedder
from segments.models import ClusteringRun, EmbedderVersion, LookalikeBuild, RunStatus, Segment, SegmentMembership
from segments.services.lookalikes import Seed
from tests import factories

HOSTILE_WORDS = [
    "trail 🏃‍♀️ läufer",
    "נעלי ריצה",  # RTL: Hebrew
    "أحذية الجري",  # RTL: Arabic
    "登山靴 防水",
    "x" * 5000,
    "'; DROP TABLE segments_segment; --",
    "<script>alert(1)</script>",
    "\u202etxt.exe",  # right-to-left override
    "emoji only 👟👟👟",
]


def _ingest(project, people: dict[str, list[dict]]) -> None:
    """Every person's events over the public ingestion path, then drained into PostgreSQL."""
    events = [
        {"event_id": f"{unit}-{i}", "anonymous_id": unit, **event}
        for unit, rows in people.items()
        for i, event in enumerate(rows)
    ]
    for start in range(0, len(events), 500):
        batch = events[start : start + 500]
        result = personalization_services.events_ingest(project_id=project.pk, payload={"events": batch})
        assert not result.rejected, result.rejected[:3]
    while personalization_services.events_drain(max_entries=1000):
        pass


def _event(kind: str, ts: datetime, **properties) -> dict:
    if kind == "page_view":
        properties.setdefault("url", "/p")
    return {"type": kind, "timestamp": ts.isoformat(), "properties": properties}


def _run(project, k=None) -> ClusteringRun:
    return services.clustering_run_execute(run_id=services.clustering_run_request(project=project, k=k).pk)


@pytest.fixture
def member_client(client, project):
    client.force_login(factories.member_make(project=project, role="marketer"))
    return client


def _pages_answer(client, project) -> None:
    """The explorer, every segment's page and a lookalike preview answer without a server error."""
    assert client.get("/segments/").status_code == 200
    for segment in Segment.objects.filter(project=project):
        assert client.get(f"/segments/s/{segment.key}/").status_code == 200
    answer = client.post("/segments/lookalikes/new", {"seed_source": "ids", "seed_ids": "p-0\np-1\nnobody"})
    assert answer.status_code in (200, 400)


@pytest.mark.parametrize("people", [0, 1, 2, 5])
def test_tiny_project__run_fails_with_advice_and_lookalike_names_the_seed(project, member_client, people):
    now = datetime.now(UTC)
    _ingest(
        project,
        {
            f"p-{n}": [_event("page_view", now - timedelta(hours=i), category="yoga") for i in range(8)]
            for n in range(people)
        },
    )
    assert services.embeddings_refit(project_id=project.pk) is None
    run = _run(project)
    assert run.status == RunStatus.FAILED and "not enough behavior" in run.error and "20" in run.error
    with pytest.raises(services.SegmentsError) as err:
        services.lookalike_preview(project_id=project.pk, seed=Seed({1: 1.0}, {}))
    assert err.value.field == "seed"
    _pages_answer(member_client, project)


def test_identical_people__one_event_type__clusters_without_crashing(project, member_client):
    now = datetime.now(UTC)
    same = [_event("page_view", now - timedelta(hours=i)) for i in range(6)]
    _ingest(project, {f"p-{n}": same for n in range(40)})
    run = _run(project)
    assert run.status == RunStatus.DONE, run.error
    assert run.k == 1 and [s.size for s in Segment.objects.filter(run=run)] == [40], "one behavior, one segment"
    assert all(np.isfinite([s.conversion_rate for s in Segment.objects.filter(run=run)]))
    seed = Seed(
        {
            pid: 1.0
            for pid in SegmentMembership.objects.filter(segment__run=run).values_list("profile_id", flat=True)[:10]
        },
        {},
    )
    preview = services.lookalike_preview(project_id=project.pk, seed=seed)
    assert 30 <= preview["population"] < 40 and all(np.isfinite(p["similarity"]) for p in preview["curve"])
    lookalike = services.lookalike_build(project=project, seed=seed, size=50, name="Everyone alike")
    assert lookalike.size == 30  # asked for 50: everyone but the seed is all there is
    _pages_answer(member_client, project)


def test_k_above_the_number_of_people__capped_with_a_note(project, member_client):
    now = datetime.now(UTC)
    _ingest(
        project,
        {
            f"p-{n}": [
                _event("page_view", now - timedelta(hours=i), category=f"c{n % 3}", item=f"i{n}") for i in range(6)
            ]
            for n in range(25)
        },
    )
    run = _run(project, k=40)
    assert run.status == RunStatus.DONE, run.error
    assert run.profiles == 25 and 3 <= run.k <= 25 and Segment.objects.filter(run=run).count() == run.k
    assert all(s.size > 0 for s in Segment.objects.filter(run=run)), "no empty segment"
    page = member_client.get("/segments/").content.decode()
    assert "You asked for 40 segments" in page


def test_unicode_rtl_emoji_and_very_long_strings__cards_pages_and_lookalikes_work(project, member_client):
    now = datetime.now(UTC)
    people = {}
    for n in range(60):
        word = HOSTILE_WORDS[n % len(HOSTILE_WORDS)]
        people[f"p-{n}"] = [
            _event("search", now - timedelta(minutes=1), query=word),
            *(
                _event("page_view", now - timedelta(hours=i, minutes=5), category=word[:300], item=word[::-1][:300])
                for i in range(5)
            ),
        ]
    _ingest(project, people)
    run = _run(project, k=4)
    assert run.status == RunStatus.DONE, run.error
    for segment in Segment.objects.filter(run=run):
        assert 0 < len(segment.name) <= 120 and segment.card["over_index"]
    seed = Seed(
        {
            pid: 1.0
            for pid in SegmentMembership.objects.filter(segment__run=run).values_list("profile_id", flat=True)[:15]
        },
        {},
    )
    assert services.lookalike_build(project=project, seed=seed, size=10, name="𝔘𝔫𝔦𝔠𝔬𝔡𝔢 👟").size == 10
    _pages_answer(member_client, project)
    page = member_client.get(f"/segments/?run={run.pk}").content.decode()
    assert "<script>alert(1)</script>" not in page


def test_profiles_without_recent_behavior__left_out_not_in_any_segment(project):
    now = datetime.now(UTC)
    people = {
        f"{'old' if n >= 30 else 'p'}-{n}": [
            _event("page_view", now - timedelta(hours=i), category=f"c{n % 2}") for i in range(6)
        ]
        for n in range(40)
    }
    _ingest(project, people)
    stale_ids = ProfileIdentity.objects.filter(project=project, value__startswith="old-").values_list("profile_id")
    # Their behavior is two months old (ingestion refuses that; an import would bring it like this).
    Event.objects.filter(profile_id__in=stale_ids).update(ts=F("ts") - timedelta(days=60))
    run = _run(project)
    assert run.status == RunStatus.DONE, run.error
    assert run.profiles == 30 and stale_ids.count() == 10
    assert not SegmentMembership.objects.filter(profile_id__in=stale_ids).exists()


def test_embedder__a_hundred_thousand_distinct_items__fits_and_folds_in():
    now = datetime(2026, 6, 1, tzinfo=UTC)
    rng = np.random.default_rng(0)
    docs = []
    for person in range(4000):
        items = rng.integers(0, 100_000, size=50)
        docs.append(
            [
                BehaviorEvent(
                    "page_view", now - timedelta(hours=int(h)), {"item": f"sku-{i}", "category": f"c{person % 4}"}
                )
                for h, i in enumerate(items)
            ]
        )
    embedder = TfidfSvdEmbedder()
    vectors = embedder.fit(docs, now=now)
    assert vectors.shape == (4000, 64) and np.isfinite(vectors).all()
    assert len(embedder.vocabulary) > 50_000 - 1  # capped at MAX_FEATURES
    assert np.allclose(np.linalg.norm(embedder.transform(docs[:10], now=now), axis=1), 1, atol=1e-5)


def test_clustering__corrupt_stored_basis__fails_at_once_with_a_message_never_stuck_running(project):
    now = datetime.now(UTC)
    _ingest(
        project,
        {
            f"p-{n}": [_event("page_view", now - timedelta(hours=i), category=f"c{n % 3}") for i in range(6)]
            for n in range(30)
        },
    )
    embedder = services.embeddings_refit(project_id=project.pk)
    EmbedderVersion.objects.filter(pk=embedder.pk).update(state=b"not an embedder")
    run = _run(project, k=3)
    assert run.status == RunStatus.FAILED and run.finished_at is not None
    assert "unexpected error" in run.error and "Try again" in run.error
    assert not Segment.objects.filter(run=run).exists()


def test_lookalike__seed_is_everyone__says_so_in_preview_and_build(project, member_client):
    now = datetime.now(UTC)
    _ingest(
        project,
        {
            f"p-{n}": [_event("page_view", now - timedelta(hours=i), category=f"c{n % 3}") for i in range(6)]
            for n in range(24)
        },
    )
    services.embeddings_refit(project_id=project.pk)
    everyone = Seed(
        dict.fromkeys(ProfileIdentity.objects.filter(project=project).values_list("profile_id", flat=True), 1.0), {}
    )
    # Quality is measured against the people outside the seed: there are none, and the preview says so.
    with pytest.raises(services.SegmentsError) as err:
        services.lookalike_preview(project_id=project.pk, seed=everyone)
    assert err.value.field == "seed" and "nobody left" in err.value.message
    with pytest.raises(services.SegmentsError) as err:
        services.lookalike_build(project=project, seed=everyone, size=10, name="Nobody left")
    assert err.value.field == "seed" and "nobody left" in err.value.message
    text = "\n".join(f"p-{n}" for n in range(24))
    build = {"seed_source": "ids", "seed_ids": text, "action": "build", "size": "10", "name": "Nobody left"}
    answer = member_client.post("/segments/lookalikes/new", build)
    # The build is queued for a worker (its page shows progress); the worker finds nobody left and the page
    # says so.
    assert answer.status_code == 302
    queued = LookalikeBuild.objects.get(project=project)
    assert answer["Location"] == f"/segments/lookalikes/builds/{queued.pk}/"
    finished = services.lookalike_build_execute(build_id=queued.pk)
    assert finished.status == RunStatus.FAILED and "nobody left to find" in finished.error
    assert "nobody left to find" in member_client.get(answer["Location"]).content.decode()
    assert not Segment.objects.filter(project=project).exists()


@pytest.mark.django_db
def test_rule_editor__conditions_beyond_the_size_limit__400_naming_them_nothing_saved(client, project):
    client.force_login(factories.member_make(project=project, role="admin"))
    values = ", ".join(f"plan-{i}" for i in range(4000))
    answer = client.post("/segments/rules/new", {"key": "many", "name": "Many", "conditions": f"plan in {values}"})
    assert answer.status_code == 400
    assert "conditions:" in answer.content.decode() and "characters as JSON" in answer.content.decode()
    assert not Segment.objects.filter(key="many").exists()
