"""Issue 9: no input makes decide or events answer 5xx, and nothing they accept can jam the drain.

Hypothesis builds hostile bodies (any JSON, events and decide requests whose every field may be any
JSON value, strings with NUL, control characters, lone surrogates, huge numbers, deep nesting); every
answer must be a 2xx or 4xx JSON answer with the CORS header, and the drain must then store or
dead-letter everything accepted without raising. A fixed seed and a bounded number of examples keep
the run the same every time.
"""

import json

import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from personalization import redis_client, rkeys, services
from personalization.decide import runtime as decide_runtime
from personalization.models import DeadLetter, Event, Exposure

_text = st.text(max_size=40) | st.sampled_from(["a\x00b", "\ud800", "x\udfff", "\n", "", "é", "kp_x", "ks_x"])
_scalars = st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats() | _text
_json = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
    max_leaves=20,
)
_deep = st.integers(min_value=1, max_value=400).map(lambda n: json.loads("[" * n + "]" * n))
_any = _json | _deep

_types = st.sampled_from(["page_view", "click", "search", "scroll", "add_to_cart", "purchase", "exposure", "identify"])
_event = st.fixed_dictionaries(
    {"event_id": _text | st.text(alphabet="abc123-", min_size=1, max_size=10), "type": _types | _text},
    optional={
        "anonymous_id": _text | _any,
        "user_id": _text | _any,
        "session_id": _any,
        "timestamp": _any | st.floats(min_value=-1e20, max_value=1e20) | st.sampled_from(["2026-12-01T00:00:00Z"]),
        "value": _any,
        "properties": _any | st.dictionaries(_text, _any, max_size=5),
    },
)
# Events valid but for what their properties and session hold: the path that reaches the drain.
_plausible = st.fixed_dictionaries(
    {
        "event_id": st.text(alphabet="abcdef0123456789-", min_size=8, max_size=20),
        "type": st.just("page_view"),
        "anonymous_id": st.text(alphabet="abc123", min_size=1, max_size=6),
        "properties": st.dictionaries(_text, _any, max_size=4).map(lambda props: {**props, "url": "/"}),
    },
    optional={"session_id": _text, "user_id": _text},
)
_events_body = st.fixed_dictionaries({"events": st.lists(_plausible | _event, max_size=5) | _any}) | _any
_decide_body = (
    st.fixed_dictionaries(
        {},
        optional={
            "anonymous_id": _text | _any,
            "user_id": _text | _any,
            "experiences": _any | st.lists(_text, max_size=4),
            "context": _any
            | st.fixed_dictionaries({}, optional={"url": _any, "consent": _any, "attributes": _any, "device": _any}),
        },
    )
    | _any
)


def _encode(body) -> bytes:
    # The standard library writes what orjson refuses (lone surrogates, deep nesting, NaN), as hostile
    # clients would.
    try:
        return json.dumps(body).encode()
    except (ValueError, RecursionError):
        return b'{"events": [}'


def _assert_clean(response) -> None:
    assert response.status_code < 500, response.content[:300]
    assert response["Access-Control-Allow-Origin"] == "*"
    assert response["Content-Type"] == "application/json"
    response.json()


def _drain_everything() -> None:
    decide_runtime.buffer.flush()
    while services.events_drain(claim_idle_ms=0):
        pass
    assert redis_client.worker().xlen(rkeys.EVENTS_STREAM) == 0, "nothing accepted may stay stuck in the stream"


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_public__hostile_bodies__never_5xx_and_the_drain_never_jams(client, project, public_key):
    from tests.personalization.test_decide import make_experience

    make_experience(project)

    @seed(9)
    @settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(events=_events_body, decide=_decide_body)
    def run(events, decide):
        for path, body in (("/api/v1/events", events), ("/api/v1/decide", decide)):
            response = client.post(
                path, data=_encode(body), content_type="text/plain", HTTP_AUTHORIZATION=f"Bearer {public_key}"
            )
            _assert_clean(response)

    run()
    _drain_everything()
    stored = Event.objects.filter(project=project).count() + Exposure.objects.filter(project=project).count()
    assert stored > 0, "some generated input was valid and stored"
    assert not DeadLetter.objects.exists(), "the edge let nothing through that PostgreSQL refuses"
