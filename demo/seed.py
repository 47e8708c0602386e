"""The demo shop: users for every role, the "Demo Shop" project and its keys, 20,000 simulated
visitors with two weeks of behavior, the demo experiences and their exposure history.

The population and its behavior come from demo.world (pure); this module only writes.
History is written with COPY in one transaction (about 0.5 M events in well under a minute), then
the profiles' attributes and their sticky assignments are published to Redis so decide serves the
same variant the history recorded.
"""

import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import DatabaseError, connection, transaction

from config.embedded import VAR
from demo import world as demo
from demo.world import PLANTED_ATTRIBUTE
from personalization import redis_client, rkeys
from personalization.decide import engine
from personalization.models import Experience, IdentityKind, Project, Role
from personalization.services import (
    api_key_create,
    experience_create,
    experience_start,
    membership_set,
    profiles_publish,
    project_create,
    project_delete,
    project_holdout_set,
)

log = logging.getLogger(__name__)

DEMO_SLUG = "demo-shop"
DEMO_NAME = "Demo Shop"
DEMO_PASSWORD = "kairos-demo"  # noqa: S105 -- the published demo login of a local install
DEMO_USERS = (
    ("demo", Role.ADMIN),
    ("marketer", Role.MARKETER),
    ("analyst", Role.ANALYST),
    ("compliance", Role.COMPLIANCE),
    ("developer", Role.DEVELOPER),
)
# 10 % rather than the 5 % default: 2,000 held-out visitors make the demo's overall lift readable.
DEMO_GLOBAL_HOLDOUT = 0.10
_RECEIVE_DELAY = timedelta(milliseconds=400)
_PRE_PERIOD = timedelta(days=14)  # the CUPED covariate window, as the drain computes it
_HOLDOUT_MARKS = {"holdout_global": engine.HOLDOUT_GLOBAL_MARK, "holdout_experience": engine.HOLDOUT_EXPERIENCE_MARK}


def demo_keys_path() -> Path:
    """Where the demo's raw keys are kept for demo_traffic and the README (mode 0600)."""
    return VAR / "demo-keys.json"


def demo_project_get() -> Project | None:
    return Project.objects.filter(slug=DEMO_SLUG).first()


def demo_delete() -> bool:
    """Delete the demo project, its data and its Redis keys; False when there was none."""
    project = demo_project_get()
    if project is None:
        return False
    project_delete(project=project, confirm=project.slug)
    return True


def _user_ensure(username: str) -> AbstractBaseUser:
    """The demo login; an existing user keeps the password it has (someone may have changed it on purpose)."""
    user, created = get_user_model().objects.get_or_create(
        username=username, defaults={"email": f"{username}@demo.local"}
    )
    if created:
        user.set_password(DEMO_PASSWORD)
        user.save(update_fields=["password"])
    return user


def _keys_write(path: Path, data: dict) -> None:
    """Write the raw keys readable by the owner only; replaced atomically so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        os.fchmod(handle.fileno(), 0o600)
        json.dump(data, handle, indent=2)
        handle.write("\n")
    os.replace(tmp, path)


class _Arms:
    """History arms of every demo profile, with the decide engine's hashing and the real salts."""

    def __init__(self, project: Project, experiences: dict[str, Experience]):
        self.project = project
        self.specs = []
        for spec in demo.EXPERIENCES:
            experience = experiences[spec.key]
            weights = [v.weight for v in spec.variants]
            total = sum(weights)
            self.specs.append((spec, experience, [w / total for w in weights]))
        self.by_profile: dict[int, dict[str, tuple[str, str, str, str]]] = {}

    def __call__(self, profile: demo.DemoProfile) -> dict[str, str]:
        """Variant shown per experience; keeps (variant, arm, reason, segment) for the exposure rows."""
        shown, record = {}, {}
        for spec, experience, weights in self.specs:
            arm, index = demo.history_arm(
                unit=profile.anonymous_id,
                project_salt=self.project.holdout_salt,
                global_holdout_share=self.project.global_holdout_share,
                experience_salt=experience.salt,
                holdout_share=experience.holdout_share,
                weights=weights,
            )
            variant = spec.control.key if index is None else spec.variants[index].key
            # Every arm records the segment, as decide does (one function for both).
            segment_field = spec.segment_attribute if spec.policy == "segment_bandit" else ""
            segment = engine.unit_segment({"segment_field": segment_field}, {}, {"attributes": profile.attributes})
            shown[spec.key] = variant
            record[spec.key] = (variant, arm, demo.reason_for(arm, spec.policy), segment)
        self.by_profile[profile.n] = record
        return shown


@contextlib.contextmanager
def _fk_checks_skipped():
    """Skip the per-row foreign key checks of the bulk writes inside, where the role may.

    Every row written inside points at the project created and the profile ids reserved earlier in
    the same transaction, so the checks cannot fail; they are over a million trigger calls, about a
    third of the seed time. Changing `session_replication_role` needs a superuser (the embedded
    PostgreSQL runs as one); elsewhere the checks just run. Kairos has no triggers of its own, which
    replica mode would also skip: one added later must be fired here by hand.
    """
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SET LOCAL session_replication_role = replica")
        skipped = True
    except DatabaseError:
        skipped = False
    try:
        yield
    finally:
        if skipped:
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL session_replication_role = origin")


def _reserve_ids(table: str, count: int) -> list[int]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)", [table, count])
        return [row[0] for row in cursor.fetchall()]


def demo_seed(
    *,
    profiles: int = 20_000,
    days: int = 14,
    seed: int = 7,
    keys_path: Path | None = None,
    progress: Callable[[str], None] | None = None,
    end: datetime | None = None,
) -> Project:
    """Create the demo from scratch (the caller deletes an old one first: see demo_delete). The same
    seed and `end` (default: a minute ago) give the same data: visit times are drawn inside the window
    before `end`, so another `end` draws other visits."""
    say = progress or log.info
    started = time.monotonic()

    def step(message: str) -> None:
        say(f"{time.monotonic() - started:6.1f}s  {message}")

    if demo_project_get() is not None:
        raise ValueError(f"the demo project “{DEMO_SLUG}” exists; delete it first (demo_seed --reset)")
    end = end or datetime.now(UTC) - timedelta(minutes=1)
    with transaction.atomic():
        users = {name: _user_ensure(name) for name, _ in DEMO_USERS}
        owner = users["demo"]
        project = project_create(name=DEMO_NAME, owner=owner, slug=DEMO_SLUG)
        project.holdout_salt = _salt(seed, "global-holdout")
        project.save(update_fields=["holdout_salt"])
        project = project_holdout_set(project=project, share=DEMO_GLOBAL_HOLDOUT, by=owner)
        for name, role in DEMO_USERS[1:]:
            membership_set(project=project, user=users[name], role=role)
        _, public_key = api_key_create(project=project, kind="public", name="Demo site (public)", by=owner)
        _, secret_key = api_key_create(project=project, kind="secret", name="Demo backend (secret)", by=owner)
        experiences = _experiences_create(project, owner, end, seed)
        step(f"users, project, keys and {len(experiences)} experiences")

        population = demo.profiles_generate(profiles, seed=seed)
        ids = _reserve_ids("personalization_profile", len(population))
        step(f"{len(population):,} profiles generated")
        arms = _Arms(project, experiences)
        starts = {key: experience.started_at for key, experience in experiences.items()}
        history = demo.history_generate(population, end=end, days=days, seed=seed, arms=arms, starts=starts)
        writer = _HistoryWriter(project, ids, arms, experiences)
        with _fk_checks_skipped():
            writer.events_copy(history)
            step(f"{writer.events:,} events in {writer.sessions:,} visits ({writer.purchases:,} purchases)")
            identities = _profiles_copy(project, population, ids, writer.seen)
            exposures = writer.exposures_copy()
        step(f"{len(population):,} profiles, {identities:,} identities, {len(exposures):,} exposures")
    step("committed")
    _keys_write(
        keys_path or demo_keys_path(),
        {
            "project": DEMO_SLUG,
            "project_id": project.pk,
            "public_key": public_key,
            "secret_key": secret_key,
            "profiles": profiles,
            "seed": seed,
            "days": days,
            "created_at": datetime.now(UTC).isoformat(),
        },
    )
    units = profiles_publish(project_id=project.pk)
    _sticky_publish(project, population, arms, writer.exposed)
    step(f"published {units:,} profile ids and their sticky assignments to Redis")
    return project


def _salt(seed: int, name: str) -> str:
    """A hash salt that follows from the seed, so one seed gives the same assignments every time."""
    return hashlib.sha256(f"kairos-demo:{seed}:{name}".encode()).hexdigest()[:16]


def _experiences_create(project: Project, owner, end: datetime, seed: int) -> dict[str, Experience]:
    """The demo experiences through the experience services, started, then dated back to their history."""
    created = {}
    for spec in demo.EXPERIENCES:
        fields = spec.service_fields()
        experience = experience_create(project=project, by=owner, **fields)
        experience.salt = _salt(seed, spec.key)
        experience.save(update_fields=["salt"])
        experience = experience_start(experience=experience, by=owner)
        started_at = end - timedelta(days=spec.started_days_ago)
        Experience.objects.filter(pk=experience.pk).update(started_at=started_at)
        experience.started_at = started_at
        created[spec.key] = experience
    return created


class _HistoryWriter:
    """Streams the visits into personalization_event and derives, per profile, what the drain would
    have kept: first and last seen, and each first exposure with its outcomes (goal events and
    revenue in the attribution window, events in the 14 days before as the CUPED covariate)."""

    def __init__(self, project: Project, ids: list[int], arms: _Arms, experiences: dict[str, Experience]):
        self.project_id = project.pk
        self.ids = ids
        self.arms = arms
        self.goals = {key: (e.goal_event, e.attribution_hours) for key, e in experiences.items()}
        self.seen: dict[int, tuple[datetime, datetime]] = {}
        self.exposure_rows: list[tuple] = []
        self.exposed: set[tuple[int, str]] = set()
        self.events = self.sessions = self.purchases = 0

    def events_copy(self, history) -> None:
        current: int | None = None
        timeline: list[tuple[datetime, str, float | None]] = []
        first_shown: dict[str, datetime] = {}
        project_id = self.project_id
        with (
            connection.cursor() as cursor,
            cursor.cursor.copy(
                "COPY personalization_event"
                " (project_id, profile_id, event_id, type, ts, session_id, value, properties, received_at) FROM STDIN"
            ) as copy,
        ):
            for session in history:
                n = session.profile.n
                if n != current:
                    if current is not None:
                        self._profile_done(current, timeline, first_shown)
                    current, timeline, first_shown = n, [], {}
                profile_id = self.ids[n]
                for key in session.shown:
                    first_shown.setdefault(key, session.start)
                for event in session.events:
                    ts, etype, value = event["ts"], event["type"], event["value"]
                    timeline.append((ts, etype, value))
                    copy.write_row(
                        (
                            project_id,
                            profile_id,
                            event["event_id"],
                            etype,
                            ts,
                            event["session_id"],
                            value,
                            orjson.dumps(event["properties"]).decode(),
                            ts + _RECEIVE_DELAY,
                        )
                    )
                self.sessions += 1
                self.events += len(session.events)
                self.purchases += session.events[-1]["type"] == "purchase"
            if current is not None:
                self._profile_done(current, timeline, first_shown)

    def _profile_done(self, n: int, timeline: list, first_shown: dict[str, datetime]) -> None:
        self.seen[n] = (min(t[0] for t in timeline), max(t[0] for t in timeline))
        record = self.arms.by_profile[n]
        for key, exposed_at in first_shown.items():
            goal, hours = self.goals[key]
            window_end = exposed_at + timedelta(hours=hours)
            pre_start = exposed_at - _PRE_PERIOD
            goals, revenue, pre = 0, 0.0, 0
            for ts, etype, value in timeline:
                if exposed_at <= ts <= window_end:  # the window includes its end, as the drain's
                    goals += etype == goal
                    revenue += value if etype == "purchase" else 0.0
                elif pre_start <= ts < exposed_at:
                    pre += 1
            variant, arm, reason, segment = record[key]
            self.exposure_rows.append(
                (
                    self.project_id,
                    self.ids[n],
                    key,
                    variant,
                    arm,
                    reason,
                    segment,
                    exposed_at,
                    "decide",
                    goal,
                    hours,
                    goals > 0,
                    goals,
                    round(revenue, 2),
                    pre,
                )
            )
            self.exposed.add((n, key))

    def exposures_copy(self) -> list[tuple]:
        with (
            connection.cursor() as cursor,
            cursor.cursor.copy(
                "COPY personalization_exposure (project_id, profile_id, experience_key, variant_key, arm, reason,"
                " segment, exposed_at, source, goal, window_hours, converted, conversions, revenue, pre_activity)"
                " FROM STDIN"
            ) as copy,
        ):
            for row in self.exposure_rows:
                copy.write_row(row)
        return self.exposure_rows


def _profiles_copy(project, population, ids, seen) -> int:
    identities = 0
    with connection.cursor() as cursor:
        with cursor.cursor.copy(
            "COPY personalization_profile (id, project_id, external_id, attributes, consent, do_not_personalize,"
            " first_seen, last_seen) FROM STDIN"
        ) as copy:
            for profile in population:
                first, last = seen[profile.n]
                copy.write_row(
                    (
                        ids[profile.n],
                        project.pk,
                        profile.user_id,
                        # The planted truth is an ordinary attribute: a breakdown by it is the check.
                        orjson.dumps({**profile.attributes, PLANTED_ATTRIBUTE: profile.intent}).decode(),
                        '{"personalization": true}',
                        False,
                        first,
                        last,
                    )
                )
        with cursor.cursor.copy(
            "COPY personalization_profileidentity (project_id, profile_id, kind, value, created_at) FROM STDIN"
        ) as copy:
            for profile in population:
                profile_id, first = ids[profile.n], seen[profile.n][0]
                copy.write_row((project.pk, profile_id, IdentityKind.ANONYMOUS.value, profile.anonymous_id, first))
                identities += 1
                if profile.user_id:
                    copy.write_row((project.pk, profile_id, IdentityKind.USER.value, profile.user_id, first))
                    identities += 1
    return identities


def _sticky_publish(project: Project, population, arms: _Arms, exposed: set, chunk: int = 2000) -> None:
    """Each history exposure as decide's sticky field, so a returning visitor keeps its variant and
    is not exposed twice; experiences a profile never saw stay unset, so decide records them live."""
    pipe = redis_client.worker().pipeline(transaction=False)
    for profile in population:
        record = arms.by_profile[profile.n]
        fields = {
            f"a:{key}": _HOLDOUT_MARKS.get(record[key][1], record[key][0])
            for key in record
            if (profile.n, key) in exposed
        }
        if fields:
            pipe.hset(rkeys.unit(project.pk, profile.anonymous_id), mapping=fields)
        if len(pipe) >= chunk:
            pipe.execute()
    pipe.execute()
