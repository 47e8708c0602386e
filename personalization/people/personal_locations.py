"""Where personalization keeps data about a person: its entries in the registry of personal data
locations (personalization/people/personal_data.py). Imported once, by PersonalizationConfig.ready().

Segments and privacy register their own tables from their own apps; nothing here names theirs.
"""

from collections.abc import Callable
from dataclasses import replace

from django.db import connection, transaction

from personalization.experiences.metric_values import metric_values_profiles_refresh
from personalization.models import DeadLetter, Event, EventClaim, Exposure, ExposureClaim, Profile, ProfileIdentity
from personalization.people import live_activity
from personalization.people import subjects as subject_data
from personalization.people.personal_data import (
    ORDER_AFTER_PROFILE,
    ORDER_IDENTITIES,
    ORDER_PROFILE,
    ORDER_ROWS,
    ORDER_STREAM,
    Location,
    Subject,
    count_erase,
    register,
    table,
    units,
)


def _exposures_merge(source: int, target: int) -> None:
    """Exposures keep one row per experience: the earlier of the two, since analysis counts from a
    person's first exposure."""
    table_name = Exposure._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"DELETE FROM {table_name} later USING {table_name} earlier"
            " WHERE later.profile_id IN (%s, %s) AND earlier.profile_id IN (%s, %s)"
            " AND later.profile_id <> earlier.profile_id AND later.experience_key = earlier.experience_key"
            " AND (later.exposed_at, later.id) > (earlier.exposed_at, earlier.id)",
            [source, target, source, target],
        )
    Exposure.objects.filter(profile_id=source).update(profile_id=target)
    # The claims (one per person and experience) follow: the target's are those of its exposures now.
    claims = ExposureClaim._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {claims} WHERE profile_id = %s", [source])
        cursor.execute(
            f"INSERT INTO {claims} (project_id, profile_id, experience_key)"
            f" SELECT project_id, profile_id, experience_key FROM {table_name} WHERE profile_id = %s"
            " ON CONFLICT DO NOTHING",
            [target],
        )


def _profile_merge(source: int, target: int) -> None:
    Profile.objects.filter(pk=source).delete()


def _exposure_field_cleared(field: str) -> tuple[Callable, Callable]:
    """(erase, verify) of one column of the person's exposures that a location clears (sets to NULL):
    on objection and erasure, while the exposures stay for measurement until erasure deletes them."""

    def rows(subject: Subject):
        return Exposure.objects.filter(profile_id__in=subject.profile_ids, **{f"{field}__isnull": False})

    def erase(subject: Subject, progress: Callable[[int], None]) -> int:
        cleared = rows(subject).update(**{field: None})
        progress(cleared)
        return cleared

    return erase, lambda subject: rows(subject).count()


_exposure_segments_erase, _exposure_segments_verify = _exposure_field_cleared("behavior_segments")


register(
    Location(
        name="pending_events",
        store="Redis",
        category="behavior events not yet stored (stream entries)",
        purpose="ingestion: events wait here for a few seconds until the drain stores them",
        retention="seconds (until drained)",
        mechanism="stream entries rewritten without the subject's events (XADD of the rest, XDEL)",
        columns=("event_id", "type", "timestamp", "user_id", "anonymous_id", "properties"),
        export=units(subject_data.stream_events_read),
        erase=count_erase(subject_data.stream_events_purge),
        verify=units(subject_data.stream_events_count),
        order=ORDER_STREAM,
        redis_key="EVENTS_STREAM",
    )
)
register(
    table(
        name="events",
        model=Event,
        columns=("event_id", "type", "ts", "session_id", "value", "properties", "received_at"),
        category="behavior events: pages viewed, clicks, searches, purchases, identify and consent calls",
        purpose="personalization, behavior segments and measuring experiences",
        retention="the project's event retention (Privacy → Processing record & settings), then deleted hourly",
    )
)


# The claims tables hold the unique keys the partitioned events and exposures tables cannot
# (migration 0013). Event ids are chosen by the client's code and may carry anything, so a claim is
# personal data. An event's claim is found through the person's events, so it is erased before them.
def _claims_location(
    *, name: str, model, rows: str, columns: tuple[str, ...], params: Callable[[Subject], dict] | None = None, **more
) -> Location:
    """A claims table's location: `rows` is the FROM <claims table> c WHERE … of the subject's claims,
    taking %(project)s, %(profiles)s and what `params` adds for the subject."""

    def statement_params(subject: Subject) -> dict:
        return {**_claims_params(subject), **(params(subject) if params else {})}

    def fetch(statement: str, subject: Subject) -> list[tuple]:
        with connection.cursor() as cursor:
            cursor.execute(statement, statement_params(subject))
            return cursor.fetchall()

    def export(subject: Subject):
        listed = ", ".join(f"c.{column}" for column in columns)
        for row in fetch(f"SELECT {listed} {rows} ORDER BY {listed}", subject):
            yield dict(zip(columns, row, strict=True))

    def erase(subject: Subject, progress: Callable[[int], None]) -> int:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(f"DELETE {rows}", statement_params(subject))
            removed = cursor.rowcount
        progress(removed)
        return removed

    return Location(
        name=name,
        store="PostgreSQL",
        columns=columns,
        export=export,
        erase=erase,
        verify=lambda subject: fetch(f"SELECT count(*) {rows}", subject)[0][0],
        model=model._meta.label,
        **more,
    )


def _claims_params(subject: Subject) -> dict:
    return {"project": subject.project_id, "profiles": list(subject.profile_ids)}


def _event_ids_of(subject: Subject) -> dict:
    """The subject's event ids, as a value the claims query is given (not a subquery): PostgreSQL looks a
    given array up by hashing it, but tests a subquery's array element by element for every claim it
    reads, and with a fresh table's missing statistics it read them all (6,000 claims against 6,000 ids of
    one person: 29 s for the erasure, minutes for a bigger history)."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT DISTINCT event_id FROM {Event._meta.db_table}"
            " WHERE project_id = %s AND profile_id = ANY(%s::bigint[])",
            [subject.project_id, list(subject.profile_ids)],
        )
        return {"event_ids": [event_id for (event_id,) in cursor.fetchall()]}


register(
    _claims_location(
        name="event_claims",
        model=EventClaim,
        # The person's event ids first (their events by the profile index, _event_ids_of), then their
        # claims by the claims' key. Not a join: the events table has no index on event_id, and a planner
        # without statistics (a fresh or just-loaded table) walked every claim of the project and scanned
        # the events for each, minutes at 20,000 people.
        rows=f"FROM {EventClaim._meta.db_table} c"
        " WHERE c.project_id = %(project)s AND c.event_id = ANY(%(event_ids)s::varchar[])",
        params=_event_ids_of,
        columns=("event_id", "ts"),
        category="the ids of the person's stored events (client-chosen), so each is stored once",
        purpose="storing each event once (a retry or a second import is recognised)",
        retention="as long as the event (deleted with it by the event retention)",
        mechanism="DELETE of the claims of the person's events, before the events",
        order=ORDER_ROWS - 10,  # before "events": the claims are found through them
    )
)
register(
    _claims_location(
        name="exposure_claims",
        model=ExposureClaim,
        rows=f"FROM {ExposureClaim._meta.db_table} c"
        " WHERE c.project_id = %(project)s AND c.profile_id = ANY(%(profiles)s::bigint[])",
        columns=("experience_key",),
        category="which experiences the person has been shown (one row per experience)",
        purpose="keeping one exposure per person and experience",
        retention="as long as the exposure (deleted with it by the retention)",
        mechanism="DELETE of the person's claims",
        order=ORDER_ROWS + 25,  # merges: "exposures" moves them with the exposures (_exposures_merge)
    )
)
_exposure_segments = table(
    name="exposure_segments",
    model=Exposure,
    order=ORDER_ROWS + 10,  # before "exposures", which deletes the rows this one clears
    columns=("experience_key", "exposed_at", "behavior_segments"),
    category="the segments (behavior clusters, lookalikes, rules) the person was in when shown an experience",
    purpose="lift per behavior segment (profiling)",
    retention="as long as the exposure; cleared on objection",
    profiling=True,
)
register(
    replace(
        _exposure_segments,
        mechanism="UPDATE of the person's exposures setting behavior_segments to NULL",
        erase=_exposure_segments_erase,
        verify=_exposure_segments_verify,
        merge=None,  # the rows are the exposures', which "exposures" moves
    )
)
_exposure_live_erase, _exposure_live_verify = _exposure_field_cleared("live")
register(
    replace(
        table(
            name="exposure_live",
            model=Exposure,
            order=ORDER_ROWS + 12,  # before "exposures", which deletes the rows this one clears
            columns=("experience_key", "exposed_at", "live"),
            category="what decide knew when it showed an experience: journey stage, device, new or returning,"
            " first touch, tenure, the live facts its targeting read, intent and predictive scores",
            purpose="lift by stage, device, intent and first touch at exposure; CUPAC (profiling)",
            retention="as long as the exposure; cleared on objection",
            profiling=True,
        ),
        mechanism="UPDATE of the person's exposures setting live to NULL",
        erase=_exposure_live_erase,
        verify=_exposure_live_verify,
        merge=None,  # the rows are the exposures', which "exposures" moves
    )
)
register(
    table(
        name="exposures",
        model=Exposure,
        order=ORDER_ROWS + 20,
        columns=("experience_key", "variant_key", "arm", "reason", "segment", "exposed_at", "source", "converted"),
        category="experiences and variants shown, why (reason code), and their outcome",
        purpose="measuring experiences; bandit allocation",
        retention="the project's event retention (Privacy → Processing record & settings), then deleted hourly",
        merge=_exposures_merge,
    )
)


_metric_values_erase, _metric_values_verify = _exposure_field_cleared("metric_values")


def _metric_values_merge(source: int, target: int) -> None:
    """After "events" and "exposures" moved the source's rows: the target's exposures measured again
    over the events they now have (the kept values of each metric, as a report's scan would find them)."""
    project_id = Profile.objects.filter(pk=target).values_list("project_id", flat=True).first()
    if project_id is None:
        return
    with connection.cursor() as cursor:
        # As the drain does while it writes this person's events: it waits, nothing is missed.
        cursor.execute("SELECT 1 FROM personalization_profile WHERE id = %s FOR NO KEY UPDATE", [target])
        metric_values_profiles_refresh(cursor, project_id=project_id, profile_ids=[target])


_exposure_metric_values = table(
    name="exposure_metric_values",
    model=Exposure,
    order=ORDER_ROWS + 22,  # merges: after "events" and "exposures" have moved the rows it is computed from
    columns=("experience_key", "exposed_at", "metric_values"),
    category="measurements of the person's behavior before and after being shown an experience (events counted,"
    " revenue, time to a purchase, sessions), one number per metric",
    purpose="measuring experiences with every metric of a lift report",
    retention="as long as the exposure (deleted with it)",
)
register(
    replace(
        _exposure_metric_values,
        mechanism="UPDATE of the person's exposures setting metric_values to NULL (the exposures themselves are"
        ' deleted by "exposures")',
        erase=_metric_values_erase,
        verify=_metric_values_verify,
        merge=_metric_values_merge,
    )
)
register(
    table(
        name="dead_letters",
        model=DeadLetter,
        order=ORDER_ROWS + 30,
        profile_field="",
        id_fields=("user_id", "anonymous_id"),
        columns=("event_id", "user_id", "anonymous_id", "payload", "error", "received_at"),
        category="events the drain could not store, with the error",
        purpose="letting an admin repair and retry events instead of losing them",
        retention="until an admin retries or deletes them",
    )
)
register(
    table(
        name="identities",
        model=ProfileIdentity,
        order=ORDER_IDENTITIES,
        columns=("kind", "value", "created_at"),
        category="identifiers: user id and anonymous (device) ids",
        purpose="recognising the same person across visits and devices",
        retention="as long as the profile",
        id_fields=("value",),
    )
)
register(
    table(
        name="profiles",
        model=Profile,
        order=ORDER_PROFILE,
        profile_field="pk",
        id_fields=("external_id",),
        columns=("external_id", "attributes", "consent", "do_not_personalize", "first_seen", "last_seen"),
        category="profile: user id, attributes sent by the site, consent, first and last activity",
        purpose="personalization and targeting",
        retention="until erased; inactive profiles' events expire with the event retention",
        merge=_profile_merge,
    )
)
register(
    Location(
        name="decide_hash",
        store="Redis",
        category="decide data: attributes, do-not-personalize and consent flags, segments, sticky assignments",
        purpose="answering decide in one Redis round trip; showing a person the same variant",
        retention="180 days after last use (key expiry)",
        mechanism="DEL of every kr:<project>:u:<id> key",
        columns=("unit_id", "fields"),
        export=units(subject_data.unit_hashes_read),
        erase=count_erase(subject_data.unit_hashes_delete),
        verify=units(subject_data.unit_hashes_count),
        order=ORDER_AFTER_PROFILE,
        redis_key="unit",
    )
)
register(
    Location(
        name="decide_scores",
        store="Redis",
        category="predictive scores decide reads: likely to buy, expected revenue, lapse risk and top percents",
        purpose="targeting experiences by predicted behavior (profiling)",
        retention="replaced at each retrain; cleared on objection or opt-out; 180 days after last use",
        mechanism='HDEL of the "ps" field of every kr:<project>:u:<id> key',
        columns=("unit_id", "scores"),
        export=units(subject_data.unit_scores_read),
        erase=count_erase(subject_data.unit_scores_delete),
        verify=units(subject_data.unit_scores_count),
        # Before decide_hash, which deletes the whole hash on erasure; objection clears only this.
        order=ORDER_AFTER_PROFILE - 10,
        profiling=True,
    )
)
register(
    Location(
        name="decide_intents",
        store="Redis",
        category="intent scores decide reads: how strongly the person's recent words express each named intent",
        purpose="targeting experiences by intent (profiling)",
        retention="replaced after each drain of their events; cleared on objection or opt-out; 180 days after last use",
        mechanism='HDEL of the "pi" field of every kr:<project>:u:<id> key',
        columns=("unit_id", "intents"),
        export=units(subject_data.unit_intents_read),
        erase=count_erase(subject_data.unit_intents_delete),
        verify=units(subject_data.unit_intents_count),
        # Before decide_hash, which deletes the whole hash on erasure; objection clears only this.
        order=ORDER_AFTER_PROFILE - 10,
        profiling=True,
    )
)
register(
    Location(
        name="live_active",
        store="Redis",
        category="that the person's device or account sent an event in the last hour, and when",
        purpose="the live pages: who would match an experience now, sessions by journey stage",
        retention="one hour (trimmed by every events request; the key expires an hour after the last)",
        mechanism="ZREM of every id from kr:<project>:live:active",
        columns=("unit_id", "last_event_at"),
        export=units(live_activity.live_active_read),
        erase=count_erase(live_activity.live_active_delete),
        verify=units(live_activity.live_active_count),
        order=ORDER_AFTER_PROFILE,
        redis_key="live_active",
    )
)
