"""A public-dataset-shaped history (REES46 columns, October 2019) imported as CSV, then segmented:
behavior is found under the dataset's own property names and as of the dataset's own last day."""

import io
from datetime import UTC, datetime, timedelta

import numpy as np
from sklearn.metrics import adjusted_rand_score

from demo import seed as demo_services
from personalization import services as personalization_services
from personalization.ingest.history import body_pieces, events_import
from personalization.people import selectors as people
from segments import services
from segments.models import RunStatus, Segment, SegmentMembership

GROUPS = [
    ("electronics.smartphone", ("samsung", "apple", "xiaomi")),
    ("appliances.kitchen.refrigerators", ("lg", "bosch", "beko")),
    ("apparel.shoes.sneakers", ("nike", "adidas", "puma")),
]


def _csv(people: int, seed: int = 3) -> tuple[bytes, dict[str, int]]:
    rng = np.random.default_rng(seed)
    start = datetime(2019, 10, 1, tzinfo=UTC)
    rows = ["event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session"]
    truth = {}
    for person in range(people):
        group = int(rng.integers(len(GROUPS)))
        truth[str(500_000_000 + person)] = group
        for i in range(int(rng.integers(6, 14))):
            g = group if rng.random() < 0.85 else int(rng.integers(len(GROUPS)))
            category, brands = GROUPS[g]
            brand = brands[int(rng.integers(len(brands)))]
            ts = start + timedelta(minutes=float(rng.integers(0, 60 * 24 * 28)))
            kind = "view" if rng.random() < 0.85 else "cart"
            product = 1_000_000 * (g + 1) + int(rng.integers(40))
            rows.append(
                f"{ts:%Y-%m-%d %H:%M:%S} UTC,{kind},{product},{2053013552326770905 + g},{category},{brand},"
                f"{rng.uniform(10, 900):.2f},{500_000_000 + person},s{person}-{i // 4}"
            )
    return ("\n".join(rows) + "\n").encode(), truth


def test_public_dataset_csv__imported_then_clustered__groups_recovered_and_named_by_its_categories(project):
    body, truth = _csv(450)
    progress = events_import(project_id=project.pk, body=body_pieces(io.BytesIO(body)), fmt="csv")
    assert progress.rejected_count == 0, progress.rejected[:3]
    while personalization_services.events_drain(claim_idle_ms=0):
        pass
    run = services.clustering_run_request(project=project, k=3)
    run = services.clustering_run_execute(run_id=run.pk)
    assert run.status == RunStatus.DONE, run.error
    rows = SegmentMembership.objects.filter(segment__run=run).values_list("profile__external_id", "segment__key")
    labels = dict(rows)
    assert len(labels) >= 400
    ids = sorted(labels)
    assert adjusted_rand_score([truth[i] for i in ids], [labels[i] for i in ids]) >= 0.9
    cards = " ".join(str(s.card) for s in Segment.objects.filter(run=run))
    assert "electronics" in cards and "brand: " in cards


def test_clustering__history_from_years_ago__segmented_as_of_its_last_day(db, tmp_path):
    """A dataset imported from elsewhere ends long before today: its "recent" is its own last day."""
    end = datetime(2019, 11, 30, tzinfo=UTC)
    project = demo_services.demo_seed(profiles=1500, days=14, seed=5, keys_path=tmp_path / "keys.json", end=end)
    assert people.behavior_clock(project_id=project.pk) <= end
    run = services.clustering_run_execute(run_id=services.clustering_run_request(project=project, k=8).pk)
    assert run.status == RunStatus.DONE, run.error
    labels = dict(SegmentMembership.objects.filter(segment__run=run).values_list("profile_id", "segment__key"))
    truth = people.profiles_planted_intent(project_id=project.pk, profile_ids=labels)
    ids = sorted(labels)
    assert len(ids) >= 1000
    assert adjusted_rand_score([truth[i] for i in ids], [labels[i] for i in ids]) >= 0.7
    assert any(segment.conversion_rate > 0 for segment in Segment.objects.filter(run=run))  # outcomes in its window
