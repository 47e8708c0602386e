"""The flush after a transactional test (tests/db_flush.py) leaves every table empty, whatever the
test wrote: a few rows linked by foreign keys, or more than `MANY` rows that it truncates. The tests
run in this order in one process (a file goes to one xdist worker), each checking what the one before
it left."""

import psycopg
import pytest
from django.contrib.auth.models import Permission
from django.contrib.contenttypes.models import ContentType
from django.db import connection

from segments.models import SegmentMembership
from segments.services import vector_io
from tests import factories
from tests.db_flush import KEPT, MANY, orphans_end, staging_tables, tables_with_rows
from tests.workers import subprocess_app_name

pytestmark = pytest.mark.django_db(transaction=True)


def rows_left() -> dict[str, int]:
    tables = connection.introspection.django_table_names(only_existing=True, include_views=False)
    return tables_with_rows(connection, sorted(set(tables) - KEPT))


def assert_empty_but_migrated():
    assert rows_left() == {}
    # What migrate filled is there as after a full flush: the admin's permissions still work.
    assert ContentType.objects.get_for_model(SegmentMembership).pk
    assert Permission.objects.filter(codename="view_segmentmembership").exists()


def test_flush__a_few_rows_linked_by_foreign_keys__planted():
    assert_empty_but_migrated()
    owner = factories.user_make()
    project = factories.project_make(owner=owner)
    factories.key_make(project=project)
    profiles = factories.profiles_make(project=project, count=3)
    factories.clustering_run_make(project=project, members=[profiles[:2], profiles[2:]])
    left = rows_left()
    assert {"auth_user", "personalization_project", "personalization_apikey", "personalization_profile"} <= set(left)
    assert {"segments_clusteringrun", "segments_segment", "segments_segmentmembership"} <= set(left)


def test_flush__after_a_few_rows__all_empty_then_many_rows_planted():
    assert_empty_but_migrated()
    project = factories.project_make()
    # More than MANY profiles and memberships (truncated), pointing at a project and segments that are
    # deleted row by row in the same transaction.
    profiles = factories.profiles_make(project=project, count=MANY + 200)
    factories.clustering_run_make(project=project, members=[profiles, profiles[:5]])
    left = rows_left()
    assert left["personalization_profile"] == left["segments_segmentmembership"] == MANY
    assert left["personalization_project"] == 1


def test_flush__after_many_rows__all_empty_then_refit_staging_left_as_a_killed_worker_leaves_it():
    assert_empty_but_migrated()
    stage = vector_io.RefitStage(project_id=1, behavior_dims=2, meaning_dims=2)
    assert staging_tables(connection) == sorted([stage.embedding, stage.meaning])


def test_flush__after_a_refit_staging_left__no_staging_table():
    assert staging_tables(connection) == []
    assert_empty_but_migrated()


def test_orphans_end__a_killed_job_holding_a_lock__ended_other_sessions_kept():
    # As a SIGKILLed worker leaves it: its session still open in PostgreSQL, in a transaction, holding a lock.
    orphan = psycopg.connect(**_params(), application_name=subprocess_app_name("worker"))
    orphan.execute('LOCK TABLE "personalization_event" IN ACCESS EXCLUSIVE MODE')
    server = psycopg.connect(**_params(), application_name="granian")  # a session-long server's: kept
    try:
        assert orphans_end(connection) == 1
        with pytest.raises(psycopg.OperationalError):
            orphan.execute("SELECT 1")
        assert server.execute("SELECT 1").fetchone() == (1,)
        with connection.cursor() as cursor:  # the lock went with it
            cursor.execute("SET LOCAL lock_timeout = '2s'; SELECT count(*) FROM personalization_event")
    finally:
        orphan.close()
        server.close()


def _params() -> dict:
    db = connection.settings_dict
    return {"host": db["HOST"], "port": db["PORT"], "user": db["USER"], "password": db["PASSWORD"] or None,
            "dbname": db["NAME"]}  # fmt: skip
