"""Small builders for test data; they go through the services like real callers do."""

import itertools
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from django.contrib.auth import get_user_model
from django.db import DEFAULT_DB_ALIAS, connections, models

from experiments import services as experiments_services
from experiments.breakdown import Breakdown
from personalization import redis_client, rkeys, services
from personalization.models import Exposure, Project
from personalization.people.live_session import live_state_parse

_seq = itertools.count(1)


def user_make(*, username: str | None = None, password: str = "secret-pass-123"):
    return get_user_model().objects.create_user(username=username or f"user{next(_seq)}", password=password)


def project_make(*, name: str | None = None, owner=None) -> Project:
    name = name or f"Project {next(_seq)}"
    return services.project_create(name=name, owner=owner, slug=f"{name.lower().replace(' ', '-')}-{next(_seq)}")


def key_make(*, project: Project, kind: str = "public") -> str:
    _, raw = services.api_key_create(project=project, kind=kind, name=f"{kind} key")
    return raw


def event_make(n: int = 0, **overrides) -> dict:
    event = {
        "event_id": f"ev-{n}",
        "type": "page_view",
        "anonymous_id": f"anon-{n % 7}",
        "timestamp": datetime.now(UTC).isoformat(),
        "properties": {"url": f"/products/{n}"},
    }
    event.update(overrides)
    return event


def behavior_event_make(etype: str, visitor: str, *, user: str | None = None, **properties) -> dict:
    """One behavior event of `visitor` (an anonymous id), now, with a unique id; a purchase gets a value."""
    event = {
        "event_id": f"ev-{next(_seq)}-{etype}",
        "type": etype,
        "anonymous_id": visitor,
        "timestamp": datetime.now(UTC).isoformat(),
        "properties": properties,
    }
    if user:
        event["user_id"] = user
    if etype == "purchase":
        event["value"] = 59.9
    return event


def member_make(*, project: Project, role: str):
    """A user with `role` in `project`."""
    user = user_make()
    services.membership_set(project=project, user=user, role=role)
    return user


def events_post(client, key: str, events: list[dict]):
    """POST a batch to the events API with `key`, as a site would; returns the response."""
    return client.post(
        "/api/v1/events",
        data=orjson.dumps({"events": events}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {key}",
    )


def external_experience_make(*, project: Project, key: str, variants=("a", "b"), **fields):
    """An experience assigned outside Kairos (analysis only), registered so its exposures are taken."""
    return services.experience_create(
        project=project,
        key=key,
        name=key.replace("-", " ").title(),
        touchpoint="outside Kairos",
        variants=[{"key": v, "is_control": i == 0} for i, v in enumerate(variants)],
        external=True,
        **fields,
    )


def privacy_request_make(*, project: Project, kind: str, processing: bool = True, **identifiers):
    """A verified data subject request, moved to processing (as dsr_process does) unless told not to."""
    from privacy import services as privacy_services
    from privacy.models import RequestStatus

    request = privacy_services.dsr_create(
        project_id=project.pk, kind=kind, identifiers=identifiers, verification="signed-in session"
    )
    if processing:
        request.status = RequestStatus.PROCESSING
        request.save(update_fields=["status"])
    return request


def rows_copy(model: type[models.Model], objs) -> list:
    """Write unsaved `model` instances as `bulk_create` would, the same columns and values (Python
    defaults, auto timestamps, JSON and arrays prepared by each field), with one COPY; their ids come
    from the table's sequence first and are set on them, in order, as `bulk_create` does.

    For thousands of rows `bulk_create` cost the test process more than the rows cost PostgreSQL:
    Django compiles every field of every row into one multi-MB INSERT that psycopg then parses and
    binds client-side. Like `bulk_create`: no signals, no save(); statement triggers fire."""
    objs = list(objs)
    meta = model._meta
    assert isinstance(meta.pk, models.AutoField), f"{model.__name__}: rows_copy needs an auto id"
    if not objs:
        return objs
    db = connections[DEFAULT_DB_ALIAS]  # the wrapper itself: the `connection` proxy costs a lookup per value
    fields = [f for f in meta.concrete_fields if not f.generated]
    prepare = [(f.pre_save, f.get_db_prep_save) for f in fields]
    table = db.ops.quote_name(meta.db_table)
    with db.cursor() as cursor:
        cursor.execute(
            "SELECT nextval(pg_get_serial_sequence(%s, %s)) FROM generate_series(1, %s)",
            [table, meta.pk.column, len(objs)],
        )
        ids = sorted(i for (i,) in cursor.fetchall())
        columns = ", ".join(db.ops.quote_name(f.column) for f in fields)
        with cursor.cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
            for obj, pk in zip(objs, ids, strict=True):
                obj._prepare_related_fields_for_save(operation_name="rows_copy")
                obj.pk = pk
                copy.write_row([prep(pre(obj, True), db) for pre, prep in prepare])
                obj._state.adding, obj._state.db = False, db.alias
    return objs


def profiles_make(*, project: Project, count: int) -> list[int]:
    """`count` bare profiles; their ids in creation order."""
    from personalization.models import Profile

    now = datetime.now(UTC)
    rows = rows_copy(
        Profile,
        (Profile(project=project, external_id=f"p{next(_seq)}", first_seen=now, last_seen=now) for _ in range(count)),
    )
    return [row.pk for row in rows]


def clustering_run_make(*, project: Project, members: list[list[int]], names=None, status: str = "done"):
    """A clustering run whose segment i holds the profiles `members[i]` (known memberships, without
    k-means). Like a real run, one that is not done has no segments yet."""
    from django.utils import timezone

    from segments.models import ClusteringRun, RunStatus, Segment, SegmentKind, SegmentMembership

    done = status == RunStatus.DONE
    run = ClusteringRun.objects.create(
        project=project,
        status=status,
        k=len(members),
        profiles=len({p for group in members for p in group}),
        progress=100 if done else 40,
        finished_at=timezone.now() if done else None,
    )
    if not done:
        return run
    for i, profile_ids in enumerate(members):
        segment = Segment.objects.create(
            project=project,
            key=f"{run.key_prefix}{i}",
            kind=SegmentKind.BEHAVIOR,
            run=run,
            index=i,
            name=names[i] if names else f"Run {run.pk} group {i}",
            size=len(profile_ids),
            card={"over_index": [{"feature": f"category: group {i}", "ratio": 3.0}], "more": [], "less": []},
        )
        SegmentMembership.objects.bulk_create(SegmentMembership(segment=segment, profile_id=p) for p in profile_ids)
    return run


def experience_form_data(**overrides) -> dict:
    """The experience form as the browser posts it: two variants and a country condition; `overrides` replace fields."""
    data = {
        "key": "hero",
        "name": "Homepage hero",
        "touchpoint": "homepage hero",
        "policy": "fixed",
        "bandit_floor": "0.005",
        "bandit_burn_in": "100",
        "segment_attribute": "",
        "goal_event": "purchase",
        "attribution_hours": "72",
        "holdout_share": "0.1",
        "cond-attribute": ["country", ""],
        "cond-op": ["in", "in"],
        "cond-values": ["DE, AT", ""],
        "targeting-segments": "",
        "variant-key": ["control", "b", ""],
        "variant-name": ["Control", "Free shipping", ""],
        "variant-payload": ["{}", '{"headline": "Free shipping today"}', ""],
        "variant-weight": ["1", "3", "1"],
        "variant-control": "0",
    }
    data.update(overrides)
    return data


def assert_same_report(a, b, path="report") -> None:
    """Two lift reports (JSON form) equal in every name, count and flag; floats equal up to the order
    sums were added in (two breakdowns of the same data must give the same statistics)."""
    assert type(a) is type(b) or {type(a), type(b)} <= {int, float}, path
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for key in a:
            assert_same_report(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same_report(x, y, f"{path}[{i}]")
    elif isinstance(a, float):
        assert a == pytest.approx(b, rel=1e-9, abs=1e-12, nan_ok=True), path
    else:
        assert a == b, path


def exposures_simulated(*, project: Project, people: list, rng, held_arm: str, effect, recorded, key: str = "hero"):
    """Saved exposures of a simulated lift test, one per (profile, person) in `people`: held out 1 in
    10 (`held_arm`), converting at 8 % plus `effect(person)` points when treated, revenue and
    pre-period activity drawn from `rng`, over the last 5 days; `recorded(person)` gives what the
    exposure kept (behavior_segments, live …)."""
    rows = []
    for profile, person in people:
        held = rng.random() < 0.1
        converted = rng.random() < 0.08 + (0 if held else effect(person))
        rows.append(
            Exposure(
                project=project,
                profile=profile,
                experience_key=key,
                variant_key="" if held else "b",
                arm=held_arm if held else "variant",
                exposed_at=datetime.now(UTC) - timedelta(days=int(rng.integers(0, 5))),
                converted=converted,
                conversions=int(converted),
                revenue=float(round(rng.gamma(2, 30), 2)) if converted else 0.0,
                pre_activity=int(rng.poisson(3)),
                **recorded(person),
            )
        )
    return rows_copy(Exposure, rows)


def lift_compute_recent(*, project: Project, segment_by: str, experience_key: str = "hero", exclude_missing=False):
    """A lift report over the last 30 days, computed in process as the worker would."""
    return experiments_services.lift_compute(
        project=project,
        experience_key=experience_key,
        breakdown=Breakdown.parse(segment_by, exclude_missing=exclude_missing),
        start=datetime.now(UTC) - timedelta(days=30),
        end=datetime.now(UTC) + timedelta(days=1),
    )


def engine_snapshot(**experience) -> tuple[dict, dict]:
    """(snapshot, its one experience "hero") as the engine takes them: 30 % global holdout, and by
    default a per-segment bandit on `intent` holding out half of the rest."""
    exp = {
        "key": "hero",
        "version": 1,
        "salt": "s",
        "policy": "segment_bandit",
        "holdout_share": 0.5,
        "segment_field": "intent",
        "targeting": {},
        "control": "a",
        "order": ["a", "b"],
        "payloads": {"a": {}, "b": {}},
        "goal": "purchase",
        "window_hours": 72,
        "fixed": [0.5, 0.5],
        "weights": {},
        **experience,
    }
    snapshot = {"project_id": 1, "version": 1, "holdout": {"salt": "g", "share": 0.3}, "experiences": {"hero": exp}}
    return snapshot, exp


def live_state_read(project_id: int, unit: str) -> dict | None:
    """A unit's live state as decide reads it from its hash (people/live_session.py), or None."""
    raw = redis_client.worker().hgetall(rkeys.unit(project_id, unit))
    return live_state_parse({k.decode(): v.decode() for k, v in raw.items()})


def targeted_experience_start(*, project: Project, key: str, conditions: str) -> None:
    """A running two-variant banner (all traffic to "on") shown only where `conditions` hold."""
    services.experience_create(
        project=project,
        key=key,
        name=key.title(),
        touchpoint="banner",
        variants=[
            {"key": "off", "payload": {}, "is_control": True, "weight": 0},
            {"key": "on", "payload": {"banner": "hi"}, "weight": 1},
        ],
        targeting={"conditions": conditions},
    )
    services.experience_start(experience=project.experiences.get(key=key))


def flag_experiences_start(*, project: Project) -> None:
    """Four running experiences that cover OFREP's flag kinds and decide's reasons, published: "hero"
    (object payloads, 30 % experience holdout), "color" (no payloads: a string flag), "beta"
    (string payloads) and "gold" (targeted at plan = gold); a 10 % global holdout."""
    services.project_holdout_set(project=project, share=0.1)
    services.project_holdout_salt_set(project=project, salt="flags")  # fixed salts: the same units held out each run
    specs = {
        "hero": ([{"headline": "Hello"}, {"headline": "Welcome back"}], {"holdout_share": 0.3}),
        "color": ([{}, {}], {}),
        "beta": (["light", "dark"], {}),
        "gold": (
            [{"badge": None}, {"badge": "gold"}],
            {"targeting": {"attributes": [{"attribute": "plan", "op": "in", "values": ["gold"]}]}},
        ),
    }
    for key, (payloads, fields) in specs.items():
        variants = [{"key": f"{key}-{i}", "payload": p, "is_control": i == 0} for i, p in enumerate(payloads)]
        experience = services.experience_create(
            project=project, key=key, name=key.title(), touchpoint=key, variants=variants, **fields
        )
        services.experience_salt_set(experience=experience, salt=f"flags-{key}")
        services.experience_start(experience=experience)
    services.snapshot_publish(project_id=project.pk)


def stream_exposures(project_id: int) -> list[dict]:
    """The exposure events waiting in the events stream for a project (decide's write-behind)."""
    found = []
    for _, fields in redis_client.worker().xrange(rkeys.EVENTS_STREAM):
        if int(fields[b"p"]) == project_id:
            found += [e for e in orjson.loads(fields[b"d"]) if e["type"] == "exposure"]
    return found
