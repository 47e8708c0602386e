"""The decide engine: one unit's variant for every experience, from a compiled snapshot and the
unit's Redis hash. Pure Python: no Django, no I/O, so it is fast to test and to benchmark.

Snapshot (compiled by personalization.services.snapshot_compile, JSON-able):
    {"project_id", "version", "holdout": {"salt", "share"},
     "experiences": {key: {"key", "version", "salt", "policy", "holdout_share", "segment_field",
                           "targeting", "control", "order": [variant keys], "payloads": {key: payload},
                           "goal", "window_hours",
                           "fixed": [weights], "weights": {segment or "": [weights]}}}}

Snapshot "privacy": {"require_consent", "honor_gpc", "suppressed" (the project has erased subjects)}.

Unit hash fields (written by the workers, read in one round trip): "dnp" ("1" = do not personalize),
"consent" ("1" = consented to personalization),
"attr:<name>" (profile attributes), "segs" (space-separated segment keys), "a:<experience>" (the
sticky variant key, or "~hg" / "~he" for the holdouts, to record each exposure once), "ls", "lt" … "ld" (the live
session state, people/live_session.py).

Targeting conditions (experiences/conditions.py): an experience's "conditions" (compiled lists) are
turned into "_match" (a function of the facts) and "_facts" (the facts it reads) once per snapshot
(`conditions_prepare`). The facts of a request come from `live`, a function the runtime passes that
computes them on first use (live state as of now, derived context, journey stage) and then returns
the same dict: a request that evaluates no condition and records no exposure never computes them.
"""

from collections.abc import Callable
from dataclasses import dataclass, field

from personalization.decide.hashing import pick_index, unit_bucket
from personalization.experiences.conditions import condition_fields, condition_function, facts_record
from personalization.intent_fields import INTENT_FACT, UNIT_INTENTS_FIELD, intents_parse
from personalization.segment_keys import INTENT_PREFIX, INTENT_SOURCE_THRESHOLD, LIVE_PREFIX, LIVE_SOURCES

HOLDOUT_GLOBAL_MARK = "~hg"
HOLDOUT_EXPERIENCE_MARK = "~he"


@dataclass(slots=True)
class Decision:
    assignments: dict[str, dict] = field(default_factory=dict)
    unknown: list[str] = field(default_factory=list)
    sticky_updates: dict[str, str] = field(default_factory=dict)  # hash field -> value
    # {"experience", "variant", "arm", "reason", "segment", "segs", "live"}
    exposures: list[dict] = field(default_factory=list)


def conditions_prepare(snapshot: dict) -> None:
    """Build each experience's condition function once, when a snapshot is loaded (not per request)."""
    for exp in snapshot.get("experiences", {}).values():
        compiled = exp.get("conditions")
        exp["_match"] = condition_function(compiled) if compiled else None
        exp["_facts"] = sorted(condition_fields(compiled))


def _no_facts() -> dict:
    return {}


def _attribute(name: str, user: dict, context: dict):
    attributes = context.get("attributes") or {}
    if name in attributes:
        return attributes[name]
    if name in context and name != "attributes":
        return context[name]
    return user.get(f"attr:{name}")


def targeting_matches(targeting: dict, user: dict, context: dict) -> bool:
    """Every attribute condition must hold; with segments listed, the unit must be in one of them."""
    for condition in targeting.get("attributes", ()):
        value = _attribute(condition["attribute"], user, context)
        op = condition.get("op", "in")
        wanted = condition.get("values", [])
        text = None if value is None else str(value)
        if op == "in" and text not in wanted:
            return False
        if op == "not_in" and text in wanted:
            return False
        if op == "exists" and value is None:
            return False
    segments = targeting.get("segments")
    if segments:
        mine = set((user.get("segs") or "").split())
        if not mine.intersection(segments):
            return False
    return True


def _answer(exp: dict, variant: str | None, reason: str) -> dict:
    return {
        "variant": variant,
        "payload": exp["payloads"].get(variant) if variant else None,
        "reason": reason,
        "version": exp["version"],
    }


def _opted_out(privacy: dict, user: dict, consent: dict, gpc: bool) -> bool:
    """Not personalized: do-not-personalize (objection, restriction) or consent withdrawn; without
    consent given when the project requires it; with the browser's Global Privacy Control signal
    when the project honours it, unless the person explicitly consented."""
    if user.get("dnp") == "1" or consent.get("personalization") is False:
        return True
    consented = consent.get("personalization") is True or user.get("consent") == "1"
    if privacy.get("require_consent") and not consented:
        return True
    return bool(gpc and privacy.get("honor_gpc", True) and not consented)


def decide_unit(
    snapshot: dict,
    unit: str,
    user: dict,
    context: dict,
    requested=None,
    fallback=False,
    gpc=False,
    live: Callable[[], dict] | None = None,
) -> Decision:
    """Assign `unit` in every requested (default: every running) experience of the snapshot.

    `user` is the unit's Redis hash (str → str), empty when unknown or when Redis is down
    (`fallback=True`: hash-based assignment only, nothing sticky is read or written). `gpc` is the
    request's Global Privacy Control signal (Sec-GPC: 1). `live` gives the request's facts for
    targeting conditions and exposures (see the module docstring); without it they are unknown.
    """
    live = live or _no_facts
    decision = Decision()
    experiences = snapshot["experiences"]
    keys = experiences.keys() if requested is None else requested
    consent = context.get("consent") or {}
    opted_out = _opted_out(snapshot.get("privacy") or {}, user, consent, gpc)
    holdout = snapshot["holdout"]
    in_global_holdout = holdout["share"] > 0 and unit_bucket(holdout["salt"], unit) < holdout["share"]

    for key in keys:
        exp = experiences.get(key)
        if exp is None:
            decision.unknown.append(key)
            continue
        control = exp["control"]
        if opted_out:
            decision.assignments[key] = _answer(exp, control, "not_personalized")
            continue
        # Held-out people are exposed (as holdouts) only where they would have been targeted, so that
        # holdout and treatment are drawn from the same population and the sample ratio holds.
        targeted = not exp["targeting"] or targeting_matches(exp["targeting"], user, context)
        match = exp.get("_match")
        if targeted and match is not None:
            targeted = match(live())
        segment = unit_segment(exp, user, context, _no_facts if fallback else live)
        if in_global_holdout:
            decision.assignments[key] = _answer(exp, control, "fallback" if fallback else "holdout_global")
            if targeted:
                _expose_once(
                    decision, user, exp, HOLDOUT_GLOBAL_MARK, control, "holdout_global", segment, fallback, live
                )
            continue
        if exp["holdout_share"] > 0 and unit_bucket(exp["salt"] + ":holdout", unit) < exp["holdout_share"]:
            decision.assignments[key] = _answer(exp, control, "fallback" if fallback else "holdout_experience")
            if targeted:
                _expose_once(
                    decision,
                    user,
                    exp,
                    HOLDOUT_EXPERIENCE_MARK,
                    control,
                    "holdout_experience",
                    segment,
                    fallback,
                    live,
                )
            continue
        if not targeted:
            decision.assignments[key] = _answer(exp, control, "targeting_miss")
            continue
        sticky = user.get("a:" + key)
        if sticky in exp["payloads"]:
            decision.assignments[key] = _answer(exp, sticky, "sticky")
            continue
        policy = exp["policy"]
        if policy == "fixed":
            weights, reason = exp["fixed"], "fixed_split"
        else:
            segment_weights = exp["weights"].get(segment) if segment else None
            weights = segment_weights or exp["weights"].get("") or exp["fixed"]
            reason = "segment_bandit" if segment_weights else "bandit"
        variant = exp["order"][pick_index(weights, unit_bucket(exp["salt"], unit))]
        decision.assignments[key] = _answer(exp, variant, "fallback" if fallback else reason)
        _expose_once(decision, user, exp, variant, variant, "variant", segment, fallback, live, reason)
    return decision


def unit_segment(exp: dict, user: dict, context: dict, live: Callable[[], dict] = _no_facts) -> str:
    """The unit's segment for this experience: the one value every arm's exposure records (so a
    breakdown by segment at exposure compares like with like) and the per-segment bandit keys on.

    The segment is a profile attribute the experience names (`segment_field`), or, for
    "segs:<prefix>" (a clustering run as segment source), the unit's segment key in the hash's
    "segs" that starts with the run's prefix, or, for "live:<field>" (LIVE_SOURCES), that fact of
    the request (`live`, computed only here and only for such an experience), or, for
    "intent:<key>", "yes" or "no" by the unit's score on that intent: "" when not known.
    """
    name = exp["segment_field"]
    if not name:
        return ""
    if name.startswith(LIVE_PREFIX):
        fact = LIVE_SOURCES.get(name[len(LIVE_PREFIX) :])
        value = live().get(fact) if fact else None
        return "" if value is None else str(value)
    if name.startswith(INTENT_PREFIX):
        score = intents_parse(user.get(UNIT_INTENTS_FIELD)).get(INTENT_FACT + "[]", {}).get(name[len(INTENT_PREFIX) :])
        return "" if score is None else ("yes" if score >= INTENT_SOURCE_THRESHOLD else "no")
    if name.startswith("segs:"):
        prefix = name[5:]
        return next((key for key in (user.get("segs") or "").split() if key.startswith(prefix)), "")
    value = _attribute(name, user, context)
    return "" if value is None else str(value)


def _expose_once(decision, user, exp, mark, variant, arm, segment, fallback, live, reason=None) -> None:
    """Record the exposure the first time the unit gets this mark; the mark is then kept sticky."""
    field_name = "a:" + exp["key"]
    if not fallback and user.get(field_name) == mark:
        return
    if not fallback:
        decision.sticky_updates[field_name] = mark
    decision.exposures.append(
        {
            "experience": exp["key"],
            "variant": variant,
            "arm": arm,
            "reason": reason or arm,
            "segment": segment,
            # Every behavior segment the unit is in, whatever the arm (lift breaks down by them);
            # None when Redis was away, as then they are not known (not: "in no segment").
            "segs": None if fallback else user.get("segs", ""),
            # The stage and the live facts its targeting read, in every arm (lift by stage at
            # exposure); None when Redis was away (the state was not read).
            "live": None if fallback else facts_record(live(), exp.get("_facts", ())),
            "goal": exp["goal"],
            "window_hours": exp["window_hours"],
        }
    )
