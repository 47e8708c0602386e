"""Measure live intent: how fast an event reaches decide, what live targeting costs decide, what the
live state update costs the events endpoint, and how much Redis memory the state takes.

    python bench/live.py            # 3 × 4 s peaks per endpoint, 20 s paced run, 500 freshness samples
    python bench/live.py --quick    # 2 × 3 s peaks per endpoint, 8 s paced run, 150 freshness samples

(a) Two projects of its own in the bench database (kairos_bench) and Redis db 14, both with the 10
    experiences of bench/decide.py and no global holdout: "live" adds a targeting condition on the
    live state or the context to every experience (cart, stage, category views, searches, device,
    local hour, referrer, returning visitor …), "plain" does not. Both get the same visitors (user
    ids u<n> and anonymous ids b<n>, with plan / device / intent attributes) and the same events,
    sent through services.events_ingest, so their unit hashes hold the same live state: the only
    difference decide sees is the conditions.
(b) One decide server as production starts it (granian WSGI, config.runner's settings, throttling
    on); wrk (bench/decide.py's script: 80 % known visitors, 20 % first visits) takes turns on
    live decide, plain decide and the trivial /api/v1/ping, so other load on the machine hits all
    alike. Then an open-loop run at 70 % of live decide's peak (p99 from the actual and from the
    scheduled send).
(c) Freshness: for a fresh visitor, decide once (the cart condition misses), POST an add_to_cart
    to /api/v1/events, and from its answer poll decide until the condition matches. Measured on the
    same server, one visitor at a time (no other load).
(d) Events throughput: two servers side by side, one with the live state update on and one with
    KAIROS_LIVE_STATE=0, loaded in turns with bench/ingest.py's batches of 100 events (page views
    carrying item and category, as the snippet sends them), then with the snippet's own flushes of
    1-5 events of one visitor. Beside requests/s, the servers' and Redis's CPU per request, and
    services.events_ingest's CPU per event in this process (Python + Redis, on and off): figures a
    busy machine moves far less than throughput.
(e) Memory: MEMORY USAGE (all samples) of the live project's unit hashes of active visitors, with
    and without their live state fields, and extrapolated to 1M visitors.

The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import _common  # noqa: E402  (needs ROOT on sys.path; imports no Django)
from bench import decide as decide_bench  # noqa: E402
from bench import ingest as ingest_bench  # noqa: E402

SLUG_PREFIX = "bench-live-"
TARGET_FRESHNESS_P95_MS = 50.0
TARGET_RATIO_GAP = 0.10  # live decide/trivial within 10 % of plain decide/trivial
TARGET_P99_MS = 10.0
TARGET_EVENTS_RATIO = 0.8
TARGET_BYTES_PER_VISITOR = 2048
CATEGORIES = ["trail-shoes", "rain-jackets", "tents", "socks", "headlamps", "backpacks"]
# One condition per experience of bench/decide.py, in its order; together they read every kind of
# fact decide derives (session counters, keyed counters, stage, times, device, referrer, visitor).
CONDITIONS = [
    "session.cart_adds >= 1 and session.purchases = 0",
    "stage in comparing, deciding",
    "session.category_views[trail-shoes] >= 2",
    "session.page_views >= 3 or session.searches >= 1",
    "minutes_since_cart_add <= 30",
    "visitor = returning",
    "local_hour between 0 and 23",
    "device != tablet",
    "referrer in search, social, direct, email, paid",
    "sessions_30d >= 1 and not (stage = bought)",
]
FRESH_EXPERIENCE = "hero-headline"  # the first experience: the cart condition


# --- data ------------------------------------------------------------------------------------------


def projects_create(suffix: str) -> dict[str, tuple[int, str]]:
    """The "live" and "plain" projects: {name: (project id, public key)}."""
    from personalization import services

    made = {}
    for name in ("live", "plain"):
        project = services.project_create(name=f"Live bench ({name})", slug=f"{SLUG_PREFIX}{name}-{suffix}")
        services.project_holdout_set(project=project, share=0)
        for spec, condition in zip(decide_bench.experience_specs(), CONDITIONS, strict=True):
            spec = dict(spec)
            key = spec.pop("key")
            # Segment targeting would need saved segments and memberships: both projects go without it.
            targeting = {k: v for k, v in (spec.pop("targeting", None) or {}).items() if k != "segments"}
            if name == "live":
                targeting["conditions"] = condition
            if targeting:
                spec["targeting"] = targeting
            experience = services.experience_create(
                project=project, key=key, name=key.replace("-", " ").title(), touchpoint=key, **spec
            )
            services.experience_start(experience=experience)
        services.snapshot_publish(project_id=project.pk)
        _, key = services.api_key_create(project=project, kind="public", name="bench")
        made[name] = (project.pk, key)
    return made


def _session(rng: random.Random, unit: str, user: bool, start: datetime, prefix: str) -> list[dict]:
    """One visitor's recent session: a landing page, category and item views, maybe a search, a cart
    add, a purchase; a few seconds apart."""
    category = rng.choice(CATEGORIES)
    steps = [("page_view", {"url": "/", "referrer": rng.choice(["https://www.google.com/", "", ""])})]
    for _ in range(rng.randrange(2, 8)):
        item = f"sku-{rng.randrange(2_000)}"
        steps.append(("page_view", {"url": f"/products/{item}", "item": item, "category": category}))
    if rng.random() < 0.5:
        steps.append(("search", {"query": rng.choice(["trail shoes", "rain jacket", "tent"])}))
    if rng.random() < 0.4:
        steps.append(("add_to_cart", {"item": f"sku-{rng.randrange(2_000)}"}))
        if rng.random() < 0.3:
            steps.append(("purchase", {"order_id": f"o-{prefix}"}))
    events = []
    for n, (etype, properties) in enumerate(steps):
        event = {
            "event_id": f"{prefix}-{n}",
            "type": etype,
            "timestamp": (start + timedelta(seconds=5 * n)).isoformat(),
            "properties": properties,
            ("user_id" if user else "anonymous_id"): unit,
        }
        if etype == "purchase":
            event["value"] = 59.0
        events.append(event)
    return events


def visitors_seed(projects: dict[str, tuple[int, str]], visitors: int) -> int:
    """The same attributes and events for visitors u<n> and b<n> in both projects; returns events sent."""
    from personalization import redis_client, rkeys, services

    client = redis_client.worker()
    sent = 0
    for project_id, _ in projects.values():
        rng = random.Random(21)
        pipe = client.pipeline(transaction=False)
        batch: list[dict] = []
        now = datetime.now(UTC)
        for n in range(visitors):
            attributes = decide_bench._profile_attributes(rng)
            for unit, user in ((f"u{n}", True), (f"b{n}", False)):
                pipe.hset(rkeys.unit(project_id, unit), mapping={f"attr:{k}": v for k, v in attributes.items()})
                start = now - timedelta(minutes=rng.randrange(1, 25))
                batch += _session(rng, unit, user, start, f"s{unit}")
                if len(batch) >= 100:
                    sent += len(services.events_ingest(project_id=project_id, payload={"events": batch}).accepted)
                    batch = []
        if batch:
            sent += len(services.events_ingest(project_id=project_id, payload={"events": batch}).accepted)
        pipe.execute()
    return sent


def memory_measure(project_id: int, visitors: int) -> dict:
    """Bytes per active visitor's unit hash, and of the same hash without its live state."""
    from personalization import redis_client, rkeys
    from personalization.people import live_session

    client = redis_client.worker()
    keys = [rkeys.unit(project_id, f"{p}{n}") for n in range(min(visitors, 1000)) for p in ("u", "b")]
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.memory_usage(key, samples=0)
        pipe.hmget(key, live_session.LIVE_FIELDS)
    replies = pipe.execute()
    with_state = [r for r in replies[0::2] if r]
    state_chars = [sum(len(v or b"") for v in values) for values in replies[1::2]]
    scratch = f"{rkeys.unit(project_id, 'bench-memory-probe')}"
    without = []
    for key in keys[:200]:
        fields = client.hgetall(key)
        for name in live_session.LIVE_FIELDS:
            fields.pop(name.encode(), None)
        client.delete(scratch)
        client.hset(scratch, mapping=fields)
        without.append(client.memory_usage(scratch, samples=0))
    client.delete(scratch)
    per_visitor = statistics.mean(with_state)
    return {
        "bytes_per_visitor": per_visitor,
        "bytes_per_visitor_max": max(with_state),
        "bytes_without_state": statistics.mean(without),
        "state_chars": statistics.mean(state_chars),
    }


def queued_forget(project_ids: list[int]) -> None:
    """Drop the projects' counts of events waiting for the drain (the per-project cap): the bench
    takes its entries out of the stream by hand, and a later project may get the same id."""
    from personalization import redis_client, rkeys

    redis_client.worker().hdel(rkeys.EVENTS_QUEUED, *project_ids)


def project_keys_delete(project_ids: list[int]) -> None:
    from personalization import redis_client, rkeys

    client = redis_client.worker()
    queued_forget(project_ids)
    for project_id in project_ids:
        batch = []
        for key in client.scan_iter(match=rkeys.project_keys(project_id), count=5_000):
            batch.append(key)
            if len(batch) >= 5_000:
                client.delete(*batch)
                batch = []
        if batch:
            client.delete(*batch)


# --- HTTP ------------------------------------------------------------------------------------------


class Client:
    """One keep-alive connection to the server, as a site's backend would hold it."""

    def __init__(self, port: int, key: str):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        self.headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}

    def post(self, path: str, body: dict) -> dict:
        self.conn.request("POST", path, orjson.dumps(body), self.headers)
        response = self.conn.getresponse()
        data = response.read()
        if response.status != 200:
            raise SystemExit(f"{path} answered {response.status}: {data[:300]!r}")
        return orjson.loads(data)


def freshness_measure(port: int, key: str, samples: int) -> list[float]:
    """Milliseconds from an add_to_cart's accepted answer to the first decide that reads it."""
    client = Client(port, key)
    tag = f"f{int(time.time()) % 100000}"
    body_of = {"experiences": [FRESH_EXPERIENCE], "context": {"url": "/products/sku-1"}}
    delays = []
    for n in range(samples):
        visitor = f"{tag}-{n}"
        body = {**body_of, "anonymous_id": visitor}
        reason = client.post("/api/v1/decide", body)["assignments"][FRESH_EXPERIENCE]["reason"]
        if reason != "targeting_miss":
            raise SystemExit(f"a fresh visitor should miss the cart condition; decide said {reason}")
        event = {
            "event_id": f"{visitor}-cart",
            "type": "add_to_cart",
            "anonymous_id": visitor,
            "timestamp": datetime.now(UTC).isoformat(),
            "properties": {"item": "sku-1"},
        }
        if client.post("/api/v1/events", {"events": [event]}).get("accepted") != 1:
            raise SystemExit("the events endpoint did not accept the cart add")
        accepted = time.perf_counter()
        deadline = accepted + 5.0
        while client.post("/api/v1/decide", body)["assignments"][FRESH_EXPERIENCE]["reason"] == "targeting_miss":
            if time.perf_counter() > deadline:
                raise SystemExit(f"decide did not see visitor {visitor}'s cart add within 5 s")
        delays.append((time.perf_counter() - accepted) * 1000)
    return delays


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def events_bodies(path: Path, bodies: int) -> None:
    """bench/ingest.py's batches, with the item and category a product page view carries."""
    rng = random.Random(7)
    now = datetime.now(UTC)
    with path.open("w") as out:
        for n in range(bodies):
            batch = ingest_bench.batch_make(rng, f"@@-{n}", now)
            for event in batch["events"]:
                props = event.get("properties") or {}
                if event["type"] == "page_view":
                    item = props["url"].rsplit("/", 1)[-1]
                    props.update({"item": f"sku-{item}", "category": CATEGORIES[int(item) % len(CATEGORIES)]})
            out.write(json.dumps(batch, separators=(",", ":")) + "\n")


def snippet_bodies(path: Path, bodies: int) -> None:
    """What static/kairos.js sends: a flush of 1-5 events of one visitor (page views carrying item and
    category, now and then a search or a cart add)."""
    rng = random.Random(11)
    now = datetime.now(UTC)
    with path.open("w") as out:
        for n in range(bodies):
            visitor = rng.randrange(ingest_bench.USERS)
            events = []
            for k in range(rng.randint(1, 5)):
                item = rng.randrange(2_000)
                etype = rng.choices(["page_view", "search", "add_to_cart"], weights=[8, 1, 1])[0]
                properties: dict = {"item": f"sku-{item}"}
                if etype == "page_view":
                    properties.update(url=f"/products/{item}", category=CATEGORIES[item % len(CATEGORIES)])
                elif etype == "search":
                    properties = {"query": rng.choice(["trail shoes", "rain jacket", "tent"])}
                stamp = (now - timedelta(seconds=10 * (5 - k))).isoformat()
                events.append(
                    {"event_id": f"@@-{n}-{k}", "type": etype, "anonymous_id": f"anon-{visitor}", "timestamp": stamp}
                    | {"properties": properties}
                )
            out.write(json.dumps({"events": events}, separators=(",", ":")) + "\n")


def _redis_cpu_seconds() -> float:
    from personalization import redis_client

    info = redis_client.worker().info("cpu")
    return info["used_cpu_user"] + info["used_cpu_sys"]


def events_cpu_measure(project_id: int, bodies: Path, rounds: int) -> dict:
    """CPU µs per accepted event of services.events_ingest in this process (time.process_time) and in
    Redis (INFO cpu), the live update on and off in turns over the same bodies: a figure the load on
    the machine cannot move the way it moves throughput. The HTTP layer is not in it (the same for
    both), so its on/off ratio is lower than the endpoint's."""
    from personalization import services

    lines = bodies.read_text().splitlines()

    def one(live: bool, tag: str) -> tuple[int, float, float]:
        payloads = [orjson.loads(line.replace("@@", tag)) for line in lines]
        redis_before, before = _redis_cpu_seconds(), time.process_time()
        events = sum(
            len(services.events_ingest(project_id=project_id, payload=payload, live=live).accepted)
            for payload in payloads
        )
        return events, time.process_time() - before, _redis_cpu_seconds() - redis_before

    one(True, "cw")  # warm-up: the snapshot, the script, the experience keys
    totals = {"on": [0, 0.0, 0.0], "off": [0, 0.0, 0.0]}
    for r in range(rounds):
        for name in ("on", "off"):
            for i, value in enumerate(one(name == "on", f"c{name}{r}")):
                totals[name][i] += value
    result = {}
    for name, (events, process_s, redis_s) in totals.items():
        result[name] = {"process_us": process_s / events * 1e6, "redis_us": redis_s / events * 1e6}
        result[name]["total_us"] = result[name]["process_us"] + result[name]["redis_us"]
    return result


def events_phase(
    wrk: str, key: str, project_id: int, bodies: dict[str, Path], workdir: Path, rounds: int, seconds: int
) -> dict:
    """Events requests/s with the live update on and off, two servers loaded in turns, for each kind
    of body (`bodies`: shape → file). Also the servers' CPU (process group) and Redis's CPU per request."""
    script = workdir / "events.lua"
    script.write_text(ingest_bench.WRK_EVENTS_LUA + _common.WRK_DONE_LUA)
    servers = {}
    runs: dict[tuple[str, str], list[dict]] = {}
    try:
        for name, flag in (("on", "1"), ("off", "0")):
            port = _common.free_port()
            servers[name] = (port, _common.server_start(port, env={"KAIROS_LIVE_STATE": flag}))
        auth = {"BENCH_KEY": key}
        urls = {name: f"http://127.0.0.1:{port}/api/v1/events" for name, (port, _) in servers.items()}
        for name, url in urls.items():  # warm-up, with every kind of body the timed runs send
            for shape, path in bodies.items():
                mark = decide_bench.stream_last_id()
                _common.wrk_run(wrk, url, script, 1, 8, [f"w{shape[0]}{name}", str(path)], auth)
                decide_bench.stream_take(project_id, mark)
                queued_forget([project_id])
        for shape, path in bodies.items():
            for r in range(rounds):
                # Which server goes first alternates by round: a drift in the machine's other load (or in
                # Redis, whose live state grows as the run goes) then falls on both alike.
                for name, url in sorted(urls.items(), reverse=r % 2 == 1):
                    pgid = servers[name][1].pid
                    mark = decide_bench.stream_last_id()
                    cpu, redis_cpu = _common.process_group_cpu_seconds(pgid), _redis_cpu_seconds()
                    run = _common.wrk_run(wrk, url, script, seconds, 8, [f"{shape[0]}{name}{r}", str(path)], auth)
                    run["cpu_s"] = _common.process_group_cpu_seconds(pgid) - cpu
                    run["redis_cpu_s"] = _redis_cpu_seconds() - redis_cpu
                    runs.setdefault((shape, name), []).append(run)
                    # Out of the timed part: take this run's events out of the stream and forget their
                    # count, so no run meets the project's cap of waiting events (1M) and answers 503
                    # "queue full" fast, which made whichever server ran later look quicker.
                    decide_bench.stream_take(project_id, mark)
                    queued_forget([project_id])
    finally:
        for _, server in servers.values():
            _common.process_stop(server)
    result: dict = {}
    for (shape, name), name_runs in runs.items():
        requests = sum(r["requests"] for r in name_runs)
        result.setdefault(shape, {})[name] = {
            "rps": requests / (sum(r["duration_us"] for r in name_runs) / 1e6),
            "p99_us": statistics.median(r["p99_us"] for r in name_runs),
            "errors": sum(r["non_2xx"] + r["socket_errors"] for r in name_runs),
            "cpu_us_per_request": sum(r["cpu_s"] + r["redis_cpu_s"] for r in name_runs) / max(requests, 1) * 1e6,
        }
    return result


def decide_phase(args, projects: dict, wrk: str, workdir: Path, visitors: int) -> dict:
    rounds, slice_s, paced_s = (2, 3, 8) if args.quick else (3, 4, 20)
    settings = decide_bench.production_settings()
    port = _common.free_port()
    server = decide_bench._server(settings, port)
    base = f"http://127.0.0.1:{port}"
    try:
        loads = {
            name: decide_bench.Load(wrk, base, key, project_id, server.pid, workdir / name, profiles=visitors)
            for name, (project_id, key) in projects.items()
        }
        print(f"decide service: granian wsgi, {decide_bench._settings_text(settings)}, port {port}", flush=True)
        for load in loads.values():
            load.peak("/api/v1/decide", 2)  # warm-up: imports, connections, snapshots
        loads["live"].peak("/api/v1/ping", 2)
        decide_bench.redis_settle()
        runs: dict[str, list[dict]] = {"live": [], "plain": [], "ping": []}
        for _ in range(rounds):
            runs["live"].append(loads["live"].peak("/api/v1/decide", slice_s))
            runs["plain"].append(loads["plain"].peak("/api/v1/decide", slice_s))
            runs["ping"].append(loads["live"].peak("/api/v1/ping", slice_s))
        peaks = {name: decide_bench._summary(name_runs) for name, name_runs in runs.items()}
        print(f"peak, closed loop (wrk -t2 -c{decide_bench.PEAK_CONNECTIONS}; {rounds} × {slice_s} s each, in turns):")
        decide_bench._show("decide, live targeting (10 exps)", peaks["live"])
        decide_bench._show("decide, plain (same 10, no conditions)", peaks["plain"])
        decide_bench._show("ping (trivial)", peaks["ping"])
        target = 0.7 * peaks["live"]["rps"]
        decide_bench.redis_settle()
        paced = loads["live"].paced_run("/api/v1/decide", paced_s, target)
        print(f"open loop at 70 % of live decide's peak ({target:,.0f} req/s offered, {paced_s} s):")
        decide_bench._show("live decide, from actual send", paced)
        decide_bench._show("live decide, from scheduled send", paced, paced["PACED"])
        fresh = freshness_measure(port, projects["live"][1], 150 if args.quick else 500)
    finally:
        _common.process_stop(server)
    return {"peaks": peaks, "paced": paced, "fresh": fresh}


def facts_cost(project_id: int, visitors: int) -> float:
    """CPU µs to compute one request's facts (parse the state, session view, stage, context)."""
    from personalization import redis_client, rkeys
    from personalization.decide import live

    client = redis_client.worker()
    snapshot = orjson.loads(client.get(rkeys.snapshot(project_id)))
    pipe = client.pipeline(transaction=False)
    for n in range(min(visitors, 1000)):
        pipe.hgetall(rkeys.unit(project_id, f"b{n}"))
    users = [{k.decode(): v.decode() for k, v in raw.items()} for raw in pipe.execute()]
    context = {"url": "/products/sku-1?utm_source=google&utm_medium=cpc", "referrer": "https://www.google.com/"}
    ua = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148"
    calls, best = 20_000, float("inf")
    for _ in range(3):
        started = time.thread_time()
        for i in range(calls):
            live.request_facts(users[i % len(users)], context, settings=snapshot["live"], user_agent=ua)()
        best = min(best, (time.thread_time() - started) / calls * 1e6)
    return best


def _cpu_figures(prefix: str, http: dict, in_process: dict) -> dict:
    """The CPU figures of one body shape: server process group + Redis CPU per request during the
    HTTP runs (their off/on ratio is what throughput would be on an idle machine), and
    services.events_ingest's Python + Redis CPU per event in process (no HTTP layer)."""
    on, off = http["on"]["cpu_us_per_request"], http["off"]["cpu_us_per_request"]
    return {
        f"{prefix}server_cpu_us_per_request_on": round(on, 1),
        f"{prefix}server_cpu_us_per_request_off": round(off, 1),
        f"{prefix}server_cpu_off_vs_on_ratio": round(off / on, 3),
        f"{prefix}cpu_us_per_event_on": round(in_process["on"]["total_us"], 1),
        f"{prefix}cpu_us_per_event_off": round(in_process["off"]["total_us"], 1),
        f"{prefix}live_update_cpu_us_per_event": round(in_process["on"]["total_us"] - in_process["off"]["total_us"], 1),
    }


# --- main ------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs, one to two minutes")
    args = parser.parse_args()
    visitors = 1_000 if args.quick else 5_000
    database_url, _ = _common.bench_environment()
    _common.database_ensure(database_url)
    _common.django_setup(migrate=True)
    from personalization.models import Project

    started = time.perf_counter()
    ingest_bench.project_rows_delete(
        list(Project.objects.filter(slug__startswith=SLUG_PREFIX).values_list("pk", flat=True))
    )
    projects = projects_create(str(int(time.time())))
    project_ids = [project_id for project_id, _ in projects.values()]
    queued_forget(project_ids)  # an earlier run's projects of the same ids may have left a count
    since = decide_bench.stream_last_id()
    workdir = Path(tempfile.mkdtemp(prefix="kairos-bench-live-"))
    for name in projects:
        (workdir / name).mkdir()
    try:
        wrk = _common.wrk_ensure()
        seeding = time.perf_counter()
        sent = visitors_seed(projects, visitors)
        print(f"{2 * visitors:,} visitors per project, {sent:,} events sent in {time.perf_counter() - seeding:.1f} s")
        memory = memory_measure(projects["live"][0], visitors)
        facts_us = facts_cost(projects["live"][0], visitors)
        decide = decide_phase(args, projects, wrk, workdir, visitors)
        # bench/ingest.py's batches of 100 events from many visitors, and the snippet's flushes of 1-5
        # events of one visitor.
        bodies = {"batch": workdir / "batch.jsonl", "snippet": workdir / "snippet.jsonl"}
        events_bodies(bodies["batch"], 300)
        snippet_bodies(bodies["snippet"], 300)
        # In process first, on the project the HTTP load does not fill up to its cap of waiting events.
        cpu_rounds = 1 if args.quick else 3
        events_cpu = {
            shape: events_cpu_measure(projects["plain"][0], path, cpu_rounds) for shape, path in bodies.items()
        }
        live_id, live_key = projects["live"]
        rounds, seconds = (2, 4) if args.quick else (3, 8)
        events = events_phase(wrk, live_key, live_id, bodies, workdir, rounds, seconds)
    finally:
        for project_id in project_ids:
            decide_bench.stream_take(project_id, since)  # the exposures and events this run queued
        project_keys_delete(project_ids)
        ingest_bench.project_rows_delete(project_ids)
        shutil.rmtree(workdir, ignore_errors=True)

    peaks, paced, fresh = decide["peaks"], decide["paced"], decide["fresh"]
    live_ratio = peaks["live"]["rps"] / peaks["ping"]["rps"]
    plain_ratio = peaks["plain"]["rps"] / peaks["ping"]["rps"]
    batch, snippet = events["batch"], events["snippet"]
    events_ratio = batch["on"]["rps"] / batch["off"]["rps"]
    snippet_ratio = snippet["on"]["rps"] / snippet["off"]["rps"]
    cpu_batch, cpu_snippet = events_cpu["batch"], events_cpu["snippet"]
    ms = decide_bench._ms
    figures = {
        "freshness_p50_ms": round(statistics.median(fresh), 2),
        "freshness_p95_ms": round(_percentile(fresh, 95), 2),
        "freshness_max_ms": round(max(fresh), 2),
        "freshness_samples": len(fresh),
        "live_decide_rps": round(peaks["live"]["rps"], 1),
        "plain_decide_rps": round(peaks["plain"]["rps"], 1),
        "trivial_rps": round(peaks["ping"]["rps"], 1),
        "live_decide_vs_trivial_ratio": round(live_ratio, 3),
        "plain_decide_vs_trivial_ratio": round(plain_ratio, 3),
        "live_vs_plain_ratio": round(live_ratio / plain_ratio, 3),
        "live_decide_server_cpu_us_per_request": round(peaks["live"]["cpu_us_per_request"], 1),
        "plain_decide_server_cpu_us_per_request": round(peaks["plain"]["cpu_us_per_request"], 1),
        "live_decide_p99_ms": ms(peaks["live"]["p99_us"]),
        "live_decide_offered_rps_at_70pct": round(0.7 * peaks["live"]["rps"], 1),
        "live_decide_p99_at_70pct_ms": ms(paced["p99_us"]),
        "live_decide_p99_at_70pct_from_schedule_ms": ms(paced["PACED"]["p99_us"]),
        "live_facts_cpu_us_per_request": round(facts_us, 1),
        "events_rps_live_state_on": round(batch["on"]["rps"], 1),
        "events_rps_live_state_off": round(batch["off"]["rps"], 1),
        "events_on_vs_off_ratio": round(events_ratio, 3),
        "events_p99_on_ms": ms(batch["on"]["p99_us"]),
        "events_p99_off_ms": ms(batch["off"]["p99_us"]),
        "events_per_request": ingest_bench.BATCH,
        **_cpu_figures("events_", batch, cpu_batch),
        "events_cpu_us_per_event_on_python": round(cpu_batch["on"]["process_us"], 1),
        "events_cpu_us_per_event_on_redis": round(cpu_batch["on"]["redis_us"], 1),
        "events_snippet_rps_on": round(snippet["on"]["rps"], 1),
        "events_snippet_rps_off": round(snippet["off"]["rps"], 1),
        "events_snippet_on_vs_off_ratio": round(snippet_ratio, 3),
        **_cpu_figures("events_snippet_", snippet, cpu_snippet),
        "redis_bytes_per_active_visitor": round(memory["bytes_per_visitor"]),
        "redis_bytes_per_active_visitor_max": memory["bytes_per_visitor_max"],
        "redis_bytes_per_visitor_without_live_state": round(memory["bytes_without_state"]),
        "live_state_chars_mean": round(memory["state_chars"]),
        "redis_mb_per_1m_active_visitors": round(memory["bytes_per_visitor"] * 1e6 / 2**20),
        "http_errors": sum(p["non_2xx"] + p["socket_errors"] for p in (*peaks.values(), paced))
        + sum(runs["errors"] for shape in events.values() for runs in shape.values()),
        "visitors_per_project": 2 * visitors,
        "bench_seconds": round(time.perf_counter() - started, 1),
    }
    figures["targets_met"] = {
        "freshness_p95_le_50ms": figures["freshness_p95_ms"] <= TARGET_FRESHNESS_P95_MS,
        "live_ratio_within_10pct_of_plain": live_ratio >= (1 - TARGET_RATIO_GAP) * plain_ratio,
        "p99_at_70pct_le_10ms": figures["live_decide_p99_at_70pct_ms"] <= TARGET_P99_MS,
        "events_on_vs_off_ge_0_8": events_ratio >= TARGET_EVENTS_RATIO,
        "events_snippet_on_vs_off_ge_0_8": snippet_ratio >= TARGET_EVENTS_RATIO,
        "bytes_per_visitor_le_2kb": memory["bytes_per_visitor"] <= TARGET_BYTES_PER_VISITOR,
    }
    print(
        f"freshness (event accepted → decide reads it): p50 {figures['freshness_p50_ms']} ms,"
        f" p95 {figures['freshness_p95_ms']} ms over {len(fresh)} visitors"
    )
    print(
        f"decide / trivial: live {live_ratio:.2f}, plain {plain_ratio:.2f} (live/plain {live_ratio / plain_ratio:.2f});"
        f" facts per request {facts_us:.1f} µs CPU in process"
    )
    print(
        f"events, 100 per request: {batch['on']['rps']:,.0f} req/s with the live update, {batch['off']['rps']:,.0f}"
        f" without (ratio {events_ratio:.2f}, target ≥ {TARGET_EVENTS_RATIO}); server + Redis CPU per request"
        f" {batch['on']['cpu_us_per_request']:,.0f} µs vs {batch['off']['cpu_us_per_request']:,.0f} µs;"
        f" in process {cpu_batch['on']['total_us']:.1f} vs {cpu_batch['off']['total_us']:.1f} µs CPU per event"
    )
    print(
        f"events, snippet flushes (1-5 of one visitor): {snippet['on']['rps']:,.0f} req/s with,"
        f" {snippet['off']['rps']:,.0f} without (ratio {snippet_ratio:.2f}); server + Redis CPU per request"
        f" {snippet['on']['cpu_us_per_request']:,.0f} µs vs {snippet['off']['cpu_us_per_request']:,.0f} µs"
    )
    print(
        f"Redis: {memory['bytes_per_visitor']:,.0f} B per active visitor ({memory['bytes_without_state']:,.0f} B"
        f" without the live state); 1M visitors ≈ {figures['redis_mb_per_1m_active_visitors']:,} MB",
        flush=True,
    )
    print(json.dumps(figures))
    return 1 if figures["http_errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
