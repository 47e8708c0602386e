"""The demo shop: users for every role, the "Demo Shop" project and its keys, 20,000 simulated
visitors with two weeks of behavior, the demo experiences and their exposure history.

The population and its behavior come from demo.world (pure); this module only writes, and only
through personalization's services: the history goes in with its bulk history load (COPY, in one
transaction with the project: about 0.5 M events in well under a minute), then the profiles'
attributes and their sticky assignments are published to Redis so decide serves the same variant
the history recorded.
"""

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from config.embedded import VAR
from demo import world as demo
from demo.world import PLANTED_ATTRIBUTE
from experiments import services as experiments_services
from personalization import selectors, services
from personalization.decide import engine
from personalization.services import HistoryExposure, HistoryProfile

log = logging.getLogger(__name__)

DEMO_SLUG = "demo-shop"
DEMO_NAME = "Demo Shop"
DEMO_PASSWORD = "kairos-demo"  # noqa: S105 -- the published demo login of a local install
# Plain role names: membership_set checks them against the roles personalization knows.
DEMO_USERS = (
    ("demo", "admin"),
    ("marketer", "marketer"),
    ("analyst", "analyst"),
    ("compliance", "compliance"),
    ("developer", "developer"),
)
# 10 % rather than the 5 % default: 2,000 held-out visitors make the demo's overall lift readable.
DEMO_GLOBAL_HOLDOUT = 0.10
_RECEIVE_DELAY = timedelta(milliseconds=400)
_PRE_PERIOD = timedelta(days=14)  # the CUPED covariate window, as the drain computes it


def demo_keys_path() -> Path:
    """Where the demo's raw keys are kept for demo_traffic and the README (mode 0600)."""
    return VAR / "demo-keys.json"


def demo_project_get():
    """The demo project, or None before the first seed."""
    return selectors.project_by_slug_or_id(value=DEMO_SLUG)


def demo_delete() -> bool:
    """Delete the demo project, its data and its Redis keys; False when there was none."""
    project = demo_project_get()
    if project is None:
        return False
    services.project_delete(project=project, confirm=project.slug)
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

    def __init__(self, project, experiences: dict):
        self.project = project
        self.specs = []
        for spec in (demo.EXPERIENCE_BY_KEY[key] for key in experiences):
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


def demo_seed(
    *,
    profiles: int = 20_000,
    days: int = 14,
    seed: int = 7,
    keys_path: Path | None = None,
    progress: Callable[[str], None] | None = None,
    end: datetime | None = None,
    long_term: bool = False,
):
    """Create the demo from scratch and return its project (the caller deletes an old one first: see
    demo_delete). The same seed and `end` (default: a minute ago) give the same data: visit times are
    drawn inside the window before `end`, so another `end` draws other visits. `long_term` adds the
    long-term story (demo.LONG_TERM_EXPERIENCES), which needs at least LONG_TERM_MIN_DAYS of history."""
    say = progress or log.info
    started = time.monotonic()

    def step(message: str) -> None:
        say(f"{time.monotonic() - started:6.1f}s  {message}")

    if demo_project_get() is not None:
        raise ValueError(f"the demo project “{DEMO_SLUG}” exists; delete it first (demo_seed --reset)")
    if long_term and days < demo.LONG_TERM_MIN_DAYS:
        raise ValueError(
            f"days: the long-term story needs at least {demo.LONG_TERM_MIN_DAYS} days of history (30-day"
            f" return after exposures {demo.LONG_TERM_EXPERIENCES[0].started_days_ago} days ago); give more days"
        )
    specs = (*demo.EXPERIENCES, *(demo.LONG_TERM_EXPERIENCES if long_term else ()))
    end = end or datetime.now(UTC) - timedelta(minutes=1)
    with transaction.atomic():
        users = {name: _user_ensure(name) for name, _ in DEMO_USERS}
        owner = users["demo"]
        project = services.project_create(name=DEMO_NAME, owner=owner, slug=DEMO_SLUG)
        project = services.project_holdout_salt_set(project=project, salt=_salt(seed, "global-holdout"), by=owner)
        project = services.project_holdout_set(project=project, share=DEMO_GLOBAL_HOLDOUT, by=owner)
        for name, role in DEMO_USERS[1:]:
            services.membership_set(project=project, user=users[name], role=role)
        _, public_key = services.api_key_create(project=project, kind="public", name="Demo site (public)", by=owner)
        _, secret_key = services.api_key_create(project=project, kind="secret", name="Demo backend (secret)", by=owner)
        experiences = _experiences_create(project, owner, end, seed, specs)
        step(f"users, project, keys and {len(experiences)} experiences")

        population = demo.profiles_generate(profiles, seed=seed)
        step(f"{len(population):,} profiles generated")
        arms = _Arms(project, experiences)
        starts = {key: experience.started_at for key, experience in experiences.items()}
        sessions = demo.history_generate(population, end=end, days=days, seed=seed, arms=arms, starts=starts)
        history = _History(arms, experiences)
        loaded = services.history_bulk_load(
            project_id=project.pk,
            profiles=[_history_profile(profile) for profile in population],
            events=history.events(sessions),
            exposures=history.exposures(),
        )
        step(f"{loaded.events:,} events in {history.sessions:,} visits ({history.purchases:,} purchases)")
        step(f"{len(population):,} profiles, {loaded.identities:,} identities, {loaded.exposures:,} exposures")
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
            "long_term": long_term,
            "created_at": datetime.now(UTC).isoformat(),
        },
    )
    units = services.profiles_publish(project_id=project.pk)
    services.unit_assignments_publish(project_id=project.pk, assignments=history.assignments(population))
    step(f"published {units:,} profile ids and their sticky assignments to Redis")
    return project


def _salt(seed: int, name: str) -> str:
    """A hash salt that follows from the seed, so one seed gives the same assignments every time."""
    return hashlib.sha256(f"kairos-demo:{seed}:{name}".encode()).hexdigest()[:16]


def _experiences_create(project, owner, end: datetime, seed: int, specs) -> dict:
    """The demo experiences through the experience services, started, then dated back to their history;
    the long-term ones with the metrics their story is read by."""
    created = {}
    for spec in specs:
        experience = services.experience_create(project=project, by=owner, **spec.service_fields())
        experience = services.experience_salt_set(experience=experience, salt=_salt(seed, spec.key), by=owner)
        experience = services.experience_start(experience=experience, by=owner)
        started_at = end - timedelta(days=spec.started_days_ago)
        created[spec.key] = services.experience_started_at_set(experience=experience, started_at=started_at, by=owner)
    if any(spec in demo.LONG_TERM_EXPERIENCES for spec in specs):
        experiments_services.metric_defaults_ensure(project=project)
    for spec in demo.LONG_TERM_EXPERIENCES:
        if spec.key in created:  # conversion first, and return on days 8–30 watched as a guardrail
            experiments_services.experience_metrics_set(
                project=project, experience_key=spec.key, primary="conversion", secondary=[], guardrails=["return-30d"]
            )
    return created


def _history_profile(profile: demo.DemoProfile) -> HistoryProfile:
    return HistoryProfile(
        anonymous_id=profile.anonymous_id,
        external_id=profile.user_id,
        # The planted truth is an ordinary attribute: a breakdown by it is the check.
        attributes={**profile.attributes, PLANTED_ATTRIBUTE: profile.intent},
        consent={"personalization": True},
    )


class _History:
    """Turns the visits into event rows as they stream and derives, per profile, what the drain would
    have kept: each first exposure with its outcomes (goal events and revenue in the attribution
    window, events in the 14 days before as the CUPED covariate)."""

    def __init__(self, arms: _Arms, experiences: dict):
        self.arms = arms
        self.goals = {key: (e.goal_event, e.attribution_hours) for key, e in experiences.items()}
        self.exposure_rows: list[HistoryExposure] = []
        self.exposed: set[tuple[int, str]] = set()
        self.sessions = self.purchases = 0

    def events(self, sessions: Iterable[demo.Session]) -> Iterator[tuple]:
        current: int | None = None
        timeline: list[tuple[datetime, str, float | None]] = []
        first_shown: dict[str, tuple[datetime, dict | None]] = {}
        for session in sessions:
            n = session.profile.n
            if n != current:
                if current is not None:
                    self._profile_done(current, timeline, first_shown)
                current, timeline, first_shown = n, [], {}
            for key, exposed in session.exposed.items():
                first_shown.setdefault(key, exposed)
            for event in session.events:
                ts, etype, value = event["ts"], event["type"], event["value"]
                timeline.append((ts, etype, value))
                # HistoryEvent's fields as a plain tuple: constructing half a million named tuples
                # costs about half a second, more than the loader's own work per row.
                yield (
                    n,
                    event["event_id"],
                    etype,
                    ts,
                    event["session_id"],
                    value,
                    event["properties"],
                    ts + _RECEIVE_DELAY,
                )
            self.sessions += 1
            self.purchases += session.events[-1]["type"] == "purchase"
        if current is not None:
            self._profile_done(current, timeline, first_shown)

    def _profile_done(self, n: int, timeline: list, first_shown: dict[str, tuple[datetime, dict | None]]) -> None:
        record = self.arms.by_profile[n]
        for key, (exposed_at, live) in first_shown.items():
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
                HistoryExposure(
                    profile=n,
                    experience_key=key,
                    variant_key=variant,
                    arm=arm,
                    exposed_at=exposed_at,
                    reason=reason,
                    segment=segment,
                    goal=goal,
                    window_hours=hours,
                    converted=goals > 0,
                    conversions=goals,
                    revenue=round(revenue, 2),
                    pre_activity=pre,
                    live=live,
                )
            )
            self.exposed.add((n, key))

    def exposures(self) -> Iterator[HistoryExposure]:
        """The exposures worked out while the events streamed (history_bulk_load reads these after them)."""
        yield from self.exposure_rows

    def assignments(self, population: list[demo.DemoProfile]) -> Iterator[tuple[str, str, str, str]]:
        """Each history exposure as decide's sticky assignment, so a returning visitor keeps its variant
        and is not exposed twice; experiences a profile never saw stay unset, so decide records them live."""
        for profile in population:
            for key, (variant, arm, _, _) in self.arms.by_profile[profile.n].items():
                if (profile.n, key) in self.exposed:
                    yield profile.anonymous_id, key, arm, variant
