"""Lookalikes on two real public datasets of different shapes (tests/data/README.md says where they come
from), imported as history: every person is segmented, and a lookalike of a sample of one category's
fans finds the other fans better than a plain cosine on category shares, with an estimated precision
whose range holds the precision measured against that truth (at least 80–85 % of the ranges shown).

- MovieLens (dslabs): 671 people, 100,004 ratings over 22 years, 20 genres given as a list per movie.
- Margarine purchase panel (bayesm): 516 households, 4,470 purchases of 10 products of 7 brands,
  1 to 43 purchases each; the panel gives the order of purchases, not their dates (two weeks apart here).

Truth: the fans of category C are the people whose share of events in C is in the top fifth. The seed is
a random half of them, uploaded as ids. Measured precision at size N: the share of the saved lookalike
that are fans. Baseline: the N non-seed people whose category-share vector is nearest (cosine) to the
seed's mean share vector.
"""

import csv
import gzip
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import orjson
import pytest

from personalization import services as personalization_services
from personalization.ingest.history import body_pieces, events_import
from personalization.people import selectors as people
from segments import selectors, services
from segments.models import SegmentMembership
from segments.services import embeddings as embeddings_service

DATA = Path(__file__).resolve().parent.parent / "data"
MARGARINE_PRODUCTS = ("PPk_Stk", "PBB_Stk", "PFl_Stk", "PHse_Stk", "PGen_Stk", "PImp_Stk", "PSS_Tub", "PPk_Tub",
                      "PFl_Tub", "PHse_Tub")  # fmt: skip
MARGARINE_BRANDS = {"Pk": "Parkay", "BB": "Blue Bonnet", "Fl": "Fleischmann's", "Hse": "House brand", "Gen": "Generic",
                    "Imp": "Imperial", "SS": "Shedd's Spread"}  # fmt: skip


def _movielens() -> tuple[list[dict], dict[str, dict[str, float]]]:
    """Events (one per rating, genres as a list) and each person's genre counts."""
    with gzip.open(DATA / "movielens_dslabs_movies.csv.gz", "rt") as f:
        genres = {row["movieId"]: row["genres"].split("|") for row in csv.DictReader(f)}
    events, counts = [], {}
    with gzip.open(DATA / "movielens_dslabs_ratings.csv.gz", "rt") as f:
        for row in csv.DictReader(f):
            movie_genres = genres[row["movieId"]]
            events.append(
                {
                    "event_id": f"ml-{row['userId']}-{row['movieId']}",
                    "type": "rate",
                    "user_id": f"ml-{row['userId']}",
                    "timestamp": datetime.fromtimestamp(int(row["timestamp"]), UTC).isoformat(),
                    "properties": {"movie_id": row["movieId"], "genres": movie_genres, "rating": float(row["rating"])},
                }
            )
            person = counts.setdefault(f"ml-{row['userId']}", {})
            for genre in movie_genres:
                person[genre] = person.get(genre, 0.0) + 1.0
    return events, counts


def _margarine() -> tuple[list[dict], dict[str, dict[str, float]]]:
    """Events (one per purchase, brand and form as tags) and each household's brand counts."""
    start = datetime(1993, 1, 4, tzinfo=UTC)
    events, counts, seen = [], {}, {}
    with gzip.open(DATA / "bayesm_margarine_choices.csv.gz", "rt") as f:
        for row in csv.DictReader(f):
            product = MARGARINE_PRODUCTS[int(float(row["choice"])) - 1]
            brand, form = MARGARINE_BRANDS[product[1:].split("_")[0]], product.split("_")[1]
            household = f"hh-{row['hhid']}"
            n = seen[household] = seen.get(household, -1) + 1
            events.append(
                {
                    "event_id": f"{household}-{n}",
                    "type": "purchase",
                    "user_id": household,
                    "timestamp": (start + timedelta(days=14 * n)).isoformat(),
                    "value": float(row[product]),
                    "properties": {"product": product, "tags": [brand, "stick" if form == "Stk" else "tub"]},
                }
            )
            counts.setdefault(household, {})[brand] = counts.get(household, {}).get(brand, 0.0) + 1.0
    return events, counts


def _import(project, events: list[dict]) -> None:
    body = b"\n".join(orjson.dumps(event) for event in events) + b"\n"
    progress = events_import(project_id=project.pk, body=body_pieces(io.BytesIO(body)), fmt="jsonl")
    assert progress.rejected_count == 0, progress.rejected[:3]
    assert progress.accepted == len(events)
    while personalization_services.events_drain(claim_idle_ms=0):
        pass


def _shares(counts: dict[str, dict[str, float]], people: list[str], categories: list[str]) -> np.ndarray:
    matrix = np.array([[counts[p].get(c, 0.0) for c in categories] for p in people])
    return matrix / matrix.sum(axis=1, keepdims=True)


def _check_lookalikes(project, counts, categories: list[str], *, min_fans: int, rng_seed: int) -> list[dict]:
    """For each category: fans, a seed of half of them, the preview, lookalikes at the curve's sizes,
    the baseline at the same sizes. Returns one row per (category, size) with a precision estimate."""
    people_ids = sorted(counts)
    shares = _shares(counts, people_ids, categories)
    unit_shares = shares / np.linalg.norm(shares, axis=1, keepdims=True)
    embedded, _ = people.profiles_by_external_ids(project_id=project.pk, ids=people_ids)
    ids_embedded, _ = embeddings_service.embeddings_matrix(project_id=project.pk)
    in_population = set(ids_embedded.tolist())
    people_index = [i for i, p in enumerate(people_ids) if embedded.get(p) in in_population]
    rng = np.random.default_rng(rng_seed)
    rows = []
    for c, category in enumerate(categories):
        column = shares[people_index, c]
        if (column > 0).sum() < 3 * min_fans:
            continue
        fans = {people_ids[people_index[i]] for i in np.flatnonzero(column >= np.quantile(column, 0.8))}
        if len(fans) < min_fans:
            continue
        seed_people = sorted(rng.choice(sorted(fans), size=len(fans) // 2, replace=False).tolist())
        seed = services.seed_from_ids(project_id=project.pk, text="\n".join(seed_people))
        preview = services.lookalike_preview(project_id=project.pk, seed=seed)
        print(
            f"{category}: {len(fans)} fans, seed {preview['seed_embedded']},"
            f" non-seed fans {len(fans) - len(seed_people)},"
            f" estimated like the seed {preview['estimated_like_seed']}, recall "
            + " ".join(f"{p['recall']:.2f}" for p in preview["curve"])
        )
        others = [i for i in people_index if people_ids[i] not in set(seed_people)]
        seed_rows = [people_ids.index(p) for p in seed_people]
        centre = shares[seed_rows].mean(axis=0)
        baseline_order = [others[i] for i in np.argsort(-(unit_shares[others] @ (centre / np.linalg.norm(centre))))]
        for point in preview["curve"]:
            if point["share"] not in (0.05, 0.1, 0.2):
                continue
            segment = services.lookalike_build(
                project=project, seed=seed, size=point["size"], name=f"{category} {point['share']}"
            )
            members = set(SegmentMembership.objects.filter(segment=segment).values_list("profile_id", flat=True))
            fan_ids = {embedded[p] for p in fans}
            measured = len(members & fan_ids) / len(members)
            baseline = float(np.mean([people_ids[i] in fans for i in baseline_order[: point["size"]]]))
            rows.append(
                {
                    "category": category,
                    "share": point["share"],
                    "size": point["size"],
                    "measured": measured,
                    "baseline": baseline,
                    "estimate": point["precision"],
                    "interval": point["precision_interval"],
                    "reason": preview["precision_reason"],
                }
            )
    for row in rows:
        low, high = row["interval"] or (0.0, 0.0)
        shown = "—" if row["estimate"] is None else f"{row['estimate']:.2f} [{low:.2f}, {high:.2f}]"
        print(
            f"{row['category']:>14} {row['share']:>5.0%} n={row['size']:>3}: measured {row['measured']:.2f}"
            f" baseline {row['baseline']:.2f} estimate {shown} {row['reason'][:50]}"
        )
    return rows


def _assert_quality(rows: list[dict], *, inside_share: float) -> None:
    measured = np.mean([r["measured"] for r in rows])
    baseline = np.mean([r["baseline"] for r in rows])
    print(f"mean measured {measured:.3f}, mean baseline {baseline:.3f}")
    assert measured > baseline + 0.02, "the lookalike must beat a plain cosine on category shares"
    estimated = [r for r in rows if r["estimate"] is not None]
    assert len(estimated) >= len(rows) // 2, "most sizes get an estimate on these seeds"
    inside = [r for r in estimated if r["interval"][0] - 1e-9 <= r["measured"] <= r["interval"][1] + 1e-9]
    width = np.mean([r["interval"][1] - r["interval"][0] for r in estimated])
    print(f"{len(inside)} of {len(estimated)} ranges hold the measured precision; mean width {width:.2f}")
    assert len(inside) >= inside_share * len(estimated)
    assert width <= 0.6, "a range that wide says nothing: the estimate must stay useful"
    for row in estimated:
        assert row["interval"][0] <= row["estimate"] <= row["interval"][1]


@pytest.mark.slow
def test_movielens__imported_over_22_years__everyone_segmented_and_lookalikes_beat_genre_shares(project):
    events, counts = _movielens()
    _import(project, events)
    row = embeddings_service.embeddings_refit(project_id=project.pk)
    assert row is not None
    print(f"\nMovieLens coverage: {row.coverage}")
    assert row.profiles == 671, "every person has 20+ ratings: none is left out by the window"
    assert row.coverage["left_out"] == {"fewer_events": 0, "outside_window": 0}
    genres = sorted({g for person in counts.values() for g in person} - {"(no genres listed)", "IMAX"})
    rows = _check_lookalikes(project, counts, genres, min_fans=60, rng_seed=1)
    assert len({r["category"] for r in rows}) >= 10
    # The top of this ranking is 0.6–0.95 fans: a range that assumed it all fans held the truth 21
    # times of 37; with the cautious lower end it holds it 28 of 32 times, 27 in some runs (one range
    # sits at its edge and the result is not bit-for-bit the same between runs; cause not found yet).
    _assert_quality(rows, inside_share=0.8)


def test_margarine_panel__sparse_purchases__left_out_counted_and_lookalikes_beat_brand_shares(
    project, client, secret_key
):
    events, counts = _margarine()
    _import(project, events)
    row = embeddings_service.embeddings_refit(project_id=project.pk)
    assert row is not None
    print(f"\nMargarine coverage: {row.coverage}")
    few = sum(1 for person in counts.values() if sum(person.values()) < row.coverage["min_events"])
    assert row.coverage["left_out"]["fewer_events"] == few > 0
    assert row.profiles == len(counts) - few
    sentence = selectors.embedding_coverage(project_id=project.pk)["sentence"]
    assert f"{few:,} people left out: fewer than {row.coverage['min_events']} events" in sentence
    auth = {"HTTP_AUTHORIZATION": f"Bearer {secret_key}"}
    answer = client.get("/api/v1/segments/coverage/", **auth).json()
    assert answer["left_out"]["fewer_events"] == few and answer["eligible"] == row.profiles
    assert answer["sentence"] == sentence
    counted = {p: c for p, c in counts.items() if sum(c.values()) >= row.coverage["min_events"]}
    pure = sorted(p for p, c in counted.items() if c.get("Parkay", 0) == sum(c.values()))[:40]
    preview = client.post(
        "/api/v1/segments/lookalike-preview/", {"seed_ids": pure}, content_type="application/json", **auth
    )
    assert preview.status_code == 200, preview.content
    body = preview.json()
    assert body["seed_embedded"] == len(pure)
    shown = [p for p in body["curve"] if p["precision"] is not None]
    assert shown or body["precision_reason"]
    assert all(p["precision_interval"][0] <= p["precision"] <= p["precision_interval"][1] for p in shown)
    assert bool(body["precision_meaning"]) == bool(shown), "a range shown over REST says what it means"
    bad = client.post("/api/v1/segments/lookalike-preview/", {"seed_ids": "x"}, content_type="application/json", **auth)
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "seed_segment"
    rows = _check_lookalikes(project, counted, sorted(MARGARINE_BRANDS.values()), min_fans=30, rng_seed=1)
    assert len({r["category"] for r in rows}) >= 2
    _assert_quality(rows, inside_share=0.85)
