"""Text encoders compared on the same labelled queries, in one run: accuracy first, then speed and memory.

    python bench/encoders.py [--quick] [--site-dir DIR]

The labelled set is tests/data/intent_queries.json: 12 intents, each defined by its name and 3 example
phrases, and 12 more queries per intent that share no keyword with them. Each query goes to the
intent whose prototype is nearest by cosine (the unit mean of the name's and the examples' vectors;
"max" is the nearest single phrase instead). Candidates: every encoder of segments/text_encoder.py
that is installed (the runner-up is not a dependency: `--site-dir` adds a folder it was installed into
with `pip install --target`), and the token-only behavior embedder (TF-IDF + SVD fitted on the same
texts as search events), which can only match shared words.

Each candidate runs in its own process, so its load time and resident memory are its own: the
memory is VmHWM (peak resident) after loading and encoding, beside the interpreter's with numpy only.
Speed is texts per second over a batch of distinct short texts, on one thread. Ends with one line of JSON.
"""

import argparse
import json
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

LABELLED = ROOT / "tests" / "data" / "intent_queries.json"
TOKEN_ONLY = "token-only (behavior tf-idf + svd)"  # noqa: S105 (a label, not a secret)


def _vm_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def labelled_set(*, first_draft: bool = False) -> tuple[list[str], list[list[str]], list[str], list[int]]:
    """(intent names, each intent's defining phrases, queries, each query's intent index). first_draft:
    the examples as first written, before four intents' examples were rewritten to span the intent."""
    data = json.loads(LABELLED.read_text())["intents"]
    names = [intent["name"] for intent in data]
    field = "examples_first_draft" if first_draft else "examples"
    defining = [[intent["name"], *intent.get(field, intent["examples"])] for intent in data]
    queries = [q for intent in data for q in intent["queries"]]
    truth = [i for i, intent in enumerate(data) for _ in intent["queries"]]
    return names, defining, queries, truth


def accuracy(encode, defining: list[list[str]], queries: list[str], truth: list[int]) -> dict:
    """Share of queries placed in their own intent, by prototype and by nearest single phrase."""
    from segments.text_encoder import prototype

    phrase_vectors = [encode(phrases) for phrases in defining]
    prototypes = np.stack([prototype(v) for v in phrase_vectors])
    q = encode(queries)
    by_mean = np.argmax(q @ prototypes.T, axis=1)
    by_max = np.argmax(np.stack([(q @ v.T).max(axis=1) for v in phrase_vectors], axis=1), axis=1)
    truth_array = np.asarray(truth)
    return {
        "accuracy_mean": round(float((by_mean == truth_array).mean()), 4),
        "accuracy_max": round(float((by_max == truth_array).mean()), 4),
    }


def _speed_texts(n: int) -> list[str]:
    """n distinct short texts in the shape of real queries (the labelled queries with a varying tail)."""
    _, _, queries, _ = labelled_set()
    tails = ("", " near me", " 2026", " reviews", " cheap", " uk", " for beginners", " best")
    return [f"{queries[i % len(queries)]}{tails[(i // len(queries)) % len(tails)]} {i}" for i in range(n)]


def _token_only_encoder(corpus: list[str]):
    """The behavior embedder fitted on the texts as search events: the baseline that sees only words."""
    from segments.embedding import BehaviorEvent, TfidfSvdEmbedder

    now = datetime.now(UTC)

    def docs(texts):
        return [[BehaviorEvent("search", now, {"query": t})] for t in texts]

    embedder = TfidfSvdEmbedder()
    embedder.fit(docs(corpus), now=now)
    return lambda texts: embedder.transform(docs(texts), now=now)


def measure_one(name: str, n_speed: int) -> dict:
    base_kb = _vm_kb("VmRSS")
    _, defining, queries, truth = labelled_set()
    started = time.perf_counter()
    if name == TOKEN_ONLY:
        encode = _token_only_encoder([p for phrases in defining for p in phrases] + queries)
        dims = 64
    else:
        from segments.text_encoder import encoder_load

        encoder = encoder_load(name)
        encode, dims = encoder.encode, encoder.dims
    load_s = time.perf_counter() - started
    result = {"encoder": name, "dims": dims, "load_s": round(load_s, 2)} | accuracy(encode, defining, queries, truth)
    first_draft = accuracy(encode, labelled_set(first_draft=True)[1], queries, truth)
    result["accuracy_mean_first_draft"] = first_draft["accuracy_mean"]
    texts = _speed_texts(n_speed)
    encode(texts[:64])
    started = time.perf_counter()
    for i in range(0, len(texts), 256):
        encode(texts[i : i + 256])
    result["texts_per_s"] = round(len(texts) / (time.perf_counter() - started), 1)
    result["rss_mb_python_numpy"] = round(base_kb / 1024, 1)
    result["peak_rss_mb"] = round(_vm_kb("VmHWM") / 1024, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer texts in the speed measurement")
    parser.add_argument("--site-dir", default="", help="a folder holding candidates installed with pip --target")
    parser.add_argument("--one", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    n_speed = 1000 if args.quick else 5000
    if args.site_dir:
        import site

        site.addsitedir(args.site_dir)
    if args.one:
        print(json.dumps(measure_one(args.one, n_speed)))
        return

    from segments.text_encoder import DEFAULT_ENCODER, ENCODERS

    results = []
    for name in [*ENCODERS, TOKEN_ONLY]:
        command = [sys.executable, __file__, "--one", name] + (["--quick"] if args.quick else [])
        command += ["--site-dir", args.site_dir] if args.site_dir else []
        out = subprocess.run(command, capture_output=True, text=True)
        if out.returncode != 0:
            last = (out.stderr.strip().splitlines() or ["failed"])[-1]
            results.append({"encoder": name, "error": last[:200]})
            print(f"{name:38} not measured: {last[:120]}")
            continue
        row = json.loads(out.stdout.strip().splitlines()[-1])
        results.append(row)
        print(
            f"{name:38} {row['dims']:4}-d  accuracy {row['accuracy_mean']:.1%} (by max {row['accuracy_max']:.1%},"
            f" first-draft examples {row['accuracy_mean_first_draft']:.1%})"
            f"  {row['texts_per_s']:8,.0f} texts/s  load {row['load_s']:.1f} s  peak RSS {row['peak_rss_mb']:.0f} MB"
            f" (python+numpy {row['rss_mb_python_numpy']:.0f} MB)"
        )
    names, _, queries, _ = labelled_set()
    print(json.dumps({"bench": "encoders", "intents": len(names), "queries": len(queries),
                      "chosen": DEFAULT_ENCODER, "results": results}))  # fmt: skip


if __name__ == "__main__":
    main()
