"""A refit streamed in batches through staging tables: the same vectors a one-piece fit of the same basis
gives, one row per person, the HNSW index rebuilt as the migration made it, nothing left behind."""

from datetime import timedelta

import numpy as np
import pytest
from django.db import connection
from django.utils import timezone

from personalization import selectors as people
from personalization import services as personalization_services
from segments import services
from segments.embedding import BehaviorEvent
from segments.models import ProfileEmbedding, ProfileMeaning
from segments.services import embeddings as embeddings_service
from segments.services import vector_io

pytestmark = pytest.mark.django_db

INTERESTS = {"trail": "grippy shoes for muddy paths", "yoga": "mat for hot studio", "camping": "tent for two people"}


def _index_definition() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexdef FROM pg_indexes WHERE indexname = %s", [vector_io.HNSW_INDEX])
        return cursor.fetchone()[0]


def test_refit__sampled_fit_in_batches__every_person_once_with_the_projection_of_the_stored_basis(project, monkeypatch):
    now = timezone.now()
    for n in range(45):
        interest, query = list(INTERESTS.items())[n % 3]
        properties = [{"url": f"/p/{interest}-{i}", "category": interest, "item": f"{interest}-{i}"} for i in range(5)]
        properties.append({"query": query if n % 5 else "order status"})
        events = [
            {
                "event_id": f"refit-{n}-{i}",
                "type": "search" if "query" in props else "page_view",
                "anonymous_id": f"v{n}",
                "timestamp": (now - timedelta(seconds=60 - i)).isoformat(),
                "properties": props,
            }
            for i, props in enumerate(properties)
        ]
        personalization_services.events_ingest(project_id=project.pk, payload={"events": events})
    while personalization_services.events_drain():  # one stream entry per request, drained in steps
        pass
    before = _index_definition()
    # A project "larger" than the sample and the batch, and than the index rebuild's threshold.
    monkeypatch.setattr(embeddings_service, "FIT_SAMPLE", 20)
    monkeypatch.setattr(embeddings_service, "REFIT_BATCH", 7)
    monkeypatch.setattr(vector_io, "INDEX_REBUILD_AT", 10)

    version = services.embeddings_refit(project_id=project.pk)

    assert version.profiles == 45 and version.coverage["fitted_on"] == 20
    rows = ProfileEmbedding.objects.filter(project=project)
    assert rows.count() == 45 and set(rows.values_list("embedder_version", flat=True)) == {version.version}
    ids, x = embeddings_service.embeddings_matrix(project_id=project.pk, version=version.version)
    embedder = embeddings_service.embedder_load(project_id=project.pk, version=version.version)
    window = version.coverage
    docs = {
        pid: [BehaviorEvent(*row) for row in rows_]
        for pid, rows_ in people.profiles_behavior(
            project_id=project.pk,
            since=people.behavior_clock(project_id=project.pk) - timedelta(days=window["window_days"]),
            min_events=window["min_events"],
        )
    }
    expected = embedder.transform([docs[int(pid)] for pid in ids], now=people.behavior_clock(project_id=project.pk))
    assert np.allclose(x, expected, atol=1e-5)
    # Everyone searched, so everyone has a meaning vector; the project's staging tables are gone (another
    # test's killed worker may have left its own project's).
    assert ProfileMeaning.objects.filter(project=project).count() == 45
    assert vector_io.staging_tables(project_id=project.pk) == []
    assert _index_definition() == before


def test_refit_staging__left_by_a_killed_refit__found_exported_and_erased_by_privacy(project):
    from personalization.people.personal_data import Subject, location

    stage = vector_io.RefitStage(project_id=project.pk, behavior_dims=2, meaning_dims=2)
    with connection.cursor() as cursor:
        for table in (stage.embedding, stage.meaning):
            cursor.execute(f'INSERT INTO "{table}" VALUES (7, %s, 1), (8, %s, 1)', ["[1,0]", "[0,1]"])
    subject = Subject(project_id=project.pk, profile_ids=(7,), unit_ids=())
    staging = location("refit_staging")
    assert staging.verify(subject) == 2 and list(staging.export(subject)) == [{"rows": 2}]
    assert staging.erase(subject, lambda n: None) == 2
    assert staging.verify(subject) == 0
    assert vector_io.staging_rows_count(project_id=project.pk, profile_ids=[8]) == 2  # the others stay
    stage.drop()
    assert vector_io.staging_tables(project_id=project.pk) == []
