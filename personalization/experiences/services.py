"""Experiences and variants: create, edit, lifecycle, and the project's global holdout. Every change
republishes the decide snapshot (personalization.decide.compile)."""

import logging
import math
from datetime import datetime

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from personalization import hooks
from personalization.decide.compile import experience_compile_problem, snapshot_publish
from personalization.experiences.conditions import condition_intents
from personalization.experiences.limits import (
    EXPERIENCE_MAX_CHARS,
    payload_check,
    targeting_check,
)
from personalization.experiences.thompson import DEFAULT_FLOOR
from personalization.ingest.schema import FieldError, text_check
from personalization.models import (
    Experience,
    ExperienceStatus,
    Policy,
    Project,
    Variant,
)
from personalization.segment_keys import LIVE_SOURCES, source_intent, source_live, source_run
from personalization.workspace.audit import audit_record

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
MAX_WINDOW_HOURS = 24 * 365
logger = logging.getLogger(__name__)


class ExperienceError(ValueError):
    """A user-fixable problem with an experience; names the field."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def _validate(fields: dict, variants: list[dict] | None) -> list | None:
    """Raises ExperienceError for the first problem; returns the compiled targeting conditions."""
    if "policy" in fields and fields["policy"] not in Policy.values:
        raise ExperienceError("policy", f"choose one of {', '.join(Policy.values)}")
    if fields.get("policy") == Policy.SEGMENT_BANDIT and not fields.get("segment_attribute"):
        raise ExperienceError(
            "segment_attribute",
            "a per-segment bandit needs the attribute that names the segment, run:<id> for a clustering run,"
            " live:stage for the journey stage, or intent:<key> for a named intent",
        )
    live = source_live(fields.get("segment_attribute") or "")
    if live is not None and live not in LIVE_SOURCES:
        raise ExperienceError(
            "segment_attribute",
            f"live:{live[:40]} is not a live field a bandit can learn on; use "
            + ", ".join(f"live:{name}" for name in LIVE_SOURCES),
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
        conditions = targeting_check(fields.get("targeting") or {})
    except FieldError as exc:
        raise ExperienceError(exc.field, exc.message) from None
    if variants is None:
        return conditions
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
    return conditions


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
    current = current or {}
    before = set((current.get("targeting") or {}).get("segments", []))
    added = [key for key in (fields.get("targeting") or {}).get("segments", []) if key not in before]
    unknown = hooks.segments().segment_keys_untargetable(project_id=project_id, keys=added) if added else []
    if unknown:
        names = ", ".join(f"“{key}”" for key in unknown[:5])
        raise ExperienceError(
            "targeting.segments",
            f"no segment {names} in this project: pick saved segments from the list (the Segments page makes"
            " them; a clustering run's keys look like b12.3)",
        )
    source = fields.get("segment_attribute", "")
    run_id = source_run(source or "")
    if run_id is not None and source != current.get("segment_attribute"):
        run = hooks.segments().run_for_project(project_id=project_id, run_id=run_id)
        if run is None or run.status != "done":
            state = "does not exist" if run is None else f"is {run.status}"
            raise ExperienceError(
                "segment_attribute", f"clustering run #{run_id} {state}: name a finished run (Segments page)"
            )


def _intents_check(
    project_id: int, conditions: list | None, fields: dict, before: list | None = None, current: dict | None = None
) -> None:
    """Intents a condition or the bandit's segment source names must be the project's (an unknown key
    would never match anyone). On an edit only what the edit adds is checked, as for segments."""
    source = source_intent(fields.get("segment_attribute") or "")
    changed = fields.get("segment_attribute") != (current or {}).get("segment_attribute")
    if source is not None and changed and hooks.segments().intent_keys_unknown(project_id=project_id, keys=[source]):
        raise ExperienceError(
            "segment_attribute",
            f"no intent “{source[:48]}” in this project: name one listed under Segments → Intents,"
            " as in intent:planning-a-trip",
        )
    added = sorted(condition_intents(conditions) - condition_intents(before))
    unknown = hooks.segments().intent_keys_unknown(project_id=project_id, keys=added) if added else []
    if unknown:
        names = ", ".join(f"“{key}”" for key in unknown[:5])
        raise ExperienceError(
            "targeting.conditions",
            f"no intent {names} in this project: use the key of an intent listed under Segments → Intents,"
            " as in intent planning-a-trip >= 0.35",
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
    conditions = _validate(fields, variants)
    _segments_check(project.pk, fields)
    _intents_check(project.pk, conditions, fields)
    if Experience.objects.filter(project=project, key=key).exists():
        raise ExperienceError("key", f"“{key}” is taken in this project; choose another key")
    with transaction.atomic():
        status = ExperienceStatus.EXTERNAL if external else ExperienceStatus.DRAFT
        experience = Experience.objects.create(
            project=project, key=key, name=name, touchpoint=touchpoint, status=status, conditions=conditions, **fields
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
    conditions = _validate(
        merged, variants if variants is not None else list(experience.variants.values("key", "is_control", "weight"))
    )
    _segments_check(experience.project_id, fields, current)
    _intents_check(experience.project_id, conditions, fields, experience.conditions, current)
    changes = {name: [current[name], value] for name, value in fields.items() if current[name] != value}
    changes.update(audit_note or {})
    with transaction.atomic():
        for name, value in fields.items():
            setattr(experience, name, value)
        experience.conditions = conditions
        experience.version = F("version") + 1
        experience.save(update_fields=[*fields, "conditions", "version", "updated_at"])
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


def _holdout_audit(project: Project, by, changes: dict) -> None:
    audit_record(
        project_id=project.pk,
        actor=by,
        action="update",
        object_type="global_holdout",
        object_key=project.slug,
        changes=changes,
    )


def project_holdout_set(*, project: Project, share: float, by: AbstractBaseUser | None = None) -> Project:
    if not 0 <= share < 0.5:
        raise ExperienceError("global_holdout_share", "must be between 0 and 0.5 (e.g. 0.05 for 5 %)")
    before = project.global_holdout_share
    project.global_holdout_share = share
    project.save(update_fields=["global_holdout_share"])
    _holdout_audit(project, by, {"global_holdout_share": [before, share]})
    transaction.on_commit(lambda: snapshot_publish(project_id=project.pk))
    return project


# A history loaded in bulk (ingest/bulk.py) keeps meaning only if the experiences say when they
# started and hash as they did when it was recorded: a sticky visitor must get the variant the
# history shows. The three services below set that, each only while it cannot move a visitor.
_MAX_SALT = 32


def _salt_check(salt: str) -> None:
    if not isinstance(salt, str) or not 0 < len(salt) <= _MAX_SALT:
        raise ExperienceError("salt", f"must be text of 1 to {_MAX_SALT} characters")


def experience_salt_set(*, experience: Experience, salt: str, by: AbstractBaseUser | None = None) -> Experience:
    """The salt of a draft's assignment hash, e.g. the one another tool assigned with. Once started,
    a new salt would move visitors between variants, so only a draft takes one."""
    _salt_check(salt)
    if experience.status != ExperienceStatus.DRAFT:
        raise ExperienceError("salt", f"can only be set on a draft; this experience is {experience.status}")
    with transaction.atomic():
        experience.salt = salt
        experience.save(update_fields=["salt", "updated_at"])
        _audit(experience, by, "update", {"salt": "set"})  # the salt itself stays out of the audit trail
    return experience


def experience_started_at_set(
    *, experience: Experience, started_at: datetime, by: AbstractBaseUser | None = None
) -> Experience:
    """Date a started experience's start back to where its loaded history begins, as its page shows it."""
    if experience.started_at is None:
        raise ExperienceError("started_at", "the experience has not started; start it first")
    if started_at.tzinfo is None or started_at > timezone.now():
        raise ExperienceError("started_at", "must be a timezone-aware time that is not in the future")
    with transaction.atomic():
        before = experience.started_at
        experience.started_at = started_at
        experience.save(update_fields=["started_at", "updated_at"])
        _audit(experience, by, "update", {"started_at": [before.isoformat(), started_at.isoformat()]})
    return experience


def project_holdout_salt_set(*, project: Project, salt: str, by: AbstractBaseUser | None = None) -> Project:
    """The salt of the global holdout hash. Only before the project's first experience starts: a new
    salt would move visitors in and out of the holdout."""
    _salt_check(salt)
    if Experience.objects.filter(project=project, started_at__isnull=False).exists():
        raise ExperienceError("salt", "can only be set before the project's first experience starts")
    with transaction.atomic():
        project.holdout_salt = salt
        project.save(update_fields=["holdout_salt"])
        _holdout_audit(project, by, {"holdout_salt": "set"})  # the salt itself stays out of the audit trail
        transaction.on_commit(lambda: snapshot_publish(project_id=project.pk))
    return project
