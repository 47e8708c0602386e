"""Reads for "why is this person here": the data each explanation needs, gathered for one person and
put into words by segments/explain.py. Read by the visitor page (personalization's `person_why` hook)
and the privacy export (segments/personal_data.py).

Only what is stored is explained, as it is now: the person's memberships, intent scores and predictive
scores, read with their events through personalization's selectors, which leave out anyone who may not
be profiled. An opted-out person therefore gets no explanation, as they get no scores.
"""

from datetime import timedelta

import numpy as np

from personalization import selectors as people
from segments import explain, scoring, text_encoder
from segments.embedding import BehaviorEvent
from segments.intents import PHRASES_FROM
from segments.models import ProfileIntent, ProfileScore, RunStatus, ScoreRun, SegmentKind, SegmentMembership
from segments.services.scores import score_models_in_use

# The summary and segment reasons read the person's latest events within the scores' lookback.
MAX_EVENTS = 2_000
SCORE_LABELS = {"likely_to_buy": "Likely to buy", "expected_revenue": "Expected revenue", "lapse_risk": "Lapse risk"}


def unit_explanations(*, project_id: int, unit_id: str) -> dict:
    """profile_explanations of the person a user or anonymous id belongs to."""
    profile_ids, _ = people.subject_resolve(project_id=project_id, user_ids=[unit_id], anonymous_ids=[], emails=[])
    return profile_explanations(project_id=project_id, profile_ids=profile_ids)


def profile_explanations(*, project_id: int, profile_ids: list[int]) -> dict:
    """{"summary": what the person did in one line, "items": [{"kind": segment | intent | score, "key",
    "name", "why", "reasons": [texts]}]} for these profiles (one person's, possibly stitched).
    Empty summary and items when there is nothing to explain."""
    clock = people.behavior_clock(project_id=project_id)
    since = clock - timedelta(days=scoring.LOOKBACK_DAYS)
    histories = {
        profile_id: rows
        for profile_id, rows in people.profiles_behavior(
            project_id=project_id, since=since, profile_ids=profile_ids, last_events=MAX_EVENTS
        )
    }
    events = [BehaviorEvent(t, ts, p or {}, v) for rows in histories.values() for t, ts, p, v in rows]
    events.sort(key=lambda e: e.ts)
    items: list[dict] = []
    if histories:  # a person who may not be profiled has no behavior here: nothing is explained
        allowed = list(histories)
        items += _segments(allowed, events, clock)
        items += _intents(allowed)
        items += _scores(project_id, allowed, histories)
    return {"summary": explain.behavior_summary(events), "items": items}


def _segments(profile_ids: list[int], events: list[BehaviorEvent], clock) -> list[dict]:
    rows = (
        SegmentMembership.objects.filter(profile_id__in=profile_ids)
        .exclude(segment__kind=SegmentKind.BEHAVIOR, segment__run__status__in=[RunStatus.QUEUED, RunStatus.RUNNING])
        .select_related("segment")
        .order_by("segment__kind", "-segment__run_id", "segment__index", "segment__key")
    )
    labels = explain.person_labels(events, now=clock) if events else {}
    out, seen = [], set()
    for membership in rows:
        segment = membership.segment
        if segment.pk in seen:
            continue
        seen.add(segment.pk)
        if segment.kind == SegmentKind.BEHAVIOR:
            reasons = explain.segment_reasons(labels, segment.card or {})
            why = explain.segment_sentence(segment.name, reasons)
        elif segment.kind == SegmentKind.LOOKALIKE:
            reasons = []
            why = f"In “{segment.name}”: their behavior is {membership.score:.2f} similar (cosine) to the seed's."
        else:
            reasons = []
            why = f"In “{segment.name}”: they met its rule at its last refresh."
        out.append(
            {
                "kind": "segment",
                "key": segment.key,
                "name": segment.name,
                "why": why,
                "reasons": [r.text for r in reasons],
            }
        )
    return out


def _intents(profile_ids: list[int]) -> list[dict]:
    rows = list(
        ProfileIntent.objects.filter(profile_id__in=profile_ids, score__gte=PHRASES_FROM)
        .select_related("intent")
        .order_by("-score", "intent__key")
    )
    best: dict[int, ProfileIntent] = {}
    for row in rows:  # stitched profiles: the higher score of each intent
        best.setdefault(row.intent_id, row)
    out = []
    encoder = None
    for row in best.values():
        intent = row.intent
        nearest = None
        if row.phrases:
            encoder = encoder or text_encoder.encoder_load()
            vectors = encoder.encode([row.phrases[0], *intent.examples])
            index = explain.nearest_index(vectors[0], vectors[1:])
            nearest = intent.examples[index] if index is not None else None
        why = explain.intent_sentence(
            name=intent.name,
            score=row.score,
            threshold=intent.threshold,
            phrases=row.phrases,
            nearest_example=nearest,
        )
        out.append({"kind": "intent", "key": intent.key, "name": intent.name, "why": why, "reasons": list(row.phrases)})
    return out


def _scores(project_id: int, profile_ids: list[int], histories: dict) -> list[dict]:
    rows = list(ProfileScore.objects.filter(profile_id__in=profile_ids).order_by("-scored_at"))
    if not rows:
        return []
    models = score_models_in_use(project_id=project_id)
    row = rows[0]
    clock_at = ScoreRun.objects.filter(pk=row.run_id).values_list("clock", flat=True).first()
    if clock_at is None:
        return []
    # The features as the scoring run computed them: the person's events up to its clock.
    table = scoring.event_table(
        (pid, [(t, ts, p, v) for t, ts, p, v in events if ts < clock_at]) for pid, events in histories.items()
    )
    out = []
    for name, label in SCORE_LABELS.items():
        value, top = getattr(row, name), getattr(row, f"{name}_top")
        if value is None or name not in models:
            continue
        model = models[name][1]
        X, present = scoring.features_at(table, cutoff=clock_at.timestamp(), spec=model["spec"])
        # Stitched profiles are scored apart: explain the profile whose score row is shown.
        where = np.flatnonzero(table.profiles == row.profile_id)
        if not len(where) or not present[where[0]]:
            continue
        x = X[where[0]]
        up, down = explain.score_reasons(model, x)
        why = explain.score_sentence(label=label, value=value, top_percent=top, up=up, down=down)
        reasons = [f"↑ {r.text}" for r in up] + [f"↓ {r.text}" for r in down]
        out.append(
            {"kind": "score", "key": name, "name": label, "why": why, "reasons": reasons, "band": explain.band(top)}
        )
    return out
