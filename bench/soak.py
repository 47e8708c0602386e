"""Soak: decide and events together at ~70 % of their measured capacity for minutes, while the
drains, bandit updates and lift reports run, as in production.

    python bench/soak.py            # 6 one-minute slices
    python bench/soak.py --quick    # 2 slices of 45 s (about two and a half minutes in all)
    python bench/soak.py --minutes 30

(a) Its own PostgreSQL database (kairos_soak, created and migrated when missing) and Redis database
    (12), so the other benches' data (and their running experiences) never load the workers. A fresh
    project per run with three running experiences (a fixed split, a bandit, a per-segment bandit)
    and a 5 % global holdout; the project is deleted at the end.
(b) The processes production runs: the decide service (granian as config.runner starts it, throttling
    on with limits above the bench's rate), a Celery worker (2 processes) and beat with the drain every
    second, bandit updates every 5 s and lift reports every 60 s.
(c) Capacity: wrk closed loop on decide and events at once (decide -c6, events -c2; 8 s). Then both
    open loop (Poisson arrivals, bench/decide.py's paced script) at 70 % of what each reached, in
    one-minute slices: each slice's errors (non-2xx answers, socket errors) and p99, from the scheduled
    send (includes waiting behind a slow answer) and from the actual send. Events come in batches of
    10 with unique ids from 5,000 visitors (page views, clicks, add-to-cart, purchases, and identify
    for some); decide for the same visitors.
(d) After the load, the drain empties the stream; events accepted (the endpoint's own counters) are
    compared with events stored in PostgreSQL, and dead letters are counted (0 expected).
(e) RSS of every process (decide master and workers, Celery worker and pool processes, beat) after
    the first slice and at the end; growth from minute 1 to the end, target under 10 %. Tracebacks
    in the workers' logs count as errors.

The machine is shared and noisy: the figures are those of this run. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import _common  # noqa: E402  (needs ROOT on sys.path; imports no Django)
from bench.decide import WRK_PACED_LUA  # noqa: E402  (the same open-loop pacing as the decide bench)

SOAK_DB = "kairos_soak"
SOAK_REDIS_DB = 12
SLUG_PREFIX = "bench-soak-"
VISITORS = 5000
BATCH = 10
CAPACITY_SHARE = 0.7
TARGET_RSS_GROWTH = 0.10

WRK_DECIDE_LUA = (
    _common.WRK_THREADS_LUA
    + r"""
local headers = {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. os.getenv("BENCH_KEY")}
local visitors = tonumber(os.getenv("BENCH_VISITORS"))
local pages = {"/", "/products/1", "/products/2", "/cart", "/blog/"}

function init(args) math.randomseed(tid * 7919 + os.time()) end

function request()
  local body = '{"anonymous_id":"s' .. math.random(0, visitors - 1) .. '","context":{"url":"'
    .. pages[math.random(#pages)] .. '"}}'
  return wrk.format("POST", "/api/v1/decide", headers, body)
end
"""
)

WRK_EVENTS_LUA = (
    _common.WRK_THREADS_LUA
    + r"""
local headers = {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. os.getenv("BENCH_KEY")}
local visitors = tonumber(os.getenv("BENCH_VISITORS"))
local batch = tonumber(os.getenv("BENCH_BATCH"))
local tag = os.getenv("BENCH_TAG")
local counter = 0

function init(args) math.randomseed(tid * 104729 + os.time()) end

local function event(n)
  local v = math.random(0, visitors - 1)
  local id = '"event_id":"' .. tag .. "-" .. tid .. "-" .. counter .. "-" .. n .. '","anonymous_id":"s' .. v .. '"'
  local r = math.random()
  if r < 0.55 then
    return "{" .. id .. ',"type":"page_view","properties":{"url":"/products/' .. math.random(1, 500) .. '"}}'
  elseif r < 0.8 then
    return "{" .. id .. ',"type":"click","properties":{"target":"#cta-' .. math.random(1, 9) .. '"}}'
  elseif r < 0.92 then
    return "{" .. id .. ',"type":"add_to_cart","properties":{"item":"sku-' .. math.random(1, 500) .. '"}}'
  elseif r < 0.98 then
    return "{" .. id .. ',"type":"purchase","value":' .. math.random(5, 300) .. ',"properties":{}}'
  end
  return "{" .. id .. ',"type":"identify","user_id":"user-' .. v .. '","properties":{"attributes":{"plan":"'
    .. (v % 3 == 0 and "pro" or "free") .. '"}}}'
end

function request()
  counter = counter + 1
  local events = {}
  for n = 1, batch do events[n] = event(n) end
  return wrk.format("POST", "/api/v1/events", headers, '{"events":[' .. table.concat(events, ",") .. "]}")
end
"""
)


def _variants(*keys: str) -> list[dict]:
    return [{"key": k, "name": k.title(), "payload": {"v": k}, "is_control": i == 0} for i, k in enumerate(keys)]


def project_make() -> tuple[int, str]:
    """A fresh soak project with a public key and three running experiences."""
    from personalization import services
    from personalization.models import Project

    for old in Project.objects.filter(slug__startswith=SLUG_PREFIX):
        services.project_delete(project=old, confirm=old.slug)
    project = services.project_create(name="Soak bench", slug=f"{SLUG_PREFIX}{int(time.time())}")
    _, key = services.api_key_create(project=project, kind="public", name="soak")
    specs = [
        ("hero", "fixed", {}),
        ("recs", "bandit", {"bandit_burn_in": 50}),
        ("promo", "segment_bandit", {"segment_attribute": "plan", "bandit_burn_in": 50}),
    ]
    for key_name, policy, extra in specs:
        experience = services.experience_create(
            project=project,
            key=key_name,
            name=key_name.title(),
            touchpoint=key_name,
            variants=_variants("control", "a", "b"),
            policy=policy,
            goal_event="purchase",
            **extra,
        )
        services.experience_start(experience=experience)
    services.snapshot_publish(project_id=project.pk)
    return project.pk, key


def celery_start(workdir: Path, env: dict) -> list[subprocess.Popen]:
    """A worker (2 processes) and beat, as config.runner starts them, with the bench's schedules."""
    celery = str(Path(sys.executable).parent / "celery")
    schedules = {"KAIROS_BANDIT_EVERY_SECONDS": "5", "KAIROS_LIFT_EVERY_SECONDS": "60"}
    full_env = {**os.environ, **env, **schedules}
    commands = {
        "worker": [celery, "-A", "config", "worker", "-l", "warning", "--concurrency", "2"],
        "beat": [celery, "-A", "config", "beat", "-l", "warning", "-s", str(workdir / "celerybeat-schedule")],
    }
    started = []
    for name, command in commands.items():
        with (workdir / f"{name}.log").open("wb") as log:
            started.append(
                subprocess.Popen(
                    command, cwd=ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                )
            )
    return started


def group_rss(pgid: int) -> dict[int, tuple[str, int]]:
    """pid -> (command name, RSS in kB) of the live processes of a process group, from /proc."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                head, rest = stat.read().rsplit(")", 1)
            if int(rest.split()[2]) != pgid:
                continue
            with open(f"/proc/{entry}/status") as status:
                rss = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
        except (OSError, StopIteration, ValueError):
            continue
        found[int(entry)] = (head.split("(", 1)[1], rss)
    return found


def rss_all(groups: dict[str, int]) -> dict[str, tuple[str, int]]:
    """'<group>:<pid>' -> (command, RSS kB) for every process of every group."""
    return {f"{name}:{pid}": value for name, pgid in groups.items() for pid, value in group_rss(pgid).items()}


def accepted_total(project_id: int) -> int:
    """Events the endpoint accepted, from the per-minute counters it keeps in Redis."""
    from personalization import redis_client, rkeys

    client = redis_client.worker()
    keys = list(client.scan_iter(match=rkeys.metric(project_id, "events", 0).removesuffix("0") + "*"))
    return sum(int(v) for v in client.mget(keys)) if keys else 0


def stream_settled(seconds: float) -> bool:
    """Wait until the drains have emptied the stream (nothing waiting, nothing pending)."""
    from personalization import redis_client, rkeys

    client = redis_client.worker()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if client.xlen(rkeys.EVENTS_STREAM) == 0:
            return True
        time.sleep(1)
    return False


def tracebacks(workdir: Path) -> int:
    return sum(path.read_text(errors="replace").count("Traceback") for path in workdir.glob("*.log"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 slices of 45 s")
    parser.add_argument("--minutes", type=int, default=6, help="one-minute slices of load (default 6)")
    args = parser.parse_args()
    slices, slice_s = (2, 45) if args.quick else (max(args.minutes, 2), 60)

    database_url, redis_url = _common.bench_environment(redis_db=SOAK_REDIS_DB, database=SOAK_DB)
    _common.database_ensure(database_url)
    _common.django_setup(migrate=True)
    from personalization import redis_client, services
    from personalization.models import DeadLetter, Event

    wrk = _common.wrk_ensure()
    redis_client.worker().flushdb()
    services.stream_ensure_group(redis_client.worker())
    project_id, key = project_make()
    workdir = Path(tempfile.mkdtemp(prefix="kairos-soak-"))
    env = {"DATABASE_URL": database_url, "REDIS_URL": redis_url, "DJANGO_SETTINGS_MODULE": "config.settings"}
    decide_lua, events_lua = workdir / "decide.lua", workdir / "events.lua"
    decide_lua.write_text(WRK_DECIDE_LUA + _common.WRK_DONE_LUA + WRK_PACED_LUA)
    events_lua.write_text(WRK_EVENTS_LUA + _common.WRK_DONE_LUA + WRK_PACED_LUA)
    closed_decide, closed_events = workdir / "decide_closed.lua", workdir / "events_closed.lua"
    closed_decide.write_text(WRK_DECIDE_LUA + _common.WRK_DONE_LUA)
    closed_events.write_text(WRK_EVENTS_LUA + _common.WRK_DONE_LUA)

    server, celery = None, []
    port = _common.free_port()
    base = f"http://127.0.0.1:{port}"
    wrk_env = {"BENCH_KEY": key, "BENCH_VISITORS": str(VISITORS), "BENCH_BATCH": str(BATCH)}
    try:
        server = _common.server_start(port, env=env)
        celery = celery_start(workdir, env)
        groups = {"decide": server.pid, "worker": celery[0].pid, "beat": celery[1].pid}
        print(f"soak: decide on :{port}, Celery worker and beat (logs in {workdir})", flush=True)

        def both(decide_script: Path, events_script: Path, seconds: int, tag: str, rates=None) -> tuple[dict, dict]:
            """wrk on decide and on events at once: closed loop, or paced at `rates` (decide, events req/s)
            with one connection per wrk thread."""
            procs = []
            for name, script, closed, paced, rate in (
                ("d", decide_script, 6, 8, rates[0] if rates else 0.0),
                ("e", events_script, 2, 4, rates[1] if rates else 0.0),
            ):
                conns, threads = (paced, paced) if rates else (closed, 2 if closed > 2 else 1)
                run_env = {**wrk_env, "BENCH_TAG": f"{tag}{name}", "BENCH_RATE": str(rate / conns)}
                procs.append(_wrk_async(wrk, base, script, seconds, conns, threads, run_env))
            decide_run, events_run = (_wrk_collect(proc) for proc in procs)
            return decide_run, events_run

        both(closed_decide, closed_events, 3, "w")  # warm-up
        cap_decide, cap_events = both(closed_decide, closed_events, 8, "c")
        rates = (CAPACITY_SHARE * cap_decide["rps"], CAPACITY_SHARE * cap_events["rps"])
        print(
            f"capacity with both loaded at once: decide {cap_decide['rps']:,.0f} req/s, events"
            f" {cap_events['rps']:,.0f} batches/s ({cap_events['rps'] * BATCH:,.0f} events/s);"
            f" soaking at {CAPACITY_SHARE:.0%}: {rates[0]:,.0f} decide req/s and {rates[1]:,.0f} event batches/s",
            flush=True,
        )
        accepted_before = accepted_total(project_id)
        minutes, rss_start = [], None
        for n in range(slices):
            decide_run, events_run = both(decide_lua, events_lua, slice_s, f"m{n}", rates)
            errors = sum(r["non_2xx"] + r["socket_errors"] for r in (decide_run, events_run))
            minute = {
                "minute": n + 1,
                "decide_rps": round(decide_run["rps"], 1),
                "events_batches_per_s": round(events_run["rps"], 1),
                "decide_p99_ms": round(decide_run["PACED"]["p99_us"] / 1000, 2),
                "events_p99_ms": round(events_run["PACED"]["p99_us"] / 1000, 2),
                "decide_p99_sent_ms": round(decide_run["p99_us"] / 1000, 2),
                "events_p99_sent_ms": round(events_run["p99_us"] / 1000, 2),
                "errors": errors,
                "events_requests_2xx": events_run["requests"] - events_run["non_2xx"],
            }
            minutes.append(minute)
            print(
                f"  slice {n + 1}/{slices} ({slice_s} s): decide {minute['decide_rps']:,.0f} req/s p99"
                f" {minute['decide_p99_ms']:.1f} ms ({minute['decide_p99_sent_ms']:.1f} from the actual send)"
                f" | events {minute['events_batches_per_s']:,.0f} batches/s p99 {minute['events_p99_ms']:.1f} ms"
                f" ({minute['events_p99_sent_ms']:.1f}) | errors {errors}",
                flush=True,
            )
            if rss_start is None:
                rss_start = rss_all(groups)
        rss_end = rss_all(groups)
        settled = stream_settled(180)
        accepted = accepted_total(project_id) - accepted_before
        sent = sum(m["events_requests_2xx"] for m in minutes) * BATCH
        stored = Event.objects.filter(project_id=project_id, event_id__startswith="m").count()
        dead = DeadLetter.objects.filter(project_id=project_id).count()
        worker_tracebacks = tracebacks(workdir)
    finally:
        _common.process_stop(server)
        for proc in celery:
            _common.process_stop(proc)

    print("RSS (kB) after slice 1 → end:")
    growth = {}
    for name in sorted(rss_start):
        command, start_kb = rss_start[name]
        end_kb = rss_end.get(name, (command, 0))[1]
        growth[name] = (end_kb - start_kb) / start_kb if start_kb else 0.0
        print(f"  {name:<16} {command:<18} {start_kb:>8,} → {end_kb:>8,}  ({growth[name]:+.1%})")
    total_start = sum(v[1] for v in rss_start.values())
    total_end = sum(v[1] for k, v in rss_end.items() if k in rss_start)
    total_growth = (total_end - total_start) / total_start
    errors = sum(m["errors"] for m in minutes) + worker_tracebacks
    print(
        f"events: {sent:,} sent in 2xx answers, {accepted:,} accepted (endpoint counters), {stored:,} stored,"
        f" {dead} dead-lettered; stream emptied: {settled} (sent and accepted differ by repeated clicks"
        " dropped as noise)"
    )
    print(
        f"errors: {errors} (HTTP {sum(m['errors'] for m in minutes)}, worker tracebacks {worker_tracebacks});"
        f" RSS of all processes {total_start:,} → {total_end:,} kB"
        f" ({total_growth:+.1%}, target < {TARGET_RSS_GROWTH:.0%})"
    )
    _project_drop(project_id)
    figures = {
        "slices": slices,
        "slice_seconds": slice_s,
        "capacity_decide_rps": round(cap_decide["rps"], 1),
        "capacity_events_batches_per_s": round(cap_events["rps"], 1),
        "soak_decide_rps": round(sum(m["decide_rps"] for m in minutes) / len(minutes), 1),
        "soak_events_per_s": round(sum(m["events_batches_per_s"] for m in minutes) / len(minutes) * BATCH, 1),
        "decide_p99_ms_per_slice": [m["decide_p99_ms"] for m in minutes],
        "events_p99_ms_per_slice": [m["events_p99_ms"] for m in minutes],
        "decide_p99_from_send_ms_per_slice": [m["decide_p99_sent_ms"] for m in minutes],
        "events_p99_from_send_ms_per_slice": [m["events_p99_sent_ms"] for m in minutes],
        "errors": errors,
        "events_accepted": accepted,
        "events_stored": stored,
        "events_dead_lettered": dead,
        "events_sent_in_2xx": sent,
        "accepted_equals_stored": accepted == stored,
        "rss_total_start_kb": total_start,
        "rss_total_end_kb": total_end,
        "rss_growth_pct": round(total_growth * 100, 2),
        "rss_max_process_growth_pct": round(max(growth.values()) * 100, 2) if growth else 0.0,
    }
    print(json.dumps(figures))
    return 0


def _project_drop(project_id: int) -> None:
    from personalization import services
    from personalization.models import Project

    project = Project.objects.filter(pk=project_id).first()
    if project is not None:
        services.project_delete(project=project, confirm=project.slug)


def _wrk_async(wrk: str, base: str, script: Path, seconds: int, conns: int, threads: int, env: dict):
    """Start wrk in the background (decide and events load at once); _wrk_collect waits for it."""
    command = _common.wrk_command(wrk, base, script, seconds, conns, threads=threads)
    full_env = {**os.environ, **env}
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full_env)


def _wrk_collect(proc: subprocess.Popen) -> dict:
    stdout, stderr = proc.communicate()
    return _common.wrk_parse(stdout, stderr)


if __name__ == "__main__":
    sys.exit(main())
