"""Clustering runs on the demo's raw events: recovery of the planted intents, cards, atomicity."""

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from personalization import redis_client, rkeys
from personalization.people import selectors as people
from segments import selectors, services
from segments.models import ClusteringRun, RunStatus, Segment, SegmentMembership


def _run(project, k=None):
    run = services.clustering_run_request(project=project, k=k)
    return services.clustering_run_execute(run_id=run.pk)


def _labels(run) -> dict[int, str]:
    rows = SegmentMembership.objects.filter(segment__run=run).values_list("profile_id", "segment__key")
    return dict(rows)


def test_clustering__demo_raw_events__recovers_planted_intents(refitted):
    run = _run(refitted)
    assert run.status == RunStatus.DONE, run.error
    labels = _labels(run)
    truth = people.profiles_planted_intent(project_id=refitted.pk, profile_ids=labels)
    ids = sorted(labels)
    ari = adjusted_rand_score([truth[i] for i in ids], [labels[i] for i in ids])
    print(f"\ndemo recovery: k={run.k} (auto), {len(ids)} profiles, ARI={ari:.3f}, scores={run.k_scores}")
    assert ari >= 0.8
    assert 0.85 <= len(ids) / 3000 <= 1.0  # everyone with 5+ events


def test_clustering__cards__name_the_over_indexing_behavior(refitted):
    run = _run(refitted, k=8)
    segments = list(Segment.objects.filter(run=run))
    assert len(segments) == 8
    assert sum(s.size for s in segments) == run.profiles
    names = " ".join(s.suggested_name for s in segments).lower()
    for category in ("trail shoes", "yoga", "kids baby", "gifts", "sale"):
        assert category in names, names
    for segment in segments:
        assert segment.card["over_index"] and segment.card["over_index"][0]["ratio"] > 1.5
        assert 0 <= segment.conversion_rate <= 1
    points = selectors.run_map_points(run=run)
    assert len(points) == min(3000, run.profiles) and {p[2] for p in points} == set(range(8))


def test_clustering__memberships__published_to_decide_hash(refitted, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        run = _run(refitted, k=6)
    profile_id, key = next(iter(_labels(run).items()))
    from personalization.models import ProfileIdentity

    unit = ProfileIdentity.objects.filter(profile_id=profile_id).values_list("value", flat=True).first()
    segs = redis_client.worker().hget(rkeys.unit(refitted.pk, unit), "segs").decode().split()
    assert key in segs


def test_clustering__k_out_of_range__names_the_field(project):
    with pytest.raises(services.SegmentsError) as err:
        services.clustering_run_request(project=project, k=99)
    assert err.value.field == "k" and "between 2 and 40" in err.value.message


def test_clustering__too_little_behavior__fails_with_advice(project):
    run = _run(project)
    assert run.status == RunStatus.FAILED and "not enough behavior" in run.error
    assert not Segment.objects.filter(run=run).exists()


def test_clustering__run_twice__keeps_both_runs_comparable(refitted):
    first, second = _run(refitted, k=4), _run(refitted, k=8)
    assert ClusteringRun.objects.filter(status=RunStatus.DONE).count() == 2
    assert Segment.objects.filter(run=first).count() == 4 and Segment.objects.filter(run=second).count() == 8
    assert second.inertia < first.inertia
    assert np.isfinite(first.silhouette or 0)
