"""Measure decide: POST /api/v1/decide over HTTP against a trivial endpoint, and the engine in process
against GrowthBook's Python SDK.

    python bench/decide.py            # 5 × 4 s peak runs per endpoint, 30 s paced run, 100,000 engine calls
    python bench/decide.py --quick    # 3 × 3 s peak runs per endpoint, 10 s paced run, 30,000 engine calls
    python bench/decide.py --sweep    # first compare granian settings (peaks and p99 at 70 % for each)
    python bench/decide.py --workers 2 --blocking-threads 1    # other server settings than config.runner's

(a) Data: a project of its own (slug `bench-decide`) in its own PostgreSQL database (kairos_bench,
    created and migrated when missing) with 100,000 profiles (plan / device / intent / country
    attributes, 1 % do-not-personalize), each with a user id `u<n>` and an anonymous id `b<n>`, and
    10 running experiences: 4 fixed splits, 3 bandits, 3 per-segment bandits on `plan`, some with
    targeting and experience holdouts, all with bandit weights; 5 % global holdout. Seeded once and
    reused. Redis db 14 gets the profiles (services.profiles_publish), segment memberships, the
    snapshot (services.snapshot_publish) and the sticky assignments the profiles' earlier visits
    left, whenever they are missing there (bench/ingest.py empties that database).
(b) The decide service starts as production starts it: granian WSGI, KAIROS_ROLE=decide, with the
    workers, blocking threads and CPU pinning config.runner gives it (unless told otherwise). wrk
    (Debian's) loads it from another process; its Lua script picks a unit per request: 80 %
    returning visitors (random known user ids and anonymous ids: a real HGETALL of a hash with
    attributes, segments and sticky assignments) and 20 % first visits (a fresh anonymous id:
    assignment, exposures and sticky writes). The trivial endpoint (/api/v1/ping) gets the same
    requests on the same server.
(c) Peak: closed loop, `wrk -t2 -c8`, decide and ping taking turns in short runs so a change in the
    machine's other load hits both alike. The server's CPU time per request (its process group,
    from /proc) is reported too: it hardly moves with other load on the machine, unlike req/s.
    Then an open-loop run at 70 % of decide's peak: one connection per wrk thread, each sending on
    a Poisson schedule (wrk2 is not in Debian, so the script paces with delay()). Its latency is
    reported twice: from the actual send (wrk's own figure) and from the scheduled send (includes
    the time a request waited behind a slow one: wrk2's coordinated-omission correction).
(d) In process, CPU time: personalization.decide.engine.decide_unit for one unit over the 10 experiences,
    with the compiled snapshot and a real profile hash from Redis, against GrowthBook's SDK
    evaluating the same 10 experiments (same variations, weights, coverage, targeting,
    per-segment rules, global holdout as a `$holdout` prerequisite, exposure callback), both for
    units never seen before.

wrk and Redis share the two cores with the server, so both HTTP rates are lower than on separate
machines. Before the peaks and before the paced run Redis rewrites its append-only file (each run
appends ~80 MB), so its automatic rewrite does not land inside one timed run and not another. The last
line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import _common  # noqa: E402  (needs ROOT on sys.path; imports no Django)

SLUG = "bench-decide"
PROFILES = 100_000
NEW_SHARE = 0.2  # decide requests from a visitor never seen before (a fresh anonymous id)
PLANS = [("free", 0.6), ("pro", 0.3), ("team", 0.1)]
DEVICES = [("mobile", 0.55), ("desktop", 0.4), ("tablet", 0.05)]
INTENTS = [("browse", 0.5), ("buy", 0.3), ("research", 0.2)]
COUNTRIES = [("us", 0.4), ("de", 0.2), ("fr", 0.15), ("gb", 0.15), ("es", 0.1)]
SEGMENTS = [f"seg-{i}" for i in range(8)]
DNP_EVERY = 100  # 1 % of profiles asked not to be personalized
TARGET_RATIO = 0.5
TARGET_P99_MS = 10.0
TARGET_SPEEDUP = 3.0
PACED_CONNECTIONS = 16
PEAK_CONNECTIONS = 8


def _variants(*specs) -> list[dict]:
    return [
        {"key": key, "name": key.replace("-", " ").title(), "payload": payload, "is_control": i == 0, "weight": weight}
        for i, (key, payload, weight) in enumerate(specs)
    ]


def experience_specs() -> list[dict]:
    """10 experiences as a marketer would set them up: fixed splits, bandits, per-segment bandits."""
    return [
        {
            "key": "hero-headline",
            "policy": "fixed",
            "variants": _variants(
                ("control", {"headline": "Gear for every trail", "image": "/img/hero-a.jpg"}, 1),
                ("urgency", {"headline": "Last days of the autumn sale", "image": "/img/hero-b.jpg"}, 1),
                ("social", {"headline": "Loved by 40,000 hikers", "image": "/img/hero-c.jpg"}, 1),
            ),
        },
        {
            "key": "cta-color",
            "policy": "fixed",
            "holdout_share": 0.1,
            "variants": _variants(("blue", {"color": "#1f6feb"}, 1), ("orange", {"color": "#f0883e"}, 1)),
        },
        {
            "key": "pricing-banner",
            "policy": "fixed",
            "targeting": {"attributes": [{"attribute": "plan", "op": "in", "values": ["free"]}]},
            "variants": _variants(
                ("none", {}, 0.7), ("annual-discount", {"text": "2 months free with annual billing"}, 0.3)
            ),
        },
        {
            "key": "search-ranking",
            "policy": "fixed",
            "targeting": {"attributes": [{"attribute": "device", "op": "not_in", "values": ["tablet"]}]},
            "variants": _variants(
                ("relevance", {"ranker": "bm25"}, 1),
                ("popularity", {"ranker": "bm25+pop"}, 1),
                ("personal", {"ranker": "bm25+emb"}, 1),
            ),
        },
        {
            "key": "recs-carousel",
            "policy": "bandit",
            "variants": _variants(
                ("bestsellers", {"source": "bestsellers", "n": 8}, 1),
                ("similar", {"source": "similar-items", "n": 8}, 1),
                ("recent", {"source": "recently-viewed", "n": 6}, 1),
                ("trending", {"source": "trending", "n": 8}, 1),
            ),
        },
        {
            "key": "email-capture",
            "policy": "bandit",
            "holdout_share": 0.1,
            "variants": _variants(
                ("none", {}, 1),
                ("exit-intent", {"modal": "exit", "offer": "10%"}, 1),
                ("inline", {"modal": "inline", "offer": "free shipping"}, 1),
            ),
        },
        {
            "key": "promo-strip",
            "policy": "bandit",
            "targeting": {"attributes": [{"attribute": "intent", "op": "in", "values": ["buy", "research"]}]},
            "variants": _variants(
                ("none", {}, 1),
                ("free-shipping", {"text": "Free shipping over $50"}, 1),
                ("returns", {"text": "Free 60-day returns"}, 1),
            ),
        },
        {
            "key": "onboarding-tips",
            "policy": "segment_bandit",
            "segment_attribute": "plan",
            "variants": _variants(
                ("none", {}, 1),
                ("checklist", {"tips": ["profile", "first-order", "wishlist"]}, 1),
                ("video", {"video": "/vid/welcome.mp4"}, 1),
            ),
        },
        {
            "key": "upsell-modal",
            "policy": "segment_bandit",
            "segment_attribute": "plan",
            "holdout_share": 0.05,
            "targeting": {"segments": SEGMENTS[:5]},
            "variants": _variants(
                ("none", {}, 1),
                ("upgrade-pro", {"plan": "pro", "discount": 0.2}, 1),
                ("upgrade-team", {"plan": "team", "trial_days": 14}, 1),
            ),
        },
        {
            "key": "nav-layout",
            "policy": "segment_bandit",
            "segment_attribute": "plan",
            "targeting": {"attributes": [{"attribute": "device", "op": "in", "values": ["mobile"]}]},
            "variants": _variants(("tabs", {"layout": "bottom-tabs"}, 1), ("drawer", {"layout": "drawer"}, 1)),
        },
    ]


def _pick(rng: random.Random, choices: list[tuple[str, float]]) -> str:
    return rng.choices([c for c, _ in choices], weights=[w for _, w in choices])[0]


def _profile_attributes(rng: random.Random) -> dict:
    return {
        "plan": _pick(rng, PLANS),
        "device": _pick(rng, DEVICES),
        "intent": _pick(rng, INTENTS),
        "country": _pick(rng, COUNTRIES),
    }


# --- seeding (PostgreSQL, once) -----------------------------------------------------------------


def _project_delete(project_id: int) -> None:
    """A half-seeded bench project goes in bulk, not through the ORM cascade of 100,000 profiles."""
    from django.db import connection, transaction

    from personalization.models import Project

    with transaction.atomic(), connection.cursor() as cursor:
        for table in (
            "personalization_exposure",
            "personalization_event",
            "personalization_profileidentity",
            "personalization_profile",
        ):
            cursor.execute(f"DELETE FROM {table} WHERE project_id = %s", [project_id])
        Project.objects.filter(pk=project_id).delete()


def _seeded(project) -> bool:
    from personalization.models import BanditWeights, Experience, Profile, ProfileIdentity

    return (
        Profile.objects.filter(project=project).count() == PROFILES
        and ProfileIdentity.objects.filter(project=project).count() == 2 * PROFILES
        and Experience.objects.filter(project=project, status="running").count() == len(experience_specs())
        and BanditWeights.objects.filter(experience__project=project).exists()
    )


def _bandit_weights_insert(project) -> None:
    """Allocation weights as the bandit task leaves them after a few days of traffic."""
    from django.utils import timezone

    from personalization.models import BanditWeights, Experience

    rng = random.Random(3)
    rows = []
    for experience in Experience.objects.filter(project=project).exclude(policy="fixed"):
        keys = list(experience.variants.values_list("key", flat=True))
        segments = [""] + ([p for p, _ in PLANS] if experience.policy == "segment_bandit" else [])
        for segment in segments:
            raw = [rng.uniform(0.2, 1.0) for _ in keys]
            floor = experience.bandit_floor
            weights = [floor + (1 - floor * len(keys)) * r / sum(raw) for r in raw]
            rows.append(
                BanditWeights(
                    experience=experience,
                    segment=segment,
                    computed_at=timezone.now(),
                    weights={k: round(w, 6) for k, w in zip(keys, weights, strict=True)},
                    stats={k: [rng.randrange(2000, 9000), rng.randrange(50, 400)] for k in keys},
                )
            )
    BanditWeights.objects.bulk_create(rows)


def seed() -> int:
    """The bench project with its profiles and running experiences; returns its id (reused when complete)."""
    from django.db import transaction

    from personalization import services
    from personalization.models import Profile, ProfileIdentity, Project
    from segments.models import Segment, SegmentKind

    project = Project.objects.filter(slug=SLUG).first()
    if project is not None and _seeded(project):
        return project.pk
    if project is not None:
        print("bench project is incomplete; deleting and seeding it again", flush=True)
        _project_delete(project.pk)
    started = time.perf_counter()
    print(f"seeding {PROFILES:,} profiles and {len(experience_specs())} experiences (once)…", flush=True)
    project = services.project_create(name="Decide bench", slug=SLUG)
    rng = random.Random(1)
    now = datetime.now(UTC)
    chunk = 10_000
    for start in range(0, PROFILES, chunk):
        with transaction.atomic():
            profiles = Profile.objects.bulk_create(
                Profile(
                    project=project,
                    external_id=f"u{n}",
                    attributes=_profile_attributes(rng),
                    do_not_personalize=n % DNP_EVERY == 0,
                    first_seen=now - timedelta(days=rng.randrange(1, 365)),
                    last_seen=now - timedelta(minutes=rng.randrange(1, 60 * 24 * 30)),
                )
                for n in range(start, min(start + chunk, PROFILES))
            )
            identities = []
            for profile in profiles:
                n = profile.external_id[1:]
                identities.append(ProfileIdentity(project=project, profile=profile, kind="user", value=f"u{n}"))
                identities.append(ProfileIdentity(project=project, profile=profile, kind="anon", value=f"b{n}"))
            ProfileIdentity.objects.bulk_create(identities)
    # Targeting may name only saved segments; the bench writes its units' memberships to Redis itself.
    Segment.objects.bulk_create(Segment(project=project, key=key, kind=SegmentKind.RULE, name=key) for key in SEGMENTS)
    for spec in experience_specs():
        spec = dict(spec)
        key = spec.pop("key")
        experience = services.experience_create(
            project=project, key=key, name=key.replace("-", " ").title(), touchpoint=key, **spec
        )
        services.experience_start(experience=experience)
    _bandit_weights_insert(project)
    print(f"seeded in {time.perf_counter() - started:.1f} s", flush=True)
    return project.pk


# --- Redis state ----------------------------------------------------------------------------------


def _published_marker(project_id: int) -> str:
    return f"kr:{{{project_id}}}:bench:published"


def redis_publish(project_id: int) -> None:
    """Profiles, segment memberships, past assignments and the snapshot, whenever Redis lacks them.

    Known units are returning visitors: their sticky assignments are written as their first decide
    would have written them, so every run sees the same state (other runs only add the same values).
    """
    import orjson

    from personalization import redis_client, rkeys, services
    from personalization.decide import engine

    client = redis_client.worker()
    services.snapshot_publish(project_id=project_id)
    if client.get(_published_marker(project_id)) == str(PROFILES).encode():
        return
    started = time.perf_counter()
    written = services.profiles_publish(project_id=project_id, chunk=5000)
    # Segment memberships, as the segments app publishes them (one or two behaviour segments each).
    rng = random.Random(2)
    pipe = client.pipeline(transaction=False)
    for n in range(PROFILES):
        segs = " ".join(sorted(set(rng.sample(SEGMENTS, rng.choice((1, 2))))))
        for unit in (f"u{n}", f"b{n}"):
            pipe.hset(rkeys.unit(project_id, unit), "segs", segs)
        if len(pipe) >= 10_000:
            pipe.execute()
    pipe.execute()
    snapshot = orjson.loads(client.get(rkeys.snapshot(project_id)))
    for first in range(0, PROFILES, 5_000):
        units = [f"{prefix}{n}" for n in range(first, min(first + 5_000, PROFILES)) for prefix in ("u", "b")]
        for unit in units:
            pipe.hgetall(rkeys.unit(project_id, unit))
        hashes = pipe.execute()
        for unit, raw in zip(units, hashes, strict=True):
            user = {k.decode(): v.decode() for k, v in raw.items()}
            sticky = engine.decide_unit(snapshot, unit, user, {}).sticky_updates
            if sticky:
                pipe.hset(rkeys.unit(project_id, unit), mapping=sticky)
        pipe.execute()
    client.set(_published_marker(project_id), PROFILES)
    print(
        f"published {written:,} unit hashes (attributes, segments, past assignments) to Redis"
        f" in {time.perf_counter() - started:.1f} s",
        flush=True,
    )


def redis_settle() -> None:
    """Have Redis rewrite its append-only file now, and wait for it. Each full run appends ~80 MB
    (sticky writes, exposure batches, then their clean-up), so Redis's automatic rewrite (a fork
    and a copy of the whole dataset: a second or two of CPU on these two cores) would otherwise
    land inside some timed run and not others."""
    import redis

    from personalization import redis_client

    client = redis_client.worker()
    if not client.info("persistence").get("aof_enabled"):
        return
    with contextlib.suppress(redis.ResponseError):  # one is already running: wait for it the same way
        client.bgrewriteaof()
    for _ in range(600):
        info = client.info("persistence")
        if not (info.get("aof_rewrite_in_progress") or info.get("aof_rewrite_scheduled")):
            return
        time.sleep(0.1)


def new_visitors_forget(project_id: int) -> int:
    """Delete the hashes decide created for new visitors (ids `n<tag>-<n>`); returns how many."""
    from personalization import redis_client, rkeys

    client = redis_client.worker()
    deleted = 0
    batch = []
    for key in client.scan_iter(match=rkeys.unit(project_id, "n*"), count=5_000):
        batch.append(key)
        if len(batch) >= 5_000:
            deleted += client.delete(*batch)
            batch = []
    if batch:
        deleted += client.delete(*batch)
    return deleted


def stream_take(project_id: int, since: str) -> int:
    """Remove the exposure batches decide appended for this project since `since`; returns exposures counted."""
    import orjson

    from personalization import redis_client, rkeys

    client = redis_client.worker()
    exposures = 0
    start = since
    while True:
        entries = client.xrange(rkeys.EVENTS_STREAM, min=f"({start}", count=500)
        if not entries:
            break
        mine = [(entry_id, fields) for entry_id, fields in entries if fields.get(b"p") == str(project_id).encode()]
        exposures += sum(len(orjson.loads(fields[b"d"])) for _, fields in mine)
        if mine:
            client.xdel(rkeys.EVENTS_STREAM, *(entry_id for entry_id, _ in mine))
        start = entries[-1][0].decode()
    return exposures


def stream_last_id() -> str:
    from personalization import redis_client, rkeys

    last = redis_client.worker().xrevrange(rkeys.EVENTS_STREAM, count=1)
    return last[0][0].decode() if last else "0-0"


# --- HTTP load ------------------------------------------------------------------------------------

WRK_DECIDE_LUA = (
    _common.WRK_THREADS_LUA
    + r"""
-- One request per call for a random unit: a known user id, a known anonymous id, or a new visitor
-- (a fresh id every time, share BENCH_NEW_SHARE).
local path = os.getenv("BENCH_PATH")
local profiles = tonumber(os.getenv("BENCH_PROFILES"))
local new_share = tonumber(os.getenv("BENCH_NEW_SHARE"))
local tag = os.getenv("BENCH_TAG")
local headers = {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. os.getenv("BENCH_KEY")}
local pages = {"/", "/products/", "/search?q=tent", "/cart", "/blog/"}
local counter = 0

function init(args)
  math.randomseed(tid * 7919 + os.time())
end

function body()
  local r = math.random()
  local unit
  if r < new_share then
    counter = counter + 1
    unit = '"anonymous_id":"n' .. tag .. "-" .. tid .. "-" .. counter .. '"'
  elseif r < new_share + (1 - new_share) * 0.6 then
    unit = '"user_id":"u' .. math.random(0, profiles - 1) .. '"'
  else
    unit = '"anonymous_id":"b' .. math.random(0, profiles - 1) .. '"'
  end
  local page = pages[math.random(#pages)]
  if page == "/products/" then page = page .. math.random(1, 2000) end
  return "{" .. unit .. ',"context":{"url":"' .. page .. '"}}'
end

function request()
  return wrk.format("POST", path, headers, body())
end
"""
)

# Open loop: each wrk thread has one connection that sends on a Poisson schedule of BENCH_RATE
# requests/s. wrk calls delay() once the connection's response is complete (and before its first
# request), request() right before each send. There is no response(): with one, wrk hands every
# response's headers and body to Lua (a few µs of the ~120 µs wrk spends per paced request, on the
# cores it shares with the server). A response's time from its scheduled send is taken in the delay()
# that follows it, one event-loop turn later at most: if anything, a little too long. wrk itself
# counts answers with a status of 400 or more (non_2xx in its result).
WRK_PACED_LUA = r"""
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk_id, bench_timespec *tp);
]]
local ts = ffi.new("bench_timespec")
local function now_us()
  ffi.C.clock_gettime(1, ts)
  return tonumber(ts.tv_sec) * 1000000 + tonumber(ts.tv_nsec) / 1000
end

local rate = tonumber(os.getenv("BENCH_RATE"))
local scheduled = nil
local in_flight_from = nil  -- the request on the wire: its scheduled send time (its actual one if that was earlier)
corrected = {}

function delay()
  local now = now_us()
  if in_flight_from ~= nil then
    corrected[#corrected + 1] = now - in_flight_from
    in_flight_from = nil
  end
  if scheduled == nil then scheduled = now end
  scheduled = scheduled - math.log(1 - math.random()) * 1000000 / rate
  local wait_ms = (scheduled - now) / 1000
  if wait_ms <= 0 then return 0 end
  return math.floor(wait_ms + math.random())  -- wrk takes whole ms; round at random so the mean is right
end

local plain_request = request
function request()
  local now = now_us()
  in_flight_from = scheduled
  if in_flight_from == nil or in_flight_from > now then in_flight_from = now end  -- sent early by timer rounding
  return plain_request()
end

local plain_done = done
function done(summary, latency, requests)
  local all = {}
  for _, thread in ipairs(threads) do
    for _, v in ipairs(thread:get("corrected")) do all[#all + 1] = v end
  end
  table.sort(all)
  local function pct(q) if #all == 0 then return 0 end return all[math.max(1, math.ceil(#all * q / 100))] end
  io.write(string.format('PACED {"n": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d,'
    .. ' "p999_us": %d, "max_us": %d}\n', #all, pct(50), pct(90), pct(99), pct(99.9), pct(100)))
  plain_done(summary, latency, requests)
end
"""


class Load:
    """wrk against one running server: its figures, the server's CPU per request, exposures recorded."""

    def __init__(
        self, wrk: str, base: str, key: str, project_id: int, server_pgid: int, workdir: Path, profiles: int = PROFILES
    ):
        self.wrk, self.base, self.key, self.project_id, self.pgid = wrk, base, key, project_id, server_pgid
        self.profiles = profiles  # known units are u0…u<profiles-1> and b0…b<profiles-1>
        self.closed = workdir / "closed.lua"
        self.closed.write_text(WRK_DECIDE_LUA + _common.WRK_DONE_LUA)
        self.paced = workdir / "paced.lua"
        self.paced.write_text(WRK_DECIDE_LUA + _common.WRK_DONE_LUA + WRK_PACED_LUA)
        self.runs = 0

    def _env(self, path: str, new_share: float, rate: float = 0.0) -> dict:
        self.runs += 1
        return {
            "BENCH_PATH": path,
            "BENCH_KEY": self.key,
            "BENCH_PROFILES": str(self.profiles),
            "BENCH_NEW_SHARE": str(new_share),
            "BENCH_TAG": f"{int(time.time()) % 100000}r{self.runs}",
            "BENCH_RATE": str(rate),
        }

    def _measured(self, path: str, run) -> dict:
        since = stream_last_id()
        cpu = _common.process_group_cpu_seconds(self.pgid)
        result = run()
        time.sleep(0.2)  # the write-behind buffer flushes every 50 ms: its work belongs to these requests
        result["cpu_s"] = _common.process_group_cpu_seconds(self.pgid) - cpu
        result["exposures"] = 0
        if path.endswith("/decide"):
            result["exposures"] = stream_take(self.project_id, since)
        return result

    def peak(self, path: str, seconds: int, new_share: float = NEW_SHARE) -> dict:
        env = self._env(path, new_share)
        return self._measured(
            path, lambda: _common.wrk_run(self.wrk, self.base + path, self.closed, seconds, PEAK_CONNECTIONS, env=env)
        )

    def paced_run(self, path: str, seconds: int, total_rate: float, new_share: float = NEW_SHARE) -> dict:
        env = self._env(path, new_share, total_rate / PACED_CONNECTIONS)
        return _summary(
            [
                self._measured(
                    path,
                    lambda: _common.wrk_run(
                        self.wrk,
                        self.base + path,
                        self.paced,
                        seconds,
                        PACED_CONNECTIONS,
                        env=env,
                        threads=PACED_CONNECTIONS,
                    ),
                )
            ]
        )

    def alternating_peaks(self, paths: list[str], rounds: int, seconds: int) -> dict[str, dict]:
        """Peak runs of each path in turn, `rounds` times: a change in the machine's other load hits all alike."""
        runs: dict[str, list[dict]] = {path: [] for path in paths}
        for _ in range(rounds):
            for path in paths:
                runs[path].append(self.peak(path, seconds))
        return {path: _summary(path_runs) for path, path_runs in runs.items()}


def _summary(runs: list[dict]) -> dict:
    """Rate over all runs; latency percentiles are the median of the runs' own."""
    requests = sum(r["requests"] for r in runs)
    summary = {
        "requests": requests,
        "rps": requests / (sum(r["duration_us"] for r in runs) / 1e6),
        "rps_runs": [round(r["rps"]) for r in runs],
        "non_2xx": sum(r["non_2xx"] for r in runs),
        "socket_errors": sum(r["socket_errors"] for r in runs),
        "max_us": max(r["max_us"] for r in runs),
        "cpu_us_per_request": sum(r["cpu_s"] for r in runs) / max(requests, 1) * 1e6,
        "exposures_per_request": sum(r["exposures"] for r in runs) / max(requests, 1),
    }
    for name in ("p50_us", "p90_us", "p99_us"):
        summary[name] = statistics.median(r[name] for r in runs)
    if "PACED" in runs[0]:
        summary["PACED"] = runs[0]["PACED"]
    return summary


def _ms(us: float) -> float:
    return round(us / 1000, 2)


def _show(label: str, r: dict, figures: dict | None = None) -> None:
    f = figures or r
    errors = r["non_2xx"] + r["socket_errors"]
    print(
        f"  {label:<36} {r['rps']:>7,.0f} req/s   p50 {_ms(f['p50_us']):>6.2f} ms   p90 {_ms(f['p90_us']):>6.2f} ms"
        f"   p99 {_ms(f['p99_us']):>6.2f} ms   max {_ms(f['max_us']):>7.2f} ms"
        + (f"   ERRORS {errors}" if errors else ""),
        flush=True,
    )


def production_settings() -> dict:
    """The decide service's granian settings as `make run` starts it (config.runner), e.g. {"workers": 2, …}."""
    from config import runner

    command = runner.processes()["decide"][0]
    settings = {}
    for flag, name in (
        ("--workers", "workers"),
        ("--blocking-threads", "blocking_threads"),
        ("--backpressure", "backpressure"),
    ):
        if flag in command:
            settings[name] = int(command[command.index(flag) + 1])
    pinning = runner.DECIDE_ENV.get("KAIROS_DECIDE_CPU_PINNING") == "1"
    return {"workers": 1, "blocking_threads": 1, **settings, "cpu_pinning": pinning}


def _server(settings: dict, port: int):
    extra = ("--backpressure", str(settings["backpressure"])) if settings.get("backpressure") else ()
    env = {"KAIROS_DECIDE_CPU_PINNING": "1" if settings["cpu_pinning"] else "0"}  # throttling on: _common
    return _common.server_start(port, settings["workers"], settings["blocking_threads"], extra, env=env)


def _settings_text(settings: dict) -> str:
    text = f"{settings['workers']} workers × {settings['blocking_threads']} blocking threads"
    text += ", pinned to CPUs" if settings["cpu_pinning"] else ", not pinned"
    return text + (f", backpressure {settings['backpressure']}" if settings.get("backpressure") else "")


def http_phase(args, project_id: int, key: str, wrk: str, workdir: Path, settings: dict) -> dict:
    rounds, slice_s, paced_s = (3, 3, 10) if args.quick else (5, 4, 30)
    port = _common.free_port()
    server = _server(settings, port)
    try:
        load = Load(wrk, f"http://127.0.0.1:{port}", key, project_id, server.pid, workdir)
        print(
            f"decide service: granian wsgi, {_settings_text(settings)}, KAIROS_ROLE=decide, port {port};"
            " throttling on (per key and per IP, limits above the bench's rate)",
            flush=True,
        )
        load.peak("/api/v1/decide", 3)  # warm-up: imports, Redis connections, snapshot
        load.peak("/api/v1/ping", 2)
        redis_settle()
        peaks = load.alternating_peaks(["/api/v1/decide", "/api/v1/ping"], rounds, slice_s)
        decide, ping = peaks["/api/v1/decide"], peaks["/api/v1/ping"]
        cold = None if args.quick else load.alternating_peaks(["/api/v1/decide"], 1, rounds * slice_s)
        print(
            f"peak, closed loop (wrk -t2 -c{PEAK_CONNECTIONS}; {rounds} × {slice_s} s per endpoint, taking turns;"
            f" decide traffic: {1 - NEW_SHARE:.0%} returning visitors, {NEW_SHARE:.0%} first visits):"
        )
        _show("POST /api/v1/decide", decide)
        _show("POST /api/v1/ping (trivial)", ping)
        if cold is not None:
            cold = cold["/api/v1/decide"]
            _show("POST /api/v1/decide, first visits only", cold)
        ratio = decide["rps"] / ping["rps"]
        cpu_ratio = ping["cpu_us_per_request"] / decide["cpu_us_per_request"]
        print(
            f"  decide / trivial = {ratio:.2f} (target ≥ {TARGET_RATIO:.2f}); by the server's CPU per request"
            f" ({decide['cpu_us_per_request']:.0f} µs vs {ping['cpu_us_per_request']:.0f} µs): {cpu_ratio:.2f};"
            f" {decide['exposures_per_request']:.1f} exposures recorded per decide",
            flush=True,
        )
        target = 0.7 * decide["rps"]
        redis_settle()
        paced = load.paced_run("/api/v1/decide", paced_s, target)
        sched = paced["PACED"]
        print(
            f"open loop at 70 % of decide's peak: {target:,.0f} req/s offered (Poisson arrivals,"
            f" {PACED_CONNECTIONS} connections, {paced_s} s):"
        )
        _show("decide, latency from actual send", paced)
        _show("decide, latency from scheduled send", paced, sched)
        print(f"  p99 target ≤ {TARGET_P99_MS:.0f} ms", flush=True)
    finally:
        _common.process_stop(server)
    errors = sum(r["non_2xx"] + r["socket_errors"] for r in (decide, ping, paced, cold) if r)
    figures = {
        "decide_rps": round(decide["rps"], 1),
        "trivial_rps": round(ping["rps"], 1),
        "decide_vs_trivial_ratio": round(ratio, 3),
        "decide_p50_ms": _ms(decide["p50_us"]),
        "decide_p99_ms": _ms(decide["p99_us"]),
        "trivial_p50_ms": _ms(ping["p50_us"]),
        "trivial_p99_ms": _ms(ping["p99_us"]),
        "decide_server_cpu_us_per_request": round(decide["cpu_us_per_request"], 1),
        "trivial_server_cpu_us_per_request": round(ping["cpu_us_per_request"], 1),
        "decide_vs_trivial_cpu_ratio": round(cpu_ratio, 3),
        "decide_first_visit_share": NEW_SHARE,
        "decide_exposures_per_request": round(decide["exposures_per_request"], 2),
        "decide_offered_rps_at_70pct": round(target, 1),
        "decide_achieved_rps_at_70pct": round(paced["rps"], 1),
        "decide_p50_at_70pct_ms": _ms(paced["p50_us"]),
        "decide_p99_at_70pct_ms": _ms(paced["p99_us"]),
        "decide_p99_at_70pct_from_schedule_ms": _ms(sched["p99_us"]),
        "http_errors": errors,
        "throttling_on": True,
    }
    if cold is not None:
        figures["decide_first_visits_rps"] = round(cold["rps"], 1)
        figures["decide_first_visits_p99_ms"] = _ms(cold["p99_us"])
        figures["decide_first_visits_server_cpu_us_per_request"] = round(cold["cpu_us_per_request"], 1)
    return figures


SWEEP = [
    {"workers": 1, "blocking_threads": 2},
    {"workers": 1, "blocking_threads": 4},
    {"workers": 2, "blocking_threads": 1},
    {"workers": 2, "blocking_threads": 2},
    {"workers": 2, "blocking_threads": 2, "cpu_pinning": False},
    {"workers": 2, "blocking_threads": 4},
    {"workers": 3, "blocking_threads": 1},
    {"workers": 3, "blocking_threads": 2},
    {"workers": 4, "blocking_threads": 1},
    {"workers": 2, "blocking_threads": 2, "backpressure": 8},
]


def sweep_phase(args, project_id: int, key: str, wrk: str, workdir: Path) -> None:
    """Peak decide and ping, and decide's p99 at 70 % of its peak, for several granian settings."""
    rounds, slice_s, paced_s = (2, 3, 5) if args.quick else (3, 4, 10)
    print("granian settings (peaks with the endpoints taking turns; p99 at 70 % of decide's peak):", flush=True)
    production = production_settings()
    for sweep_settings in SWEEP:
        settings = {"cpu_pinning": production["cpu_pinning"], **sweep_settings}
        port = _common.free_port()
        server = _server(settings, port)
        try:
            load = Load(wrk, f"http://127.0.0.1:{port}", key, project_id, server.pid, workdir)
            load.peak("/api/v1/decide", 2)
            redis_settle()
            peaks = load.alternating_peaks(["/api/v1/decide", "/api/v1/ping"], rounds, slice_s)
            decide, ping = peaks["/api/v1/decide"], peaks["/api/v1/ping"]
            redis_settle()
            paced = load.paced_run("/api/v1/decide", paced_s, 0.7 * decide["rps"])
        finally:
            _common.process_stop(server)
        print(
            f"  {_settings_text(settings):<46} decide {decide['rps']:>6,.0f} req/s"
            f" {decide['cpu_us_per_request']:>4.0f} µs CPU"
            f" | ping {ping['rps']:>6,.0f} req/s {ping['cpu_us_per_request']:>4.0f} µs CPU"
            f" | ratio {decide['rps'] / ping['rps']:.2f} | p99 at 70 %: {_ms(paced['p99_us']):.1f} ms"
            f" ({_ms(paced['PACED']['p99_us']):.1f} ms from schedule)",
            flush=True,
        )


# --- in process: Kairos engine against GrowthBook ---------------------------------------------------


def growthbook_features(snapshot: dict) -> dict:
    """The same 10 experiments as GrowthBook feature rules.

    Global holdout → a `$holdout:` feature every experiment names as a prerequisite (GrowthBook's own
    holdout mechanism); do-not-personalize → a force rule; experience holdout → coverage; targeting
    → a condition; per-segment bandit → one rule per segment, then the global weights.
    """
    holdout = snapshot["holdout"]
    features: dict = {
        "$holdout:global": {
            "defaultValue": "genpop",
            "rules": [
                {
                    "force": "holdout",
                    "coverage": holdout["share"],
                    "hashAttribute": "id",
                    "seed": holdout["salt"],
                    "hashVersion": 2,
                }
            ],
        }
    }
    for key, exp in snapshot["experiences"].items():
        control = exp["payloads"][exp["control"]]
        variations = [exp["payloads"][v] for v in exp["order"]]
        condition: dict = {}
        for cond in (exp["targeting"] or {}).get("attributes", []):
            op = cond.get("op", "in")
            condition[cond["attribute"]] = (
                {"$in": cond["values"]}
                if op == "in"
                else {"$nin": cond["values"]}
                if op == "not_in"
                else {"$exists": True}
            )
        if (exp["targeting"] or {}).get("segments"):
            condition["segments"] = {"$in": exp["targeting"]["segments"]}
        rules: list[dict] = [
            {"condition": {"dnp": "1"}, "force": control},
            {"parentConditions": [{"id": "$holdout:global", "condition": {"value": "holdout"}}], "force": control},
        ]
        base = {
            "key": key,
            "seed": exp["salt"],
            "hashAttribute": "id",
            "hashVersion": 2,
            "variations": variations,
            "coverage": 1 - exp["holdout_share"],
        }
        if exp["policy"] == "segment_bandit":
            for segment, weights in exp["weights"].items():
                if segment:
                    rules.append(
                        {**base, "weights": weights, "condition": {**condition, exp["segment_field"]: segment}}
                    )
        weights = exp["fixed"] if exp["policy"] == "fixed" else exp["weights"].get("") or exp["fixed"]
        rules.append({**base, "weights": weights, **({"condition": condition} if condition else {})})
        features[key] = {"defaultValue": control, "rules": rules}
    return features


def _time_per_call(fn, units: list, calls: int, repeats: int = 5) -> tuple[float, float]:
    """(CPU µs, wall µs) per call, each the best of `repeats` loops over `calls` units.

    CPU time of this thread is the headline: other processes sharing the two cores (tests, the
    server of another bench) stretch wall time but not the work a call costs.
    """
    cpu, wall = [], []
    for _ in range(repeats):
        started_cpu, started = time.thread_time(), time.perf_counter()
        for i in range(calls):
            fn(units[i % len(units)])
        wall.append((time.perf_counter() - started) / calls * 1e6)
        cpu.append((time.thread_time() - started_cpu) / calls * 1e6)
    return min(cpu), min(wall)


def engine_phase(args, project_id: int) -> dict:
    import orjson
    from growthbook import GrowthBook

    from personalization import redis_client, rkeys
    from personalization.decide import engine

    client = redis_client.worker()
    snapshot = orjson.loads(client.get(rkeys.snapshot(project_id)))
    keys = list(snapshot["experiences"])
    rng = random.Random(5)
    pipe = client.pipeline(transaction=False)
    names = [f"u{rng.randrange(PROFILES)}" for _ in range(2000)]
    for name in names:
        pipe.hgetall(rkeys.unit(project_id, name))
    users = []
    for name, raw in zip(names, pipe.execute(), strict=True):
        user = {k.decode(): v.decode() for k, v in raw.items() if not k.startswith(b"a:")}  # never seen: no sticky
        users.append((name, user))

    def kairos(unit_user):
        unit, user = unit_user
        return engine.decide_unit(snapshot, unit, user, {})

    # Returning visitors: the sticky fields their first decide would have written.
    returning = []
    for unit, user in users:
        first = engine.decide_unit(snapshot, unit, user, {})
        returning.append((unit, {**user, **first.sticky_updates}))

    exposures: list = []
    gb = GrowthBook(features=growthbook_features(snapshot), on_experiment_viewed=lambda **kw: exposures.append(kw))

    def gb_attributes(unit: str, user: dict) -> dict:
        attributes = {"id": unit, "dnp": user.get("dnp", "0"), "segments": (user.get("segs") or "").split()}
        attributes.update({k[5:]: v for k, v in user.items() if k.startswith("attr:")})
        return attributes

    gb_users = [gb_attributes(unit, user) for unit, user in users]

    def growthbook(attributes):
        gb.set_attributes(attributes)
        return {key: gb.eval_feature(key) for key in keys}

    # Same behaviour, different hash functions: compare how many units each puts in a variant.
    kairos_in = sum(
        a["reason"] in {"fixed_split", "bandit", "segment_bandit"}
        for u in users
        for a in kairos(u).assignments.values()
    )
    gb_in = sum(r.source == "experiment" for a in gb_users for r in growthbook(a).values())
    calls = 30_000 if args.quick else 100_000
    gb_calls = calls // 10
    kairos_us, kairos_wall_us = _time_per_call(kairos, users, calls)
    kairos_sticky_us, _ = _time_per_call(kairos, returning, calls)
    exposures.clear()
    gb_us, gb_wall_us = _time_per_call(growthbook, gb_users, gb_calls)
    speedup = gb_us / kairos_us
    total = len(users) * len(keys)
    print(f"in process, one unit × {len(keys)} experiences (units never seen before, real profile hashes), CPU time:")
    print(
        f"  Kairos engine.decide_unit        {kairos_us:>8.1f} µs/call   (wall {kairos_wall_us:.1f} µs;"
        f" {kairos_sticky_us:.1f} µs for a returning unit)"
    )
    print(f"  GrowthBook SDK (same 10)         {gb_us:>8.1f} µs/call   (wall {gb_wall_us:.1f} µs)")
    print(f"  Kairos is {speedup:.1f}× faster (target ≥ {TARGET_SPEEDUP:.0f}×)")
    print(
        f"  sanity: share of (unit, experience) assigned a variant: Kairos {kairos_in / total:.3f},"
        f" GrowthBook {gb_in / total:.3f}",
        flush=True,
    )
    return {
        "engine_us_per_call": round(kairos_us, 2),
        "engine_returning_us_per_call": round(kairos_sticky_us, 2),
        "engine_wall_us_per_call": round(kairos_wall_us, 2),
        "growthbook_us_per_call": round(gb_us, 2),
        "growthbook_wall_us_per_call": round(gb_wall_us, 2),
        "kairos_vs_growthbook_speedup": round(speedup, 2),
        "engine_in_variant_share": round(kairos_in / total, 4),
        "growthbook_in_variant_share": round(gb_in / total, 4),
    }


# --- main -------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs, about a minute once seeded")
    parser.add_argument("--sweep", action="store_true", help="also compare granian worker/thread settings")
    parser.add_argument("--workers", type=int, help="granian workers (default: as config.runner starts decide)")
    parser.add_argument("--blocking-threads", type=int, help="granian blocking threads per worker (default: same)")
    parser.add_argument("--backpressure", type=int, help="granian backpressure per worker (default: same)")
    parser.add_argument(
        "--cpu-pinning", type=int, choices=(0, 1), help="pin each worker to a CPU (default: as config.runner, 1)"
    )
    parser.add_argument(
        "--redis-db", type=int, default=_common.BENCH_REDIS_DB, help="Redis database of the bench (default 14)"
    )
    parser.add_argument("--skip-http", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--skip-engine", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    database_url, _ = _common.bench_environment(args.redis_db)
    _common.database_ensure(database_url)
    _common.django_setup(migrate=True)
    from personalization import services
    from personalization.models import ApiKey, Project

    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    if load_before > 1.0:
        print(f"note: load average {load_before:.1f} on {os.cpu_count()} cores before the bench; figures will be low")
    project_id = seed()
    redis_publish(project_id)
    figures: dict = {}
    workdir = Path(tempfile.mkdtemp(prefix="kairos-bench-decide-"))
    try:
        if not args.skip_engine:
            figures.update(engine_phase(args, project_id))
        if not args.skip_http:
            wrk = _common.wrk_ensure()
            ApiKey.objects.filter(project_id=project_id).delete()  # the raw key is never stored: a new one each run
            _, key = services.api_key_create(project=Project.objects.get(pk=project_id), kind="public", name="bench")
            redis_publish(project_id)  # again, in case another bench emptied the Redis db meanwhile
            settings = production_settings()
            for name in ("workers", "blocking_threads", "backpressure", "cpu_pinning"):
                if getattr(args, name) is not None:
                    settings[name] = getattr(args, name)
            if args.sweep:
                sweep_phase(args, project_id, key, wrk, workdir)
            figures.update(http_phase(args, project_id, key, wrk, workdir, settings))
            figures["granian"] = settings
            figures["targets_met"] = {
                "decide_vs_trivial_ge_0_5": figures["decide_vs_trivial_ratio"] >= TARGET_RATIO,
                "p99_at_70pct_le_10ms": figures["decide_p99_at_70pct_ms"] <= TARGET_P99_MS,
                "speedup_ge_3x": figures.get("kairos_vs_growthbook_speedup", 0) >= TARGET_SPEEDUP,
            }
    finally:
        ApiKey.objects.filter(project_id=project_id).delete()
        new_visitors_forget(project_id)
        shutil.rmtree(workdir, ignore_errors=True)
    figures["profiles"] = PROFILES
    figures["experiences"] = len(experience_specs())
    figures["load_average_before"] = round(load_before, 2)
    figures["load_average_after"] = round(os.getloadavg()[0], 2)
    figures["bench_seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(figures))
    return 1 if figures.get("http_errors") else 0


if __name__ == "__main__":
    sys.exit(main())
