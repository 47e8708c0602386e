"""Which profile each drained event belongs to.

Resolves a batch's user and anonymous ids to profiles, creating the profiles and identities it needs.
A user id seen with an anonymous id stitches them: the anonymous profile becomes the user's, or is
merged into the user's existing profile, moving every table the privacy registry lists. Attributes
sent with identify events are merged into the profile.
"""

from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson
import psycopg
from django.db import IntegrityError, connection, transaction

from personalization.models import IdentityKind, Profile
from personalization.people import personal_data

_PROFILES_LOCK = 0x4B5250  # advisory lock class: profile creation in one project ("KRP")
# The kinds as plain strings: reading a member off the enum class costs about three dictionary
# lookups, and the plan makes several per event (equal and hashed alike, so keys match either way).
_USER, _ANONYMOUS = IdentityKind.USER.value, IdentityKind.ANONYMOUS.value


def _identities_load(project_id: int, events: list[dict]) -> tuple[dict[tuple[str, str], int], dict[int, bool]]:
    """The stored identities among a batch's ids: (kind, value) -> profile, and which profiles have a user id."""
    users = list({e["user_id"] for e in events if e["user_id"]})
    anons = list({e["anonymous_id"] for e in events if e["anonymous_id"]})
    ids: dict[tuple[str, str], int] = {}
    has_user: dict[int, bool] = {}
    with connection.cursor() as cursor:
        # One branch per kind, each an index lookup on (project, kind, value) whatever the statistics
        # say. Both kinds ORed in one WHERE were planned, for a project the statistics did not know
        # yet (a fresh import), as a scan of all its identities per batch: 6-13 s at 300k people.
        cursor.execute(
            f"{_IDENTITIES_SQL} UNION ALL {_IDENTITIES_SQL}",
            [project_id, IdentityKind.USER.value, users, project_id, IdentityKind.ANONYMOUS.value, anons],
        )
        for kind, value, profile_id, with_user in cursor.fetchall():
            ids[(kind, value)] = profile_id
            has_user[profile_id] = with_user
    return ids, has_user


_IDENTITIES_SQL = (
    "SELECT i.kind, i.value, i.profile_id, p.external_id IS NOT NULL"
    " FROM personalization_profileidentity i JOIN personalization_profile p ON p.id = i.profile_id"
    " WHERE i.project_id = %s AND i.kind = %s AND i.value = ANY(%s)"
)


@dataclass
class _ProfilePlan:
    """What a batch needs written before its events can be stored, worked out in memory.

    Profiles the batch creates are referred to by negative numbers (-1 is new_profiles[0]) until
    they are inserted; stored profiles by their id.
    """

    profile_refs: list[int] = field(default_factory=list)  # per event
    new_profiles: list[dict] = field(default_factory=list)  # external_id, first_seen, last_seen, attributes, dropped
    logins: dict[int, str] = field(default_factory=dict)  # stored anonymous profile -> its new user id
    identities: dict[tuple[str, str], int] = field(default_factory=dict)  # new (kind, value) -> profile ref
    merges: list[tuple[int, int]] = field(default_factory=list)  # (stored anonymous profile, user profile ref)
    attributes: dict[int, dict] = field(default_factory=dict)  # stored profile -> attributes to merge in

    @property
    def writes(self) -> bool:
        return bool(self.new_profiles or self.logins or self.identities or self.merges or self.attributes)


def _profiles_plan(events: list[dict], ids: dict[tuple[str, str], int], has_user: dict[int, bool]) -> _ProfilePlan:
    """Profile for every event, creating and stitching profiles as the ids require.

    A user id seen with an anonymous id stitches them: an anonymous profile that logs in becomes the
    user's profile (or is merged into it when the user already had one). Events are taken in order,
    so the outcome is the one writing them one by one would give.
    """
    plan = _ProfilePlan()
    ids, has_user = dict(ids), dict(has_user)
    merged_into: dict[int, int] = {}

    def new(event: dict, external_id: str | None) -> int:
        plan.new_profiles.append({"external_id": external_id, "first_seen": event["ts"], "attributes": {}})
        return -len(plan.new_profiles)

    for event in events:
        user_id, anon_id = event["user_id"], event["anonymous_id"]
        by_user = ids.get((_USER, user_id)) if user_id else None
        by_anon = ids.get((_ANONYMOUS, anon_id)) if anon_id else None
        if user_id and by_user is None:
            if by_anon is not None and not has_user.get(by_anon):
                if by_anon < 0:
                    plan.new_profiles[-by_anon - 1]["external_id"] = user_id
                else:
                    plan.logins[by_anon] = user_id
                by_user = by_anon
            else:
                by_user = new(event, user_id)
            ids[(_USER, user_id)] = plan.identities[(_USER, user_id)] = by_user
            has_user[by_user] = True
        if anon_id and by_anon is None:
            by_anon = by_user if by_user is not None else new(event, None)
            ids[(_ANONYMOUS, anon_id)] = plan.identities[(_ANONYMOUS, anon_id)] = by_anon
            has_user.setdefault(by_anon, False)
        elif by_user is not None and by_anon is not None and by_anon != by_user and not has_user.get(by_anon):
            if by_anon < 0:
                plan.new_profiles[-by_anon - 1]["dropped"] = True
            else:
                plan.merges.append((by_anon, by_user))
            merged_into[by_anon] = by_user
            for known in (ids, plan.identities):
                for key, value in known.items():
                    if value == by_anon:
                        known[key] = by_user
        if event["type"] == "identify" and isinstance(event["properties"].get("attributes"), dict):
            if by_user > 0:
                target = plan.attributes.setdefault(by_user, {})
            else:
                target = plan.new_profiles[-by_user - 1]["attributes"]
            target.update(event["properties"]["attributes"])
        plan.profile_refs.append(by_user if by_user is not None else by_anon)
    if merged_into:
        plan.profile_refs = [merged_into.get(ref, ref) for ref in plan.profile_refs]
    if plan.new_profiles:
        _new_profiles_last_seen(events, plan)
    return plan


def _new_profiles_last_seen(events: list[dict], plan: _ProfilePlan) -> None:
    """A profile this batch creates is written with last_seen at its newest event of the batch, as the
    drain's last_seen update would set it (exposures do not count there either), so that update, a
    second write of every new person moments later, finds nothing to move."""
    pairs = [(-n - 1, spec["first_seen"]) for n, spec in enumerate(plan.new_profiles)]
    pairs += [
        (ref, event["ts"])
        for event, ref in zip(events, plan.profile_refs, strict=True)
        if ref < 0 and event["type"] != "exposure"
    ]
    for ref, ts in newest_stamps(pairs).items():
        plan.new_profiles[-ref - 1]["last_seen"] = ts


def newest_stamps(pairs: list[tuple[int, str]]) -> dict[int, str]:
    """The newest of each key's times, given as events carry them (ISO 8601 from datetime.isoformat()).

    Times in UTC (what an SDK sends, mostly) compare as text, a fraction of the cost of parsing each:
    the fields are fixed-width, and the "+" of the offset sorts before the "." of a fraction, so
    12:00:00+00:00 comes before 12:00:00.500000+00:00. One time with another offset, and all are parsed."""
    newest: dict[int, str] = {}
    get = newest.get
    for ref, ts in pairs:
        if not ts.endswith("+00:00"):
            return _newest_parsed(pairs)
        seen = get(ref)
        if seen is None or ts > seen:
            newest[ref] = ts
    return newest


def _newest_parsed(pairs: list[tuple[int, str]]) -> dict[int, str]:
    parse = datetime.fromisoformat
    newest: dict[int, tuple[datetime, str]] = {}
    for ref, ts in pairs:
        moment = parse(ts)
        seen = newest.get(ref)
        if seen is None or moment > seen[0]:
            newest[ref] = (moment, ts)
    return {ref: ts for ref, (_, ts) in newest.items()}


def _profiles_plan_apply(project_id: int, plan: _ProfilePlan) -> list[int]:
    """Write a plan and return the profile id of every event: new profiles and identities by COPY with
    ids drawn from the sequence first (no ORM object per row); merges and logins are rare."""
    specs = [(n, spec) for n, spec in enumerate(plan.new_profiles) if not spec.get("dropped")]
    with connection.cursor() as cursor:
        if not plan.merges:  # a merge deletes a profile: the checks on what points at it must run
            row_checks_skip(cursor)
        real: dict[int, int] = {}
        if specs:
            cursor.execute(
                "SELECT nextval(pg_get_serial_sequence('personalization_profile', 'id')) FROM generate_series(1, %s)",
                [len(specs)],
            )
            real = {-n - 1: row[0] for (n, _), row in zip(specs, cursor.fetchall(), strict=True)}
            with cursor.cursor.copy(
                "COPY personalization_profile (id, project_id, external_id, attributes, consent, do_not_personalize,"
                " first_seen, last_seen) FROM STDIN"
            ) as copy:
                for n, spec in specs:
                    seen, attributes = spec["first_seen"], orjson.dumps(spec["attributes"]).decode()
                    last = spec["last_seen"]
                    copy.write_row((real[-n - 1], project_id, spec["external_id"], attributes, "{}", False, seen, last))
        stored = sorted({ref for ref in plan.identities.values() if ref > 0})
        references_lock(cursor, project_id=project_id, profile_ids=stored)
    for profile_id, user_id in plan.logins.items():
        Profile.objects.filter(pk=profile_id).update(external_id=user_id)
    for source, target in plan.merges:
        _profile_merge(project_id, source=source, target=real.get(target, target))
    with (
        connection.cursor() as cursor,
        cursor.cursor.copy(
            "COPY personalization_profileidentity (project_id, profile_id, kind, value, created_at) FROM STDIN"
        ) as copy,
    ):
        now = datetime.now(UTC)
        for (kind, value), ref in plan.identities.items():
            copy.write_row((project_id, real.get(ref, ref), str(kind), value, now))
    for profile_id, attributes in plan.attributes.items():
        _attributes_merge(profile_id, attributes)
    return [real.get(ref, ref) for ref in plan.profile_refs]


_replica_role: dict[str, bool] = {}


def row_checks_skip(cursor) -> bool:
    """Skip the per-row foreign key checks of the current transaction's inserts, where the role may;
    True when they are skipped.

    Every stored event fires two checks (its project, its profile) at commit, every new profile and
    identity one or two: together about 40 % of PostgreSQL's time in a drain. The drain instead
    checks a whole batch at once (references_lock); the checks on the other side (a profile or
    project deleted under rows that point at it) still run, in the deleting transaction, so never
    call this in a transaction that deletes. Changing `session_replication_role` needs a superuser
    or the SET privilege on it (the embedded PostgreSQL and compose's run as a superuser); elsewhere
    the row checks just run. Kairos has no triggers of its own, which replica mode would also skip
    (the bulk history load does the same).
    """
    alias = connection.alias
    if alias not in _replica_role:
        cursor.execute(
            "SELECT current_setting('is_superuser') = 'on'"
            " OR has_parameter_privilege('session_replication_role', 'SET')"
        )
        _replica_role[alias] = cursor.fetchone()[0]
    if _replica_role[alias]:
        cursor.execute("SET LOCAL session_replication_role = replica")
    return _replica_role[alias]


def id_array(ids) -> str:
    """Integer ids as one PostgreSQL array literal (cast it with ::bigint[]): psycopg builds a list
    parameter element by element in Python, which for a batch's thousands of ids cost more than the query."""
    return "{" + ",".join(map(str, ids)) + "}"


def references_lock(cursor, *, project_id: int, profile_ids: list[int]) -> None:
    """The foreign key check of a whole batch in one statement: lock the project and the stored profiles
    it points at as the per-row check would (FOR KEY SHARE: nobody deletes them before commit, drains
    do not wait for each other) and fail as it would when one is gone, e.g. merged away by another
    drain after this one resolved it (the drain then retries from what that drain did)."""
    cursor.execute(
        "SELECT (SELECT count(*) FROM (SELECT FROM personalization_project WHERE id = %s FOR KEY SHARE) p),"
        " (SELECT count(*) FROM (SELECT FROM personalization_profile WHERE id = ANY(%s::bigint[]) ORDER BY id"
        " FOR KEY SHARE) q)",
        [project_id, id_array(profile_ids)],
    )
    projects, profiles = cursor.fetchone()
    if projects != 1 or profiles != len(profile_ids):
        message = f"{len(profile_ids) - profiles} profile(s) or the project {project_id} of a batch are gone"
        raise IntegrityError(message) from psycopg.errors.ForeignKeyViolation(message)


def profiles_resolve(project_id: int, events: list[dict], *, merges: bool = True) -> dict[str, int] | None:
    """Profile id for every event (by event_id), committing the profiles and identities it creates.

    Most batches only name known people: one query, nothing written. Otherwise the plan is made again
    under a per-project lock, from identities read after any other drain's commit, and written in a
    transaction of its own before the events are. A drain that dies between the two leaves profiles
    whose events are stored when its entries are drained again; nothing is written twice.

    `merges=False`: None, with nothing written, when the batch would merge a profile into another (the
    drain resolving a step ahead, while its own transaction may still be writing the profile's rows).
    """
    known = _identities_load(project_id, events)
    plan = _profiles_plan(events, *known)
    if plan.writes:
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [_PROFILES_LOCK, project_id % 2**31])
            locked = _identities_load(project_id, events)
            if locked != known:  # another drain wrote some of these people meanwhile
                plan = _profiles_plan(events, *locked)
            if plan.merges and not merges:
                return None
            refs = _profiles_plan_apply(project_id, plan)
    else:
        refs = plan.profile_refs
    return {event["event_id"]: ref for event, ref in zip(events, refs, strict=True)}


def _profile_merge(project_id: int, *, source: int, target: int) -> None:
    """Fold an anonymous profile into the user profile it turned out to be: every personal data
    location in the registry of personal data moves its rows by its own merge rule, then the source goes."""
    personal_data.subject_merge(source=source, target=target)


def _attributes_merge(profile_id: int, attributes: dict) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE personalization_profile SET attributes = attributes || %s::jsonb WHERE id = %s",
            [orjson.dumps(attributes).decode(), profile_id],
        )
