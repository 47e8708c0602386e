"""Two real clustering runs of the demo's raw events (different k-means seeds): the migrate screen's
proposal maps each old segment to the new segment holding the same people."""

import statistics

from segments import selectors, services


def test_overlap__two_real_runs_of_the_demo__each_segment_finds_its_counterpart(refitted):
    # The refitted demo of tests/segments/conftest.py: the same refit as test_clustering.py's, replayed
    # (tests/seeded.py) when that file ran in this process first, instead of fitted again.
    demo_project = refitted
    first = services.clustering_run_execute(run_id=services.clustering_run_request(project=demo_project, k=8).pk)
    second = services.clustering_run_execute(
        run_id=services.clustering_run_request(project=demo_project, k=8).pk, seed=7
    )
    old_keys = [s.key for s in selectors.run_segments(run=first)]
    proposal = selectors.segments_overlap(project_id=demo_project.pk, old_keys=old_keys, run_id=second.pk)
    best = [proposal[key][0] for key in old_keys]
    jaccards = [row["jaccard"] for row in best]
    print(f"\nbest overlap per old segment: {[round(j, 3) for j in jaccards]}")
    assert statistics.median(jaccards) >= 0.8
    assert len({row["key"] for row in best}) >= 7  # (nearly) one-to-one: no two old segments collapse
    for key in old_keys:  # each ranking is best first and covers the whole new run
        ranked = [row["jaccard"] for row in proposal[key]]
        assert ranked == sorted(ranked, reverse=True) and len(ranked) == 8
