"""Metric values kept on the exposures (personalization/experiences/metric_values.py): a report that
reads them gives the figures the scan of the events gives (the scan stays the reference), whether
the values came from the backfill job or from the drain as events and exposures arrived."""

from datetime import timedelta

import numpy as np
import pytest
from django.utils import timezone

from experiments import selectors
from experiments.breakdown import Breakdown
from experiments.metric_services import (
    metric_create,
    metric_defaults_ensure,
    metric_update,
    metric_values_fill,
    metric_values_state,
)
from experiments.models import Metric
from personalization.models import Exposure, Profile
from tests.experiments.test_metric_report import DAY, NOW, _world
from tests.factories import external_experience_make
from tests.personalization.test_drain import drain_all, event, post

# Every kind and every part: typed and goal conversions, capped revenue, counts, retention, time to
# conversion, and ratios of sums, counts and distinct sessions.
EXTRA_METRICS = {
    "revenue-per-session": {
        "name": "Revenue per session",
        "kind": "ratio",
        "numerator_event_types": ["purchase"],
        "numerator_part": "sum",
        "denominator_part": "sessions",
        "winsorize_percentile": 0.98,
    },
    "buys-per-page": {
        "name": "Purchases per page",
        "kind": "ratio",
        "numerator_event_types": ["purchase"],
        "numerator_part": "count",
        "denominator_event_types": ["page"],
        "denominator_part": "count",
    },
    "refund": {"name": "Refunded", "kind": "conversion", "event_types": ["refund"]},
    "ttc": {"name": "Time to buy", "kind": "time_to_conversion", "window_days": 10},
    "pages": {"name": "Pages", "kind": "count", "event_types": ["page"], "window_days": 5},
    "back-early": {"name": "Back in days 1-3", "kind": "retention", "return_from_day": 1, "return_to_day": 3},
}


def _metrics(project) -> list[Metric]:
    metric_defaults_ensure(project=project)
    for key, data in EXTRA_METRICS.items():
        metric_create(project=project, key=key, data=data)
    return list(Metric.objects.filter(project=project).order_by("pk"))


def _cells(project, experience_key: str, specs: list[dict]) -> dict:
    population = selectors.lift_population(
        project_id=project.pk, experience_key=experience_key, comparison="holdout", start=NOW - 90 * DAY, end=NOW + DAY
    )
    cells = selectors.lift_metric_cells(
        population=population, breakdown=Breakdown.parse("exposure:segment"), specs=specs, as_of=NOW
    )
    return {cell[:3]: cell[3] for cell in cells}


def _assert_kept_equal_the_scan(project, experience_key: str, *, unmeasured: tuple[str, ...] = ()) -> None:
    """`unmeasured`: metrics nobody is eligible for yet (a retention window not closed for anyone)."""
    specs = [m.spec() for m in Metric.objects.filter(project=project).order_by("pk")]
    assert all(spec["values_ready"] for spec in specs)
    scanned = [{**spec, "values_ready": False} for spec in specs]
    population = selectors.lift_population(
        project_id=project.pk, experience_key=experience_key, comparison="holdout", start=NOW - 90 * DAY, end=NOW + DAY
    )
    sql, _, _ = selectors.lift_cells_sql(
        population=population, breakdown=Breakdown.parse("exposure:segment"), specs=specs
    )
    assert "personalization_event" not in sql  # every metric from the exposures: no scan of the events
    kept, reference = _cells(project, experience_key, specs), _cells(project, experience_key, scanned)
    assert kept.keys() == reference.keys() and kept
    for key, moments in reference.items():
        for spec, mine, theirs in zip(specs, kept[key], moments, strict=True):
            assert mine.n == theirs.n, spec["key"]
            np.testing.assert_allclose(mine.sums, theirs.sums, rtol=1e-9, atol=1e-9, err_msg=spec["key"])
            np.testing.assert_allclose(mine.products, theirs.products, rtol=1e-9, atol=1e-9, err_msg=spec["key"])
    for index, spec in enumerate(specs):  # no metric is all zeros: the comparison could fail
        measured = any(moments[index].sums[0] for moments in reference.values())
        assert measured is (spec["key"] not in unmeasured), spec["key"]
    # Written out whole, without NULLs (a subscript of an array holding NULLs walks the positions before
    # it); "no first event" is stored as -1, and read back as none (the equality above).
    written = Exposure.objects.filter(project=project, metric_values__isnull=False).values_list(
        "metric_values", flat=True
    )
    assert written and all(None not in values for values in written)


@pytest.mark.django_db
def test_metric_values__backfilled_for_every_kind__report_equals_the_scan_and_an_edit_recomputes(project):
    _world(project, n=90, seed=5)
    metrics = _metrics(project)
    assert sorted(m.values_slot for m in metrics) == list(range(len(metrics)))
    assert not any(m.spec()["values_ready"] for m in metrics)  # the report scans until the backfill is done
    for metric in metrics:
        assert metric_values_fill(metric_ids=[metric.pk], chunk=40) == "done"  # three chunks
    assert not Metric.objects.filter(project=project, values_progress__isnull=False).exists()
    _assert_kept_equal_the_scan(project, "hero")
    stored = Exposure.objects.filter(project=project).values_list("metric_values", flat=True)
    assert any(-1.0 in values for values in stored), "someone with no purchase in the window: time to buy kept as -1"

    # An edit of what the values depend on: the report scans again until the job has recomputed them.
    pages = Metric.objects.get(project=project, key="pages")
    metric_update(metric=pages, data={"window_days": 20, "event_types": ["page", "refund"]})
    pages.refresh_from_db()
    assert (pages.spec()["values_ready"], pages.values_progress) == (False, 0)
    metric_update(metric=Metric.objects.get(project=project, key="revenue"), data={"name": "Spend"})
    assert Metric.objects.get(project=project, key="revenue").spec()["values_ready"]  # a name is no definition
    assert metric_values_fill(metric_ids=[pages.pk]) == "done"
    _assert_kept_equal_the_scan(project, "hero")


@pytest.mark.django_db
def test_metric_values__a_slot_freed_by_a_deleted_metric__reused_by_the_next(project):
    metrics = _metrics(project)
    freed = metrics[2].values_slot
    metrics[2].delete()
    assert metric_create(project=project, key="again", data={"name": "Again", "kind": "count"}).values_slot == freed


@pytest.mark.django_db
def test_metric_values__events_and_exposures_through_the_drain__kept_equal_to_the_scan(client, project, public_key):
    external_experience_make(project=project, key="spring", attribution_hours=48)
    # No exposures yet: done at once, the drain keeps them from here.
    assert metric_values_fill(metric_ids=[m.pk for m in _metrics(project)]) == "done"
    hours = {"page": 0, "purchase": 0, "refund": 0}

    def batch(visitor: int, start: float, kinds: str, session: str) -> list[dict]:
        rows = []
        for k, kind in enumerate(kinds):
            hours[kind] += 1
            rows.append(
                event(
                    f"{kind}-{visitor}-{hours[kind]}",
                    kind,
                    f"v{visitor}",
                    start - 7 * k,
                    session_id=session,
                    **({"value": 10.5 + visitor + k} if kind == "purchase" else {}),
                )
            )
        return rows

    def exposure(visitor: int, hours_ago: float) -> dict:
        held = {"holdout": True} if visitor % 3 == 0 else {"variant": "b"}
        return event(f"x-{visitor}", "exposure", f"v{visitor}", hours_ago, properties={"experience": "spring", **held})

    people = range(7)
    # History before the exposures, then the exposures (their backfill reads the stored events) ...
    post(
        client, public_key, [e for v in people for e in batch(v, 24 * (29 - v), ["page", "purchase", "page"], f"a{v}")]
    )
    assert drain_all() == 3 * len(people)
    post(client, public_key, [exposure(v, 24 * (20 - v)) for v in people])
    # ... then events after them across several batches: a second event of a session already counted,
    # a new session, a first purchase earlier than one already stored, a batch drained again.
    later = [e for v in people for e in batch(v, 24 * (19 - v), ["page", "purchase"], f"b{v}")]
    post(client, public_key, later)
    assert drain_all() == len(people) + len(later)
    again = [e for v in people for e in batch(v, 24 * (19.5 - v), ["purchase", "refund", "page"], f"b{v}")]
    post(client, public_key, again + later[:5])  # the repeats are stored once, counted once
    assert drain_all() == len(again) + 5
    post(client, public_key, [e for v in people for e in batch(v, 24 * (17 - v), ["page"], "")])  # no session
    drain_all()
    assert Exposure.objects.filter(project=project, metric_values__isnull=False).count() == len(people)
    # Exposed 9 to 20 days ago: nobody's days 8-30 have passed yet.
    _assert_kept_equal_the_scan(project, "spring", unmeasured=("return-30d",))


@pytest.mark.django_db
def test_metric_values__drain_without_metrics_with_slots__exposures_keep_none(client, project, public_key):
    external_experience_make(project=project, key="spring")
    post(client, public_key, [event("x", "exposure", "v", 5, properties={"experience": "spring", "variant": "b"})])
    post(client, public_key, [event("p", "purchase", "v", 4, value=3.0)])
    assert drain_all() == 2
    exposed = Exposure.objects.get(project=project)
    assert (exposed.metric_values, exposed.converted) == (None, True)


def test_metric_values__window_reach__covers_every_kind():
    from personalization.experiences.metric_cells import _reach_days

    assert _reach_days({"kind": "retention", "return_to_day": 30, "window_days": 7}) == 31
    assert _reach_days({"kind": "count", "window_days": 5}) == 5
    assert timedelta(days=_reach_days({"kind": "ttc", "window_days": 10})) == 10 * DAY


@pytest.mark.django_db
def test_metric_values__anonymous_profile_merged_into_a_user__measured_over_both_and_erased(
    client, project, public_key
):
    from personalization.people.personal_data import Subject, locations

    external_experience_make(project=project, key="spring")
    assert metric_values_fill(metric_ids=[m.pk for m in _metrics(project)]) == "done"
    user = {"user_id": "u-1", "anonymous_id": None}
    # The user is exposed on their laptop; their phone (anonymous) buys twice after that.
    post(
        client,
        public_key,
        [event("x", "exposure", None, 24 * 11, properties={"experience": "spring", "variant": "b"}, **user)],
    )
    post(client, public_key, [event("pv", "page", None, 24 * 9, session_id="l", **user)])
    phone = [event(f"b{k}", "purchase", "phone", 24 * (9 - k), value=20.0 + k, session_id=f"p{k}") for k in range(2)]
    post(client, public_key, phone)
    assert drain_all() == 4
    post(client, public_key, [event("id", "identify", "phone", 24 * 5, user_id="u-1")])
    drain_all()
    (exposure,) = Exposure.objects.filter(project=project)
    assert Profile.objects.filter(project=project).count() == 1  # merged
    _assert_kept_equal_the_scan(project, "spring", unmeasured=("return-30d", "conversion", "refund"))
    revenue = Metric.objects.get(project=project, key="revenue").values_slot
    assert exposure.metric_values[revenue * 4] == 41.0  # the phone's purchases count for the user

    location = next(loc for loc in locations() if loc.name == "exposure_metric_values")
    subject = Subject(project_id=project.pk, profile_ids=(exposure.profile_id,), unit_ids=("u-1", "phone"))
    (exported,) = list(location.export(subject))
    assert exported["metric_values"] == exposure.metric_values
    assert location.erase(subject, lambda n: None) == 1 and location.verify(subject) == 0


@pytest.mark.django_db
def test_metric_values__history_loaded_in_bulk__kept_as_the_drain_would(project):
    from personalization import services
    from personalization.services import HistoryEvent, HistoryExposure, HistoryProfile

    assert metric_values_fill(metric_ids=[m.pk for m in _metrics(project)]) == "done"
    people = range(20)
    events = [
        HistoryEvent(
            profile=v,
            event_id=f"h{v}-{k}",
            type=("purchase", "page", "refund")[(v + k) % 3],
            ts=NOW - (40 - v - 3 * k) * DAY,
            session_id=f"s{v}-{k % 2}",
            value=12.5 + k if (v + k) % 3 == 0 else None,
        )
        for v in people
        for k in range(6)
    ]
    exposures = [
        HistoryExposure(
            profile=v,
            experience_key="hero",
            variant_key="" if v % 2 else "b",
            arm="holdout_experience" if v % 2 else "variant",
            exposed_at=NOW - (38 - v) * DAY,
            converted=v % 3 == 0,
        )
        for v in people
    ]
    services.history_bulk_load(
        project_id=project.pk,
        profiles=[HistoryProfile(anonymous_id=f"h{v}") for v in people],
        events=events,
        exposures=exposures,
    )
    assert Exposure.objects.filter(project=project, metric_values__isnull=False).count() == len(people)
    _assert_kept_equal_the_scan(project, "hero")


@pytest.mark.django_db
def test_metric_defaults__made_together__one_backfill_pass_queued(project, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as queued:
        metric_defaults_ensure(project=project)
    defaults = list(Metric.objects.filter(project=project))
    assert len(defaults) >= 3 and len(queued) == 1  # one job, not one pass over the exposures per metric
    assert {m.values_progress for m in defaults} == {0}
    assert metric_values_fill(metric_ids=[m.pk for m in defaults]) == "done"
    assert all(m.spec()["values_ready"] for m in Metric.objects.filter(project=project))


@pytest.mark.django_db
def test_metric_values__backfill_lost__queued_again_when_seen__the_page_shows_its_progress(
    client, project, marketer, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as queued:
        metric_defaults_ensure(project=project)
    defaults = list(Metric.objects.filter(project=project))
    assert len(queued) == 1
    # The job's message was lost (a broker restarted without its queue): its progress stopped moving.
    Metric.objects.filter(project=project).update(values_progress_at=timezone.now() - timedelta(minutes=11))
    assert {metric_values_state(m) for m in Metric.objects.filter(project=project)} == {"stalled"}

    with django_capture_on_commit_callbacks() as requeued:
        page = client.get("/lift/metrics/", HTTP_HX_REQUEST="true").content.decode()
    assert len(requeued) == 1, "one job again, for every stalled metric"
    assert page.count("computing 0 %") == len(defaults) and 'hx-trigger="every 2s"' in page
    assert "<html" not in page  # htmx polls the table alone
    with django_capture_on_commit_callbacks() as again:
        client.get("/lift/metrics/")
    assert again == [], "a job that moves is left alone"

    metric_values_fill(metric_ids=[m.pk for m in defaults])
    page = client.get("/lift/metrics/").content.decode()
    assert page.count('<td class="values-ready">ready</td>') == len(defaults) and "every 2s" not in page
