"""Predictive scores: retrain on a schedule or on demand, judge each model before promoting it, score
everyone with the models in use, and hand the scores to decide.

Design decisions:
- Time split. Features are computed as of a cutoff one horizon before the latest behavior, labels
  from the horizon after it. Judged by cross-fitting over people (5 folds by a fixed hash of the
  profile id): every person's prediction comes from a model fitted without them, so the judge sees
  all the outcomes, not a 30 % slice (on the 3,000-person demo a 30 % holdout held 15 buyers, too
  few to tell a model from chance); the figures are taken within folds, as pooled across folds they
  lean below the truth (segments/scoring_eval.py). The promoted model is then fitted on everyone.
  The model in use is compared on the same people; it was fitted at an earlier cutoff, possibly on
  them, which can only favour it: a new model must beat that to replace it.
  When the history is shorter than two horizons, the horizon is shortened to half of it and the page
  says so (a 14-day demo cannot label "no return in 30 days").
- A refused model changes nothing: everyone is still scored afresh, with the model in use.
- Events are read through personalization's selectors, which leave out anyone who may not be
  profiled; scores of people who opted out meanwhile are dropped at the write, under the same check
  the segment publish makes.
"""

import logging
import math
import time
from collections.abc import Callable, Iterable
from datetime import timedelta

import numpy as np
from django.db import connection, transaction
from django.utils import timezone

from personalization import selectors as people
from personalization import services as personalization_services
from personalization.score_fields import SCORES, scores_pack
from segments import scoring, scoring_eval
from segments.models import ProfileScore, RunStatus, ScoreRun
from segments.services.clustering import SegmentsError

log = logging.getLogger(__name__)

DEFAULT_HORIZONS = {"likely_to_buy": 7, "expected_revenue": 90, "lapse_risk": 30}
MAX_HORIZON_DAYS = 365
MIN_PEOPLE = 50  # people with behavior before the cutoff, below which no model is fitted


def score_run_request(
    *,
    project,
    goal: str = "purchase",
    horizons: dict[str, int] | None = None,
    placebo: bool = False,
    by=None,
) -> ScoreRun:
    """Queue a retrain. `horizons` maps a score to the days it looks ahead (defaults for the rest);
    `placebo` trains on shuffled labels, which the gate must refuse (a check anyone can run)."""
    goal = (goal or "").strip()
    if not goal or len(goal) > 64:
        raise SegmentsError("goal", "name the event type that counts as converting, e.g. purchase (1 to 64 characters)")
    chosen = dict(DEFAULT_HORIZONS)
    for name, days in (horizons or {}).items():
        if name not in SCORES:
            raise SegmentsError("horizons", f"{name} is not a score; use {', '.join(SCORES)}")
        if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_HORIZON_DAYS:
            raise SegmentsError(name, f"give a whole number of days from 1 to {MAX_HORIZON_DAYS}")
        chosen[name] = days
    run = ScoreRun.objects.create(
        project=project, goal=goal, horizons=chosen, placebo=placebo, created_by=by, heartbeat_at=timezone.now()
    )
    from segments.tasks import score_run_task  # circular: tasks imports segments.services

    transaction.on_commit(lambda: score_run_task.delay(run.pk))
    return run


def score_models_in_use(*, project_id: int) -> dict[str, tuple[int, dict]]:
    """score -> (run id, model) of the latest done, non-placebo run that promoted it."""
    found: dict[str, tuple[int, dict]] = {}
    runs = ScoreRun.objects.filter(project_id=project_id, status=RunStatus.DONE, placebo=False)
    for run_id, results in runs.order_by("-created_at").values_list("pk", "results").iterator():
        for name, result in (results or {}).items():
            if name not in found and result.get("promoted") and result.get("model"):
                found[name] = (run_id, result["model"])
        if len(found) == len(SCORES):
            break
    return found


def _json_safe(value):
    """NaN and infinities as None: PostgreSQL's jsonb refuses them."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.floating | np.integer):
        return _json_safe(value.item())
    return value


def _train_one(
    name: str, table: scoring.EventTable, *, run: ScoreRun, clock: float, in_use: tuple[int, dict] | None
) -> dict:
    """Fit, judge and decide on one score (see the module docstring)."""
    span_days = (clock - float(table.ts.min())) / scoring.DAY if len(table.ts) else 0.0
    wanted = run.horizons.get(name, DEFAULT_HORIZONS[name])
    horizon = min(wanted, math.floor(span_days / 2))
    result: dict = {"horizon_days": horizon, "promoted": False, "note": ""}
    if horizon < 1:
        result["reason"] = f"kept out: the history spans {span_days:.1f} days; at least 2 are needed to learn from"
        return result
    if horizon < wanted:
        result["note"] = (
            f"looks {horizon} days ahead, not {wanted}: the history spans {span_days:.0f} days, "
            "and a model needs a past to learn from and a future to check against"
        )
    cutoff = clock - horizon * scoring.DAY
    spec = scoring.feature_spec(table, goal=run.goal, before=cutoff)
    X, present = scoring.features_at(table, cutoff=cutoff, spec=spec)
    y = scoring.labels_after(table, cutoff=cutoff, horizon_days=horizon, goal=run.goal)[name]
    if present.sum() < MIN_PEOPLE:
        result["reason"] = f"kept out: only {int(present.sum())} people had behavior before the cutoff"
        return result
    X, y, ids = X[present], y[present], table.profiles[present]
    y_fit = np.random.default_rng(run.pk).permutation(y) if run.placebo else y
    amount = name in scoring.REGRESSORS
    if not amount and len(np.unique(y_fit)) < 2:
        result["reason"] = "kept out: everyone had the same outcome in the window"
        return result
    folds = scoring.fold_of(ids)
    predicted = scoring.out_of_fold(name, X, y_fit, folds, spec=spec, horizon_days=horizon)
    judged = ~np.isnan(predicted)
    evaluate = scoring_eval.evaluate_amount if amount else scoring_eval.evaluate_probability
    # Judged within folds: pooled across them, the figures lean below the truth (scoring_eval docstring).
    figures = evaluate(y[judged], predicted[judged], seed=run.pk, groups=folds[judged])
    comparison = None
    if in_use is not None:
        current = in_use[1]
        current_X, _ = scoring.features_at(table, cutoff=cutoff, spec=current["spec"])
        current_p = scoring.model_predict(current, current_X[present])
        comparison = scoring_eval.paired_difference(
            y[judged], predicted[judged], current_p[judged], amount=amount, seed=run.pk, groups=folds[judged]
        )
        comparison["run"] = in_use[0]
    model = scoring.model_fit(name, X, y_fit, spec=spec, horizon_days=horizon)
    promoted, reason = scoring_eval.promotion_verdict(name, figures, comparison, amount=amount)
    if run.placebo and promoted:
        # A placebo is a check of the gate: even if it slipped through, it never serves.
        promoted, reason = False, "placebo passed the gate by chance: not used; " + reason
    return result | {
        "figures": figures,
        "comparison": comparison,
        "promoted": promoted,
        "reason": reason,
        "model": model,
        "drivers": scoring.model_drivers(model),
        "cutoff": cutoff,
    }


def _progress(run: ScoreRun, pct: int, label: str) -> None:
    run.progress, run.progress_label, run.heartbeat_at = pct, label[:120], timezone.now()
    run.save(update_fields=["progress", "progress_label", "heartbeat_at"])


def score_run_execute(*, run_id: int) -> ScoreRun | None:
    """Run a queued retrain to the end. Quiet when the run is gone or already finished (a task
    delivered twice)."""
    run = ScoreRun.objects.filter(pk=run_id).first()
    if run is None or run.status in (RunStatus.DONE, RunStatus.FAILED):
        return run
    started = time.monotonic()
    run.status = RunStatus.RUNNING
    run.save(update_fields=["status"])
    try:
        _execute(run, lambda pct, label: _progress(run, pct, label))
    except Exception as exc:
        log.exception("score run %s failed", run.pk)
        run.status, run.error, run.finished_at = RunStatus.FAILED, str(exc)[:2000], timezone.now()
        run.save(update_fields=["status", "error", "finished_at"])
        raise
    run.status, run.progress, run.progress_label = RunStatus.DONE, 100, "Done"
    run.seconds, run.finished_at = time.monotonic() - started, timezone.now()
    run.save(update_fields=["status", "progress", "progress_label", "seconds", "finished_at", "results", "scored"])
    return run


def _execute(run: ScoreRun, progress: Callable[[int, str], None]) -> None:
    project_id = run.project_id
    clock_at = people.behavior_clock(project_id=project_id)
    run.clock = clock_at
    run.save(update_fields=["clock"])
    clock = clock_at.timestamp()
    longest = max(run.horizons.values())
    since = clock_at - timedelta(days=longest + scoring.LOOKBACK_DAYS)
    progress(5, "Reading behavior")
    table = scoring.event_table(people.profiles_behavior(project_id=project_id, since=since))
    in_use = score_models_in_use(project_id=project_id)
    results = {}
    for i, name in enumerate(SCORES):
        progress(20 + 20 * i, f"Training and judging {name} on {len(table.profiles):,} people")
        results[name] = _train_one(name, table, run=run, clock=clock, in_use=in_use.get(name))
        if results[name]["promoted"]:
            in_use[name] = (run.pk, results[name]["model"])
    run.results = _json_safe(results)
    progress(85, "Scoring everyone with the models in use")
    run.scored = _score_everyone(run, table, clock=clock, models={k: m for k, (_, m) in in_use.items()})


def _score_everyone(run: ScoreRun, table: scoring.EventTable, *, clock: float, models: dict[str, dict]) -> int:
    """Score every person with behavior in the lookback, replace the project's scores, publish them."""
    columns: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    scored = np.zeros(len(table.profiles), dtype=bool)
    for name, model in models.items():
        X, present = scoring.features_at(table, cutoff=clock, spec=model["spec"])
        values = np.full(len(table.profiles), np.nan)
        values[present] = scoring.model_predict(model, X[present])
        tops = np.full(len(table.profiles), np.nan)
        tops[present] = scoring.top_percent(values[present])
        columns[name] = (values, tops)
        scored |= present
    ids = table.profiles[scored].tolist()
    blocked = people.profiles_not_profilable(project_id=run.project_id, profile_ids=ids)
    rows, fields = [], {}
    for index in np.flatnonzero(scored).tolist():
        profile_id = int(table.profiles[index])
        if profile_id in blocked:
            continue
        pairs = {
            name: (float(v[index]), float(t[index])) for name, (v, t) in columns.items() if not math.isnan(v[index])
        }
        rows.append((profile_id, pairs))
        fields[profile_id] = scores_pack(pairs)
    now = timezone.now()
    with transaction.atomic():
        previous = set(
            ProfileScore.objects.filter(project_id=run.project_id).values_list("profile_id", flat=True).iterator()
        )
        ProfileScore.objects.filter(project_id=run.project_id).delete()
        _scores_copy(run, rows, now)
    for gone in previous - set(fields):
        fields[gone] = None  # no longer scored (no behavior in the lookback): decide forgets the old score
    personalization_services.unit_scores_publish(project_id=run.project_id, scores=fields)
    return len(rows)


def _scores_copy(run: ScoreRun, rows: list[tuple[int, dict]], now) -> None:
    names = list(SCORES)
    table = ProfileScore._meta.db_table
    columns = ", ".join(f"{n}, {n}_top" for n in names)
    with (
        connection.cursor() as cursor,
        cursor.cursor.copy(f"COPY {table} (project_id, profile_id, run_id, scored_at, {columns}) FROM STDIN") as copy,
    ):
        for profile_id, pairs in rows:
            values = []
            for name in names:
                values += list(pairs.get(name, (None, None)))
            copy.write_row((run.project_id, profile_id, run.pk, now, *values))


def scores_delete(*, project_id: int, profile_ids: Iterable[int]) -> int:
    """Forget these profiles' scores, here and in decide (opt-out, objection)."""
    ids = sorted(set(profile_ids))
    if not ids:
        return 0
    deleted, _ = ProfileScore.objects.filter(project_id=project_id, profile_id__in=ids).delete()
    personalization_services.unit_scores_publish(project_id=project_id, scores=dict.fromkeys(ids))
    return deleted


def scores_opted_out_receiver(sender, *, project_id: int, profile_ids: list[int], **kwargs) -> None:
    """Someone may no longer be profiled: their scores go, here and in decide's hash."""
    scores_delete(project_id=project_id, profile_ids=profile_ids)


def score_runs_scheduled(*, now=None) -> int:
    """Queue a retrain for every project that has had one, with its latest settings."""
    count = 0
    for project_id in people.projects_ids():
        last = ScoreRun.objects.filter(project_id=project_id, placebo=False).order_by("-created_at").first()
        if last is None or last.status in (RunStatus.QUEUED, RunStatus.RUNNING):
            continue
        score_run_request(project=last.project, goal=last.goal, horizons=last.horizons)
        count += 1
    return count
