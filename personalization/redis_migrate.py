"""Rename the Redis keys written before every name carried a Redis Cluster hash tag (rkeys.py).

Old names were `kr:<project>:<rest>` and a few fixed ones (`kr:events`, `kr:keys:public`, ...); the
new ones put the project (or the fixed key's group) in braces: `kr:{<project>}:<rest>`, `kr:{events}`.
`manage.py redis_keys_migrate` runs this after every `manage.py migrate` (`make run`, `make test`,
compose's migrate service), before the servers start; a second run finds nothing to do.

RENAME keeps everything a key holds: a unit hash's sticky assignments and its TTL, the stream's
entries with its consumer group and the entries a drain had read but not acknowledged. Where the new
name exists already (a process of the new release wrote it before this ran), the two are merged and
the old one deleted: hash fields the new key lacks are copied (what the new one says wins: it is what
the visitor saw last), sets and sorted sets are united, counts (the stream's per-project waiting
counts) are added, the old stream's entries are appended to the new stream (the drain stores each
event once by its id, so an entry it had read already is harmless), and of two numbers the larger is kept.
Old per-second rate counters are left to expire (two seconds).
"""

import re
from collections.abc import Callable

import redis

from personalization import rkeys

_FIXED = {
    b"kr:events": rkeys.EVENTS_STREAM,
    b"kr:events:queued": rkeys.EVENTS_QUEUED,
    b"kr:keys:public": rkeys.PUBLIC_KEYS,
    b"kr:keys:last_used": rkeys.KEY_LAST_USED,
    b"kr:worker:heartbeat": rkeys.WORKER_HEARTBEAT,
}
_PROJECT = re.compile(rb"kr:(\d+):(.+)", re.DOTALL)
_SUMMED = {rkeys.EVENTS_QUEUED.encode()}
_PAGE = 1000


def key_renamed(old: bytes) -> bytes | None:
    """The tagged name of a key written under an old name, or None when it needs no rename."""
    if old in _FIXED:
        return _FIXED[old].encode()
    match = _PROJECT.fullmatch(old)
    if match is None:
        return None
    return b"kr:{%s}:%s" % (match[1], match[2])


def redis_keys_migrate(*, client: redis.Redis) -> dict[str, int]:
    """Rename every old key; returns counts: `renamed` (moved whole), `merged` (into an existing new key)."""
    counts = {"renamed": 0, "merged": 0}
    for old in list(client.scan_iter(match="kr:*", count=5000)):
        new = key_renamed(old)
        if new is None:
            continue
        if client.renamenx(old, new):
            counts["renamed"] += 1
            continue
        _MERGE.get(client.type(old), _keep_new)(client, old, new)
        client.delete(old)
        counts["merged"] += 1
    return counts


def _hash_merge(client, old: bytes, new: bytes) -> None:
    fields = client.hgetall(old)
    pipe = client.pipeline(transaction=False)
    for field, value in fields.items():
        if new in _SUMMED:
            pipe.hincrby(new, field, int(value))
        else:
            pipe.hsetnx(new, field, value)
    pipe.execute()


def _set_merge(client, old: bytes, new: bytes) -> None:
    client.sunionstore(new, [new, old])


def _zset_merge(client, old: bytes, new: bytes) -> None:
    client.zunionstore(new, [new, old], aggregate="MAX")


def _stream_merge(client, old: bytes, new: bytes) -> None:
    start = "-"
    while page := client.xrange(old, min=start, max="+", count=_PAGE):
        pipe = client.pipeline(transaction=False)
        for _, fields in page:
            pipe.xadd(new, fields)
        pipe.execute()
        start = "(" + page[-1][0].decode()


def _string_merge(client, old: bytes, new: bytes) -> None:
    mine, theirs = client.get(old), client.get(new)
    if mine is not None and theirs is not None and mine.isdigit() and theirs.isdigit() and int(mine) > int(theirs):
        client.set(new, mine, keepttl=True)


def _keep_new(client, old: bytes, new: bytes) -> None:
    """A type with no merge rule: the new key stays as it is."""


_MERGE: dict[bytes, Callable] = {
    b"hash": _hash_merge,
    b"set": _set_merge,
    b"zset": _zset_merge,
    b"stream": _stream_merge,
    b"string": _string_merge,
}
