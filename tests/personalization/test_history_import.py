"""History import (secret key, any age) and what the events API says about fields it does not use."""

import io
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from personalization import services
from personalization.models import Event, Profile
from tests import factories

OLD = (datetime.now(UTC) - timedelta(days=200)).isoformat()


def _drain():
    while services.events_drain(claim_idle_ms=0):
        pass


def _import(client, key, body: bytes, fmt: str = "jsonl"):
    response = client.post(
        f"/api/v1/events/import?format={fmt}", data=body, content_type="text/plain", HTTP_AUTHORIZATION=f"Bearer {key}"
    )
    lines = (
        [orjson.loads(line) for line in b"".join(response.streaming_content).splitlines()] if response.streaming else []
    )
    return response, lines


@pytest.mark.django_db
def test_import_endpoint__old_events__streamed_progress_then_totals_and_idempotent(client, project, secret_key):
    events = [factories.event_make(n, timestamp=OLD) for n in range(2500)]
    body = b"".join(orjson.dumps(e) + b"\n" for e in events) + b"not json\n"
    response, lines = _import(client, secret_key, body)
    assert response.status_code == 200 and response["Content-Type"] == "application/x-ndjson"
    progress, final = lines[:-1], lines[-1]
    assert [p["accepted"] for p in progress] == [1000, 2000, 2500] and not any(p["done"] for p in progress)
    assert final["done"] and final["accepted"] == 2500 and final["rejected_count"] == 1
    assert final["rejected"][0]["line"] == 2501 and "not valid JSON" in final["rejected"][0]["message"]
    _import(client, secret_key, body)  # the same file again
    _drain()
    assert Event.objects.filter(project=project).count() == 2500


@pytest.mark.django_db
def test_import_endpoint__public_key__refused(client, project, public_key):
    response, _ = _import(client, public_key, orjson.dumps(factories.event_make(1)) + b"\n")
    assert response.status_code == 403 and "secret key" in response.json()["error"]["message"]


@pytest.mark.django_db
def test_events_import_command__csv_with_progress(project, tmp_path):
    path = tmp_path / "history.csv"
    path.write_text(
        "event_id,type,user_id,anonymous_id,session_id,timestamp,value,properties\n"
        f'c1,page_view,,a1,,{OLD},,"{{""url"": ""/""}}"\n'
        f"c2,purchase,u1,a1,,{OLD},19.5,\n"
        f"c3,purchase,u1,a1,,{OLD},,\n"
    )
    out = io.StringIO()
    call_command("events_import", str(path), project=project.slug, stdout=out)
    text = out.getvalue()
    assert "100 %" in text and "line 4: value is required for purchase" in text
    _drain()
    stored = dict(Event.objects.filter(project=project).values_list("event_id", "value"))
    assert set(stored) == {"c1", "c2"} and float(stored["c2"]) == 19.5
    with pytest.raises(CommandError, match="--project"):
        call_command("events_import", str(path), project="nope")


@pytest.mark.django_db
def test_events__public_key__old_event_refused_saying_where_history_goes(client, project, public_key):
    response = factories.events_post(client, public_key, [factories.event_make(1, timestamp=OLD)])
    assert response.status_code == 400
    assert "/api/v1/events/import" in response.json()["rejected"][0]["message"]


@pytest.mark.django_db
def test_events__ignored_fields__reported_as_warnings_event_kept(client, project, public_key):
    response = factories.events_post(
        client,
        public_key,
        [
            {**factories.event_make(1), "colour": "red"},
            {**factories.event_make(2), "properties": {"url": "/", "attributes": {"plan": "gold"}}},
        ],
    )
    body = response.json()
    assert body["accepted"] == 2
    assert [(w["index"], w["field"]) for w in body["warnings"]] == [(0, "colour"), (1, "properties.attributes")]
    assert "identify" in body["warnings"][1]["message"]


@pytest.mark.django_db
def test_identify__user_id_alone__sets_attributes(client, project, public_key):
    response = factories.events_post(
        client,
        public_key,
        [{"event_id": "i1", "type": "identify", "user_id": "u7", "properties": {"attributes": {"plan": "gold"}}}],
    )
    assert response.status_code == 200 and response.json()["warnings"] == []
    _drain()
    assert Profile.objects.get(project=project, external_id="u7").attributes == {"plan": "gold"}


@pytest.mark.django_db(transaction=True)
def test_import__project_queue_near_its_cap__waits_for_the_drain_loses_nothing(project, settings):
    import threading

    from django.db import connection

    from personalization.ingest.history import events_import

    settings.KAIROS_STREAM_CAP_PER_PROJECT = 1500  # the import waits above 750 queued events
    stop = threading.Event()
    waits = []

    def drain_slowly():
        try:
            while not stop.is_set():
                stop.wait(0.5)
                waits.append(services.events_drain(claim_idle_ms=0))
        finally:
            connection.close()

    drainer = threading.Thread(target=drain_slowly)
    drainer.start()
    try:
        lines = (orjson.dumps(factories.event_make(n, timestamp=OLD)) + b"\n" for n in range(4000))
        result = events_import(project_id=project.pk, body=lines)
    finally:
        stop.set()
        drainer.join(10)
    _drain()
    assert result.accepted == 4000 and result.rejected_count == 0
    assert Event.objects.filter(project=project).count() == 4000
    assert sum(1 for moved in waits if moved) >= 3  # the drain ran between the import's batches


@pytest.mark.django_db
def test_import_endpoint__public_dataset_csv_shapes__columns_found_by_role(client, project, secret_key):
    """A REES46-style export and a RetailRocket-style log, as published: their own column names, UTC
    suffixes and epoch milliseconds, no event ids; other columns become properties."""
    rees46 = (
        "event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session\n"
        "2019-10-01 00:00:00 UTC,view,44600062,2103807459595387724,,shiseido,35.79,541312140,72d76fde-8bb3\n"
        "2019-10-01 00:00:01 UTC,purchase,3900821,2053013552326770905,appliances.water_heater,aqua,33.20,554748717,"
        "9333dfbd\n"
    )  # fmt: skip
    retailrocket = "timestamp,visitorid,event,itemid,transactionid\n1433221332117,257597,view,355908,\n"
    for body in (rees46, retailrocket, rees46):  # the first file twice: stored once
        response, lines = _import(client, secret_key, body.encode(), fmt="csv")
        assert response.status_code == 200 and lines[-1]["done"], lines
    assert lines[-1]["rejected_count"] == 0, lines[-1]["rejected"]
    _drain()
    events = {e.type: e for e in Event.objects.filter(project=project)}
    assert Event.objects.filter(project=project).count() == 3
    view = Event.objects.get(project=project, type="view", properties__brand="shiseido")
    assert view.ts == datetime(2019, 10, 1, tzinfo=UTC) and view.session_id == "72d76fde-8bb3"
    # Ids too long for a JSON number to keep exactly stay text.
    assert view.properties == {"product_id": 44600062, "category_id": "2103807459595387724", "brand": "shiseido",
                               "price": 35.79}  # fmt: skip
    assert events["purchase"].properties["category_code"] == "appliances.water_heater"
    assert float(events["purchase"].value) == 33.2  # a purchase's price is its value
    rr = Event.objects.get(project=project, properties__itemid=355908)
    assert rr.ts == datetime.fromtimestamp(1433221332.117, tz=UTC) and rr.profile.external_id == "257597"


@pytest.mark.django_db
def test_import_endpoint__csv_without_a_type_column__names_the_columns(client, project, secret_key):
    _, lines = _import(client, secret_key, b"when,who\n2019-10-01T00:00:00Z,u1\n", fmt="csv")
    assert lines[-1]["done"] and lines[-1]["error"]["field"] == "body"
    assert "event_type" in lines[-1]["error"]["message"] and "property" in lines[-1]["error"]["message"]


@pytest.mark.django_db
def test_import_endpoint__hostile_csv_cells__each_line_rejected_naming_its_field(client, project, secret_key):
    body = (
        b"event_time,event_type,user_id,brand\n"
        b"2019-10-01 00:00:00 UTC,view,u1,ok\n"
        b"2019-10-01 00:00:00 UTC,view,u2,bad\x00brand\n"
        b"99999999999999999999,view,u3,x\n"
        b"2019-10-01 00:00:00 UTC,view,,x\n"
    )
    _, lines = _import(client, secret_key, body, fmt="csv")
    final = lines[-1]
    assert final["accepted"] == 1 and final["rejected_count"] == 3
    fields = {r["line"]: r["field"] for r in final["rejected"]}
    assert fields[3] == "properties.brand" and fields[4] == "timestamp" and fields[5] in ("user_id", "anonymous_id")
    _drain()
    assert Event.objects.filter(project=project).count() == 1


def test_body_lines__any_piece_sizes__same_lines_long_line_dropped_as_it_arrives():
    from personalization.ingest.history import LongLine, body_lines

    body = b"\xef\xbb\xbfone\r\n\ntwo\n" + b"x" * 50 + b"\nthree"
    expected = [b"one\r\n", b"\n", b"two\n", LongLine(51), b"three"]
    for size in (1, 2, 7, 64, len(body)):
        pieces = [body[i : i + size] for i in range(0, len(body), size)]
        assert list(body_lines(pieces, max_line=40)) == expected, size
    # A line of 10 MB without a newline, fed 1,000 bytes at a time, comes out as its size alone.
    endless = (b"y" * 1000 for _ in range(10_000))  # 10 MB without a newline
    assert list(body_lines(endless, max_line=4000)) == [LongLine(10_000_000)]
