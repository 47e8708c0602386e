"""The live pages (personalization/views/live.py): an experience's "who would match right now", the
Overview's Sessions panel and the visitor timeline, with counts checked against the live state the
events API wrote."""

import re

import pytest

from personalization import redis_client, rkeys, services
from personalization.people.journey import definition_sentences
from personalization.workspace import permissions
from tests import factories
from tests.factories import behavior_event_make as _event
from tests.factories import events_post

ABANDONED = "session.cart_adds >= 1 and session.purchases = 0"


def _send(client, key: str, events: list[dict]) -> None:
    response = events_post(client, key, events)
    assert response.status_code == 200 and response.json()["accepted"] == len(events), response.content


def _experience(project, key: str, conditions: str | None, **targeting) -> None:
    if conditions:
        targeting["conditions"] = conditions
    services.experience_create(
        project=project,
        key=key,
        name=key.title(),
        touchpoint="banner",
        variants=[
            {"key": "off", "payload": {}, "is_control": True, "weight": 0},
            {"key": "on", "payload": {"banner": "free returns"}, "weight": 1},
        ],
        targeting=targeting,
    )


@pytest.fixture
def shop(client, project, public_key):
    """A project whose snapshot is published (so the events request keeps live state) and a logged-in
    developer; returns the client."""
    services.project_holdout_set(project=project, share=0)
    _experience(project, "returns-banner", ABANDONED)
    services.snapshot_publish(project_id=project.pk)
    client.force_login(factories.member_make(project=project, role="developer"))
    return client


def _matching(body: str) -> int:
    return int(re.search(r'id="preview-matching">([\d,]+)<', body).group(1).replace(",", ""))


@pytest.mark.django_db
def test_preview__counts_the_last_hours_visitors_whose_state_matches(shop, project, public_key):
    _send(
        shop,
        public_key,
        [
            _event("add_to_cart", "cart-open", item="tent"),
            _event("add_to_cart", "cart-bought", item="tent"),
            _event("purchase", "cart-bought", item="tent"),
            _event("page_view", "browser", url="/"),
            _event("add_to_cart", "opted-out", item="tent"),
        ],
    )
    # An objection sets do-not-personalize and clears the state at once; the index still lists the id.
    redis_client.worker().hset(rkeys.unit(project.pk, "opted-out"), "dnp", "1")
    redis_client.worker().hdel(rkeys.unit(project.pk, "opted-out"), *rkeys.UNIT_LIVE_FIELDS)
    body = shop.get("/experiences/returns-banner/preview").content.decode()
    assert _matching(body) == 1
    assert "of 3 visitors with a session in the last hour" in body

    _send(shop, public_key, [_event("add_to_cart", "browser", item="stove")])
    assert _matching(shop.get("/experiences/returns-banner/preview").content.decode()) == 2


@pytest.mark.django_db
def test_preview__attribute_targeting_and_request_facts__as_decide_would_and_said_on_the_page(
    shop, project, public_key
):
    _experience(project, "tablet-gold", "device = tablet or session.page_views >= 1")
    _experience(project, "gold-only", None, attributes=[{"attribute": "plan", "op": "in", "values": ["gold"]}])
    _send(shop, public_key, [_event("page_view", "a", url="/"), _event("page_view", "b", url="/")])
    redis_client.worker().hset(rkeys.unit(project.pk, "a"), "attr:plan", "gold")
    body = shop.get("/experiences/tablet-gold/preview").content.decode()
    assert _matching(body) == 2 and "The conditions read device, which only a decide request knows" in body
    body = shop.get("/experiences/gold-only/preview").content.decode()
    assert _matching(body) == 1 and "it has no live conditions" in body


@pytest.mark.django_db
def test_preview__nobody_active__explains_what_to_do(shop):
    body = shop.get("/experiences/returns-banner/preview").content.decode()
    assert 'id="preview-empty"' in body and "Send behavior events from your site" in body
    detail = shop.get("/experiences/returns-banner/").content.decode()
    assert 'hx-get="/experiences/returns-banner/preview"' in detail and "Who would match right now" in detail


@pytest.mark.django_db
def test_preview__unknown_experience__404(shop):
    assert shop.get("/experiences/no-such/preview").status_code == 404


@pytest.mark.django_db
def test_sessions_panel__counts_by_stage_and_reads_the_definition(shop, project, public_key):
    events = [_event("page_view", "c", url=f"/p/{n}", item=f"s-{n}", category="trail-shoes") for n in range(3)]
    events += [_event("add_to_cart", "d", item="tent"), _event("page_view", "e", url="/")]
    _send(shop, public_key, events)
    body = shop.get("/overview/sessions").content.decode()
    counts = dict(re.findall(r'data-stage="(\w+)">(\d+)<', body))
    assert counts == {"bought": "0", "abandoned": "0", "deciding": "1", "comparing": "1", "exploring": "1"}
    assert 'id="sessions-chart"' in body
    assert all(sentence.replace("≥", "&gt;=") in body or sentence in body for sentence in definition_sentences())
    overview = shop.get("/").content.decode()
    assert 'hx-get="/overview/sessions"' in overview and "3 visitors with a session in the last hour" in overview


@pytest.mark.django_db
def test_sessions_panel__no_sessions__says_how_they_appear(shop):
    body = shop.get("/overview/sessions").content.decode()
    assert 'id="sessions-empty"' in body and "How stages are defined" in body


def test_permissions__visitor_timeline__admins_and_developers_only():
    assert permissions.ACTIONS["visitors"] == {"admin", "developer"}


@pytest.mark.django_db
@pytest.mark.parametrize("role", ["marketer", "analyst", "compliance"])
def test_visitor_timeline__other_roles__refused(client, project, role):
    client.force_login(factories.member_make(project=project, role=role))
    assert client.get("/visitors/?id=anyone").status_code == 403


@pytest.mark.django_db
def test_visitor_timeline__stage_reason_facts_and_stored_events__no_profile_attributes(shop, project, public_key):
    events = [_event("page_view", "v-7", url=f"/p/{n}", item=f"j-{n}", category="rain-jackets") for n in range(3)]
    # A property named "items" (a cart's list) once made the template read it instead of dict.items: a 500.
    events.append(_event("view_cart", "v-7", items=[{"item_id": "j-1"}]))
    events.append(
        _event("identify", "v-7", user="shopper-7", attributes={"email": "someone@example.com", "plan": "gold"})
    )
    _send(shop, public_key, events)
    while services.events_drain(claim_idle_ms=0):
        pass
    body = shop.get("/visitors/?id=v-7").content.decode()
    assert re.search(r'id="visitor-stage"[^>]*>Stage <strong>comparing</strong>', body)
    assert "3 rain jackets viewed in" in body
    assert "<code>session.category_item_views[rain-jackets]</code></td><td>3<" in body
    assert body.count("<code>page_view</code>") == 3 and "<code>identify</code>" in body
    assert "items=[{&#x27;item_id&#x27;: &#x27;j-1&#x27;}]" in body
    assert "someone@example.com" not in body and "gold" not in body


@pytest.mark.django_db
def test_visitor_timeline__unknown_id_and_too_long_id__explained(shop):
    body = shop.get("/visitors/?id=nobody").content.decode()
    assert "No live state for “nobody”" in body and "No stored events for this id yet" in body
    answer = shop.get("/visitors/?id=" + "x" * 200)
    assert answer.status_code == 400 and "id: at most 128 characters" in answer.content.decode()
    # A NUL would fail in PostgreSQL's text: refused with the field named, never a 500.
    answer = shop.get("/visitors/?id=a%00b")
    assert answer.status_code == 400 and '"field": "id"' in answer.content.decode()
