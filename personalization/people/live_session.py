"""The live session state of one visitor, kept in Redis and updated in the events request.

Where it lives: field "ls" of the visitor's decide unit hash (`rkeys.unit`), as compact JSON. Decide
already reads that hash with HGETALL in its one round trip, so the state costs decide no command and
no extra key; erasure and export of the unit hash carry it; and one visitor's whole picture is one
key (one Redis Cluster slot).

How it is written: `live_command` turns an accepted events batch into one EVALSHA of `LIVE_LUA`
for all its units (the user id when the event has one, else the anonymous id: the unit decide
answers for), which the events request sends in the ingest script's round trip, gated on its verdict.
Python does the parsing (which event means what, truncation, item hashing); the script only folds
fixed-width records into the state, so it stays small and its cost per event is constant.
The same pipeline adds the batch's units to the index of the last hour's active visitors
(`active_commands`, rkeys.live_active) that the live pages read (people/live_activity.py).

Bounds (a hostile stream cannot grow the field): every counter stops at COUNT_CAP; the categories
of a session are the MAX_CATEGORIES most recent; distinct items are counted through the
MAX_ITEMS most recent (8-character hashes); the last MAX_QUERIES searches, each cut to
MAX_QUERY_CHARS; MAX_TYPES event types by name, the rest as "other"; the 30-day session count is at
most MAX_DAYS (day, count) pairs; texts are cut to MAX_TEXT_CHARS. The hash gets the decide unit
TTL on every write. The worst case is measured in tests/personalization/test_live_session.py.

Time: an event's own timestamp, never later than now and never earlier than the state's last event
(a late or skewed event is folded in at the last event's time, so the state never runs backwards).
A session ends after `idle_seconds` without events; the client's session_id is not used (a stream
that changes it on every event would otherwise open a session per event).

Opted out: a unit whose hash says do-not-personalize (dnp=1), or that has not consented where the
project requires consent, keeps no state: the script deletes the field instead of writing it.

Reading: `live_state_parse` (the dict decide got from HGETALL) and `session_view` (the state as of
now: a session idle past the boundary reads as ended, the next event will open a new one).
"""

import hashlib
import math
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from urllib.parse import urlsplit

import orjson
from redis.exceptions import NoScriptError

from personalization import rkeys
from personalization.rkeys import UNIT_TTL_SECONDS

LIVE_FIELD = rkeys.UNIT_LIVE_FIELD
STATE_VERSION = 1
DEFAULT_IDLE_MINUTES = 30
COUNT_CAP = 9999
MAX_CATEGORIES = 8
MAX_ITEMS = 12
MAX_QUERIES = 3
MAX_TYPES = 8
MAX_DAYS = 30
MAX_TEXT_CHARS = 64
MAX_QUERY_CHARS = 32
MAX_CHANNEL_CHARS = 24
LONG_DWELL_MS = 30_000
# The index of recently active units (rkeys.live_active) keeps this long; the preview's "last hour".
ACTIVE_WINDOW_SECONDS = 3600
FIELDS_PER_EVENT = 7  # ts, type, item, item hash, category, extra (query or channel), flags

# Flags a record may carry (Python decides them, the script counts them).
FLAG_CHECKOUT = "k"  # a page view of a cart or checkout page
FLAG_LONG_DWELL = "d"  # a page view read for LONG_DWELL_MS or more

# A page view counts as a checkout view when its URL contains /checkout, /cart or /basket.

LIVE_LUA = f"""
-- KEYS: [gate,] [the project's suppression set,] the units' hashes. ARGV: gated (1|0), now, idle,
-- ttl, consent required (1|0), checked (1|0), then per unit: [the digest of its id,] its record count
-- and its records.
local gated = ARGV[1] == '1'
-- The ingest script sets the gate only when it appended the batch; taking it here makes the update
-- happen once, and not at all for a batch it refused.
if gated and redis.call('DEL', KEYS[1]) == 0 then return {{}} end
local now = tonumber(ARGV[2])
local idle = tonumber(ARGV[3])
local ttl = tonumber(ARGV[4])
local consent_required = ARGV[5] == '1'
local CAP, MAXC, MAXI = {COUNT_CAP}, {MAX_CATEGORIES}, {MAX_ITEMS}
local MAXQ, MAXT, MAXD = {MAX_QUERIES}, {MAX_TYPES}, {MAX_DAYS}
local s = nil

local function bump(x) x = (x or 0) + 1; if x > CAP then return CAP end; return x end
local function list(x) if type(x) ~= 'table' then return {{}} end; return x end

-- Rebuild lists densely: cjson stores a Lua table with holes as an object.
local function front(items, value, limit)
  local out = {{value}}
  for _, v in ipairs(items) do
    if #out >= limit then break end
    if v ~= value then out[#out + 1] = v end
  end
  return out
end

local function session_open(ts)
  if s.ss then s.ps = s.sl end
  s.ss = ts; s.n = 0; s.t = nil; s.pv = 0; s.it = nil; s.ni = 0; s.c = nil; s.q = 0; s.qr = 0
  s.lq = nil; s.ca = 0; s.cr = 0; s.pu = 0; s.ck = 0; s.ld = 0; s.ch = nil
  local day = math.floor(ts / 86400)
  local days = {{}}
  local counted = false
  for _, pair in ipairs(list(s.sd)) do
    if pair[1] > day - MAXD then
      if pair[1] == day then pair[2] = bump(pair[2]); counted = true end
      days[#days + 1] = pair
    end
  end
  if not counted then days[#days + 1] = {{day, 1}} end
  while #days > MAXD do table.remove(days, 1) end
  s.sd = days
end

-- One unit: 1 written, 0 opted out (state dropped), -1 its key is not a hash (the other units go on).
local function fold(key, base, n)
  local flags = redis.pcall('HMGET', key, 'dnp', 'consent', '{LIVE_FIELD}')
  if flags.err then return -1 end
  if flags[1] == '1' or (consent_required and flags[2] ~= '1') then
    if flags[3] then redis.call('HDEL', key, '{LIVE_FIELD}') end
    return 0
  end
  s = nil
  if flags[3] then
    local ok, decoded = pcall(cjson.decode, flags[3])
    if ok and type(decoded) == 'table' and decoded.v == {STATE_VERSION} then s = decoded end
  end
  if s == nil then s = {{v = {STATE_VERSION}}} end
  for i = 0, n - 1 do
    local b = base + i * {FIELDS_PER_EVENT}
    local ts, typ, item, ihash, cat, extra, fl =
      tonumber(ARGV[b]), ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4], ARGV[b + 5], ARGV[b + 6]
    if ts > now then ts = now end
    if s.sl and ts < s.sl then ts = s.sl end
    if s.fs == nil then s.fs = ts end
    if s.sl == nil or ts - s.sl > idle then session_open(ts) end
    s.sl = ts
    s.n = bump(s.n)
    local types = list(s.t)
    local found = false
    for _, pair in ipairs(types) do
      if pair[1] == typ then pair[2] = bump(pair[2]); found = true; break end
    end
    if not found then
      -- MAXT - 1 types by name, then one 'other' for every type beyond them
      if #types < MAXT - 1 then
        types[#types + 1] = {{typ, 1}}
      else
        local other = nil
        for _, pair in ipairs(types) do if pair[1] == 'other' then other = pair end end
        if other == nil then types[#types + 1] = {{'other', 1}} else other[2] = bump(other[2]) end
      end
    end
    s.t = types
    if s.ch == nil and extra ~= '' and typ == 'page_view' then s.ch = extra end
    if s.ft == nil and extra ~= '' and typ == 'page_view' then s.ft = extra end
    if typ == 'page_view' then
      s.pv = bump(s.pv)
      if string.find(fl, '{FLAG_CHECKOUT}', 1, true) then s.ck = bump(s.ck) end
      if string.find(fl, '{FLAG_LONG_DWELL}', 1, true) then s.ld = bump(s.ld) end
      if ihash ~= '' then
        local items = list(s.it)
        local seen = false
        for _, h in ipairs(items) do if h == ihash then seen = true; break end end
        if not seen then s.ni = bump(s.ni) end
        s.it = front(items, ihash, MAXI)
      end
      if cat ~= '' then
        local entry = {{cat, 0, 0}}
        for _, e in ipairs(list(s.c)) do if e[1] == cat then entry = e; break end end
        entry[2] = bump(entry[2])
        if ihash ~= '' then entry[3] = bump(entry[3]) end
        local out = {{entry}}
        for _, e in ipairs(list(s.c)) do
          if #out >= MAXC then break end
          if e[1] ~= cat then out[#out + 1] = e end
        end
        s.c = out
      end
    elseif typ == 'search' then
      s.q = bump(s.q)
      local previous = list(s.lq)[1]
      if previous and previous ~= extra and extra ~= '' then
        for word in string.gmatch(extra, '%S+') do
          if string.len(word) >= 3 and string.find(' ' .. previous .. ' ', ' ' .. word .. ' ', 1, true) then
            s.qr = bump(s.qr); break
          end
        end
      end
      if extra ~= '' then s.lq = front(list(s.lq), extra, MAXQ) end
    elseif typ == 'add_to_cart' then
      s.ca = bump(s.ca)
      s.ac = {{ts, item}}
    elseif typ == 'remove_from_cart' then
      s.cr = bump(s.cr)
      if s.ac and s.ac[2] == item then s.ac = nil end
    elseif typ == 'purchase' then
      s.pu = bump(s.pu)
      s.ac = nil
    end
  end
  redis.call('HSET', key, '{LIVE_FIELD}', cjson.encode(s))
  redis.call('EXPIRE', key, ttl)
  return 1
end

local out = {{}}
local checked = ARGV[6] == '1'
local first = gated and 2 or 1
local suppressed = nil
if checked then suppressed = KEYS[first]; first = first + 1 end
local b = 7
for k = first, #KEYS do
  -- An erased person's late event must not bring their state back, whatever snapshot the sender had.
  local erased = false
  if checked then erased = redis.call('SISMEMBER', suppressed, ARGV[b]) == 1; b = b + 1 end
  local n = tonumber(ARGV[b])
  if erased then out[#out + 1] = 0 else out[#out + 1] = fold(KEYS[k], b + 1, n) end
  b = b + 1 + n * {FIELDS_PER_EVENT}
end
return out
"""

LIVE_SHA = hashlib.sha1(LIVE_LUA.encode()).hexdigest()  # noqa: S324 (Redis names scripts by SHA-1)


@dataclass(frozen=True, slots=True)
class LiveSettings:
    """A project's settings for the live state."""

    idle_minutes: int = DEFAULT_IDLE_MINUTES
    require_consent: bool = False

    @property
    def idle_seconds(self) -> int:
        return self.idle_minutes * 60


@lru_cache(maxsize=4096)  # a shop's popular items recur in every batch
def item_hash(item: str) -> str:
    """Eight hex characters standing for an item id in the distinct-items list (CRC-32: collisions
    only make two items count as one, and ids longer than a hash would make the list unbounded)."""
    return f"{zlib.crc32(item.encode()):08x}"


def query_normal(query: str) -> str:
    """A search as the state keeps it: lower case, single spaces, cut to MAX_QUERY_CHARS."""
    return " ".join(query.lower().split())[:MAX_QUERY_CHARS]


def _channel(properties: dict) -> str:
    """The entry channel a page view says it came from: utm_source, else the referrer's host (the
    decide context classifies it; the state keeps only this short text)."""
    source = properties.get("utm_source")
    if isinstance(source, str) and source.strip():
        return source.strip().lower()[:MAX_CHANNEL_CHARS]
    referrer = properties.get("referrer")
    if isinstance(referrer, str) and referrer:
        return _referrer_host(referrer)
    return ""


@lru_cache(maxsize=4096)  # referrers repeat (the same search engines, the shop's own pages)
def _referrer_host(referrer: str) -> str:
    try:
        host = urlsplit(referrer).hostname or ""
    except ValueError:
        host = ""
    return host.removeprefix("www.")[:MAX_CHANNEL_CHARS]


def _record(event: dict, now: float) -> list:
    """One event as the script's fixed-width record (a few microseconds: it runs for every event)."""
    props = event.get("properties") or {}
    etype = event["type"]
    ts = event.get("ts")
    try:
        seconds = datetime.fromisoformat(ts).timestamp() if isinstance(ts, str) else now
    except ValueError:
        seconds = now
    item = props.get("item")
    item = item[:MAX_TEXT_CHARS] if isinstance(item, str) else ""
    category = props.get("category")
    category = category[:MAX_TEXT_CHARS] if isinstance(category, str) else ""
    if etype == "page_view":
        flags = ""
        url = props.get("url")
        if isinstance(url, str):
            url = url.lower()
            if "/checkout" in url or "/cart" in url or "/basket" in url:
                flags = FLAG_CHECKOUT
        dwell = props.get("dwell_ms")
        if isinstance(dwell, int | float) and math.isfinite(dwell) and dwell >= LONG_DWELL_MS:
            flags += FLAG_LONG_DWELL
        return [
            int(min(seconds, now)),
            etype,
            item,
            item_hash(item) if item else "",
            category,
            _channel(props),
            flags,
        ]
    extra = ""
    if etype == "search":
        query = props.get("query")
        extra = query_normal(query) if isinstance(query, str) else ""
    return [int(min(seconds, now)), etype[:MAX_TEXT_CHARS], item, "", category, extra, ""]


# Events that say nothing about the visitor's intent: exposures are decide's own echo, identify and
# consent are bookkeeping. Keeping them out also keeps decide's exposures from renewing a session.
_NOT_BEHAVIOR = {"exposure", "identify", "consent"}


def live_command(
    *,
    project_id: int,
    events: Iterable[dict],
    now: float,
    settings: LiveSettings | None = None,
    gate: str | None = None,
    suppressed: tuple[str, Callable[[str], str]] | None = None,
) -> tuple | None:
    """The one EVALSHA that folds accepted, validated events into their units' live state (a unit's
    events in batch order), or None when no event concerns a unit. With `gate`, the script does
    nothing unless it can take that key (the ingest script sets it when it appends the batch), so
    the command can ride in the ingest's own round trip. With `suppressed` (the project's suppression
    set key, and the digest of an id), the script skips units whose id was erased. Send it with
    `live_apply`.

    One call for the whole batch, not one per unit: a call's fixed cost (dispatch, arguments, the
    reply) is paid once. The trade-off: its keys span Redis Cluster slots, so a cluster would need
    the batch split per slot again (the ingest script spans slots already)."""
    by_unit: dict[str, list] = {}
    for event in events:
        unit = event.get("user_id") or event.get("anonymous_id")
        if not unit or event["type"] in _NOT_BEHAVIOR:
            continue
        records = by_unit.get(unit)
        if records is None:
            records = by_unit[unit] = [0]
        records[0] += 1
        records += _record(event, now)
    if not by_unit:
        return None
    settings = settings or LiveSettings()
    keys = [rkeys.unit(project_id, unit) for unit in by_unit]
    if suppressed is not None:
        keys.insert(0, suppressed[0])
    if gate is not None:
        keys.insert(0, gate)
    args = [int(gate is not None), int(now), settings.idle_seconds, UNIT_TTL_SECONDS, int(settings.require_consent)]
    args.append(int(suppressed is not None))
    for unit, records in by_unit.items():
        if suppressed is not None:
            args.append(suppressed[1](unit))
        args += records
    return ("EVALSHA", LIVE_SHA, len(keys), *keys, *args)


def active_commands(*, project_id: int, events: Iterable[dict], now: float) -> list[tuple]:
    """The index of recently active units (rkeys.live_active) that the live preview and the Sessions
    panel walk instead of scanning every unit hash: three commands per batch, sent in the live
    update's pipeline. A separate key, so the script stays single-key (Redis Cluster); trimmed on
    every write, so it holds at most the units of the last ACTIVE_WINDOW_SECONDS."""
    units = {
        unit: None
        for e in events
        if (unit := e.get("user_id") or e.get("anonymous_id")) and e.get("type") not in _NOT_BEHAVIOR
    }
    if not units:
        return []
    active, second = rkeys.live_active(project_id), int(now)
    return [
        ("ZADD", active, *(x for unit in units for x in (second, unit))),
        ("ZREMRANGEBYSCORE", active, "-inf", f"({second - ACTIVE_WINDOW_SECONDS}"),
        ("EXPIRE", active, ACTIVE_WINDOW_SECONDS + 60),
    ]


def live_reply(client, command: tuple, reply) -> list:
    """The script's answer to `command`, sent in a pipeline: if Redis did not know the script yet (a
    restart, a new server), load it and send the command once more (the script either ran whole or
    not at all, and a gate it did not take is still there)."""
    if isinstance(reply, NoScriptError):
        client.script_load(LIVE_LUA)
        return client.execute_command(*command)
    if isinstance(reply, Exception):
        raise reply
    return reply


def live_apply(client, command: tuple | None) -> list:
    """Send the command on its own: 1 (written), 0 (opted out) or -1 (not a hash) per unit."""
    if command is None:
        return []
    try:
        reply = client.execute_command(*command)
    except NoScriptError as exc:
        reply = exc
    return live_reply(client, command, reply)


def live_update(
    client, *, project_id: int, events: Iterable[dict], now: float, settings: LiveSettings | None = None
) -> list:
    """Fold accepted events into the live state and the index of active units, in a round trip of
    its own. Returns the script's replies (1 written, 0 opted out, -1 not a hash), one per unit."""
    events = list(events)
    command = live_command(project_id=project_id, events=events, now=now, settings=settings)
    index = active_commands(project_id=project_id, events=events, now=now)
    if index:
        pipe = client.pipeline(transaction=False)
        for part in index:
            pipe.execute_command(*part)
        pipe.execute()
    return live_apply(client, command)


def live_state_parse(user: dict) -> dict | None:
    """The state from a unit hash as decide holds it (str → str), or None when there is none or it
    is unreadable (then decide answers as for a visitor without live state)."""
    raw = user.get(LIVE_FIELD)
    if not raw:
        return None
    try:
        state = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return state if isinstance(state, dict) and state.get("v") == STATE_VERSION else None


def live_state_merge(anonymous: dict | None, user: dict | None) -> dict | None:
    """The live state a user id keeps when an anonymous id is stitched to it at login. Pure.

    Where only one side has a state it is taken whole. Where both have one, the user's wins (its
    session, counters and open cart: the two sessions are not mixed field by field, which could
    pair one id's cart add with the other's purchase), except what "first" and "how often" mean
    across both ids: first seen and first touch come from whichever id was seen first, and the
    sessions of the last 30 days are the union by day, a day counting the larger of its two counts
    (the login session was counted under both ids, so a sum would count it twice).
    """
    if user is None:
        return None if anonymous is None else dict(anonymous)
    if anonymous is None:
        return dict(user)
    merged = dict(user)
    first, theirs = anonymous.get("fs"), user.get("fs")
    if first is not None and (theirs is None or first < theirs):
        merged["fs"] = first
        if anonymous.get("ft"):
            merged["ft"] = anonymous["ft"]
        else:
            merged.pop("ft", None)  # the earlier visit came with no channel: direct
    days: dict[int, int] = {}
    for day, count in _pairs(anonymous.get("sd")) + _pairs(user.get("sd")):
        days[day] = max(days.get(day, 0), count)
    if days:
        merged["sd"] = [[day, count] for day, count in sorted(days.items())][-MAX_DAYS:]
    return merged


# Writes a merged state only over the state it was merged from: an events request that updated the
# user's state meanwhile makes it answer -1 (read again and merge again), and a user who opted out
# keeps none (0).
LIVE_STITCH_LUA = f"""
local flags = redis.call('HMGET', KEYS[1], 'dnp', '{LIVE_FIELD}')
if flags[1] == '1' then return 0 end
if (flags[2] or '') ~= ARGV[1] then return -1 end
redis.call('HSET', KEYS[1], '{LIVE_FIELD}', ARGV[2])
return 1
"""


def _pairs(value) -> list:
    # cjson writes an empty Lua table as {}: read it as an empty list.
    return value if isinstance(value, list) else []


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs decide several microseconds
class SessionView:
    """The live state as of `now`: what targeting, the journey stage and exposures read."""

    now: float
    known: bool  # the visitor has live state at all
    # The last session went idle past the boundary. The counters still describe that session (the
    # journey stage reads them: "abandoned"); targeting's session.* facts read 0 (a new session).
    ended: bool
    started: float | None
    last: float | None
    events: int
    events_by_type: dict[str, int]
    page_views: int
    items_viewed: int
    category_views: dict[str, int]
    category_item_views: dict[str, int]
    searches: int
    search_refinements: int
    queries: tuple[str, ...]
    cart_adds: int
    cart_removes: int
    purchases: int
    checkout_views: int
    long_dwell_views: int
    session_channel: str
    sessions_30d: int
    previous_session_last: float | None
    cart_open: tuple[float, str] | None  # last cart add not followed by a purchase: (time, item)
    first_touch: str
    first_seen: float | None

    @property
    def minutes(self) -> float:
        """Length of the (last) session in minutes."""
        return 0.0 if self.started is None or self.last is None else (self.last - self.started) / 60

    @property
    def days_since_last_session(self) -> float | None:
        """Days from the previous session's last event to this session's start (to now, once the
        session has ended: the visitor's next event opens a new session)."""
        if self.ended:
            return None if self.last is None else (self.now - self.last) / 86400
        if self.previous_session_last is None or self.started is None:
            return None
        return (self.started - self.previous_session_last) / 86400

    @property
    def minutes_since_cart_add(self) -> float | None:
        return None if self.cart_open is None else max(0.0, (self.now - self.cart_open[0]) / 60)

    @property
    def tenure_days(self) -> float | None:
        return None if self.first_seen is None else max(0.0, (self.now - self.first_seen) / 86400)

    @property
    def returning(self) -> bool:
        """Seen in an earlier session than the current one."""
        return self.known and (self.ended or self.previous_session_last is not None)


def session_view(state: dict | None, *, now: float, idle_seconds: int = DEFAULT_IDLE_MINUTES * 60) -> SessionView:
    """The state as of `now`. Pure; a few microseconds."""
    s = state or {}
    last = s.get("sl")
    ended = last is not None and now - last > idle_seconds
    today = int(now // 86400)
    sessions = sum(pair[1] for pair in _pairs(s.get("sd")) if pair[0] > today - MAX_DAYS)
    categories = _pairs(s.get("c"))
    cart = s.get("ac")
    return SessionView(
        now=now,
        known=state is not None,
        ended=ended,
        started=s.get("ss"),
        last=last,
        events=s.get("n", 0),
        events_by_type={pair[0]: pair[1] for pair in _pairs(s.get("t"))},
        page_views=s.get("pv", 0),
        items_viewed=s.get("ni", 0),
        category_views={entry[0]: entry[1] for entry in categories},
        category_item_views={entry[0]: entry[2] for entry in categories},
        searches=s.get("q", 0),
        search_refinements=s.get("qr", 0),
        queries=tuple(_pairs(s.get("lq"))),
        cart_adds=s.get("ca", 0),
        cart_removes=s.get("cr", 0),
        purchases=s.get("pu", 0),
        checkout_views=s.get("ck", 0),
        long_dwell_views=s.get("ld", 0),
        session_channel=s.get("ch") or "",
        sessions_30d=sessions,
        previous_session_last=s.get("ps"),
        cart_open=(cart[0], cart[1]) if isinstance(cart, list) and len(cart) == 2 else None,
        first_touch=s.get("ft") or "",
        first_seen=s.get("fs"),
    )
