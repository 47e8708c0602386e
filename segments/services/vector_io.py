"""Vectors in bulk: a refit's staging tables, and paged binary reads of every vector of a project.

Staging: everyone's new vectors are written beside the live ones, then swapped in.

Why: a refit of 1M people writes 1M behavior vectors and 1M meaning vectors. Written straight into the
live tables, each row paid the HNSW index's upkeep one by one (most of a 454 s refit at 200k people,
issue 19), and the whole write had to sit in one transaction that held the live rows while people's
events were still being read and encoded. Here each batch of people goes by binary COPY into an
UNLOGGED table with no index, committed as it goes; the swap at the end is one short transaction
(delete the project's rows, insert the staged ones, rebuild the HNSW index once when the project is
most of the table). Until the swap, lookalikes, fold-in and clustering read the previous vectors.

A staging table's name carries its project and the second it was made, so a refit that died (its
table left behind) is cleaned up by the project's next refit, and two refits never share one.
"""

import re
import time
from collections.abc import Iterator

import numpy as np
import psycopg
from django.db import connection

from segments import pgcopy
from segments.models import ProfileEmbedding, ProfileMeaning

# A staging table left this long ago belongs to a refit that is not running any more.
STALE_SECONDS = 6 * 3600
# Rebuild the HNSW index once instead of inserting row by row from this many vectors, when the project
# holds at least half of the table's rows (else the rebuild would redo everyone else's graph too).
INDEX_REBUILD_AT = 50_000
HNSW_INDEX = "embedding_vector_hnsw"
# Rows per page when a clustering run or a lookalike reads every vector of a project.
MATRIX_PAGE = 50_000
_NAME = re.compile(r"^segments_refit_p(\d+)_(\d+)_(embedding|meaning)$")


def staging_tables(*, project_id: int) -> list[str]:
    """The project's refit staging tables: a running refit's, or those a killed worker left."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT tablename FROM pg_tables WHERE tablename LIKE %s", [f"segments_refit_p{project_id}_%"])
        return [name for (name,) in cursor.fetchall() if _NAME.match(name)]


def staging_rows_delete(*, project_id: int, profile_ids: list[int]) -> int:
    """Take profiles out of the project's staging tables (erasure during a refit, or after a killed one)."""
    removed = 0
    with connection.cursor() as cursor:
        for name in staging_tables(project_id=project_id):
            cursor.execute(f'DELETE FROM "{name}" WHERE profile_id = ANY(%s::bigint[])', [profile_ids])
            removed += cursor.rowcount
    return removed


def staging_rows_count(*, project_id: int, profile_ids: list[int]) -> int:
    total = 0
    with connection.cursor() as cursor:
        for name in staging_tables(project_id=project_id):
            cursor.execute(f'SELECT count(*) FROM "{name}" WHERE profile_id = ANY(%s::bigint[])', [profile_ids])
            total += cursor.fetchone()[0]
    return total


def _stale_drop(cursor, project_id: int, now: int) -> None:
    for name in staging_tables(project_id=project_id):
        if now - int(_NAME.match(name).group(2)) > STALE_SECONDS:
            cursor.execute(f'DROP TABLE IF EXISTS "{name}"')


class RefitStage:
    """The two staging tables of one refit: create, append batches, swap into the live tables, drop."""

    def __init__(self, *, project_id: int, behavior_dims: int, meaning_dims: int):
        now = int(time.time())
        self.project_id = project_id
        self.embedding = f"segments_refit_p{project_id}_{now}_embedding"
        self.meaning = f"segments_refit_p{project_id}_{now}_meaning"
        with connection.cursor() as cursor:
            _stale_drop(cursor, project_id, now)
            for table, dims in ((self.embedding, behavior_dims), (self.meaning, meaning_dims)):
                cursor.execute(f'DROP TABLE IF EXISTS "{table}"')
                cursor.execute(
                    f'CREATE UNLOGGED TABLE "{table}" (profile_id bigint NOT NULL, vector vector({dims}) NOT NULL,'
                    " n integer NOT NULL)"
                )
        self.rows = 0

    def append(self, *, profile_ids: np.ndarray, vectors: np.ndarray, events: np.ndarray, meanings: np.ndarray,
               texts: np.ndarray) -> None:  # fmt: skip
        """One batch of people: every behavior vector; the meaning vectors of those whose events had text."""
        has_meaning = (texts > 0) & np.any(meanings != 0, axis=1)
        with connection.cursor() as cursor:
            for table, payload in (
                (self.embedding, pgcopy.vector_rows(profile_ids, vectors, events)),
                (
                    self.meaning,
                    pgcopy.vector_rows(profile_ids[has_meaning], meanings[has_meaning], texts[has_meaning]),
                ),
            ):
                sql = f'COPY "{table}" (profile_id, vector, n) FROM STDIN WITH (FORMAT BINARY)'
                with cursor.cursor.copy(sql) as copy:
                    copy.write(payload)
        self.rows += len(profile_ids)

    def swap(self, *, version: int, encoder: str, blocked: set[int], updated_at) -> None:
        """Replace the project's live vectors with the staged ones, leaving out `blocked` people (opted out
        or erased while the refit read). Call inside the caller's transaction."""
        embeddings, meanings = ProfileEmbedding._meta.db_table, ProfileMeaning._meta.db_table
        with connection.cursor() as cursor:
            if blocked:
                for table in (self.embedding, self.meaning):
                    cursor.execute(f'DELETE FROM "{table}" WHERE profile_id = ANY(%s)', [sorted(blocked)])
            cursor.execute(f"DELETE FROM {embeddings} WHERE project_id = %s", [self.project_id])
            cursor.execute(f"DELETE FROM {meanings} WHERE project_id = %s", [self.project_id])
            cursor.execute("SELECT reltuples FROM pg_class WHERE relname = %s", [embeddings])
            others = max(float(cursor.fetchone()[0]), 0.0) - self.rows
            rebuild = self.rows >= INDEX_REBUILD_AT and self.rows >= others
            definition = None
            if rebuild:
                cursor.execute("SELECT pg_get_indexdef(%s::regclass)", [HNSW_INDEX])
                definition = cursor.fetchone()[0]
                cursor.execute(f"DROP INDEX {HNSW_INDEX}")
            cursor.execute(
                f"INSERT INTO {embeddings} (project_id, profile_id, embedder_version, vector, events, updated_at)"
                f' SELECT %s, profile_id, %s, vector, n, %s FROM "{self.embedding}"',
                [self.project_id, version, updated_at],
            )
            cursor.execute(
                f"INSERT INTO {meanings} (project_id, profile_id, encoder, vector, texts, updated_at)"
                f' SELECT %s, profile_id, %s, vector, n, %s FROM "{self.meaning}"',
                [self.project_id, encoder, updated_at],
            )
            if definition:
                # The foreign keys are checked at commit (Django makes them deferred), and PostgreSQL builds
                # no index on a table with checks pending: run them now. The graph is built in memory when
                # it fits (1M × 64 dims: ~600 MB), with the parallel workers pgvector uses for a build;
                # SET LOCAL ends with the transaction.
                cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
                cursor.execute("SET LOCAL maintenance_work_mem = '1GB'")
                cursor.execute("SET LOCAL max_parallel_maintenance_workers = 2")
                cursor.execute(definition)

    def drop(self) -> None:
        with connection.cursor() as cursor:
            for table in (self.embedding, self.meaning):
                cursor.execute(f'DROP TABLE IF EXISTS "{table}"')


def vector_pages(*, table: str, where: str, params: list, dims: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(profile ids, vectors) of `table`'s rows matching `where`, by pages in profile order, read in
    binary: a page is one query (keyset on profile_id, no cursor held open) and its vectors one numpy
    copy, instead of a text parse of every number."""
    connection.ensure_connection()
    after = -1
    # A psycopg Cursor of its own: Django's connection makes client-side-binding cursors, which cannot
    # ask for binary results.
    with psycopg.Cursor(connection.connection) as cursor:
        while True:
            cursor.execute(
                f"SELECT profile_id, vector FROM {table} WHERE {where} AND profile_id > %s"
                " ORDER BY profile_id LIMIT %s",
                [*params, after, MATRIX_PAGE],
                binary=True,
            )
            rows = cursor.fetchall()
            if not rows:
                return
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            blobs = [bytes(r[1]) if isinstance(r[1], bytes | memoryview) else r[1].to_binary() for r in rows]
            yield ids, pgcopy.vectors_from_binary(blobs, dims)
            after = int(ids[-1])
