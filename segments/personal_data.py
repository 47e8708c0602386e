"""Where segments keep data about a person: its entries in personalization's registry of personal
data locations. Imported once, by SegmentsConfig.ready()."""

from collections.abc import Callable, Iterator

from django.db import transaction

from personalization import selectors as people
from personalization.people.personal_data import ORDER_ROWS, Location, Subject, register, table
from segments import meaning, text_encoder, why
from segments.models import (
    LookalikeBuild,
    MapPoint,
    MembershipPublish,
    ProfileEmbedding,
    ProfileIntent,
    ProfileMeaning,
    ProfileScore,
    SegmentMembership,
    TextEmbedding,
)
from segments.services import vector_io

_ORDER = ORDER_ROWS + 100  # rows pointing at a profile: before the profile goes

register(
    table(
        name="segment_memberships",
        model=SegmentMembership,
        order=_ORDER,
        columns=("segment__key", "segment__name", "segment__kind", "score"),
        category="segments the person is in: behavior clusters, lookalike audiences, rule segments",
        purpose="targeting experiences and per-segment measurement (profiling)",
        retention="until the next clustering run, lookalike rebuild or rule refresh",
        profiling=True,
    )
)
register(
    table(
        name="embeddings",
        model=ProfileEmbedding,
        order=_ORDER,
        columns=("embedder_version", "events", "updated_at", "vector"),
        category="behavior vector derived from the person's events",
        purpose="behavior segments and lookalike audiences (profiling)",
        retention="replaced at each refit; deleted with the profile",
        profiling=True,
    )
)
register(
    table(
        name="meaning_vectors",
        model=ProfileMeaning,
        order=_ORDER,
        columns=("encoder", "texts", "updated_at", "vector"),
        category="meaning vector: what the person's searches, page titles and product names are about (text vectors)",
        purpose="behavior segments and lookalike audiences (profiling)",
        retention="replaced at each refit and fold-in; deleted with the profile or on objection",
        profiling=True,
    )
)
register(
    table(
        name="segment_map_points",
        model=MapPoint,
        order=_ORDER,
        columns=("run_id", "x", "y", "index"),
        category="the person's dot on a clustering run's 2-D segment map (a sample of up to 3,000 people)",
        purpose="showing marketers how behavior segments lie (profiling)",
        retention="as long as the clustering run",
        profiling=True,
    )
)
register(
    table(
        name="profile_scores",
        model=ProfileScore,
        order=_ORDER,
        columns=(
            "likely_to_buy",
            "likely_to_buy_top",
            "expected_revenue",
            "expected_revenue_top",
            "lapse_risk",
            "lapse_risk_top",
            "scored_at",
        ),
        category="predictive scores derived from the person's events: likely to buy, expected revenue, lapse risk",
        purpose="targeting experiences by predicted behavior (profiling)",
        retention="replaced at each retrain; deleted on opt-out or objection",
        profiling=True,
    )
)


register(
    table(
        name="intent_scores",
        model=ProfileIntent,
        order=_ORDER,
        columns=("intent__key", "intent__name", "score", "phrases", "scored_at"),
        category="how strongly the person's recent searches, page titles and product names express each named"
        " intent, with the (up to three) texts that drove it",
        purpose="targeting experiences by intent (profiling)",
        retention="replaced after each drain of the person's events; deleted on opt-out, objection or with the intent",
        profiling=True,
    )
)


def _publish_outbox_rows(subject: Subject):
    outbox = MembershipPublish.objects.filter(project_id=subject.project_id)
    return outbox.filter(profile_ids__overlap=list(subject.profile_ids))


def _publish_outbox_export(subject: Subject) -> Iterator[dict]:
    for row in _publish_outbox_rows(subject):
        yield {"pending_since": row.heartbeat_at.isoformat()}


def _publish_outbox_erase(subject: Subject, progress: Callable[[int], None]) -> int:
    """Take the person's profile ids out of pending publishes (the publish position moves with them)."""
    gone, removed = set(subject.profile_ids), 0
    with transaction.atomic():
        for row in _publish_outbox_rows(subject).select_for_update():
            row.done = sum(1 for pid in row.profile_ids[: row.done] if pid not in gone)
            row.profile_ids = [pid for pid in row.profile_ids if pid not in gone]
            row.save(update_fields=["profile_ids", "done"])
            removed += 1
    progress(removed)
    return removed


register(
    Location(
        name="segment_publish_outbox",
        store="PostgreSQL",
        category="the person's profile number in a pending publish of segment memberships to decide",
        purpose="finishing a publish a crashed worker left undone",
        retention="seconds: deleted once decide has the memberships",
        mechanism="the profile numbers removed from each pending publish",
        columns=("pending_since",),
        export=_publish_outbox_export,
        erase=_publish_outbox_erase,
        verify=lambda subject: _publish_outbox_rows(subject).count(),
        order=_ORDER,
        model=MembershipPublish._meta.label,
    )
)


def _lookalike_seed_rows(subject: Subject):
    """Builds still queued or running whose seed names one of the person's profiles (a finished or
    failed build has already dropped its seed)."""
    rows = LookalikeBuild.objects.filter(project_id=subject.project_id).exclude(seed_weights={})
    return [row for row in rows if any(str(pid) in row.seed_weights for pid in subject.profile_ids)]


def _lookalike_seed_export(subject: Subject) -> Iterator[dict]:
    for row in _lookalike_seed_rows(subject):
        yield {"lookalike": row.name, "since": row.created_at.isoformat()}


def _lookalike_seed_erase(subject: Subject, progress: Callable[[int], None]) -> int:
    """Take the person's profiles out of the seeds of builds in flight (the build goes on without them)."""
    gone, removed = {str(pid) for pid in subject.profile_ids}, 0
    with transaction.atomic():
        for row in _lookalike_seed_rows(subject):
            row = LookalikeBuild.objects.select_for_update().get(pk=row.pk)
            row.seed_weights = {pid: w for pid, w in row.seed_weights.items() if pid not in gone}
            row.save(update_fields=["seed_weights"])
            removed += 1
    progress(removed)
    return removed


def _lookalike_seed_merge(source: int, target: int) -> None:
    """A merged person stays in the seed under the profile that remains."""
    with transaction.atomic():
        for row in LookalikeBuild.objects.exclude(seed_weights={}).select_for_update():
            if str(source) in row.seed_weights:
                weights = dict(row.seed_weights)
                weights[str(target)] = max(weights.pop(str(source)), weights.get(str(target), 0.0))
                row.seed_weights = weights
                row.save(update_fields=["seed_weights"])


register(
    Location(
        name="lookalike_build_seeds",
        store="PostgreSQL",
        category="the person's profile number in the seed of a lookalike audience being built",
        purpose="building the lookalike audience a marketer asked for (profiling)",
        retention="minutes: the seed is dropped when the build finishes or fails",
        mechanism="the profile numbers removed from the seeds of builds in flight",
        columns=("lookalike", "since"),
        export=_lookalike_seed_export,
        erase=_lookalike_seed_erase,
        verify=lambda subject: len(_lookalike_seed_rows(subject)),
        order=_ORDER,
        merge=_lookalike_seed_merge,
        model=LookalikeBuild._meta.label,
        profiling=True,
    )
)


def _staging_export(subject: Subject) -> Iterator[dict]:
    count = vector_io.staging_rows_count(project_id=subject.project_id, profile_ids=list(subject.profile_ids))
    if count:
        yield {"rows": count}


def _staging_erase(subject: Subject, progress: Callable[[int], None]) -> int:
    removed = vector_io.staging_rows_delete(project_id=subject.project_id, profile_ids=list(subject.profile_ids))
    progress(removed)
    return removed


# A refit writes everyone's new vectors to two unlogged staging tables before it swaps them in; a worker
# killed mid-refit leaves them until the project's next refit (segments/services/vector_io.py).
register(
    Location(
        name="refit_staging",
        store="PostgreSQL",
        category="the person's new behavior and meaning vectors while a refit runs (or after one was killed)",
        purpose="behavior segments and lookalike audiences (profiling)",
        retention="minutes: swapped into place or dropped when the refit ends; a killed refit's until the next",
        mechanism="DELETE of the person's rows from each staging table of the project",
        columns=("rows",),
        export=_staging_export,
        erase=_staging_erase,
        verify=lambda subject: vector_io.staging_rows_count(
            project_id=subject.project_id, profile_ids=list(subject.profile_ids)
        ),
        order=_ORDER,
        profiling=True,
    )
)


def _text_digests(subject: Subject) -> list[bytes]:
    """The cache keys of the texts the person's stored events carry."""
    digests: set[bytes] = set()
    for profile_id in subject.profile_ids:
        events = people.profile_events(project_id=subject.project_id, profile_id=profile_id)
        for properties in events.values_list("properties", flat=True).iterator(chunk_size=5_000):
            digests.update(text_encoder.text_digest(text) for text, _ in meaning.event_texts(properties or {}))
    return sorted(digests)


def _text_vector_rows(subject: Subject):
    return TextEmbedding.objects.filter(digest__in=_text_digests(subject))


def _text_vectors_erase(subject: Subject, progress: Callable[[int], None]) -> int:
    removed = _text_vector_rows(subject).delete()[1].get(TextEmbedding._meta.label, 0)
    progress(removed)
    return removed


# The cache holds a digest and a vector per text, no text and no link to anyone; but a vector is derived
# from the person's words, so erasure takes out the vectors of every text their events carry (another
# person's same query is encoded again when needed). Before the events go, which it reads.
register(
    Location(
        name="text_vectors",
        store="PostgreSQL",
        category="vectors of the texts the person's events carry (queries, titles, product names), keyed by a digest",
        purpose="encoding each text once for meaning vectors",
        retention="until the texts' events are erased",
        mechanism="DELETE of the cached vectors of the texts found in the person's events",
        columns=("texts_with_a_cached_vector",),
        export=lambda subject: iter([{"texts_with_a_cached_vector": _text_vector_rows(subject).count()}]),
        erase=_text_vectors_erase,
        verify=lambda subject: _text_vector_rows(subject).count(),
        order=ORDER_ROWS - 1,
        model=TextEmbedding._meta.label,
    )
)


def _explanations_export(subject: Subject) -> Iterator[dict]:
    found = why.profile_explanations(project_id=subject.project_id, profile_ids=list(subject.profile_ids))
    if found["items"]:
        yield {"kind": "behavior", "key": "", "name": "what the explanations rest on", "why": found["summary"]}
    for item in found["items"]:
        yield {"kind": item["kind"], "key": item["key"], "name": item["name"], "why": item["why"]}


# Nothing is stored here: the explanations are worked out, at export, from the memberships, intent
# and predictive scores above (segments/why.py), so a person reads why, not only what (Art. 15 (1)(h)).
# Erasing or objecting removes what they rest on; there is nothing of their own to remove.
register(
    Location(
        name="profiling_explanations",
        store="PostgreSQL",
        category="why the person is in each segment, intent and score band, in words (derived when exported)",
        purpose="telling the person the logic of the profiling that targets experiences",
        retention="not stored: derived from the segment, intent and score rows at export",
        mechanism="nothing stored: gone with the rows it is derived from",
        columns=("kind", "key", "name", "why"),
        export=_explanations_export,
        erase=lambda subject, progress: 0,
        verify=lambda subject: 0,
        order=_ORDER,
        profiling=True,
    )
)
