"""Request limits of the public endpoints, counted in Redis. Pure Python: no Django, no I/O.

Counters are fixed one-second windows, one per API key and one per client IP, shared by every
decide/events process (a counter lives two windows). Decide counts the IP with one INCR inside the
round trip it makes anyway and the key behind the request (decide.py, _KeyRates); events count both
inside the script that appends the batch (services/events.py).
"""

import time

WINDOW_SECONDS = 1
QUEUE_RETRY_SECONDS = 10  # drains run every second and move thousands of events a second


class Throttled(Exception):
    """Over a limit: answer 429 (rate) or 503 (the project's queue is full) with Retry-After."""

    def __init__(self, field: str, message: str, retry_after: int, status: int = 429):
        super().__init__(f"{field}: {message}")
        self.field, self.message, self.retry_after, self.status = field, message, retry_after, status


def window_of(now: float | None = None) -> int:
    return int((now or time.time()) // WINDOW_SECONDS)


# The Redis Cluster hash tag of each scope's counters (personalization/rkeys.py): the events
# endpoint counts inside its ingest script, so its counters share the stream's slot; decide's per-key
# counts go with its write-behind flush, anywhere. Decide's per-IP counter is given its project's tag
# by the caller: it rides in the request's one round trip, which reads only that project's slot.
_SCOPE_TAGS = {"e": "events", "d": "rl"}


def key_counter(scope: str, key_id: int, window: int) -> str:
    """The counter of one API key in one window, e.g. for scope "d" (decide) or "e" (events)."""
    return f"kr:{{{_SCOPE_TAGS.get(scope, 'rl')}}}:rl:{scope}:k:{key_id}:{window}"


def ip_counter(scope: str, ip: str, window: int, tag: str | int | None = None) -> str:
    """The counter of one client IP in one window; `tag` the hash tag of the slot it must share."""
    return f"kr:{{{_SCOPE_TAGS.get(scope, 'rl') if tag is None else tag}}}:rl:{scope}:ip:{ip}:{window}"


def rate_keys(scope: str, key_id: int, ip: str, now: float | None = None) -> tuple[str, str]:
    """The per-key and per-IP counters of this window."""
    window = window_of(now)
    return key_counter(scope, key_id, window), ip_counter(scope, ip, window)


def key_over(limit: int) -> Throttled:
    return Throttled("Authorization", f"this key sent more than {limit} requests in a second; slow down and retry", 1)


def ip_over(limit: int) -> Throttled:
    return Throttled("client", f"this address sent more than {limit} requests in a second; slow down and retry", 1)


def queue_full(cap: int) -> Throttled:
    return Throttled(
        "events",
        f"this project already has {cap:,} events waiting to be stored; retry the same batch later",
        QUEUE_RETRY_SECONDS,
        status=503,
    )


def rate_verdict(counts: list[int], per_key: int, per_ip: int) -> None:
    """Raise Throttled when the key's or the IP's count is over its limit (0 means no limit)."""
    if per_key and counts[0] > per_key:
        raise key_over(per_key)
    if per_ip and counts[1] > per_ip:
        raise ip_over(per_ip)


def client_ip(meta: dict, trusted_proxies: int) -> str:
    """The caller's address: REMOTE_ADDR, or the address the last trusted proxy saw (X-Forwarded-For,
    counted from the right, so a client cannot choose its own by sending the header)."""
    if trusted_proxies > 0:
        hops = [h.strip() for h in meta.get("HTTP_X_FORWARDED_FOR", "").split(",") if h.strip()]
        if len(hops) >= trusted_proxies:
            return hops[-trusted_proxies][:64]
    return meta.get("REMOTE_ADDR", "")[:64] or "unknown"
