"""The decide snapshot: compile a project's running experiences into the plain data the engine
reads, check each one can be served, and publish it to Redis for every decide process."""

import logging

import orjson

from personalization import hooks, redis_client, rkeys
from personalization.experiences.limits import snapshot_entry_check
from personalization.ingest.schema import FieldError
from personalization.models import BanditWeights, Experience, ExperienceStatus, Policy, Project
from personalization.people.journey import JourneyDefinitionError, journey_definition
from personalization.segment_keys import segment_field

logger = logging.getLogger(__name__)


def _latest_weights(experience: Experience) -> dict[str, dict[str, float]]:
    rows = (
        BanditWeights.objects.filter(experience=experience)
        .order_by("segment", "-computed_at")
        .distinct("segment")
        .values_list("segment", "weights")
    )
    return dict(rows)


def _entry(exp: Experience) -> dict:
    """One running experience as decide reads it (see personalization.decide.engine)."""
    variants = list(exp.variants.all())
    order = [v.key for v in variants]
    total = sum(v.weight for v in variants) or 1.0
    latest = _latest_weights(exp) if exp.policy != Policy.FIXED else {}
    targeted_segments = (exp.targeting or {}).get("segments") or []
    # What decide's `explain` says of a targeted segment (personalization/decide/explain.py).
    traits = {}
    if targeted_segments:
        traits = hooks.segments().segment_traits(project_id=exp.project_id, keys=targeted_segments)
    return {
        "key": exp.key,
        "version": exp.version,
        "salt": exp.salt,
        "policy": exp.policy,
        "holdout_share": exp.holdout_share,
        "segment_field": segment_field(exp.segment_attribute) if exp.policy == Policy.SEGMENT_BANDIT else "",
        "targeting": exp.targeting or {},
        "conditions": exp.conditions,
        "goal": exp.goal_event,
        "window_hours": exp.attribution_hours,
        "control": next((v.key for v in variants if v.is_control), None),
        "order": order,
        "payloads": {v.key: v.payload for v in variants},
        "fixed": [v.weight / total for v in variants],
        "weights": {segment: [float(weights.get(key, 0.0)) for key in order] for segment, weights in latest.items()},
    } | ({"why_segments": traits} if traits else {})


_FIX = "Edit the experience and correct it (Experiences → this experience → Edit, or PATCH /api/v1/experiences/<key>/)."


def _entry_compile(exp: Experience) -> tuple[dict | None, dict | None]:
    """(entry, None), or (None, problem) when decide could not serve it: {"field", "message"}.

    Any failure counts, not only the checks of experience_limits: rows written before those checks,
    or by hand, may hold anything, and one experience must never stop its project's publish."""
    try:
        entry = _entry(exp)
        snapshot_entry_check(entry)
    except FieldError as exc:
        return None, {"field": exc.field, "message": f"{exc.field} {exc.message}. {_FIX}"}
    except Exception as exc:  # whatever it is (see the docstring), only this experience is left out
        logger.exception("experience %s (project %s) cannot be compiled", exp.key, exp.project_id)
        return None, {"field": "experience", "message": f"cannot be compiled ({type(exc).__name__}). {_FIX}"}
    return entry, None


def experience_compile_problem(*, experience: Experience) -> dict | None:
    """Why decide leaves this experience out of the snapshot ({"field", "message"}), or None when it
    can be served. Checked the way snapshot_compile checks it, also for drafts and paused ones, so a
    problem shows before start. Analysis-only (external) and completed experiences are never served."""
    if experience.status in {ExperienceStatus.EXTERNAL, ExperienceStatus.COMPLETED}:
        return None
    return _entry_compile(experience)[1]


def snapshot_compile(*, project_id: int) -> dict:
    """Everything decide needs about a project's running experiences, as plain data.

    Compiled experience by experience: one that cannot be served is left out (decide then answers
    it as it answers a paused one: not assigned, so the site shows its own default content and no
    exposure is recorded) and listed under "left_out" with the reason; the rest are published.
    Leaving it out is safer than serving its control: the control's payload may be the broken part,
    and a half-served experience would record exposures that no analysis can trust."""
    project = Project.objects.get(pk=project_id)
    experiences, left_out = {}, {}
    # Variants are read experience by experience (no prefetch): a row that cannot even be read (a
    # payload nested deeper than Python's JSON reader follows) then fails only its own experience.
    for exp in Experience.objects.filter(project_id=project_id, status=ExperienceStatus.RUNNING):
        entry, problem = _entry_compile(exp)
        if entry is None:
            left_out[exp.key] = problem
        else:
            experiences[exp.key] = entry
    try:
        journey = journey_definition(project.journey)
    except JourneyDefinitionError:
        # Only a row changed outside project_live_update gets here; decide keeps the product's stages.
        logger.warning("project %s: stored journey thresholds unusable; the default definition is served", project_id)
        journey = journey_definition()
    return {
        "project_id": project_id,
        "holdout": {"salt": project.holdout_salt, "share": project.global_holdout_share},
        "privacy": hooks.decide_privacy_settings(project_id=project_id),  # privacy's hook; raises without it
        # What the events request and decide need for the live state (people/live_session.py).
        "live": {"idle_minutes": project.live_idle_minutes, "time_zone": project.time_zone, "journey": journey},
        "experiences": experiences,
        "left_out": left_out,
    }


def snapshot_publish(*, project_id: int) -> int:
    """Compile and hand the snapshot to every decide process (each reads its version a quarter second
    after its last read: runtime.SNAPSHOT_CHECK_SECONDS)."""
    snapshot = snapshot_compile(project_id=project_id)
    client = redis_client.worker()
    version = client.incr(rkeys.snapshot_counter(project_id))
    snapshot["version"] = version
    pipe = client.pipeline(transaction=True)
    pipe.set(rkeys.snapshot(project_id), orjson.dumps(snapshot))
    pipe.set(rkeys.snapshot_version(project_id), version)
    pipe.execute()
    return version
