"""Moving an experience from the behavior segments of one clustering run to those of a newer run.

A new clustering run never changes what an experience targets by itself: targeting names segment
keys of one run ("b12.3") and a per-segment bandit names its run ("run:12"); the old run keeps
working (fold-in keeps its memberships current) until the marketer migrates explicitly. The
migrate screen proposes, for each old segment, the new segment with the largest member overlap
(segments.selectors.segments_overlap); confirming rewrites the keys and/or the bandit's segment
source in one transaction, as one edit: the version goes up, decide gets a new snapshot and the
audit history records who migrated what.

Per-segment bandit state is not carried over. The posteriors learned for run #N's segments stay
as history; run #M's segments are different groups of people (even the best match shares only
part of its members), so each starts from the experience's global posterior — the pooled prior
the per-segment bandit already shrinks small segments towards — and its own data takes over as
its exposures arrive. Carrying a posterior across would credit a segment with conversions of
people who are not in it.
"""

from dataclasses import dataclass, field

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from personalization import hooks
from personalization.experiences.services import ExperienceError, experience_update
from personalization.models import Experience, ExperienceStatus, Policy
from personalization.segment_keys import run_of_key, run_source
from personalization.segment_keys import source_run as segment_source_run


@dataclass
class SegmentUse:
    """Which clustering runs an experience's targeting and per-segment bandit name."""

    keys_by_run: dict[int, list[str]] = field(default_factory=dict)  # run id → targeted keys of that run
    bandit_run: int | None = None

    @property
    def runs(self) -> set[int]:
        return set(self.keys_by_run) | ({self.bandit_run} if self.bandit_run is not None else set())


def experience_segment_use(*, experience: Experience) -> SegmentUse:
    use = SegmentUse()
    for key in (experience.targeting or {}).get("segments", []):
        run_id = run_of_key(key)
        if run_id is not None:
            use.keys_by_run.setdefault(run_id, []).append(key)
    if experience.policy == Policy.SEGMENT_BANDIT:
        use.bandit_run = segment_source_run(experience.segment_attribute)
    return use


def experience_migration_due(*, experience: Experience, latest_run_id: int | None) -> dict | None:
    """{"runs": old run ids, "target": newest finished run id} when the experience uses segments of a
    run older than the newest finished one; None otherwise (also for completed experiences)."""
    if latest_run_id is None or experience.status in (ExperienceStatus.COMPLETED, ExperienceStatus.EXTERNAL):
        return None
    older = sorted(run for run in experience_segment_use(experience=experience).runs if run < latest_run_id)
    return {"runs": older, "target": latest_run_id} if older else None


def experience_segments_migrate(
    *,
    experience: Experience,
    run_id: int,
    mapping: dict[str, str],
    move_bandit: bool = True,
    expected_version: int | None = None,
    by: AbstractBaseUser | None = None,
) -> Experience:
    """Point the experience at clustering run `run_id`: each targeted segment key of another run is
    replaced by `mapping[key]` (a segment of `run_id`) or dropped (""), and a per-segment bandit
    learning on another run learns on `run_id` (unless `move_bandit` is False).

    Raises ExperienceError naming the field when the run is not finished, a mapping is missing or
    names a segment of another run, every targeted segment would be dropped (the experience would
    then reach everyone), or the experience changed since `expected_version` was shown.
    """
    run = hooks.segments().run_for_project(project_id=experience.project_id, run_id=run_id)
    if run is None:
        raise ExperienceError("run", f"no clustering run #{run_id} in this project; pick a run from the list")
    if run.status != "done":
        raise ExperienceError(
            "run", f"run #{run_id} is {run.status}: only a finished run can be migrated to; wait for it or pick another"
        )
    new_keys = {s.key for s in hooks.segments().run_segments(run=run)}
    with transaction.atomic():
        locked = Experience.objects.select_for_update().get(pk=experience.pk)
        if expected_version is not None and locked.version != expected_version:
            raise ExperienceError(
                "version",
                f"the experience was edited while you reviewed (now version {locked.version});"
                " review the proposal again",
            )
        use = experience_segment_use(experience=locked)
        old_keys = [key for run_keys in use.keys_by_run.values() for key in run_keys if key not in new_keys]
        bandit_from = use.bandit_run if move_bandit and use.bandit_run != run_id else None
        if not old_keys and bandit_from is None:
            raise ExperienceError(
                "run", f"nothing to migrate: the experience uses no segments of a run other than #{run_id}"
            )
        for key in mapping:
            if key not in old_keys:
                raise ExperienceError("mapping", f"“{key}” is not an old segment this experience targets")
        for key in old_keys:
            if key not in mapping:
                raise ExperienceError(f"mapping.{key}", f"choose a segment of run #{run_id} for “{key}”, or drop it")
            if mapping[key] and mapping[key] not in new_keys:
                raise ExperienceError(
                    f"mapping.{key}", f"“{mapping[key]}” is not a segment of run #{run_id}; pick one from its list"
                )
        targeting = dict(locked.targeting or {})
        segments: list[str] = []
        for key in targeting.get("segments", []):
            replacement = mapping.get(key, key) if key in old_keys else key
            if replacement and replacement not in segments:
                segments.append(replacement)
        if targeting.get("segments") and not segments:
            raise ExperienceError(
                "mapping",
                "dropping every segment would show the experience to everyone; map at least one segment, or"
                " remove segment targeting in the experience form",
            )
        fields: dict = {}
        if segments != targeting.get("segments", []):
            fields["targeting"] = {**targeting, "segments": segments}
        if bandit_from is not None:
            fields["segment_attribute"] = run_source(run_id)
        note = {
            "migration": {
                "to_run": run_id,
                "from_runs": sorted(use.runs - {run_id}),
                "mapping": {key: mapping[key] for key in old_keys},
                "bandit": [run_source(bandit_from), run_source(run_id)] if bandit_from is not None else None,
            }
        }
        return experience_update(experience=locked, by=by, audit_action="migrate", audit_note=note, **fields)
