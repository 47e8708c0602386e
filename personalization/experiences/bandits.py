"""Bandit updates: count exposures and attributed conversions in PostgreSQL, compute allocation
weights (personalization.experiences.thompson), keep them as history and publish them to decide."""

import logging

from django.db import connection, transaction
from django.utils import timezone

from personalization.experiences import thompson as bandit
from personalization.models import BanditWeights, Experience, ExperienceStatus, Policy
from personalization.segment_keys import segment_field, source_live

log = logging.getLogger(__name__)

# Holdout arms never feed a bandit; opted-out users never produce an exposure at all. The segment
# is the one recorded at exposure, or, for a live source, the live field the exposure recorded
# (exposures without live state count in the global bandit only, as "").
_COUNTS_SQL = """
SELECT x.variant_key, {segment} AS seg, count(*) AS exposures, count(*) FILTER (WHERE x.converted) AS conversions
FROM personalization_exposure x
WHERE x.project_id = %(project)s AND x.experience_key = %(key)s AND x.arm = 'variant'
GROUP BY 1, 2
"""


def bandit_counts(*, experience: Experience) -> dict[str, dict[str, bandit.ArmStats]]:
    """segment → variant key → ArmStats, over every exposure so far."""
    order = list(experience.variants.values_list("key", flat=True))
    live = source_live(experience.segment_attribute) if experience.policy == Policy.SEGMENT_BANDIT else None
    segment = "coalesce(x.live ->> %(live)s, '')" if live else "x.segment"
    with connection.cursor() as cursor:
        cursor.execute(
            _COUNTS_SQL.format(segment=segment),
            {"project": experience.project_id, "key": experience.key, "live": live},
        )
        rows = cursor.fetchall()
    counts: dict[str, dict[str, list[int]]] = {}
    for variant_key, segment, exposures, conversions in rows:
        if variant_key not in order:
            continue  # a variant since removed
        per_variant = counts.setdefault(segment, {key: [0, 0] for key in order})
        per_variant[variant_key][0] += exposures
        per_variant[variant_key][1] += conversions
    return {
        segment: {key: bandit.ArmStats(exposures=n, conversions=c) for key, (n, c) in per_variant.items()}
        for segment, per_variant in counts.items()
    }


def bandit_update(*, experience_id: int) -> dict[str, list[float]] | None:
    """One update of a running bandit experience; returns segment → weights ("" is the global bandit)."""
    experience = Experience.objects.filter(pk=experience_id).first()
    if experience is None or experience.status != ExperienceStatus.RUNNING or experience.policy == Policy.FIXED:
        return None  # deleted, stopped or not a bandit since the task was queued: nothing to do
    order = list(experience.variants.values_list("key", flat=True))
    by_segment = bandit_counts(experience=experience)
    empty = {key: bandit.ArmStats(exposures=0, conversions=0) for key in order}
    totals = (
        {
            key: bandit.ArmStats(
                exposures=sum(s[key].exposures for s in by_segment.values()),
                conversions=sum(s[key].conversions for s in by_segment.values()),
            )
            for key in order
        }
        if by_segment
        else empty
    )
    global_arms = [totals[key] for key in order]
    weights = {
        "": bandit.allocation_weights(global_arms, floor=experience.bandit_floor, burn_in=experience.bandit_burn_in)
    }
    stats = {"": totals}
    if experience.policy == Policy.SEGMENT_BANDIT:
        # Only segments of the current source: after a migration to a newer clustering run the old
        # run's segments keep their history but get no new weights (their exposures stay in the totals).
        source = segment_field(experience.segment_attribute)
        prefix = source[5:] if source.startswith("segs:") else ""
        segments = {
            seg: [arms[key] for key in order] for seg, arms in by_segment.items() if seg and seg.startswith(prefix)
        }
        if segments:
            weights.update(
                bandit.segment_allocation_weights(
                    segments, global_arms, floor=experience.bandit_floor, burn_in=experience.bandit_burn_in
                )
            )
            stats.update({seg: by_segment[seg] for seg in segments})
    now = timezone.now()
    with transaction.atomic():
        BanditWeights.objects.bulk_create(
            BanditWeights(
                experience=experience,
                segment=segment,
                computed_at=now,
                weights=dict(zip(order, [round(w, 6) for w in segment_weights], strict=True)),
                stats={key: [arm.exposures, arm.conversions] for key, arm in stats[segment].items()},
            )
            for segment, segment_weights in weights.items()
        )
    return weights


def bandit_experiences_running(*, project_id: int | None = None) -> list[tuple[int, int]]:
    """(experience id, project id) of every running bandit."""
    running = Experience.objects.filter(status=ExperienceStatus.RUNNING).exclude(policy=Policy.FIXED)
    if project_id is not None:
        running = running.filter(project_id=project_id)
    return list(running.values_list("pk", "project_id"))
