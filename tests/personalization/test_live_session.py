"""The live session state against the real test Redis: what the events request writes is what decide's
HGETALL reads, sessions open and close on idle time, opted-out visitors keep nothing, and hostile
streams keep the field bounded."""

from datetime import UTC, datetime

import orjson
import pytest

from personalization import redis_client, rkeys
from personalization.decide.units import UNIT_TTL_SECONDS, units_stitch
from personalization.ingest.stream import live_digest
from personalization.people import live_session as ls

NOW = 1_780_000_000.0  # a fixed clock: the script takes "now" from its caller
PROJECT = 7


def _event(etype: str, minutes: float = 0, unit: str = "anon-1", user: str | None = None, **properties) -> dict:
    """An event as the validator accepts it (`ts` ISO 8601), `minutes` after NOW."""
    return {
        "type": etype,
        "anonymous_id": unit,
        "user_id": user,
        "session_id": "s",
        "ts": datetime.fromtimestamp(NOW + minutes * 60, UTC).isoformat(),
        "properties": properties,
    }


def _send(events, now_minutes: float = 0, settings: ls.LiveSettings | None = None) -> list:
    return ls.live_update(
        redis_client.worker(),
        project_id=PROJECT,
        events=events,
        now=NOW + now_minutes * 60,
        digest=live_digest(PROJECT),
        settings=settings,
    )


def _decide_reads(unit: str = "anon-1") -> dict:
    """The unit hash as decide holds it after its HGETALL (str → str)."""
    raw = redis_client.worker().hgetall(rkeys.unit(PROJECT, unit))
    return {k.decode(): v.decode() for k, v in raw.items()}


def _view(unit: str = "anon-1", now_minutes: float = 0, idle_minutes: int = 30) -> ls.SessionView:
    state = ls.live_state_parse(_decide_reads(unit))
    return ls.session_view(state, now=NOW + now_minutes * 60, idle_seconds=idle_minutes * 60)


def test_live_update__a_browsing_batch__is_read_back_by_decide_as_this_sessions_facts():
    events = [
        _event("page_view", 0, url="/", referrer="https://www.google.com/search?q=shoes"),
        _event("page_view", 1, url="/p/ts-1", category="trail-shoes", item="ts-1", dwell_ms=45_000),
        _event("page_view", 2, url="/p/ts-2", category="trail-shoes", item="ts-2"),
        _event("page_view", 3, url="/p/ts-1", category="trail-shoes", item="ts-1"),
        _event("page_view", 4, url="/c/rain-jackets", category="rain-jackets"),
        _event("search", 5, query="Trail  Shoes"),
        _event("search", 5.5, query="trail shoes waterproof"),
        _event("add_to_cart", 6, item="ts-2", category="trail-shoes"),
        _event("exposure", 6, experience="banner"),
    ]
    assert _send(events, now_minutes=6) == [1]

    view = _view(now_minutes=10)
    assert not view.ended and view.known
    assert view.started == NOW and view.last == NOW + 360
    assert view.events == 8  # the exposure is decide's own echo, not behavior
    assert view.events_by_type == {"page_view": 5, "search": 2, "add_to_cart": 1}
    assert view.page_views == 5
    assert view.items_viewed == 2  # ts-1 twice counts once
    assert view.category_views == {"rain-jackets": 1, "trail-shoes": 3}
    assert view.category_item_views == {"rain-jackets": 0, "trail-shoes": 3}
    assert list(view.category_views) == ["rain-jackets", "trail-shoes"]  # most recent first
    assert view.searches == 2 and view.search_refinements == 1
    assert view.queries == ("trail shoes waterproof", "trail shoes")
    assert view.cart_adds == 1 and view.purchases == 0
    assert view.cart_open == (NOW + 360, "ts-2")
    assert view.minutes_since_cart_add == pytest.approx(4)
    assert view.long_dwell_views == 1
    assert view.first_touch == "google.com" and view.session_channel == "google.com"
    assert view.first_seen == NOW and view.sessions_30d == 1
    assert not view.returning and view.days_since_last_session is None


def test_live_update__one_script_per_batch__and_the_user_id_is_the_unit_when_given():
    events = [
        _event("page_view", 0, unit="a", url="/"),
        _event("page_view", 0, unit="b", url="/"),
        _event("page_view", 1, unit="a", user="u-1", url="/account"),
        _event("page_view", 2, unit="a", url="/"),
    ]
    command = ls.live_command(
        ls.live_parts(project_id=PROJECT, events=events, now=NOW + 120, digest=live_digest(PROJECT))
    )
    units = (rkeys.unit(PROJECT, u) for u in ("a", "b", "u-1"))
    index = (rkeys.suppressed(PROJECT), rkeys.live_active(PROJECT))
    assert command[:8] == ("EVALSHA", ls.LIVE_SHA, 5, *index, *units)
    assert _send(events, now_minutes=2) == [1, 1, 1]
    assert _view("a", 2).page_views == 2 and _view("b", 2).page_views == 1 and _view("u-1", 2).page_views == 1


def test_live_update__a_unit_whose_key_is_not_a_hash__the_others_are_still_updated():
    redis_client.worker().set(rkeys.unit(PROJECT, "a"), "not a hash")
    events = [_event("page_view", 0, unit="a", url="/"), _event("page_view", 0, unit="b", url="/")]
    assert _send(events) == [-1, 1]
    assert redis_client.worker().get(rkeys.unit(PROJECT, "a")) == b"not a hash"
    assert _view("b").page_views == 1


def test_live_update__an_erased_units_id_in_the_suppression_set__gets_no_state_the_others_do():
    # Checked in the script: a sender whose snapshot does not know of the erasure yet still keeps nothing.
    redis_client.worker().sadd(rkeys.suppressed(PROJECT), "digest-of-a")
    events = [_event("page_view", 0, unit="a", url="/"), _event("page_view", 0, unit="b", url="/")]
    command = ls.live_command(
        ls.live_parts(project_id=PROJECT, events=events, now=NOW, digest=lambda unit: f"digest-of-{unit}")
    )
    assert ls.live_apply(redis_client.worker(), command) == [0, 1]
    assert not redis_client.worker().exists(rkeys.unit(PROJECT, "a"))
    assert _view("b").page_views == 1


def test_live_update__after_the_idle_boundary__a_new_session_opens_and_the_old_one_is_remembered():
    _send([_event("page_view", 0, url="/"), _event("add_to_cart", 1, item="tent-2")], now_minutes=1)
    # 29 minutes later: the same session
    _send([_event("page_view", 30, url="/c/tents", category="tents")], now_minutes=30)
    assert _view(now_minutes=30).page_views == 2 and _view(now_minutes=30).sessions_30d == 1
    # idle for 45 minutes: decide sees the session ended before any new event arrives
    ended = _view(now_minutes=75)
    assert ended.ended and ended.returning
    assert ended.cart_adds == 1  # the ended session's counters, for its journey stage
    assert ended.days_since_last_session == pytest.approx(45 / 1440)
    # the next event opens session two
    _send([_event("page_view", 75, url="/")], now_minutes=75)
    view = _view(now_minutes=76)
    assert not view.ended and view.returning
    assert view.started == NOW + 75 * 60 and view.page_views == 1 and view.cart_adds == 0
    assert view.sessions_30d == 2
    assert view.days_since_last_session == pytest.approx(45 / 1440)
    assert view.cart_open == (NOW + 60, "tent-2")  # not followed by a purchase: carried over
    assert view.minutes_since_cart_add == pytest.approx(75)
    assert view.first_seen == NOW


def test_live_update__the_idle_boundary_is_the_projects_setting():
    short = ls.LiveSettings(idle_minutes=10)
    _send([_event("page_view", 0, url="/")], settings=short)
    _send([_event("page_view", 11, url="/")], now_minutes=11, settings=short)
    assert _view(now_minutes=11, idle_minutes=10).sessions_30d == 2
    assert _view(now_minutes=11, idle_minutes=10).page_views == 1


def test_live_update__a_purchase_or_removing_the_item__closes_the_open_cart():
    _send([_event("add_to_cart", 0, item="a"), _event("remove_from_cart", 1, item="a")], now_minutes=1)
    view = _view(now_minutes=1)
    assert view.cart_open is None and view.cart_adds == 1 and view.cart_removes == 1
    _send([_event("add_to_cart", 2, item="b"), _event("remove_from_cart", 3, item="other")], now_minutes=3)
    assert _view(now_minutes=3).cart_open == (NOW + 120, "b")
    _send([_event("purchase", 4, items=["b"])], now_minutes=4)
    view = _view(now_minutes=4)
    assert view.cart_open is None and view.purchases == 1 and view.minutes_since_cart_add is None


def test_live_update__sessions_older_than_30_days__leave_the_count():
    day = 1440
    for n in range(5):
        _send([_event("page_view", n * 10 * day, url="/")], now_minutes=n * 10 * day)
    assert _view(now_minutes=40 * day).sessions_30d == 3  # days 20, 30, 40
    assert _view(now_minutes=40 * day).days_since_last_session == pytest.approx(10)


def test_live_update__future_and_late_timestamps__never_run_the_state_backwards():
    _send([_event("page_view", 10, url="/")], now_minutes=10)
    _send([_event("page_view", 5, url="/"), _event("page_view", 500, url="/")], now_minutes=12)
    view = _view(now_minutes=12)
    assert view.last == NOW + 12 * 60  # the future event is taken at "now", the late one at the last event
    assert view.page_views == 3 and view.sessions_30d == 1


@pytest.mark.parametrize(
    ("fields", "settings", "kept"),
    [
        ({"dnp": "1"}, None, False),
        ({}, ls.LiveSettings(require_consent=True), False),
        ({"consent": "1"}, ls.LiveSettings(require_consent=True), True),
        ({}, None, True),
    ],
)
def test_live_update__opted_out_or_not_consented__keeps_no_state(fields, settings, kept):
    key = rkeys.unit(PROJECT, "anon-1")
    client = redis_client.worker()
    client.hset(key, mapping={"ls": '{"v":1,"n":3}', "a:banner": "b", **fields})
    assert _send([_event("page_view", 0, url="/")], settings=settings) == [int(kept)]
    stored = _decide_reads()
    assert ("ls" in stored) is kept
    assert stored["a:banner"] == "b"  # the rest of the hash is not the script's


def test_live_update__redis_forgot_the_script__loads_it_and_applies_each_batch_once():
    _send([_event("page_view", 0, url="/")])
    redis_client.worker().script_flush()
    assert _send([_event("page_view", 1, url="/"), _event("page_view", 1, unit="b", url="/")], 1) == [1, 1]
    assert _view(now_minutes=1).page_views == 2 and _view("b", 1).page_views == 1


def test_live_update__sets_the_unit_ttl():
    _send([_event("page_view", 0, url="/")])
    ttl = redis_client.worker().ttl(rkeys.unit(PROJECT, "anon-1"))
    assert UNIT_TTL_SECONDS - 5 <= ttl <= UNIT_TTL_SECONDS


def test_live_state_parse__missing_or_unreadable__is_no_state():
    assert ls.live_state_parse({}) is None
    assert ls.live_state_parse({"ls": "{not json"}) is None
    assert ls.live_state_parse({"ls": '{"v":99}'}) is None
    assert ls.session_view(None, now=NOW).known is False
    redis_client.worker().hset(rkeys.unit(PROJECT, "anon-1"), "ls", "{garbage")
    _send([_event("page_view", 0, url="/")])  # an unreadable field is started afresh, not an error
    assert _view().page_views == 1


def test_live_update__a_state_of_the_previous_format__starts_afresh_once():
    # Format "2" kept event types as a "type=count" list; its numbers do not fit the fixed slots.
    old = {"ls": f"2 {int(NOW) - 600} {int(NOW) - 60} - {int(NOW) - 600} 7 5 2 1 0 1 0 0 0 0", "lt": "page_view=5 x=2"}
    redis_client.worker().hset(rkeys.unit(PROJECT, "anon-1"), mapping=old)
    assert ls.live_state_parse(_decide_reads()) is None  # decide answers as for a visitor without state
    assert _send([_event("page_view", 0, url="/"), _event("click", 0), _event("scroll", 0), _event("x", 0)]) == [1]
    view = _view()
    assert view.events == 4 and view.started == NOW
    assert view.events_by_type == {"page_view": 1, "click": 1, "scroll": 1, "x": 1}
    assert _decide_reads()["lt"] == "x=1"  # the old list is replaced, the standard types are in "ls"
    assert _send([_event("click", 1), _event("x", 1)], now_minutes=1) == [1]
    assert _view(now_minutes=1).events_by_type == {"page_view": 1, "click": 2, "scroll": 1, "x": 2}


def _memory(unit: str = "anon-1") -> int:
    return redis_client.worker().memory_usage(rkeys.unit(PROJECT, unit), samples=0)


def _typical_session(unit: str) -> list[dict]:
    events = [_event("page_view", 0, unit=unit, url="/", referrer="https://www.instagram.com/")]
    for n in range(6):
        events.append(_event("page_view", n + 1, unit=unit, url=f"/p/{n}", category="trail-shoes", item=f"ts-{n}"))
    events += [_event("page_view", 8, unit=unit, url="/c/rain-jackets", category="rain-jackets")]
    events += [_event("search", 9, unit=unit, query="waterproof trail shoes men")]
    events += [_event("add_to_cart", 10, unit=unit, item="ts-3"), _event("click", 10, unit=unit, target="#buy")]
    return events


def test_live_state__memory_of_a_typical_visitor_with_decide_fields__is_under_2_kb():
    client = redis_client.worker()
    client.hset(
        rkeys.unit(PROJECT, "anon-1"),
        mapping={"segs": "c3:2 intent:gear", "attr:plan": "pro", "a:banner": "b", "a:hero": "~hg"},
    )
    _send(_typical_session("anon-1"), now_minutes=10)
    size = _memory()
    print(f"\nMEMORY USAGE of a typical visitor's unit hash with live state: {size} bytes")
    assert size <= 2048


def test_live_update__categories_and_items_across_batches__merge_most_recent_first_within_bounds():
    # Eight categories in the state; a later batch views an old one again and a new one: both move
    # first with their counts added, the oldest falls out. Items: a repeat counts once, new ones count.
    _send([_event("page_view", n / 10, url="/c", category=f"c{n}", item=f"i{n}") for n in range(8)])
    _send(
        [
            _event("page_view", 1, url="/c", category="c2", item="i2"),
            _event("page_view", 1, url="/c", category="new", item="i9"),
            _event("page_view", 1, url="/c", category="c2"),
        ],
        now_minutes=1,
    )
    view = _view(now_minutes=1)
    assert list(view.category_views) == ["c2", "new", "c7", "c6", "c5", "c4", "c3", "c1"]
    assert view.category_views["c2"] == 3 and view.category_item_views["c2"] == 2
    assert view.category_views["new"] == 1 and view.category_views["c1"] == 1
    assert view.items_viewed == 9  # i0..i7, then i2 again and i9
    assert view.events_by_type == {"page_view": 11}


def test_live_state__10000_distinct_categories_items_and_searches__stay_bounded():
    long = "x" * 200  # longer than any kept text
    for batch in range(10):
        events = []
        for n in range(batch * 1000, batch * 1000 + 1000):
            kind = n % 3
            if kind == 0:
                events.append(_event("page_view", 1, url="/c", category=f"cat-{n}-{long}", item=f"item-{n}-{long}"))
            elif kind == 1:
                events.append(_event("search", 1, query=f"q{n} {long}"))
            else:
                events.append(_event(f"custom_type_{n}_{long[:50]}", 1))
        _send(events, now_minutes=1)
    raw = "".join(v for k, v in _decide_reads().items() if k in ls.LIVE_FIELDS)
    view = _view(now_minutes=1)
    assert len(view.category_views) == ls.MAX_CATEGORIES
    assert all(len(name) <= ls.MAX_TEXT_CHARS for name in view.category_views)
    assert len(view.queries) == ls.MAX_QUERIES and all(len(q) <= ls.MAX_QUERY_CHARS for q in view.queries)
    custom = {name: count for name, count in view.events_by_type.items() if name not in ls.FIXED_TYPES}
    assert len(custom) == ls.MAX_CUSTOM_TYPES and custom["other"] > 3000
    assert view.events_by_type["page_view"] == view.page_views and view.events_by_type["search"] == view.searches
    assert view.events == 10_000 - 1 == ls.COUNT_CAP  # counters stop at the cap
    print(f"\nhostile session: field {len(raw)} characters, MEMORY USAGE {_memory()} bytes")
    assert len(raw) <= 2048 and _memory() <= 2048


def test_live_state__100000_events_with_a_new_session_id_each__stay_one_bounded_session():
    sizes = []
    for batch in range(100):
        events = [_event("page_view", 1, url=f"/p/{n}", item=f"i{n}", category=f"c{n % 50}") for n in range(1000)]
        for n, event in enumerate(events):
            event["session_id"] = f"s-{batch}-{n}"
        _send(events, now_minutes=1)
        sizes.append(_memory())
    view = _view(now_minutes=1)
    assert view.sessions_30d == 1
    assert view.events == view.page_views == ls.COUNT_CAP and view.items_viewed == ls.COUNT_CAP
    assert max(sizes[10:]) - min(sizes[10:]) <= 64  # no growth once the caps are reached (names differ in length)
    print(f"\n100,000 events for one visitor: MEMORY USAGE {sizes[-1]} bytes")
    assert sizes[-1] <= 2048


# --- login: the anonymous id's state merged into the user id's ---------------------------------------

DAY = int(NOW // 86400)


def test_live_state_merge__only_one_side_has_state__it_is_taken_whole():
    state = {"v": 1, "fs": NOW, "ca": 1, "sd": [[DAY, 1]]}
    assert ls.live_state_merge(state, None) == state
    assert ls.live_state_merge(None, state) == state
    assert ls.live_state_merge(None, None) is None


def test_live_state_merge__both__user_session_wins_first_touch_from_the_earlier_id_days_unioned():
    anonymous = {"v": 1, "fs": NOW - 86400 * 3, "ft": "newsletter", "ss": NOW - 600, "ca": 1, "ac": [NOW - 600, "x"]}
    anonymous["sd"] = [[DAY - 3, 1], [DAY, 1]]
    user = {"v": 1, "fs": NOW - 60, "ft": "google.com", "ss": NOW - 60, "pv": 2, "sd": [[DAY, 2]]}
    merged = ls.live_state_merge(anonymous, user)
    # The user's session is kept as a whole (no cart from the anonymous session mixed into it) …
    assert merged["ss"] == NOW - 60 and merged["pv"] == 2 and "ca" not in merged and "ac" not in merged
    # … while first seen / first touch are the anonymous id's, seen three days earlier …
    assert (merged["fs"], merged["ft"]) == (NOW - 86400 * 3, "newsletter")
    # … and today's login session, counted under both ids, counts once (the larger count).
    assert merged["sd"] == [[DAY - 3, 1], [DAY, 2]]
    assert user["fs"] == NOW - 60  # the inputs are left as they were


def test_live_state_merge__user_seen_first__keeps_its_first_touch_and_days_stay_capped():
    anonymous = {"v": 1, "fs": NOW, "ft": "newsletter", "sd": [[DAY - n, 1] for n in range(ls.MAX_DAYS)]}
    user = {"v": 1, "fs": NOW - 86400 * 40, "sd": [[DAY - 35, 1], [DAY - 40, 1]]}
    merged = ls.live_state_merge(anonymous, user)
    assert merged["fs"] == NOW - 86400 * 40 and "ft" not in merged
    assert len(merged["sd"]) == ls.MAX_DAYS and merged["sd"][-1] == [DAY, 1]


def _snapshot_published(require_consent: bool = False) -> None:
    # units_stitch reads the project's consent setting from its published decide snapshot
    redis_client.worker().set(rkeys.snapshot(PROJECT), orjson.dumps({"privacy": {"require_consent": require_consent}}))


def test_units_stitch__real_redis__anonymous_cart_reaches_the_user_and_first_seen_is_the_earlier():
    _snapshot_published()
    _send([_event("page_view", -120, unit="anon-9", url="/", referrer="https://news.example.org/")], -120)
    _send([_event("add_to_cart", -1, unit="anon-9", item="boot-1")], -1)
    units_stitch(project_id=PROJECT, pairs=[("anon-9", "user-9")])
    view = _view("user-9")
    assert view.cart_adds == 1 and view.cart_open == (NOW - 60, "boot-1")
    assert view.first_seen == NOW - 7200 and view.first_touch == "news.example.org"

    # A user who already has a session keeps it; the earlier first visit still comes over.
    _send([_event("page_view", -180, unit="anon-8", url="/", referrer="https://news.example.org/")], -180)
    _send([_event("page_view", 0, unit="anon-x", user="user-8", url="/p/1", item="p1")])
    units_stitch(project_id=PROJECT, pairs=[("anon-8", "user-8")])
    view = _view("user-8")
    assert view.page_views == 1 and view.items_viewed == 1 and view.cart_adds == 0
    assert view.first_seen == NOW - 10800 and view.first_touch == "news.example.org"


def test_units_stitch__user_opted_out__gets_no_state():
    _snapshot_published()
    _send([_event("add_to_cart", 0, unit="anon-7", item="x")])
    redis_client.worker().hset(rkeys.unit(PROJECT, "user-7"), "dnp", "1")
    units_stitch(project_id=PROJECT, pairs=[("anon-7", "user-7")])
    assert not redis_client.worker().hexists(rkeys.unit(PROJECT, "user-7"), ls.LIVE_FIELD)


@pytest.mark.parametrize(("consent", "kept"), [(None, False), ("0", False), ("1", True)])
def test_units_stitch__consent_required__only_a_consenting_user_gets_the_state(consent, kept):
    _send([_event("add_to_cart", 0, unit="anon-5", item="x")])  # kept: the anonymous id consented below
    _snapshot_published(require_consent=True)
    if consent is not None:
        redis_client.worker().hset(rkeys.unit(PROJECT, "user-5"), "consent", consent)
    units_stitch(project_id=PROJECT, pairs=[("anon-5", "user-5")])
    assert redis_client.worker().hexists(rkeys.unit(PROJECT, "user-5"), ls.LIVE_FIELD) is kept


def test_units_stitch__no_snapshot_published__writes_no_state():
    _send([_event("add_to_cart", 0, unit="anon-4", item="x")])
    units_stitch(project_id=PROJECT, pairs=[("anon-4", "user-4")])
    assert not redis_client.worker().hexists(rkeys.unit(PROJECT, "user-4"), ls.LIVE_FIELD)


def test_live_stitch_script__state_changed_since_it_was_read__writes_nothing():
    client = redis_client.worker()
    key = rkeys.unit(PROJECT, "user-6")
    client.hset(key, ls.LIVE_FIELD, "2 a")
    assert client.eval(ls.LIVE_STITCH_LUA, 1, key, 0, "2 b", "ls", "2 c", "lt", "x=1") == -1
    assert client.hget(key, ls.LIVE_FIELD) == b"2 a" and not client.hexists(key, "lt")
    assert client.eval(ls.LIVE_STITCH_LUA, 1, key, 0, "2 a", "ls", "2 c", "lt", "x=1") == 1
    assert client.hmget(key, "ls", "lt") == [b"2 c", b"x=1"]
    assert client.eval(ls.LIVE_STITCH_LUA, 1, key, 1, "2 c", "ls", "2 d") == 0  # consent required, none given


def test_live_state_fields__round_trip_through_parse():
    _send(_typical_session("anon-1"), now_minutes=10)
    state = ls.live_state_parse(_decide_reads())
    assert ls.live_state_parse(ls.live_state_fields(state)) == state
    assert ls.live_state_fields(state) == {k: v for k, v in _decide_reads().items() if k in ls.LIVE_FIELDS}


def test_live_update__erased_then_a_late_event__no_state_and_no_index_entry_come_back():
    client = redis_client.worker()
    _send([_event("page_view", 0, unit="gone", url="/")])
    assert client.zscore(rkeys.live_active(PROJECT), "gone") is not None
    # Erasure: the hash and the index entry go, the id's digest joins the suppression set.
    client.delete(rkeys.unit(PROJECT, "gone"))
    client.zrem(rkeys.live_active(PROJECT), "gone")
    client.sadd(rkeys.suppressed(PROJECT), live_digest(PROJECT)("gone"))
    assert _send([_event("page_view", 1, unit="gone", url="/"), _event("page_view", 1, unit="kept", url="/")], 1) == [
        0,
        1,
    ]
    assert not client.exists(rkeys.unit(PROJECT, "gone"))
    assert client.zscore(rkeys.live_active(PROJECT), "gone") is None
    assert client.zscore(rkeys.live_active(PROJECT), "kept") is not None


def test_live_update__opted_out_unit__leaves_the_index_at_its_next_event():
    client = redis_client.worker()
    _send([_event("page_view", 0, unit="leaving", url="/")])
    client.hset(rkeys.unit(PROJECT, "leaving"), "dnp", "1")
    assert _send([_event("page_view", 1, unit="leaving", url="/")], 1) == [0]
    assert client.zscore(rkeys.live_active(PROJECT), "leaving") is None
    assert not any(client.hexists(rkeys.unit(PROJECT, "leaving"), f) for f in ls.LIVE_FIELDS)
