"""Metrics as objects: create, change and delete a project's metrics, and choose an experience's.

Every write of a Metric or ExperienceMetrics goes through here (the dashboard form and the REST API
alike), so validation is said once, naming the field and the fix. Each project starts with the
DEFAULT_METRICS, created the first time anything asks for its metrics.
"""

import re
from collections.abc import Sequence
from datetime import timedelta

from django.db import IntegrityError, transaction
from django.utils import timezone

from experiments.errors import LiftInputError
from experiments.models import ExperienceMetrics, Metric, MetricKind, RatioPart
from personalization import selectors as personalization_selectors
from personalization import services as personalization_services

# Today's conversion first: it is what every report showed before metrics existed, and stays the
# default primary metric.
DEFAULT_METRICS: tuple[dict, ...] = (
    {"key": "conversion", "name": "Conversion (the experience's goal)", "kind": MetricKind.CONVERSION},
    {
        "key": "revenue",
        "name": "Revenue per user (capped at the 99th percentile)",
        "kind": MetricKind.REVENUE,
        "event_types": ["purchase"],
        "window_days": 30,
        "winsorize_percentile": 0.99,
    },
    {
        "key": "return-30d",
        "name": "Came back on days 8–30",
        "kind": MetricKind.RETENTION,
        "return_from_day": 8,
        "return_to_day": 30,
    },
    {"key": "events", "name": "Events per user (30 days)", "kind": MetricKind.COUNT, "window_days": 30},
)

_EVENT_TYPE = re.compile(r"^[A-Za-z0-9_.:$-]{1,64}$")
_KEY = re.compile(r"^[-a-zA-Z0-9_]{1,64}$")
MAX_WINDOW_DAYS = 365
FIELDS = (
    "name",
    "kind",
    "event_types",
    "window_days",
    "return_from_day",
    "return_to_day",
    "winsorize_percentile",
    "numerator_event_types",
    "numerator_part",
    "denominator_event_types",
    "denominator_part",
    "higher_is_better",
)


def _slot_free(project) -> int:
    """The smallest values slot no metric of the project holds (a deleted metric's slot is reused: its
    old values are overwritten by the new metric's backfill before any report reads them)."""
    taken = set(Metric.objects.filter(project=project, values_slot__isnull=False).values_list("values_slot", flat=True))
    return next(slot for slot in range(len(taken) + 1) if slot not in taken)


def _metric_make(*, project, queue: bool = True, **fields) -> Metric:
    """A new metric with a values slot, its values computed by a backfill job once this commits
    (`queue=False`: the caller queues one job for several)."""
    metric = Metric.objects.create(project=project, values_slot=_slot_free(project), **fields)
    if queue:
        metric_values_queue(metric=metric)
    return metric


def metric_values_queue(*, metric: Metric, also: Sequence[Metric] = ()) -> None:
    """Compute the metric's kept values over every exposure, in a Celery job started once the caller's
    transaction commits (the report computes it from the events until the job is done). `also`: more
    metrics of the same project, computed in the same pass over the exposures."""
    # Here, not at the top: tasks imports this module (a cycle at import time).
    from experiments.tasks import metric_values_fill_task

    ids = [metric.pk, *(m.pk for m in also)]
    now = timezone.now()
    Metric.objects.filter(pk__in=ids).update(values_progress=0, values_progress_at=now)
    for queued in (metric, *also):
        queued.values_progress, queued.values_progress_at = 0, now
    transaction.on_commit(lambda: metric_values_fill_task.delay(*ids))


# A backfill moves its progress at least once per chunk (seconds each): one that has not for this long
# was lost, e.g. with a broker that restarted without its queue, and is queued again.
VALUES_STALLED_AFTER = timedelta(minutes=10)


def metric_values_state(metric: Metric, *, now=None) -> str:
    """`ready` (the kept values are complete for this definition), `computing` (a backfill moves),
    `stalled` (one stopped moving), `missing` (none queued: a metric made before values were kept) or
    `unkept` (no values slot: reports always compute it from the events)."""
    if metric.values_slot is None:
        return "unkept"
    if metric.values_for == metric.values_definition():
        return "ready"
    if metric.values_progress is None:
        return "missing"
    moved = metric.values_progress_at
    if moved is None or moved < (now or timezone.now()) - VALUES_STALLED_AFTER:
        return "stalled"
    return "computing"


def metric_values_resume(*, metrics: Sequence[Metric]) -> int:
    """Queue one backfill for those of these metrics (of one project) whose values are neither ready nor
    being computed; a report computes them from the events meanwhile. Returns how many were queued."""
    now = timezone.now()
    due = [m for m in metrics if metric_values_state(m, now=now) in ("missing", "stalled")]
    if due:
        metric_values_queue(metric=due[0], also=due[1:])
    return len(due)


def metric_defaults_ensure(*, project) -> None:
    """Create the default metrics this project lacks (idempotent: a default the marketer deleted
    under its key comes back, one they changed is left as they made it)."""
    have = set(Metric.objects.filter(project=project).values_list("key", flat=True))
    made = []
    for definition in DEFAULT_METRICS:
        if definition["key"] not in have:
            try:
                with transaction.atomic():
                    made.append(_metric_make(project=project, queue=False, **definition))
            except IntegrityError:
                pass  # created by a concurrent request (its key or its slot): what we wanted, or done next time
    if made:  # one backfill for them all: a pass over a big project's exposures per metric took minutes
        metric_values_queue(metric=made[0], also=made[1:])


def _event_types(field: str, value) -> list[str]:
    if value in (None, ""):
        return []
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, list) or not all(isinstance(v, str) and _EVENT_TYPE.match(v) for v in value):
        raise LiftInputError(
            field, 'give event types as a list of names (letters, digits, _ . : $ -), e.g. ["purchase"]'
        )
    return sorted(set(value))


def _day(field: str, value, *, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str) or not str(value).isdigit():
        raise LiftInputError(field, f"give a whole number of days between {low} and {MAX_WINDOW_DAYS}")
    if not low <= int(value) <= MAX_WINDOW_DAYS:
        raise LiftInputError(field, f"give a whole number of days between {low} and {MAX_WINDOW_DAYS}")
    return int(value)


def metric_validate(*, data: dict, current: Metric | None = None) -> dict:
    """The clean field values of a metric from `data` (over `current`'s, for a partial change)."""
    unknown = sorted(set(data) - set(FIELDS) - {"key"})
    if unknown:
        raise LiftInputError(unknown[0], f"is not a metric field; use {', '.join(FIELDS)}")
    merged = {**(current.spec() if current else {}), **data}
    clean: dict = {}
    name = merged.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > 120:
        raise LiftInputError("name", 'give the metric a name of 1 to 120 characters, e.g. "Refunds per user"')
    clean["name"] = name.strip()
    if merged.get("kind") not in MetricKind.values:
        raise LiftInputError("kind", f"use one of {', '.join(MetricKind.values)}")
    clean["kind"] = kind = merged["kind"]
    clean["event_types"] = _event_types("event_types", merged.get("event_types"))
    clean["window_days"] = _day("window_days", merged.get("window_days", 7), low=1)
    clean["return_from_day"] = _day("return_from_day", merged.get("return_from_day", 8), low=1)
    clean["return_to_day"] = _day("return_to_day", merged.get("return_to_day", 30), low=1)
    if kind == MetricKind.RETENTION and clean["return_from_day"] > clean["return_to_day"]:
        raise LiftInputError("return_to_day", "must not be before return_from_day (e.g. days 8 to 30)")
    percentile = merged.get("winsorize_percentile")
    if percentile in ("", None):
        clean["winsorize_percentile"] = None
    else:
        try:
            percentile = float(percentile)
        except (TypeError, ValueError):
            percentile = -1.0
        if isinstance(merged.get("winsorize_percentile"), bool) or not 0.5 <= percentile < 1:
            raise LiftInputError(
                "winsorize_percentile", "give a share between 0.5 and 1 (0.99 caps the top 1 %), or null for no cap"
            )
        if kind not in (MetricKind.REVENUE, MetricKind.COUNT, MetricKind.RATIO):
            raise LiftInputError(
                "winsorize_percentile", "only revenue, count and ratio metrics are capped; leave it empty"
            )
        clean["winsorize_percentile"] = percentile
    for part in ("numerator", "denominator"):
        clean[f"{part}_event_types"] = _event_types(f"{part}_event_types", merged.get(f"{part}_event_types"))
        value = merged.get(f"{part}_part", RatioPart.SUM if part == "numerator" else RatioPart.SESSIONS)
        if value not in RatioPart.values:
            raise LiftInputError(f"{part}_part", f"use one of {', '.join(RatioPart.values)}")
        clean[f"{part}_part"] = value
    if (
        kind == MetricKind.RATIO
        and clean["numerator_part"] != RatioPart.SESSIONS
        and not clean["numerator_event_types"]
    ):
        raise LiftInputError("numerator_event_types", "name the events whose count or value is the top of the ratio")
    higher = merged.get("higher_is_better", kind != MetricKind.TIME_TO_CONVERSION)
    if not isinstance(higher, bool):
        raise LiftInputError("higher_is_better", "use true (more is better) or false (less is better)")
    clean["higher_is_better"] = higher
    return clean


def metric_create(*, project, key, data: dict) -> Metric:
    if not isinstance(key, str) or not _KEY.match(key):
        raise LiftInputError("key", "give a key of letters, digits, - and _ (up to 64), e.g. refunds")
    clean = metric_validate(data=data)
    if Metric.objects.filter(project=project, key=key).exists():
        raise LiftInputError("key", f"this project already has a metric {key!r}; pick another key or change that one")
    return _metric_make(project=project, key=key, **clean)


def metric_update(*, metric: Metric, data: dict) -> Metric:
    if "key" in data and data["key"] != metric.key:
        raise LiftInputError("key", "a metric's key cannot change (reports name it); create a new metric instead")
    clean = metric_validate(data={k: v for k, v in data.items() if k != "key"}, current=metric)
    before = metric.values_definition()
    for name, value in clean.items():
        setattr(metric, name, value)
    metric.save(update_fields=list(clean))
    if metric.values_definition() != before:
        metric_values_queue(metric=metric)
    return metric


# Exposures per backfill transaction: their people are locked meanwhile (the drain waits on them).
FILL_CHUNK = 5_000


def metric_values_fill(*, metric_ids: list[int], chunk: int = FILL_CHUNK) -> str:
    """The backfill job: the metrics' kept values over every exposure of their project (one pass for
    several metrics of one project), a chunk per transaction, the progress on the metrics; then each
    metric's values are marked complete for the definition the job started with, unless it changed
    meanwhile (that edit queued another job)."""
    metrics = [m for m in Metric.objects.filter(pk__in=metric_ids) if m.values_slot is not None]
    if not metrics:
        return "gone"
    project_id = metrics[0].project_id
    if any(m.project_id != project_id for m in metrics):
        raise ValueError("metric_ids: give metrics of one project")
    started = {m.pk: (m.values_definition(), m.values_slot) for m in metrics}
    specs = [m.spec() for m in metrics]
    total = max(personalization_selectors.exposures_count(project_id=project_id), 1)
    after, done = 0, 0
    while True:
        with transaction.atomic():
            after, count = personalization_services.exposure_metric_values_fill(
                project_id=project_id, metrics=specs, after_id=after, limit=chunk
            )
        if not count:
            break
        done += count
        Metric.objects.filter(pk__in=list(started)).update(
            values_progress=min(99, done * 100 // total), values_progress_at=timezone.now()
        )
    with transaction.atomic():
        for current in Metric.objects.select_for_update().filter(pk__in=list(started)):
            if (current.values_definition(), current.values_slot) != started[current.pk]:
                continue  # changed meanwhile: the job that edit queued computes it
            current.values_for, current.values_progress, current.values_progress_at = started[current.pk][0], None, None
            current.save(update_fields=["values_for", "values_progress", "values_progress_at"])
    return "done"


def metric_value_specs(*, project_id: int) -> list[dict]:
    """The metrics whose values the drain keeps (hooks.metric_definitions): every one with a slot."""
    return [m.spec() for m in Metric.objects.filter(project_id=project_id, values_slot__isnull=False)]


def metric_delete(*, metric: Metric) -> None:
    metric.delete()


def experience_metrics_set(
    *, project, experience_key: str, primary: str, secondary: list[str], guardrails: list[str]
) -> ExperienceMetrics:
    """Choose an experience's primary, secondary and guardrail metrics, by metric key."""
    metrics = {m.key: m for m in Metric.objects.filter(project=project)}
    for field, keys in (
        ("primary", [primary] if primary else []),
        ("secondary", secondary),
        ("guardrails", guardrails),
    ):
        unknown = [k for k in keys if k not in metrics]
        if unknown:
            raise LiftInputError(field, f"this project has no metric {unknown[0]!r}; pick one of {', '.join(metrics)}")
    if primary in guardrails:
        raise LiftInputError("guardrails", f"{primary} is the primary metric; a guardrail watches another one")
    with transaction.atomic():
        chosen, _ = ExperienceMetrics.objects.update_or_create(
            project=project, experience_key=experience_key, defaults={"primary": metrics.get(primary)}
        )
        chosen.secondary.set([metrics[k] for k in secondary if k != primary])
        chosen.guardrails.set([metrics[k] for k in guardrails])
    return chosen
