"""Experiences and variants: create, edit, lifecycle; compile and publish the decide snapshot;
publish profiles' decide-relevant data (attributes, do-not-personalize) to their Redis hashes."""

import logging
import math

import orjson
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from personalization import redis_client, rkeys
from personalization.bandit import DEFAULT_FLOOR
from personalization.event_schema import FieldError, text_check
from personalization.experience_limits import (
    EXPERIENCE_MAX_CHARS,
    payload_check,
    snapshot_entry_check,
    targeting_check,
)
from personalization.models import (
    BanditWeights,
    Experience,
    ExperienceStatus,
    Policy,
    Profile,
    ProfileIdentity,
    Project,
    Variant,
)
from personalization.services.audit import audit_record

EDITABLE_FIELDS = (
    "name",
    "touchpoint",
    "policy",
    "bandit_floor",
    "bandit_burn_in",
    "segment_attribute",
    "targeting",
    "goal_event",
    "attribution_hours",
    "holdout_share",
)
_TRANSITIONS = {
    "start": ({ExperienceStatus.DRAFT, ExperienceStatus.PAUSED}, ExperienceStatus.RUNNING),
    "pause": ({ExperienceStatus.RUNNING}, ExperienceStatus.PAUSED),
    "complete": ({ExperienceStatus.RUNNING, ExperienceStatus.PAUSED}, ExperienceStatus.COMPLETED),
}
UNIT_TTL_SECONDS = 180 * 24 * 3600
MAX_WINDOW_HOURS = 24 * 365
logger = logging.getLogger(__name__)


class ExperienceError(ValueError):
    """A user-fixable problem with an experience; names the field."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def _validate(fields: dict, variants: list[dict] | None) -> None:
    if "policy" in fields and fields["policy"] not in Policy.values:
        raise ExperienceError("policy", f"choose one of {', '.join(Policy.values)}")
    if fields.get("policy") == Policy.SEGMENT_BANDIT and not fields.get("segment_attribute"):
        raise ExperienceError(
            "segment_attribute",
            "a per-segment bandit needs the attribute that names the segment, or run:<id> for a clustering run",
        )
    hours = fields.get("attribution_hours", 72)
    if isinstance(hours, bool) or not isinstance(hours, int) or not 1 <= hours <= MAX_WINDOW_HOURS:
        raise ExperienceError("attribution_hours", f"must be a whole number of hours from 1 to {MAX_WINDOW_HOURS}")
    share = fields.get("holdout_share", 0.0)
    if not 0 <= share < 1:
        raise ExperienceError("holdout_share", "must be between 0 and 1 (e.g. 0.1 for 10 %)")
    floor = fields.get("bandit_floor", DEFAULT_FLOOR)
    if variants is not None and not 0 <= floor * len(variants) <= 1:
        raise ExperienceError(
            "bandit_floor", f"with {len(variants)} variants the floor must be at most {1 / len(variants):.3f}"
        )
    try:
        targeting_check(fields.get("targeting") or {})
    except FieldError as exc:
        raise ExperienceError(exc.field, exc.message) from None
    if variants is None:
        return
    if len(variants) < 2:
        raise ExperienceError("variants", "add at least two variants: a control and one alternative")
    keys = [v.get("key") for v in variants]
    if len(set(keys)) != len(keys) or not all(keys):
        raise ExperienceError("variants.key", "every variant needs a unique key")
    if sum(bool(v.get("is_control")) for v in variants) != 1:
        raise ExperienceError("variants.is_control", "mark exactly one variant as the control (the default)")
    weights = [float(v.get("weight", 1.0)) for v in variants]
    if not all(math.isfinite(w) and w >= 0 for w in weights) or sum(weights) <= 0:
        raise ExperienceError("variants.weight", "weights must be non-negative numbers, not all zero")
    _payloads_check(variants)


def _payloads_check(variants: list[dict]) -> None:
    """Each payload within the limits decide can serve (experience_limits), and all of them together
    within one experience's share of the snapshot. Variants without a payload (an edit of other
    fields) are not checked again."""
    total = 0
    try:
        for i, variant in enumerate(variants):
            text_check(str(variant.get("name") or ""), f"variants[{i}].name")
            if "payload" in variant:
                total += payload_check(variant["payload"] or {}, f"variants[{i}].payload")
    except FieldError as exc:
        raise ExperienceError(exc.field, exc.message) from None
    if total > EXPERIENCE_MAX_CHARS:
        raise ExperienceError(
            "variants",
            f"the payloads are {total:,} characters together; keep them under {EXPERIENCE_MAX_CHARS:,}"
            " (put large content behind a URL)",
        )


def _segments_check(project_id: int, fields: dict, current: dict | None = None) -> None:
    """Segment keys and a clustering run named as bandit segment source must exist and be finished.
    On an edit only what the edit adds is checked: a segment deleted since stays until removed."""
    from segments import selectors as segments_selectors

    current = current or {}
    before = set((current.get("targeting") or {}).get("segments", []))
    added = [key for key in (fields.get("targeting") or {}).get("segments", []) if key not in before]
    unknown = segments_selectors.segment_keys_untargetable(project_id=project_id, keys=added) if added else []
    if unknown:
        names = ", ".join(f"“{key}”" for key in unknown[:5])
        raise ExperienceError(
            "targeting.segments",
            f"no segment {names} in this project: pick saved segments from the list (the Segments page makes"
            " them; a clustering run's keys look like b12.3)",
        )
    source = fields.get("segment_attribute", "")
    run_id = segment_source_run(source or "")
    if run_id is not None and source != current.get("segment_attribute"):
        run = segments_selectors.run_for_project(project_id=project_id, run_id=run_id)
        if run is None or run.status != "done":
            state = "does not exist" if run is None else f"is {run.status}"
            raise ExperienceError(
                "segment_attribute", f"clustering run #{run_id} {state}: name a finished run (Segments page)"
            )


def _audit(experience: Experience, by, action: str, changes: dict) -> None:
    audit_record(
        project_id=experience.project_id,
        actor=by,
        action=action,
        object_type="experience",
        object_key=experience.key,
        changes=changes,
    )


def _variants_replace(experience: Experience, variants: list[dict]) -> None:
    experience.variants.all().delete()
    Variant.objects.bulk_create(
        Variant(
            experience=experience,
            key=v["key"],
            name=v.get("name") or v["key"],
            payload=v.get("payload") or {},
            is_control=bool(v.get("is_control")),
            weight=float(v.get("weight", 1.0)),
            position=i,
        )
        for i, v in enumerate(variants)
    )


def experience_create(
    *,
    project: Project,
    key: str,
    name: str,
    touchpoint: str,
    variants: list[dict],
    policy: str = Policy.FIXED,
    by: AbstractBaseUser | None = None,
    external: bool = False,
    **fields,
) -> Experience:
    """A new experience (a draft), or with `external` one assigned by another tool: analysis only,
    never served by decide, its exposures sent through the events API."""
    fields = {"policy": policy, **fields}
    unknown = set(fields) - set(EDITABLE_FIELDS)
    if unknown:
        raise ExperienceError(sorted(unknown)[0], "is not a field of an experience")
    _validate(fields, variants)
    _segments_check(project.pk, fields)
    if Experience.objects.filter(project=project, key=key).exists():
        raise ExperienceError("key", f"“{key}” is taken in this project; choose another key")
    with transaction.atomic():
        status = ExperienceStatus.EXTERNAL if external else ExperienceStatus.DRAFT
        experience = Experience.objects.create(
            project=project, key=key, name=name, touchpoint=touchpoint, status=status, **fields
        )
        _variants_replace(experience, variants)
        _audit(experience, by, "create", {"fields": fields, "variants": variants, "status": status})
    return experience


def experience_update(
    *,
    experience: Experience,
    by: AbstractBaseUser | None = None,
    variants: list[dict] | None = None,
    audit_action: str = "update",
    audit_note: dict | None = None,
    **fields,
) -> Experience:
    """Edit fields and/or replace the variants; bumps the version and republishes if running.
    `audit_action` and `audit_note` let a named edit (a segment migration) say what it was."""
    unknown = set(fields) - set(EDITABLE_FIELDS)
    if unknown:
        raise ExperienceError(sorted(unknown)[0], "is not an editable field")
    current = {name: getattr(experience, name) for name in EDITABLE_FIELDS}
    merged = {**current, **fields}
    _validate(
        merged, variants if variants is not None else list(experience.variants.values("key", "is_control", "weight"))
    )
    _segments_check(experience.project_id, fields, current)
    changes = {name: [current[name], value] for name, value in fields.items() if current[name] != value}
    changes.update(audit_note or {})
    with transaction.atomic():
        for name, value in fields.items():
            setattr(experience, name, value)
        experience.version = F("version") + 1
        experience.save(update_fields=[*fields, "version", "updated_at"])
        if variants is not None:
            _variants_replace(experience, variants)
            changes["variants"] = variants
        _audit(experience, by, audit_action, changes)
        transaction.on_commit(lambda: snapshot_publish(project_id=experience.project_id))
    experience.refresh_from_db()
    return experience


def _transition(experience: Experience, action: str, by) -> Experience:
    allowed, target = _TRANSITIONS[action]
    if experience.status not in allowed:
        raise ExperienceError("status", f"cannot {action} an experience that is {experience.status}")
    problem = experience_compile_problem(experience=experience) if action == "start" else None
    if problem is not None:
        raise ExperienceError(problem["field"], f"cannot start: decide could not serve it. {problem['message']}")
    with transaction.atomic():
        before = experience.status
        experience.status = target
        experience.version = F("version") + 1
        update = ["status", "version", "updated_at"]
        if target == ExperienceStatus.RUNNING and experience.started_at is None:
            experience.started_at = timezone.now()
            update.append("started_at")
        experience.save(update_fields=update)
        _audit(experience, by, action, {"status": [before, target]})
        transaction.on_commit(lambda: snapshot_publish(project_id=experience.project_id))
    experience.refresh_from_db()
    return experience


def experience_start(*, experience: Experience, by: AbstractBaseUser | None = None) -> Experience:
    return _transition(experience, "start", by)


def experience_pause(*, experience: Experience, by: AbstractBaseUser | None = None) -> Experience:
    return _transition(experience, "pause", by)


def experience_complete(*, experience: Experience, by: AbstractBaseUser | None = None) -> Experience:
    return _transition(experience, "complete", by)


def project_holdout_set(*, project: Project, share: float, by: AbstractBaseUser | None = None) -> Project:
    if not 0 <= share < 0.5:
        raise ExperienceError("global_holdout_share", "must be between 0 and 0.5 (e.g. 0.05 for 5 %)")
    before = project.global_holdout_share
    project.global_holdout_share = share
    project.save(update_fields=["global_holdout_share"])
    audit_record(
        project_id=project.pk,
        actor=by,
        action="update",
        object_type="global_holdout",
        object_key=project.slug,
        changes={"global_holdout_share": [before, share]},
    )
    transaction.on_commit(lambda: snapshot_publish(project_id=project.pk))
    return project


def _latest_weights(experience: Experience) -> dict[str, dict[str, float]]:
    rows = (
        BanditWeights.objects.filter(experience=experience)
        .order_by("segment", "-computed_at")
        .distinct("segment")
        .values_list("segment", "weights")
    )
    return dict(rows)


def segment_field(segment_attribute: str) -> str:
    """What the engine keys segments on: "run:12" (a clustering run as segment source) becomes the
    prefix its segment keys share in the unit hash's "segs" (segments.ClusteringRun.key_prefix)."""
    run_id = segment_source_run(segment_attribute)
    return f"segs:b{run_id}." if run_id is not None else segment_attribute


def segment_source_run(segment_attribute: str) -> int | None:
    """The clustering run a per-segment bandit learns on ("run:12" → 12), or None for an attribute."""
    if segment_attribute.startswith("run:") and segment_attribute[4:].isdigit():
        return int(segment_attribute[4:])
    return None


def _entry(exp: Experience) -> dict:
    """One running experience as decide reads it (see personalization.engine)."""
    variants = list(exp.variants.all())
    order = [v.key for v in variants]
    total = sum(v.weight for v in variants) or 1.0
    latest = _latest_weights(exp) if exp.policy != Policy.FIXED else {}
    return {
        "key": exp.key,
        "version": exp.version,
        "salt": exp.salt,
        "policy": exp.policy,
        "holdout_share": exp.holdout_share,
        "segment_field": segment_field(exp.segment_attribute) if exp.policy == Policy.SEGMENT_BANDIT else "",
        "targeting": exp.targeting or {},
        "goal": exp.goal_event,
        "window_hours": exp.attribution_hours,
        "control": next((v.key for v in variants if v.is_control), None),
        "order": order,
        "payloads": {v.key: v.payload for v in variants},
        "fixed": [v.weight / total for v in variants],
        "weights": {segment: [float(weights.get(key, 0.0)) for key in order] for segment, weights in latest.items()},
    }


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
    from privacy.selectors import privacy_decide_settings

    return {
        "project_id": project_id,
        "holdout": {"salt": project.holdout_salt, "share": project.global_holdout_share},
        "privacy": privacy_decide_settings(project_id=project_id),
        "experiences": experiences,
        "left_out": left_out,
    }


def snapshot_publish(*, project_id: int) -> int:
    """Compile and hand the snapshot to every decide process (they poll its version about once a second)."""
    snapshot = snapshot_compile(project_id=project_id)
    client = redis_client.worker()
    version = client.incr(rkeys.snapshot_counter(project_id))
    snapshot["version"] = version
    pipe = client.pipeline(transaction=True)
    pipe.set(rkeys.snapshot(project_id), orjson.dumps(snapshot))
    pipe.set(rkeys.snapshot_version(project_id), version)
    pipe.execute()
    return version


def profiles_publish(*, project_id: int, profile_ids: list[int] | None = None, chunk: int = 2000) -> int:
    """Write profiles' attributes and do-not-personalize flag to the Redis hash of each of their ids."""
    profiles = Profile.objects.filter(project_id=project_id)
    if profile_ids is not None:
        profiles = profiles.filter(pk__in=profile_ids)
    identities = ProfileIdentity.objects.filter(profile__in=profiles).values_list("profile_id", "value")
    units: dict[int, list[str]] = {}
    for profile_id, value in identities.iterator(chunk_size=chunk):
        units.setdefault(profile_id, []).append(value)
    client = redis_client.worker()
    written = 0
    pipe = client.pipeline(transaction=False)
    rows = profiles.values_list("pk", "attributes", "do_not_personalize", "consent")
    for pk, attributes, dnp, consent in rows.iterator(chunk_size=chunk):
        opted_out = dnp or (consent or {}).get("personalization") is False
        mapping = {f"attr:{name}": str(value) for name, value in (attributes or {}).items()}
        mapping["dnp"] = "1" if opted_out else "0"
        mapping["consent"] = "1" if (consent or {}).get("personalization") is True else "0"
        for unit_id in units.get(pk, []):
            key = rkeys.unit(project_id, unit_id)
            pipe.hset(key, mapping=mapping)
            pipe.expire(key, UNIT_TTL_SECONDS)
            written += 1
        if len(pipe) >= chunk:
            pipe.execute()
    pipe.execute()
    return written


def units_stitch(*, project_id: int, pairs: list[tuple[str, str]]) -> None:
    """Copy sticky assignments from an anonymous id's decide hash to its user id's, where the user
    has none yet, so a visitor who logs in keeps seeing what they saw."""
    client = redis_client.worker()
    pipe = client.pipeline(transaction=False)
    for anonymous_id, _ in pairs:
        pipe.hgetall(rkeys.unit(project_id, anonymous_id))
    hashes = pipe.execute()
    for (_, user_id), fields in zip(pairs, hashes, strict=True):
        key = rkeys.unit(project_id, user_id)
        for name, value in fields.items():
            if name.startswith(b"a:"):
                pipe.hsetnx(key, name, value)
        pipe.expire(key, UNIT_TTL_SECONDS)
    pipe.execute()
