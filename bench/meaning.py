"""Meaning benchmark: text encoding speed cold and cached, worker memory with the encoder loaded, and the
meaning weight measured on the demo's planted intents.

    python bench/meaning.py [--quick]

1. Encoding: distinct short texts (the shape of real queries) through the worker's path
   (segments/services/meaning.py text_vectors): cold (encoded, then stored in the cache) and cached
   (read back by digest), texts per second.
2. Memory: the resident size of this process (Django set up) before and after the encoder is loaded
   and has encoded a batch: what a worker pays for meaning.
3. Intents, event to decide: a project with 10 named intents; each sample posts one event with a query
   never seen before to the events endpoint (in process), runs the drain step with Celery eager (so the
   queued intent scoring runs inline, as the worker would run it at once), and polls decide's hash for
   the new score. p50/p95 of that time; the beat's drain tick (every 1 s) can add up to 1 s in service.
4. Intents, scoring at scale: 100,000 synthetic people × 8 texts drawn from 20,000 distinct queries
   (cached vectors), on 10 intents, through segments/intents.py profiles_scores in chunks of 2,000 (the
   worker's batch): seconds measured, 1M extrapolated ×10 (the work is linear in people). The database
   write and the Redis publish are not in this figure.
5. Weight: the demo (3,000 visitors over 14 days, --quick 1,500) refitted once, then clustered into
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


INTENTS_BENCH = [
    ("planning a trip", ["visa rules for japan", "travel insurance for asia", "hotel near the central station"]),
    ("trail running gear", ["best shoes for trail running", "hydration vest", "grippy soles for muddy paths"]),
    ("home office setup", ["ergonomic desk chair", "standing desk converter", "noise cancelling headset"]),
    ("expecting a baby", ["best pram for city streets", "nursery furniture set", "baby car seat"]),
    ("learning to cook", ["easy weeknight recipes", "knife skills for beginners", "how to make a risotto"]),
    ("building muscle", ["protein powder", "beginner strength program", "adjustable dumbbells"]),
    ("growing vegetables", ["raised bed kit", "tomato seedlings", "organic compost"]),
    ("getting married", ["wedding venue", "engagement ring", "bridesmaid dresses"]),
    ("getting a puppy", ["puppy food", "dog crate", "lead training"]),
    ("buying a first house", ["mortgage calculator", "first time buyer", "home survey"]),
]


def intents_latency(samples: int) -> dict:
    import orjson
    from django.conf import settings
    from django.test import Client

    from personalization import redis_client, rkeys
    from personalization import services as personalization_services
    from personalization.intent_fields import UNIT_INTENTS_FIELD
    from personalization.workspace.projects import api_key_create, project_create
    from segments import services

    settings.CELERY_TASK_ALWAYS_EAGER = True
    from config.celery import app as celery_app

    celery_app.conf.task_always_eager = True
    project = project_create(name=f"bench intents {time.time_ns()}")
    _, public = api_key_create(project=project, kind="public", name="bench")
    for name, examples in INTENTS_BENCH:
        services.intent_create(project_id=project.pk, name=name, examples=examples)
    personalization_services.api_keys_publish()
    client, redis = Client(), redis_client.worker()
    while personalization_services.events_drain(claim_idle_ms=0):
        pass
    took = []
    for i in range(samples):
        visitor = f"v{i}"
        query = f"what documents do I need to enter thailand {time.time_ns()}"
        event = {
            "event_id": f"bench-{time.time_ns()}",
            "type": "search",
            "anonymous_id": visitor,
            "timestamp": datetime.now(UTC).isoformat(),
            "properties": {"query": query},
        }
        started = time.perf_counter()
        response = client.post(
            "/api/v1/events",
            data=orjson.dumps({"events": [event]}),
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {public}",
        )
        assert response.status_code == 200, response.content
        deadline = started + 30
        while time.perf_counter() < deadline:
            personalization_services.events_drain(claim_idle_ms=0)
            if redis.hget(rkeys.unit(project.pk, visitor), UNIT_INTENTS_FIELD):
                break
        else:
            raise SystemExit(f"no intent score for {visitor} after 30 s")
        took.append(time.perf_counter() - started)
    took_ms = sorted(t * 1000 for t in took)
    return {
        "samples": samples,
        "intents": len(INTENTS_BENCH),
        "p50_ms": round(took_ms[len(took_ms) // 2], 1),
        "p95_ms": round(took_ms[min(len(took_ms) - 1, int(0.95 * len(took_ms)))], 1),
        "p95_with_drain_tick_s": round(took_ms[min(len(took_ms) - 1, int(0.95 * len(took_ms)))] / 1000 + 1.0, 2),
    }


def intents_scale(people: int) -> dict:
    import numpy as np

    from segments import intents, text_encoder

    encoder = text_encoder.encoder_load()
    models = [
        intents.intent_model(
            key=intents.key_from_name(n), name=n, examples=e, encode=encoder.encode, encoder=encoder.name
        )
        for n, e in INTENTS_BENCH
    ]
    rng = np.random.default_rng(7)
    vocabulary = [f"query {i}" for i in range(20_000)]
    unit = rng.normal(size=(len(vocabulary), encoder.dims)).astype(np.float32)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    near = rng.choice(len(vocabulary), size=len(vocabulary) // 10, replace=False)
    unit[near] += 1.5 * np.stack([models[i % len(models)].prototype for i in range(len(near))])
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    vectors = dict(zip(vocabulary, unit, strict=True))
    # Queries repeat: a Zipf-like draw, as real search logs do. Random vectors score near 0 on every
    # intent, so the prototypes are mixed into a tenth of the vocabulary: people with real scores and
    # phrases to keep, as after a campaign.
    draws = np.minimum(rng.zipf(1.3, size=(people, 8)) - 1, len(vocabulary) - 1)
    weights = rng.uniform(0.2, 1.0, size=(people, 8)).astype(np.float32)
    batches = [
        [
            [intents.WeightedText(vocabulary[j], float(w)) for j, w in zip(draws[p], weights[p], strict=True)]
            for p in range(start, min(start + 2000, people))
        ]
        for start in range(0, people, 2000)
    ]
    started = time.perf_counter()
    above = 0
    for batch in batches:
        best = intents.profiles_scores(batch, vectors, models).best
        above += int((best.max(axis=1) >= intents.DEFAULT_THRESHOLD).sum())
    seconds = time.perf_counter() - started
    return {
        "people": people,
        "seconds": round(seconds, 1),
        "extrapolated_1m_s": round(seconds * 1_000_000 / people, 0),
        "share_above_threshold_on_some_intent": round(above / people, 3),
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
    parser.add_argument("--intents-only", action="store_true", help="encoding and intents, not the weight study")
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
    print("intents, event to a score decide reads:", flush=True)
    latency = intents_latency(20 if args.quick else 100)
    print(
        f"  p50 {latency['p50_ms']:.0f} ms, p95 {latency['p95_ms']:.0f} ms over {latency['samples']} events"
        f" ({latency['intents']} intents); with the 1 s drain tick at most {latency['p95_with_drain_tick_s']:.1f} s",
        flush=True,
    )
    print("intents, scoring people:", flush=True)
    scale = intents_scale(100_000)
    print(
        f"  {scale['people']:,} people in {scale['seconds']:.1f} s;"
        f" 1M extrapolated: {scale['extrapolated_1m_s']:.0f} s",
        flush=True,
    )
    result = None
    if not args.intents_only:
        print("meaning weight on the demo's planted intents:", flush=True)
        result = weights(1500 if args.quick else 3000)
    print(
        json.dumps(
            {
                "bench": "meaning",
                "quick": args.quick,
                "encoding": enc,
                "intents_latency": latency,
                "intents_scale": scale,
                "weights": result,
            }
        )
    )


if __name__ == "__main__":
    main()
