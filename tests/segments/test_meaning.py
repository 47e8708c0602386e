"""Meaning in behavior segments: text vectors made in the worker, cached, combined with behavior."""

from datetime import timedelta

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from personalization.people import selectors as people
from segments import meaning, services
from segments.embedding import BehaviorEvent
from segments.models import ClusteringRun, ProfileEmbedding, ProfileMeaning, RunStatus, SegmentMembership, TextEmbedding
from segments.services import meaning as meaning_service
from tests.segments.conftest import DEMO_END


def _ari(project, *, weight: float, settings, k: int = 8) -> float:
    settings.SEGMENTS_MEANING_WEIGHT = weight
    run = services.clustering_run_request(project=project, k=k)
    run = services.clustering_run_execute(run_id=run.pk)
    assert run.status == RunStatus.DONE, run.error
    assert run.meaning_weight == weight
    labels = dict(SegmentMembership.objects.filter(segment__run=run).values_list("profile_id", "segment__key"))
    truth = people.profiles_planted_intent(project_id=project.pk, profile_ids=labels)
    ids = sorted(labels)
    return adjusted_rand_score([truth[i] for i in ids], [labels[i] for i in ids])


def test_clustering__with_meaning__recovers_planted_intents_better_than_behavior_alone(refitted, settings):
    behavior = _ari(refitted, weight=0.0, settings=settings)
    with_meaning = {w: _ari(refitted, weight=w, settings=settings) for w in (0.1, 0.2, 0.3, 0.4, 0.5, 0.7)}
    print(f"\ndemo ARI, k=8: behavior only {behavior:.3f}; with meaning " + ", ".join(f"w={w}: {a:.3f}" for w, a in with_meaning.items()))
    assert with_meaning[0.3] > behavior
