"""Events and exposures partitioned by month (personalization/ingest/partitions.py says why and how).

Each table is rebuilt: a partitioned copy is made LIKE the old one, with a partition for every month
that holds rows (ten years back at most; older or far-future rows go to the DEFAULT partition) and
for the coming months, the rows are copied, the old table dropped and the new one takes its name,
sequence, primary key (now with the partition key), indexes and foreign keys. The unique keys a
partitioned table cannot have move to the claims tables, filled from the rows (and, for events, by a
trigger from then on). Reversible: going
back rebuilds plain tables with their unique keys.

The copy takes as long as writing both tables once more; on a large installation run it in a
quiet hour (the drain's events wait in the Redis stream meanwhile, nothing is lost).
"""

import django.contrib.postgres.indexes
import django.db.models.deletion
from django.db import migrations, models

_MONTHS_AHEAD = 3

_TABLES = {
    "personalization_event": {
        "key": "ts",
        "indexes": (
            "CREATE INDEX event_profile_ts ON {t} (profile_id, ts)",
            "CREATE INDEX event_project_type_ts ON {t} (project_id, type, ts)",
            "CREATE INDEX event_ts_brin ON {t} USING brin (ts)",
        ),
        "unique": "ALTER TABLE {t} ADD CONSTRAINT event_unique_client_id UNIQUE (project_id, event_id)",
        "foreign_keys": (
            ("personalization_even_profile_id_bc0dfd2e_fk_personali", "profile_id", "personalization_profile"),
            ("personalization_even_project_id_a292125a_fk_personali", "project_id", "personalization_project"),
        ),
        "claims": "INSERT INTO personalization_eventclaim (project_id, event_id, ts)"
        " SELECT project_id, event_id, ts FROM {t}",
        "statistics": (),
    },
    "personalization_exposure": {
        "key": "exposed_at",
        "indexes": (
            "CREATE INDEX exposure_experience_time ON {t} (project_id, experience_key, exposed_at)",
            "CREATE INDEX exposure_profile ON {t} (profile_id)",
        ),
        "unique": "ALTER TABLE {t} ADD CONSTRAINT exposure_unique_first UNIQUE (project_id, experience_key, profile_id)",
        "foreign_keys": (
            ("personalization_expo_profile_id_39d0db71_fk_personali", "profile_id", "personalization_profile"),
            ("personalization_expo_project_id_75edc823_fk_personali", "project_id", "personalization_project"),
        ),
        "claims": "INSERT INTO personalization_exposureclaim (project_id, profile_id, experience_key)"
        " SELECT project_id, profile_id, experience_key FROM {t}",
        # 0007: the planner's day-bucket statistics for the lift query
        "statistics": (
            "CREATE STATISTICS exposure_day_stats ON (floor(date_part('epoch', exposed_at) / 86400)) FROM {t}",
        ),
    },
}


# Every insert into the events also claims its (project, event_id), in the same statement: COPY fills a
# transition table and one set-based INSERT writes the claims from it, so a writer cannot forget them
# and the drain pays no second round of rows from Python. ENABLE ALWAYS: the drain and the bulk load
# skip ordinary triggers (session_replication_role = replica) to skip the per-row foreign key checks.
_CLAIM_FUNCTION = """
CREATE FUNCTION personalization_event_claim() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO personalization_eventclaim (project_id, event_id, ts)
    SELECT project_id, event_id, ts FROM claimed_events;
    RETURN NULL;
END
$$
"""
_CLAIM_TRIGGER = (
    "CREATE TRIGGER event_claim AFTER INSERT ON personalization_event REFERENCING NEW TABLE AS claimed_events"
    " FOR EACH STATEMENT EXECUTE FUNCTION personalization_event_claim()",
    "ALTER TABLE personalization_event ENABLE ALWAYS TRIGGER event_claim",
)


def _months(cursor, table: str, key: str) -> list[str]:
    """First days (UTC) of the months to create: those holding rows, and the coming ones."""
    cursor.execute(
        f"SELECT DISTINCT to_char(date_trunc('month', {key} AT TIME ZONE 'UTC'), 'YYYY-MM-DD') FROM {table}"
        f" WHERE {key} >= now() - interval '10 years' AND {key} < now() + interval '1 year'"
        " UNION SELECT to_char(date_trunc('month', now() AT TIME ZONE 'UTC') + n * interval '1 month', 'YYYY-MM-DD')"
        " FROM generate_series(0, %s) AS n ORDER BY 1",
        [_MONTHS_AHEAD],
    )
    return [month for (month,) in cursor.fetchall()]


def _rebuild(schema_editor, *, partitioned: bool) -> None:
    with schema_editor.connection.cursor() as cursor:
        for table, spec in _TABLES.items():
            key, old, new = spec["key"], f"{table}_old", f"{table}_new"
            cursor.execute(f"ALTER TABLE {table} RENAME TO {old}")
            layout = f" PARTITION BY RANGE ({key})" if partitioned else ""
            cursor.execute(
                f"CREATE TABLE {new} (LIKE {old} INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING IDENTITY){layout}"
            )
            if partitioned:
                for month in _months(cursor, old, key):
                    year, number = month[:4], month[5:7]
                    cursor.execute(
                        f"CREATE TABLE {table}_p{year}_{number} PARTITION OF {new}"
                        f" FOR VALUES FROM ('{month} 00:00:00+00') TO (('{month}'::date + interval '1 month')"
                        " AT TIME ZONE 'UTC')"
                    )
                cursor.execute(f"CREATE TABLE {table}_default PARTITION OF {new} DEFAULT")
            cursor.execute(f"INSERT INTO {new} SELECT * FROM {old}")
            if partitioned:
                cursor.execute(spec["claims"].format(t=old))
            cursor.execute(
                f"SELECT setval(pg_get_serial_sequence('{new}', 'id'), coalesce(max(id), 0) + 1, false) FROM {old}"
            )
            cursor.execute(f"DROP TABLE {old}")
            cursor.execute(f"ALTER TABLE {new} RENAME TO {table}")
            cursor.execute(f"ALTER SEQUENCE {new}_id_seq RENAME TO {table}_id_seq")
            primary = f"(id, {key})" if partitioned else "(id)"
            cursor.execute(f"ALTER TABLE {table} ADD CONSTRAINT {table}_pkey PRIMARY KEY {primary}")
            for statement in (*spec["indexes"], *spec["statistics"]):
                cursor.execute(statement.format(t=table))
            if not partitioned:
                cursor.execute(spec["unique"].format(t=table))
            for name, column, target in spec["foreign_keys"]:
                cursor.execute(
                    f"ALTER TABLE {table} ADD CONSTRAINT {name} FOREIGN KEY ({column}) REFERENCES {target} (id)"
                    " DEFERRABLE INITIALLY DEFERRED"
                )
            cursor.execute(f"ANALYZE {table}")


def _partition(apps, schema_editor) -> None:
    _rebuild(schema_editor, partitioned=True)
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(_CLAIM_FUNCTION)
        for statement in _CLAIM_TRIGGER:
            cursor.execute(statement)


def _unpartition(apps, schema_editor) -> None:
    _rebuild(schema_editor, partitioned=False)  # the trigger goes with the partitioned table
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("DROP FUNCTION IF EXISTS personalization_event_claim()")


class Migration(migrations.Migration):
    dependencies = [
        ("personalization", "0012_live_intent"),
    ]

    operations = [
        migrations.CreateModel(
            name="EventClaim",
            fields=[
                (
                    "pk",
                    models.CompositePrimaryKey(
                        "project_id", "event_id", blank=True, editable=False, primary_key=True, serialize=False
                    ),
                ),
                (
                    "project",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        to="personalization.project",
                    ),
                ),
                ("event_id", models.CharField(max_length=64)),
                ("ts", models.DateTimeField()),
            ],
            options={
                "indexes": [django.contrib.postgres.indexes.BrinIndex(fields=["ts"], name="event_claim_ts_brin")],
            },
        ),
        migrations.CreateModel(
            name="ExposureClaim",
            fields=[
                (
                    "pk",
                    models.CompositePrimaryKey(
                        "project_id",
                        "profile_id",
                        "experience_key",
                        blank=True,
                        editable=False,
                        primary_key=True,
                        serialize=False,
                    ),
                ),
                (
                    "project",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        to="personalization.project",
                    ),
                ),
                (
                    "profile",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        to="personalization.profile",
                    ),
                ),
                ("experience_key", models.CharField(max_length=64)),
            ],
        ),
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.RemoveConstraint(model_name="event", name="event_unique_client_id"),
                migrations.RemoveConstraint(model_name="exposure", name="exposure_unique_first"),
            ],
            database_operations=[migrations.RunPython(_partition, _unpartition)],
        ),
    ]
