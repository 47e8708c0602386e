"""States that take seconds to build (the demo seeded, its embedder refitted, a clustering run), built once
per test process and put back in a fraction of a second for every later test that asks for the same one.

A test that seeds the demo spends ~10 s generating and loading visits; a dozen tests in a file ask for
the very same demo. `state_cached(key, build)` runs `build()` the first time, then copies what it left
behind: every row of every table (COPY … TO STDOUT in binary, so vectors and JSON come back bit for bit)
and every Redis key of the test's database (DUMP with its TTL). The next time, in a database that the
test framework has emptied again, it COPYs the rows back, RESTOREs the keys and returns what `build`
returned, read again from the database by `reload`.

The two xdist workers share what they build: a built state is also written to a directory of the test
run (KAIROS_TEST_STATES_DIR, made by tests/conftest.py for the run and removed after it), under a file
lock, so the worker that asks second waits for the first one's build and replays it instead of building
the same demo again (and a state this process had to let go of comes back from disk, not from a build).

It only replays into an empty database: if a test has already written rows (its own users, a project),
`build()` runs for real. The key includes whether the test runs in a transaction that rolls back
(on-commit hooks never run there, so what the build leaves differs), and the state is keyed by the
arguments of the build, so a test never receives a state it did not ask for.
"""

import fcntl
import hashlib
import os
import pickle
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.db import connection, transaction

from demo.seed import demo_seed
from personalization import redis_client
from personalization.models import Project
from personalization.people.profiles import row_checks_skip

# Filled by migrations, not by a build (and refilled with new ids after each flush): never copied. The
# events' claims are written again by the events table's trigger as the events are replayed.
_NOT_COPIED = {"django_migrations", "django_content_type", "auth_permission", "personalization_eventclaim"}
# What points at content types or permissions would point at ids a flush has renumbered.
_REFUSE_IF_USED = {"auth_group_permissions", "auth_user_user_permissions", "django_admin_log"}
_KEEP = 4  # states kept per process (each holds its rows in memory: tens of MB for the 3,000-person demo)


@dataclass
class _State:
    tables: dict[str, tuple[list[str], bytes]]  # table -> (columns, binary COPY)
    keys: list[tuple[bytes, int, bytes]]  # Redis key, PTTL (0: none), DUMP
    value: Any


_states: OrderedDict[Hashable, _State] = OrderedDict()


def state_cached(key: Hashable, build: Callable[[], Any], reload: Callable[[Any], Any]) -> Any:
    """reload(build()), with build() run once per process for `key` and its state replayed after:
    reload(value) turns what build returned (ids, text) into the objects the test gets, read again."""
    full_key = (key, connection.in_atomic_block)
    tables = _tables()
    if _has_rows(tables):
        return reload(build())
    state = _states.get(full_key)
    if state is None:
        with _shared(full_key) as (stored, store):
            state = stored()
            if state is None:
                value = build()
                if _has_rows(_REFUSE_IF_USED & set(tables)):
                    return reload(value)
                _keep(full_key, store(_copy(tables, value)))
                return reload(value)
        _keep(full_key, state)
    else:
        _states.move_to_end(full_key)
    _replay(state)
    return reload(state.value)


def _keep(full_key: Hashable, state: _State) -> None:
    _states[full_key] = state
    while len(_states) > _KEEP:
        _states.popitem(last=False)


@contextmanager
def _shared(full_key: Hashable) -> Iterator[tuple[Callable[[], "_State | None"], Callable[["_State"], "_State"]]]:
    """(read the run's stored state for the key or None, store one), under an exclusive lock on the key:
    a second worker asking for a state being built waits here for it. Without a run directory (a plain
    pytest of one file), nothing is shared."""
    root = os.environ.get("KAIROS_TEST_STATES_DIR")
    if not root:
        yield (lambda: None), (lambda state: state)
        return
    path = Path(root) / hashlib.sha256(repr(full_key).encode()).hexdigest()
    with open(f"{path}.lock", "wb") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)

        def stored() -> "_State | None":
            return pickle.loads(path.read_bytes()) if path.exists() else None  # noqa: S301 (this run's own file)

        def store(state: _State) -> _State:
            partial = path.with_suffix(".partial")
            partial.write_bytes(pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL))
            partial.rename(path)
            return state

        yield stored, store


def _tables() -> list[str]:
    names = connection.introspection.django_table_names(only_existing=True, include_views=False)
    return sorted(set(names) - _NOT_COPIED)


def _has_rows(tables) -> bool:
    if not tables:
        return False
    sql = " OR ".join(f'EXISTS (SELECT 1 FROM "{table}")' for table in tables)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {sql}")
        return cursor.fetchone()[0]


def _columns(cursor, table: str) -> list[str]:
    """The columns a COPY can write (not generated ones)."""
    cursor.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped"
        " AND attgenerated = '' ORDER BY attnum",
        [f'"{table}"'],
    )
    return [name for (name,) in cursor.fetchall()]


def _copy(tables: list[str], value: Any) -> _State:
    copied = {}
    with connection.cursor() as cursor:
        raw = cursor.cursor  # psycopg's own cursor: Django's has no copy()
        for table in tables:
            columns = _columns(cursor, table)
            names = ", ".join(f'"{c}"' for c in columns)
            data = bytearray()
            with raw.copy(f'COPY (SELECT {names} FROM "{table}") TO STDOUT (FORMAT binary)') as copy:
                for chunk in copy:
                    data += chunk
            copied[table] = (columns, bytes(data))
    client = redis_client.worker()
    keys = list(client.scan_iter(count=1000))
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.pttl(key)
        pipe.dump(key)
    answers = pipe.execute()
    dumps = [(key, max(answers[2 * i], 0), answers[2 * i + 1]) for i, key in enumerate(keys)]
    return _State(tables=copied, keys=[d for d in dumps if d[2] is not None], value=value)


def _replay(state: _State) -> None:
    # Rows checked when the state was built: their foreign keys are not checked again (in a test's own
    # transaction the deferred checks of a 12,000-person demo took 9 s at its end), as the bulk history
    # load skips them. So the order of the tables does not matter.
    with transaction.atomic(), connection.cursor() as cursor:
        skipped = row_checks_skip(cursor)
        raw = cursor.cursor
        for table, (columns, data) in state.tables.items():
            if len(data) <= 21:  # a binary COPY of no rows: header and trailer only
                continue
            names = ", ".join(f'"{c}"' for c in columns)
            with raw.copy(f'COPY "{table}" ({names}) FROM STDIN (FORMAT binary)') as copy:
                copy.write(data)
            if "id" in columns:  # a later insert must not reuse a replayed id
                cursor.execute("SELECT pg_get_serial_sequence(%s, 'id')", [f'"{table}"'])
                (sequence,) = cursor.fetchone()
                if sequence:
                    cursor.execute(
                        f'SELECT setval(%s, max(id)) FROM "{table}"'
                        " HAVING max(id) > COALESCE(pg_sequence_last_value(%s::regclass), 0)",
                        [sequence, sequence],
                    )
        if skipped:  # the test's own writes are checked
            cursor.execute("SET LOCAL session_replication_role = origin")
    pipe = redis_client.worker().pipeline(transaction=False)
    for key, ttl, dump in state.keys:
        pipe.restore(key, ttl, dump, replace=True)
    pipe.execute()


def demo_seed_cached(*, keys_path: Path, **kwargs) -> Project:
    """demo_seed(**kwargs) (with an explicit `end`, so that the same arguments mean the same data), its raw
    keys written to keys_path as the seed writes them."""
    assert kwargs.get("end") is not None, "a cached demo needs a fixed end: without one each seed draws other visits"
    key = ("demo", *sorted(kwargs.items()))
    return state_cached(key, lambda: _demo_build(keys_path, kwargs), _demo_reload(keys_path))


def _demo_build(keys_path: Path, kwargs: dict) -> tuple[int, str]:
    project = demo_seed(keys_path=keys_path, **kwargs)
    return project.pk, keys_path.read_text()


def _demo_reload(keys_path: Path) -> Callable[[tuple[int, str]], Project]:
    def reload(value: tuple[int, str]) -> Project:
        pk, keys = value
        if not keys_path.exists():  # replayed: the seed's keys file, private as the seed writes it
            keys_path.parent.mkdir(parents=True, exist_ok=True)
            keys_path.write_text(keys)
            keys_path.chmod(0o600)
        return Project.objects.get(pk=pk)

    return reload


def demo_settled_cached(*, keys_path: Path, **kwargs) -> Project:
    """demo_seed_cached(...) as the demo is once its first day has run: the default metrics made with their
    values kept (the backfill job the first report queues) and the behavior embedder fitted (the nightly
    refit). For the browser tests that ask a worker for reports and clusterings: otherwise each of them
    had the worker backfill the metrics (3-6 s of CPU on the 1,500-person demo) and load the text encoder
    and refit before its first clustering (10 s), the same work in every test."""
    # Here, not at the top: the Celery app, experiments and segments are only needed by the tests that ask.
    from config.celery import app
    from experiments import metric_services, selectors
    from segments import services as segments_services

    def build() -> tuple[int, str]:
        project = demo_seed_cached(keys_path=keys_path, **kwargs)
        metric_services.metric_defaults_ensure(project=project)  # queues their backfill job...
        metric_ids = [metric.pk for metric in selectors.metrics_for_project(project_id=project.pk)]
        metric_services.metric_values_fill(metric_ids=metric_ids)  # ...which runs here
        discarded = app.control.purge()
        assert discarded == 1, f"the demo queued {discarded} jobs; expected only the metrics' backfill"
        assert segments_services.embeddings_refit(project_id=project.pk) is not None
        return project.pk, keys_path.read_text()

    return state_cached(("demo-settled", *sorted(kwargs.items())), build, _demo_reload(keys_path))
