"""The facts of one decide request for targeting conditions and exposures: the live session state
as of now, the context decide derives (local time, device, referrer) and the journey stage.

Computed at most once per request and only when something asks (an experience with conditions, or
an exposure to record): `request_facts` returns a function that computes on its first call and
returns the same dict after. Reading the state costs no Redis command: it is the live fields ("ls" …) of the
unit hash decide's one round trip already fetched.
"""

import logging
import time
from collections.abc import Callable
from functools import lru_cache
from urllib.parse import urlsplit

from personalization.decide.context import device_class, local_time, referrer_class
from personalization.experiences.conditions import facts_check, facts_of
from personalization.intent_fields import UNIT_INTENTS_FIELD, intents_parse
from personalization.people.journey import stage_name
from personalization.people.live_session import (
    DEFAULT_IDLE_MINUTES,
    LIVE_FIELDS,
    live_state_parse,
    session_view,
)
from personalization.score_fields import UNIT_SCORES_FIELD, scores_parse

log = logging.getLogger(__name__)


def _text(value) -> str:
    return value if isinstance(value, str) else ""


def _host(url: str) -> str:
    try:
        return urlsplit(url).hostname or ""
    except ValueError:
        return ""


@lru_cache(maxsize=4096)  # a few sources and referrer hosts make most first touches
def first_touch_class(first_touch: str) -> str:
    """The referrer class of the state's first touch, which keeps a host ("google.com") or a
    utm_source ("newsletter"): a host is classified as a referrer, anything else as a source."""
    if not first_touch:
        return "direct"
    if "." in first_touch:
        return referrer_class(referrer="https://" + first_touch)
    return referrer_class(utm={"source": first_touch})


@lru_cache(maxsize=4096)  # a visitor asks decide several times between two events: parse their state once
def _state(fields: tuple) -> dict | None:
    """live_state_parse of the unit hash's live fields (None where absent). Its result is shared
    between requests: session_view only reads it."""
    return live_state_parse({name: value for name, value in zip(LIVE_FIELDS, fields, strict=True) if value is not None})


def request_facts(user: dict, context: dict, *, settings: dict, user_agent: str = "") -> Callable[[], dict]:
    """`user` is the unit hash as read (str → str, empty when Redis was away), `context` the
    request's, `settings` the snapshot's "live" ({"idle_minutes", "time_zone", "journey"})."""
    done: list[dict] = []

    def facts() -> dict:
        if done:
            return done[0]
        try:
            result = _facts(user, context, settings, user_agent)
        except (TypeError, ValueError, KeyError, AttributeError, IndexError):
            # Only the events script writes the state; a field that reads otherwise (written by
            # hand, another version) must not stop decide: answer as for a visitor without state.
            log.warning("decide: unreadable live state; answering without it", exc_info=True)
            result = _facts({}, context, settings, user_agent)
        done.append(result)
        return result

    return facts


def _facts(user: dict, context: dict, settings: dict, user_agent: str) -> dict:
    now = time.time()
    idle = int(settings.get("idle_minutes") or DEFAULT_IDLE_MINUTES) * 60
    view = session_view(_state(tuple(map(user.get, LIVE_FIELDS))), now=now, idle_seconds=idle)
    definition = settings.get("journey")
    stage = stage_name(view, definition) if definition else stage_name(view)
    hour, weekday = local_time(now, settings.get("time_zone") or "UTC")
    url = _text(context.get("url"))
    utm = context.get("utm")
    derived = {
        "local_hour": hour,
        "weekday": weekday,
        # The snippet's device class, else its viewport class (a site's own caller may send only that).
        "device": device_class(user_agent, context.get("device") or context.get("viewport")),
        # A referrer on the page's own host is navigation inside the site (direct).
        "referrer": referrer_class(
            _text(context.get("referrer")), url, utm if isinstance(utm, dict) else None, own_host=_host(url)
        ),
    }
    result = facts_of(view, derived, stage)
    facts_check(result)
    result["first_touch_class"] = first_touch_class(view.first_touch)
    # Predictive scores come in the same hash (segments writes them at each retrain); floats or absent.
    result.update(scores_parse(user.get(UNIT_SCORES_FIELD)))
    # Intent scores likewise (segments writes them after each drain): {"intent[]": {key: score}} or absent.
    result.update(intents_parse(user.get(UNIT_INTENTS_FIELD)))
    return result
