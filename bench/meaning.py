"""Meaning benchmark: text encoding speed cold and cached, worker memory with the encoder loaded, and the
meaning weight measured on the demo's planted intents.

    python bench/meaning.py [--quick]

1. Encoding: distinct short texts (the shape of real queries) through the worker's path
   (segments/services/meaning.py text_vectors): cold (encoded, then stored in the cache) and cached
   (read back by digest), texts per second.
2. Memory: the resident size of this process (Django set up) before and after the encoder is loaded
   and has encoded a batch: what a worker pays for meaning.
3. Weight: the demo (3,000 visitors over 14 days, --quick 1,500) refitted once, then clustered into
   8 segments with the meaning weight at 0 (behavior alone) and at each candidate weight, and with
   k chosen automatically at 0 and at the default: adjusted Rand index against the planted intents.

Runs in the bench database (bench/_common.py). Ends with one line of JSON.
"""

import argparse
import json
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import _common
from bench.encoders import _speed_texts, _vm_kb

WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.7)


def encoding(n: int) -> dict:
    from segments import text_encoder
    from segments.models import TextEmbedding
    from segments.services import meaning as meaning_service

    before_kb = _vm_kb("VmRSS")
    encoder = text_encoder.encoder_load()
    texts = [f"{t} {time.time_ns()}" for t in _speed_texts(n)]  # never seen before: a cold cache
    started = time.perf_counter()
    meaning_service.text_vectors(texts=texts, encoder=encoder)
    cold = n / (time.perf_counter() - started)
    started = time.perf_counter()
    meaning_service.text_vectors(texts=texts, encoder=encoder)
    cached = n / (time.perf_counter() - started)
    after_kb = _vm_kb("VmRSS")
    TextEmbedding.objects.filter(digest__in=[text_encoder.text_digest(t) for t in texts]).delete()
    return {
        "texts": n,
        "cold_texts_per_s": round(cold, 1),
        "cached_texts_per_s": round(cached, 1),
        "worker_rss_mb_before_encoder": round(before_kb / 1024, 1),
        "worker_rss_mb_with_encoder": round(after_kb / 1024, 1),
    }


def weights(profiles: int) -> dict:
    from django.conf import settings
    from sklearn.metrics import adjusted_rand_score

    from demo import seed as demo_services
    from personalization.people import selectors as people
    from segments import services
    from segments.models import SegmentMembership

    end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    demo_services.demo_delete()  # a run stopped midway leaves its demo behind
    with tempfile.TemporaryDirectory() as folder:
        project = demo_services.demo_seed(
            profiles=profiles, days=14, seed=11, keys_path=Path(folder) / "keys.json", end=end
        )
    started = time.perf_counter()
    services.embeddings_refit(project_id=project.pk, now=end)
    refit_s = time.perf_counter() - started

    def ari(weight: float, k: int | None) -> tuple[float, int]:
        settings.SEGMENTS_MEANING_WEIGHT = weight
        run = services.clustering_run_execute(run_id=services.clustering_run_request(project=project, k=k).pk)
        labels = dict(SegmentMembership.objects.filter(segment__run=run).values_list("profile_id", "segment__key"))
        truth = people.profiles_planted_intent(project_id=project.pk, profile_ids=labels)
        ids = sorted(labels)
        return round(adjusted_rand_score([truth[i] for i in ids], [labels[i] for i in ids]), 4), run.k

    default = float(settings.SEGMENTS_MEANING_WEIGHT)
    k8 = {}
    for weight in WEIGHTS:
        k8[str(weight)] = ari(weight, 8)[0]
        print(f"  weight {weight:.1f}, k=8: ARI {k8[str(weight)]:.3f}", flush=True)
    auto = {}
    for weight in (0.0, default):
        score, k = ari(weight, None)
        auto[str(weight)] = {"ari": score, "k": k}
        print(f"  weight {weight:.1f}, k chosen ({k}): ARI {score:.3f}", flush=True)
    settings.SEGMENTS_MEANING_WEIGHT = default
    demo_services.demo_delete()
    return {
        "profiles": profiles,
        "refit_s": round(refit_s, 1),
        "default_weight": default,
        "ari_k8": k8,
        "ari_auto_k": auto,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 texts and 1,500 demo visitors")
    args = parser.parse_args()
    database_url, _ = _common.bench_environment()
    _common.database_ensure(database_url)
    _common.django_setup(migrate=True)

    print("encoding:", flush=True)
    enc = encoding(1000 if args.quick else 5000)
    print(
        f"  {enc['cold_texts_per_s']:,.0f} texts/s cold, {enc['cached_texts_per_s']:,.0f} texts/s cached;"
        f" worker RSS {enc['worker_rss_mb_before_encoder']:.0f} MB → {enc['worker_rss_mb_with_encoder']:.0f} MB"
        " with the encoder loaded",
        flush=True,
    )
    print("meaning weight on the demo's planted intents:", flush=True)
    result = weights(1500 if args.quick else 3000)
    print(json.dumps({"bench": "meaning", "quick": args.quick, "encoding": enc, "weights": result}))


if __name__ == "__main__":
    main()
