"""The live session state of one visitor, kept in Redis and updated in the events request.

Where it lives: fields "ls", "lt", "li", "lc", "lq", "la", "lh", "lf", "ld" of the visitor's decide
unit hash (`rkeys.unit`, `rkeys.UNIT_LIVE_FIELDS`), as short texts. Decide already reads that hash
with HGETALL in its one round trip, so the state costs decide no command and no extra key; erasure
and export of the unit hash carry it; and one visitor's whole picture is one key.

    ls  "3 ss sl ps fs n pv ni q qr ca cr pu ck ld cl sc": the version, session start, last event, the
        previous session's last event, first seen ("-" when unknown) and the session's counters,
        the standard event types among them in fixed slots (STATE_NUMBERS, FIXED_TYPES)
    lt  events of custom types: "newsletter_signup=2 video_play=1" (usually empty)
    li  the last MAX_ITEMS distinct items viewed, most recent first, as 8-hex-character hashes
    lc  categories, most recent first: name US views US item views, entries joined by RS
    lq  the last MAX_QUERIES searches, most recent first, joined by RS
    la  the last cart add not followed by a purchase: time US item ("" when none)
    lh  this session's channel; lf the first touch (utm_source or referrer host)
    ld  sessions by day over the last MAX_DAYS days: "day:count day:count"
(US and RS are the ASCII unit and record separators, removed from names before they are sent.)

Why texts in fields and not one JSON document: the script then reads and writes the state with
string operations in C (HMGET, gmatch, concat) and never decodes or re-encodes a document, and each
field stays short. A JSON codec in the script cost the events endpoint half its throughput. Why not
binary (struct.pack): every reader decodes the unit hash as UTF-8 text (decide, stitch, export).
Why fixed slots for the standard types: the script adds numbers it already matched in one call,
where a "type=count" list cost a gmatch, a table and a concat per visitor on every batch; it touches
the lists (items, categories, searches, custom types) only when the batch brings something for them,
and checks the whole batch against the suppression set in one SMISMEMBER.

How it is written: `live_parts` turns an accepted events batch into the keys and arguments of one
call of the script function `live_fold` (LIVE_FUNCTION_LUA) for all its units (the user id when the
event has one, else the anonymous id: the unit decide answers for). The events request runs it
inside its ingest script, right after the append and only when the batch was appended (one
EVALSHA, one round trip); `live_command` / `live_update` send it on its own (LIVE_LUA). Python does
the parsing and the folding within the batch: a unit's events become "segments" (runs of events
with no idle gap), each sent as one fixed-width record of counts and short lists; the script merges
a segment into the state in constant time, whatever its length.
The script also checks each unit against the project's suppression set (an erased person's late
event brings nothing back, whatever the sender knows) and keeps the index of the last hour's
active visitors (rkeys.live_active) for the units it wrote, dropping those it refused: one place
decides what is kept.

Bounds (a hostile stream cannot grow the state): every counter stops at COUNT_CAP; the categories
of a session are the MAX_CATEGORIES most recent; distinct items are counted against the MAX_ITEMS
most recent (within one batch segment, against all its items); the last MAX_QUERIES searches, each
cut to MAX_QUERY_CHARS; the standard types in their slots,
MAX_CUSTOM_TYPES custom types (MAX_CUSTOM_TYPES - 1 by name, "other" for the rest); the 30-day session count
is at most MAX_DAYS (day, count) pairs; texts are cut to MAX_TEXT_CHARS. The hash gets the decide
unit TTL on every write. The worst case is measured in tests/personalization/test_live_session.py.

Time: an event's own timestamp, never later than now and never earlier than the state's last event
(a late or skewed event is folded in at the last event's time, so the state never runs backwards).
A session ends after `idle_seconds` without events; the client's session_id is not used (a stream
that changes it on every event would otherwise open a session per event).

Opted out: a unit whose hash says do-not-personalize (dnp=1), or that has not consented where the
project requires consent, keeps no state: the script deletes the fields instead of writing them.

Reading: `live_state_parse` (the fields decide got from HGETALL, as a dict) and `session_view` (the
state as of now: a session idle past the boundary reads as ended, the next event opens a new one).
"""

import hashlib
import math
import struct
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from itertools import repeat
from urllib.parse import urlsplit

from redis.exceptions import NoScriptError

from personalization import rkeys
from personalization.rkeys import UNIT_TTL_SECONDS

LIVE_FIELDS = rkeys.UNIT_LIVE_FIELDS
LIVE_FIELD = LIVE_FIELDS[0]  # the numbers: a unit has live state when it has this field
STATE_VERSION = "3"  # "2" states (text lists of types) start afresh once: the script cannot read them
# The numbers of field "ls", in order. The standard event types have fixed slots (page_view is pv,
# search q, add_to_cart ca, remove_from_cart cr, purchase pu, click cl, scroll sc): the script adds
# to them without reading or writing a "type=count" list; only custom types go to field "lt".
STATE_NUMBERS = ("ss", "sl", "ps", "fs", "n", "pv", "ni", "q", "qr", "ca", "cr", "pu", "ck", "ld", "cl", "sc")
_COUNTERS = STATE_NUMBERS[4:]
FIXED_TYPES = {
    "page_view": "pv",
    "search": "q",
    "add_to_cart": "ca",
    "remove_from_cart": "cr",
    "purchase": "pu",
    "click": "cl",
    "scroll": "sc",
}
DEFAULT_IDLE_MINUTES = 30
COUNT_CAP = 9999
MAX_CATEGORIES = 8
MAX_ITEMS = 12
MAX_QUERIES = 3
# Six custom entries: the standard types left the list for fixed slots, and a hostile stream of long
# custom names must keep the hash as small as the eight-type list did (page_view, search and six).
MAX_CUSTOM_TYPES = 6
MAX_DAYS = 30
MAX_TEXT_CHARS = 64
MAX_QUERY_CHARS = 32
MAX_CHANNEL_CHARS = 24
LONG_DWELL_MS = 30_000
HASH_CHARS = 8
# The index of recently active units (rkeys.live_active) keeps this long; the preview's "last hour".
ACTIVE_WINDOW_SECONDS = 3600
US, RS, GS = "\x1f", "\x1e", "\x1d"  # GS: kept out of names too (it ended the script's values once)
_SEPARATORS = str.maketrans("", "", US + RS + GS)
# What live_parts sends the script, all units in one binary argument that `struct.unpack` (built into
# Redis's Lua) reads in C: per unit its id's digest and segment count (_UNIT), per segment (_SEGMENT)
# the numbers "start end n pv q qr ca cr pu ck ld ni cart-time clicks scrolls" as binary integers, then
# nine texts each after its byte length: custom types, items, categories, queries, first query,
# channel, cart op, cart item, items removed from the stored cart. As one text (values ended by a GS,
# the numbers as decimals) the script split it into ~12 strings per unit, matched 15 captures per
# segment and converted each number from text: about a fifth of its instructions on 100-event batches.
_LENGTH = struct.Struct(">H")
_SEGMENT_NUMBERS = struct.Struct(">qq10Iq2I")
_SEGMENT_TEXTS = 9
_UNIT_LUA = ">I2c0I2"
_SEGMENT_LUA = ">i8i8" + "I4" * 10 + "i8I4I4" + "I2c0" * _SEGMENT_TEXTS

_LUA_CONSTANTS = (
    f"local CAP, MAXC, MAXI, MAXQ, MAXT, MAXD, HW = {COUNT_CAP}, {MAX_CATEGORIES}, {MAX_ITEMS}, {MAX_QUERIES},"
    f" {MAX_CUSTOM_TYPES}, {MAX_DAYS}, {HASH_CHARS}\n"
    f"local VERSION, NUMBERS = '{STATE_VERSION}', {len(STATE_NUMBERS)}\n"
    # The pattern of field "ls" and the formats of the argument's records, constants of the script.
    f"local STATE = '^{STATE_VERSION} {'(%S+) ' * (len(STATE_NUMBERS) - 1)}(%S+)$'\n"
    f"local UNIT, SEGMENT, TEXT1 = '{_UNIT_LUA}', '{_SEGMENT_LUA}', 15\n"
    f"local HASH = '{'.' * HASH_CHARS}'\n"  # one item hash: the items list holds them back to back
)

LIVE_FUNCTION_LUA = (
    _LUA_CONSTANTS
    + r"""
-- One function, so the ingest script (ingest/stream.py) can run it in its own call, right after it
-- appends the batch: KB keys and AB arguments of the caller's come first.
-- KEYS: the project's suppression set, its index of active units, the units' hashes.
-- ARGV: now, idle, ttl, consent required (1|0), index window, length of the unit key prefix, and
-- the units' values in one text (V below).
local function live_fold(KB, AB)
-- now and ttl stay texts where they only go back to Redis: a number costs a conversion there.
local now, idle, ttl = tonumber(ARGV[AB + 1]), tonumber(ARGV[AB + 2]), ARGV[AB + 3]
local now_text = ARGV[AB + 1]
local consent_required = ARGV[AB + 4] == '1'
local window, prefix = tonumber(ARGV[AB + 5]), tonumber(ARGV[AB + 6])
local suppressed, active = KEYS[KB + 1], KEYS[KB + 2]
local FIELDS = {'ls', 'lt', 'li', 'lc', 'lq', 'la', 'lh', 'lf', 'ld'}

local function cap(x) if x > CAP then return CAP end; return x end
-- Numbers go back to text with format's %d, not a concat or table.concat of the number: those format
-- it as a float ('%.14g'), about twice the cost, and the script writes ~15 numbers per visitor.
local fmt = string.format
local function capd(x) if x > CAP then x = CAP end; return fmt('%d', x) end

-- fresh entries (most recent first) ahead of the old ones they do not repeat, at most `limit`
local function merge_list(fresh, old, limit)
  if fresh == '' then return old end
  local out, seen = {}, {}
  for v in string.gmatch(fresh, '[^\30]+') do
    if #out < limit and not seen[v] then out[#out + 1] = v; seen[v] = true end
  end
  for v in string.gmatch(old, '[^\30]+') do
    if #out >= limit then break end
    if not seen[v] then out[#out + 1] = v; seen[v] = true end
  end
  return table.concat(out, '\30')
end

-- the custom types (the standard ones have fixed slots in 'ls'): most segments have none
local function merge_types(fresh, old)
  if fresh == '' then return old end
  local names, counts = {}, {}
  for t, c in string.gmatch(old, '([%w_]+)=(%d+)') do names[#names + 1] = t; counts[t] = tonumber(c) end
  for t, c in string.gmatch(fresh, '([%w_]+)=(%d+)') do
    c = tonumber(c)
    if counts[t] then
      counts[t] = cap(counts[t] + c)
    elseif #names < MAXT - 1 then
      names[#names + 1] = t; counts[t] = cap(c)
    else
      -- MAXT - 1 types by name, then one 'other' for every type beyond them
      if counts.other == nil then names[#names + 1] = 'other'; counts.other = 0 end
      counts.other = cap(counts.other + c)
    end
  end
  local out = {}
  for i, t in ipairs(names) do out[i] = t .. '=' .. counts[t] end
  return table.concat(out, ' ')
end

-- returns the merged list and how many of the fresh hashes it already held
local function merge_items(fresh, old)
  if fresh == '' then return old, 0 end
  -- The common case, no fresh item among the old ones, costs a few searches in C (a hit not on a
  -- hash boundary is a false alarm: the gsub below then finds nothing to drop).
  local set, hit = {}, false
  for i = 1, #fresh, HW do
    local h = string.sub(fresh, i, i + HW - 1)
    set[h] = ''
    if not hit and string.find(old, h, 1, true) then hit = true end
  end
  if not hit then return string.sub(fresh .. old, 1, MAXI * HW), 0 end
  -- A returning visitor's batch often repeats an item: one gsub drops the old hashes a fresh one
  -- repeats (in C, a table lookup per hash), not a loop of string.sub and a table in the script.
  local rest = string.gsub(old, HASH, set)
  return string.sub(fresh .. rest, 1, MAXI * HW), (#old - #rest) / HW
end

-- Fresh entries (old counts added) ahead of the old ones they do not repeat, at most MAXC. The old
-- entries a batch does not touch are found with plain searches and carried as one substring, not
-- split into a table and joined again (most batches touch one or two of a visitor's categories).
local function merge_categories(fresh, old)
  if fresh == '' then return old end
  if old == '' then return fresh end
  local rest, out = '\30' .. old .. '\30', {}
  for entry, name, v, iv in string.gmatch(fresh, '(([^\30\31]+)\31(%d+)\31(%d+))') do
    local i, j = string.find(rest, '\30' .. name .. '\31', 1, true)
    if i then
      local ov, oiv, k = string.match(rest, '^(%d+)\31(%d+)()', j + 1)
      rest = string.sub(rest, 1, i) .. string.sub(rest, k + 1)
      entry = fmt('%s\31%d\31%d', name, cap(v + ov), cap(iv + oiv))
    end
    out[#out + 1] = entry
  end
  local room, pos = MAXC - #out, 1
  if room > 0 and #rest > 1 then
    -- the RS that ends the room-th old entry, or the last one
    for _ = 1, room do
      pos = string.find(rest, '\30', pos + 1, true)
      if pos == #rest then break end
    end
    out[#out + 1] = string.sub(rest, 2, pos - 1)
  end
  return table.concat(out, '\30')
end

local function days_bump(raw, ts)
  local day = math.floor(ts / 86400)
  local out, counted = {}, false
  for d, c in string.gmatch(raw, '(%d+):(%d+)') do
    d = tonumber(d)
    if d > day - MAXD then
      c = tonumber(c)
      if d == day then c = cap(c + 1); counted = true end
      out[#out + 1] = fmt('%d:%d', d, c)
    end
  end
  if not counted then out[#out + 1] = fmt('%d:1', day) end
  while #out > MAXD do table.remove(out, 1) end
  return table.concat(out, ' ')
end

local function refines(query, previous)
  for word in string.gmatch(query, '%S+') do
    if string.len(word) >= 3 and string.find(' ' .. previous .. ' ', ' ' .. word .. ' ', 1, true) then return true end
  end
  return false
end

-- One unit: 1 written, 0 opted out (state dropped), -1 its key is not a hash (the other units go on).
local function fold(key, u)
  local f = redis.pcall('HMGET', key, 'dnp', 'consent', 'ls', 'lt', 'li', 'lc', 'lq', 'la', 'lh', 'lf', 'ld')
  if f.err then return -1 end
  if f[1] == '1' or (consent_required and f[2] ~= '1') then
    if f[3] then redis.call('HDEL', key, unpack(FIELDS)) end
    return 0
  end
  -- ss sl ps fs n pv ni q qr ca cr pu ck ld cl sc, as the texts read: a field is converted only
  -- where a segment changes it, and written back as text at once (a number costs a conversion each
  -- way, and most segments change five or six of the sixteen). The times the merge compares are
  -- numbers in ss, sl and fs (nil: unknown).
  local x = {}
  if f[3] then x = {string.match(f[3], STATE)} end
  local lt, li, lc, lq, la, lh, lf, ld
  local fresh = #x ~= NUMBERS
  if not fresh then
    lt, li, lc, lq = f[4] or '', f[5] or '', f[6] or '', f[7] or ''
    la, lh, lf, ld = f[8] or '', f[9] or '', f[10] or '', f[11] or ''
  else  -- no state, or one this script cannot read: start afresh
    x = {'-', '-', '-', '-', '0', '0', '0', '0', '0', '0', '0', '0', '0', '0', '0', '0'}
    lt, li, lc, lq, la, lh, lf, ld = '', '', '', '', '', '', '', ''
  end
  local ss, sl, fs = tonumber(x[1]), tonumber(x[2]), tonumber(x[4])
  for s = 2, #u do
    local g = u[s]  -- the segment's 15 numbers (numbers already), then its texts from g[TEXT1 + 1]
    local start, stop, n, pv, q, qr, ca, cr, pu, ck, dwell, ni, cart_at, cl, sc = unpack(g, 1, TEXT1)
    if sl and start < sl then start = sl end
    if sl and stop < sl then stop = sl end
    if not fs then fs = start; x[4] = fmt('%d', start) end
    if not sl or start - sl > idle then
      if ss then x[3] = sl and fmt('%d', sl) or '-' end
      ss = start; x[1] = fmt('%d', start)
      for i = 5, NUMBERS do x[i] = '0' end
      lt, li, lc, lq, lh = '', '', '', '', ''
      ld = days_bump(ld, start)
    end
    local prior = sl  -- the state's last event before this segment
    sl = stop; x[2] = fmt('%d', stop)
    x[5] = capd(x[5] + n)
    if pv ~= 0 then x[6] = capd(x[6] + pv) end
    local first_query = g[TEXT1 + 5]
    if first_query ~= '' and lq ~= '' then
      local previous = string.match(lq, '^[^\30]+')
      if previous ~= first_query and refines(first_query, previous) then qr = qr + 1 end
    end
    if q ~= 0 then x[8] = capd(x[8] + q) end
    if qr ~= 0 then x[9] = capd(x[9] + qr) end
    if ca ~= 0 then x[10] = capd(x[10] + ca) end
    if cr ~= 0 then x[11] = capd(x[11] + cr) end
    if pu ~= 0 then x[12] = capd(x[12] + pu) end
    if ck ~= 0 then x[13] = capd(x[13] + ck) end
    if dwell ~= 0 then x[14] = capd(x[14] + dwell) end
    if cl ~= 0 then x[15] = capd(x[15] + cl) end
    if sc ~= 0 then x[16] = capd(x[16] + sc) end
    lt = merge_types(g[TEXT1 + 1], lt)
    local found
    li, found = merge_items(g[TEXT1 + 2], li)
    if ni ~= 0 then x[7] = capd(x[7] + ni - found) end
    lc = merge_categories(g[TEXT1 + 3], lc)
    lq = merge_list(g[TEXT1 + 4], lq, MAXQ)
    local channel = g[TEXT1 + 6]
    if lh == '' then lh = channel end
    if lf == '' then lf = channel end
    local op = g[TEXT1 + 7]
    if op == 's' then
      local at = cart_at
      if prior and at < prior then at = prior end
      la = fmt('%d\31%s', at, g[TEXT1 + 8])
    elseif op == 'x' then
      la = ''
    elseif la ~= '' and g[TEXT1 + 9] ~= '' then
      local item = string.match(la, '\31(.*)$')
      if string.find('\30' .. g[TEXT1 + 9] .. '\30', '\30' .. item .. '\30', 1, true) then la = '' end
    end
  end
  -- Only the fields that changed (strings compare by reference in Lua): most segments touch a few.
  local w, values = {'ls', VERSION .. ' ' .. table.concat(x, ' ')}, {lt, li, lc, lq, la, lh, lf, ld}
  for i = 1, 8 do
    if fresh or values[i] ~= f[i + 3] then w[#w + 1] = FIELDS[i + 1]; w[#w + 1] = values[i] end
  end
  redis.call('HSET', key, unpack(w))
  redis.call('EXPIRE', key, ttl)
  return 1
end

local out, written, dropped = {}, {}, {}
-- The units' records come as one binary argument (see live_parts): per unit {digest, segment, ...},
-- each segment the values of one struct.unpack (its numbers as numbers, its texts, the next position).
local blob, pos, units, digests = ARGV[AB + 7], 1, {}, {}
for k = KB + 3, #KEYS do
  local digest, n
  digest, n, pos = struct.unpack(UNIT, blob, pos)
  local u = {digest}
  for s = 2, n + 1 do
    local g = {struct.unpack(SEGMENT, blob, pos)}
    pos = g[#g]
    u[s] = g
  end
  units[#units + 1] = u
  digests[#digests + 1] = digest
end
-- An erased person's late event must not bring their state back, whatever snapshot the sender had.
-- One SMISMEMBER for the batch: a command from the script costs about as much as a small fold.
local erased = redis.call('SMISMEMBER', suppressed, unpack(digests))
for k = KB + 3, #KEYS do
  local i = k - KB - 2
  local unit = string.sub(KEYS[k], prefix + 1)
  local result = 0
  if erased[i] == 0 then result = fold(KEYS[k], units[i]) end
  out[#out + 1] = result
  if result == 1 then
    written[#written + 1] = now_text; written[#written + 1] = unit
  elseif result == 0 then
    dropped[#dropped + 1] = unit
  end
end
if #written > 0 then redis.call('ZADD', active, unpack(written)) end
if #dropped > 0 then redis.call('ZREM', active, unpack(dropped)) end
redis.call('ZREMRANGEBYSCORE', active, '-inf', fmt('(%d', now - window))
redis.call('EXPIRE', active, window + 60)
return out
end
"""
)
LIVE_LUA = LIVE_FUNCTION_LUA + "return live_fold(0, 0)\n"

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
    """A search as the state keeps it: lower case, single spaces, cut to MAX_QUERY_CHARS (split()
    also drops the separators the state uses, which Python counts as white space)."""
    return " ".join(query.lower().split())[:MAX_QUERY_CHARS]


def _channel(properties: dict) -> str:
    """The entry channel a page view says it came from: utm_source, else the referrer's host (the
    decide context classifies it; the state keeps only this short text)."""
    source = properties.get("utm_source")
    if isinstance(source, str) and source.strip():
        return " ".join(source.lower().split())[:MAX_CHANNEL_CHARS]
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
    return host.removeprefix("www.")[:MAX_CHANNEL_CHARS].translate(_SEPARATORS)


def _refines(query: str, previous: str) -> bool:
    words = f" {previous} "
    return any(len(word) >= 3 and f" {word} " in words for word in query.split())


@lru_cache(maxsize=8192)  # item ids and category names recur across a shop's events
def _clean(value: str) -> str:
    return value[:MAX_TEXT_CHARS].translate(_SEPARATORS)


def _text(value) -> str:
    return _clean(value) if value.__class__ is str else ""


@lru_cache(maxsize=8192)  # the hash of an item id as sent: one cached call per page view, not two
def _item_key(value: str) -> str:
    item = _clean(value)
    return item_hash(item) if item else ""


@lru_cache(maxsize=8192)  # a shop's page URLs recur: one cached call per page view, not four string scans
def _checkout(url: str) -> bool:
    url = url.lower()
    return "/checkout" in url or "/cart" in url or "/basket" in url


def _seconds(ts, now: float) -> int:
    try:
        return int(min(datetime.fromisoformat(ts).timestamp(), now))
    except (TypeError, ValueError):  # no time, or not one (events a test or import sends unvalidated)
        return int(now)


def _unit_args(events: list[dict], times: list[int | None], now: float, idle: int) -> list:
    """A unit's events (in batch order) as the script's segment records (_SEGMENT, one bytes each). A
    segment is a run of events with no idle gap inside: what the
    script merges at once (which of them opens a session it decides: it knows the state's last event).

    One loop with the segment in local variables, no object per segment or method call per event:
    this runs for every accepted event in the events request (the live update's share of its cost)."""
    out: list[bytes] = []
    segments = last = 0
    types: dict[str, int] = {}
    items: dict[str, None] = {}  # insertion order is recency: an item seen again moves last
    categories: dict[str, list[int]] = {}
    queries: dict[str, None] = {}
    removed: list[str] = []
    n = pv = q = qr = ca = cr = pu = ck = ld = cl = sc = 0
    start = 0
    query = first_query = channel = op = cart_item = ""
    cart_at = 0
    latest = int(now)
    for event, ts in zip(events, times, strict=True):
        if ts is None:
            ts = _seconds(event.get("ts"), now)
        elif ts > latest:
            ts = latest
        if segments and ts < last:
            ts = last
        if not segments or ts - last > idle:
            if segments:
                numbers = (start, last, n, pv, q, qr, ca, cr, pu, ck, ld, len(items), cart_at, cl, sc)
                out.append(
                    _segment(numbers, types, items, categories, queries, first_query, channel, op, cart_item, removed)
                )
            segments += 1
            start = ts
            types, items, categories, queries, removed = {}, {}, {}, {}, []
            n = pv = q = qr = ca = cr = pu = ck = ld = cl = sc = 0
            query = first_query = channel = op = cart_item = ""
            cart_at = 0
        last = ts
        n += 1
        etype = event["type"]
        if etype == "page_view":
            props = event.get("properties") or {}
            pv += 1
            url = props.get("url")
            if url.__class__ is str and _checkout(url):
                ck += 1
            dwell = props.get("dwell_ms")
            if dwell is not None and isinstance(dwell, int | float) and math.isfinite(dwell) and dwell >= LONG_DWELL_MS:
                ld += 1
            h = props.get("item")
            h = _item_key(h) if h.__class__ is str else ""
            if h:
                items.pop(h, None)
                items[h] = None
            category = props.get("category")
            if category.__class__ is str and category:
                category = _clean(category)
                entry = categories.pop(category, None) or [0, 0]
                entry[0] += 1
                entry[1] += bool(h)
                categories[category] = entry
            # Most page views name no channel (an empty referrer): _channel would find none.
            if not channel and ("utm_source" in props or props.get("referrer")):
                channel = _channel(props)
        elif etype == "search":
            q += 1
            text = (event.get("properties") or {}).get("query")
            text = query_normal(text) if text.__class__ is str else ""
            if text:
                if not query:
                    first_query = text  # the script checks it against the state's last search
                elif text != query and _refines(text, query):
                    qr += 1
                query = text
                queries.pop(text, None)
                queries[text] = None
        elif etype == "add_to_cart":
            ca += 1
            op, cart_at, cart_item = "s", ts, _text((event.get("properties") or {}).get("item"))
        elif etype == "remove_from_cart":
            cr += 1
            item = _text((event.get("properties") or {}).get("item"))
            if op == "s" and cart_item == item:
                op = "x"
            elif not op and len(removed) < MAX_ITEMS:
                removed.append(item)
        elif etype == "purchase":
            pu += 1
            op = "x"
        elif etype == "click":
            cl += 1
        elif etype == "scroll":
            sc += 1
        elif etype in types:
            types[etype] += 1
        elif len(types) < 2 * MAX_CUSTOM_TYPES:
            types[etype] = 1
        else:  # the script keeps MAX_CUSTOM_TYPES - 1 by name anyway
            types["other"] = types.get("other", 0) + 1
    if segments:
        numbers = (start, last, n, pv, q, qr, ca, cr, pu, ck, ld, len(items), cart_at, cl, sc)
        out.append(_segment(numbers, types, items, categories, queries, first_query, channel, op, cart_item, removed))
    return out


def _recent(entries: dict, limit: int) -> Iterable:
    """The last `limit` keys (or items) of an insertion-ordered dict view, most recent first: most
    segments hold fewer, and then no list is built."""
    return reversed(entries) if len(entries) <= limit else reversed(list(entries)[-limit:])


def _segment(
    numbers: tuple,
    types: dict,
    items: dict,
    categories: dict,
    queries: dict,
    first_query: str,
    channel: str,
    op: str,
    item: str,
    removed: list,
) -> bytes:
    """One segment record: its numbers, then its texts each after its byte length (most are empty)."""
    texts = (
        " ".join(f"{t}={c}" for t, c in types.items()) if types else "",
        "".join(_recent(items, MAX_ITEMS)),
        RS.join(f"{name}{US}{v}{US}{iv}" for name, (v, iv) in _recent(categories.items(), MAX_CATEGORIES)),
        RS.join(_recent(queries, MAX_QUERIES)),
        first_query,
        channel,
        op,
        item,
        RS.join(removed),
    )
    out = [_SEGMENT_NUMBERS.pack(*numbers)]
    for text in texts:
        if text:
            data = text.encode()
            out += (_LENGTH.pack(len(data)), data)
        else:
            out.append(_EMPTY)
    return b"".join(out)


_EMPTY = _LENGTH.pack(0)


# Events that say nothing about the visitor's intent: exposures are decide's own echo, identify and
# consent are bookkeeping. Keeping them out also keeps decide's exposures from renewing a session.
_NOT_BEHAVIOR = {"exposure", "identify", "consent"}


def live_parts(
    *,
    project_id: int,
    events: Iterable[dict],
    now: float,
    digest: Callable[[str], str],
    settings: LiveSettings | None = None,
    seconds: list[int] | None = None,
) -> tuple[list[str], list] | None:
    """The keys and arguments of `live_fold` (LIVE_FUNCTION_LUA) that fold accepted, validated events
    into their units' live state and the index of active units, or None when no event concerns a
    unit. `digest` gives the keyed digest of an id, as the project's suppression set keeps erased
    ones: the script skips those units. `seconds`: the events' times in epoch seconds, as
    batch_validate gives them (BatchResult.seconds), else each event's "ts" is parsed.

    One call for the whole batch, not one per unit: a call's fixed cost (dispatch, arguments, the
    reply) is paid once. Its keys are all the project's (one Redis Cluster slot: rkeys)."""
    by_unit: dict[str, tuple[list[dict], list[int | None]]] = {}
    for event, ts in zip(events, seconds or repeat(None), strict=False):  # repeat is endless
        unit = event.get("user_id") or event.get("anonymous_id")
        if not unit or event["type"] in _NOT_BEHAVIOR:
            continue
        pair = by_unit.get(unit)
        if pair is None:
            by_unit[unit] = pair = ([], [])
        pair[0].append(event)
        pair[1].append(ts)
    if not by_unit:
        return None
    settings = settings or LiveSettings()
    idle = settings.idle_seconds
    keys = [rkeys.suppressed(project_id), rkeys.live_active(project_id)]
    keys += [rkeys.unit(project_id, unit) for unit in by_unit]
    args = [int(now), idle, UNIT_TTL_SECONDS, int(settings.require_consent)]
    args += [ACTIVE_WINDOW_SECONDS, len(rkeys.unit(project_id, ""))]
    values: list[bytes] = []
    for unit, (unit_events, times) in by_unit.items():
        records = _unit_args(unit_events, times, now, idle)
        key = digest(unit).encode()
        values += (_LENGTH.pack(len(key)), key, _LENGTH.pack(len(records)), *records)
    args.append(b"".join(values))
    return keys, args


def live_command(parts: tuple[list[str], list] | None) -> tuple | None:
    """`live_parts` as one EVALSHA of LIVE_LUA on its own (the events request runs `live_fold`
    inside its ingest script instead). Send it with `live_apply`."""
    if parts is None:
        return None
    keys, args = parts
    return ("EVALSHA", LIVE_SHA, len(keys), *keys, *args)


def live_apply(client, command: tuple | None) -> list:
    """Send the command on its own: 1 (written), 0 (opted out or erased) or -1 (not a hash) per unit."""
    if command is None:
        return []
    try:
        return client.execute_command(*command)
    except NoScriptError:
        # Redis did not know the script yet (a restart, a new server): it ran nothing, so send it again.
        client.script_load(LIVE_LUA)
        return client.execute_command(*command)


def live_update(
    client,
    *,
    project_id: int,
    events: Iterable[dict],
    now: float,
    digest: Callable[[str], str],
    settings: LiveSettings | None = None,
) -> list:
    """Fold accepted events into the live state and the index of active units in a round trip of
    its own. Returns the script's replies (1 written, 0 opted out or erased, -1 not a hash), one per unit."""
    parts = live_parts(project_id=project_id, events=events, now=now, digest=digest, settings=settings)
    return live_apply(client, live_command(parts))


def live_state_parse(user: dict) -> dict | None:
    """The state from a unit hash as decide holds it (str → str), as a dict of short names (ss sl ps
    fs n pv ni q qr ca cr pu ck ld cl sc, t [[type, count]]: the standard types that occurred, then
    the custom ones, it the items' hashes, c [[name, views, item views]], lq, ac [time, item] or
    None, ch, ft, sd [[day, count]]), or None when there is none or it is unreadable (then decide
    answers as for a visitor without live state)."""
    raw = user.get(LIVE_FIELD)
    if not raw or not raw.startswith(STATE_VERSION + " "):
        return None
    numbers = raw.split(" ")
    if len(numbers) != len(STATE_NUMBERS) + 1:
        return None
    try:
        ss, sl, ps, fs, *counts = [None if v == "-" else int(v) for v in numbers[1:]]
        state = dict(zip(_COUNTERS, counts, strict=True))
        types = [[name, state[slot]] for name, slot in FIXED_TYPES.items() if state[slot]]
        types += [[name, int(count)] for name, _, count in (p.partition("=") for p in user.get("lt", "").split())]
        categories = []
        for entry in user.get("lc", "").split(RS):
            if entry:
                name, views, item_views = entry.split(US)
                categories.append([name, int(views), int(item_views)])
        cart = user.get("la", "")
        if cart:
            at, _, item = cart.partition(US)
            cart = [int(at), item]
        days = [[int(d), int(c)] for d, _, c in (p.partition(":") for p in user.get("ld", "").split())]
    except (ValueError, TypeError):
        return None
    queries = user.get("lq", "")
    state.update(
        ss=ss,
        sl=sl,
        ps=ps,
        fs=fs,
        t=types,
        it=user.get("li", ""),
        c=categories,
        lq=queries.split(RS) if queries else [],
        ac=cart or None,
        ch=user.get("lh", ""),
        ft=user.get("lf", ""),
        sd=days,
    )
    return state


def live_state_fields(state: dict) -> dict[str, str]:
    """A state dict (as `live_state_parse` returns it) as the unit hash's fields. Pure."""
    numbers = [state.get(name) for name in STATE_NUMBERS[:4]]
    numbers += [state.get(name) or 0 for name in _COUNTERS]
    cart = state.get("ac")
    return {
        "ls": " ".join([STATE_VERSION, *("-" if v is None else str(int(v)) for v in numbers)]),
        "lt": " ".join(f"{name}={count}" for name, count in _pairs(state.get("t")) if name not in FIXED_TYPES),
        "li": state.get("it") or "",
        "lc": RS.join(f"{name}{US}{v}{US}{iv}" for name, v, iv in _pairs(state.get("c"))),
        "lq": RS.join(_pairs(state.get("lq"))),
        "la": f"{int(cart[0])}{US}{cart[1]}" if cart else "",
        "lh": state.get("ch") or "",
        "lf": state.get("ft") or "",
        "ld": " ".join(f"{day}:{count}" for day, count in _pairs(state.get("sd"))),
    }


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


# Writes a merged state only over the state it was merged from (its "ls" field, which every fold
# changes: the last event's time and the event count): an events request that updated the user's
# state meanwhile makes it answer -1 (read again and merge again). A user who opted out, or has not
# consented where the project requires it (ARGV[1]), keeps none (0).
LIVE_STITCH_LUA = """
local flags = redis.call('HMGET', KEYS[1], 'dnp', 'consent', 'ls')
if flags[1] == '1' or (ARGV[1] == '1' and flags[2] ~= '1') then return 0 end
if (flags[3] or '') ~= ARGV[2] then return -1 end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
return 1
"""


def _pairs(value) -> list:
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
