"""Metrics over REST and in the dashboard: defaults, validation naming the field, a report's choice."""

import pytest

from experiments.models import Metric


def _auth(key):
    return {"HTTP_AUTHORIZATION": f"Bearer {key}"}


@pytest.mark.django_db
def test_metrics_api__new_project__lists_the_four_defaults(client, project, secret_key):
    response = client.get("/api/v1/metrics/", **_auth(secret_key))
    assert response.status_code == 200
    assert [(m["key"], m["kind"]) for m in response.json()] == [
        ("conversion", "conversion"),
        ("revenue", "revenue"),
        ("return-30d", "retention"),
        ("events", "count"),
    ]
    assert response.json()[1]["winsorize_percentile"] == 0.99
    assert Metric.objects.filter(project=project).count() == 4


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"key": "r", "name": "R", "kind": "refunds"}, "kind"),
        ({"key": "bad key", "name": "R", "kind": "count"}, "key"),
        ({"key": "r", "name": "", "kind": "count"}, "name"),
        ({"key": "r", "name": "R", "kind": "count", "window_days": 0}, "window_days"),
        ({"key": "r", "name": "R", "kind": "count", "event_types": ["a b"]}, "event_types"),
        ({"key": "r", "name": "R", "kind": "revenue", "winsorize_percentile": 1.5}, "winsorize_percentile"),
        ({"key": "r", "name": "R", "kind": "retention", "winsorize_percentile": 0.99}, "winsorize_percentile"),
        ({"key": "r", "name": "R", "kind": "retention", "return_from_day": 30, "return_to_day": 8}, "return_to_day"),
        ({"key": "r", "name": "R", "kind": "ratio", "numerator_part": "sum"}, "numerator_event_types"),
        ({"key": "r", "name": "R", "kind": "count", "higher_is_better": "no"}, "higher_is_better"),
        ({"key": "revenue", "name": "R", "kind": "count"}, "key"),
        ({"key": "r", "name": "R", "kind": "count", "colour": "red"}, "colour"),
    ],
)
def test_metrics_api__bad_metric__400_naming_the_field_and_nothing_written(client, project, secret_key, body, field):
    client.get("/api/v1/metrics/", **_auth(secret_key))  # the defaults exist
    response = client.post("/api/v1/metrics/", body, content_type="application/json", **_auth(secret_key))
    assert response.status_code == 400, response.content
    assert response.json()["error"]["field"] == field
    assert Metric.objects.filter(project=project).count() == 4


@pytest.mark.django_db
def test_metrics_api__create_change_choose_delete(client, project, other_project, secret_key):
    body = {
        "key": "refunds",
        "name": "Refunds",
        "kind": "conversion",
        "event_types": ["refund"],
        "higher_is_better": False,
    }
    created = client.post("/api/v1/metrics/", body, content_type="application/json", **_auth(secret_key))
    assert created.status_code == 201, created.content
    changed = client.patch(
        "/api/v1/metrics/refunds/", {"window_days": 14}, content_type="application/json", **_auth(secret_key)
    )
    assert changed.status_code == 200 and changed.json()["window_days"] == 14
    assert Metric.objects.get(project=project, key="refunds").window_days == 14
    choice = {"primary": "conversion", "secondary": ["revenue"], "guardrails": ["refunds", "return-30d"]}
    saved = client.put(
        "/api/v1/metrics/choice/?experience=hero", choice, content_type="application/json", **_auth(secret_key)
    )
    assert saved.status_code == 200 and saved.json() == {**choice, "guardrails": ["refunds", "return-30d"]}
    unknown = client.put(
        "/api/v1/metrics/choice/?experience=hero",
        {"primary": "nope"},
        content_type="application/json",
        **_auth(secret_key),
    )
    assert unknown.status_code == 400 and unknown.json()["error"]["field"] == "primary"
    assert client.get("/api/v1/metrics/choice/?experience=hero", **_auth(secret_key)).json() == saved.json()
    assert client.delete("/api/v1/metrics/refunds/", **_auth(secret_key)).status_code == 204
    assert client.get("/api/v1/metrics/choice/?experience=hero", **_auth(secret_key)).json()["guardrails"] == [
        "return-30d"
    ]
    assert not Metric.objects.filter(project=other_project).exists()


@pytest.mark.django_db
def test_metrics_page__marketer_adds_a_metric_and_sees_it(client, project, marketer):
    response = client.post(
        "/lift/metrics/new",
        {
            "key": "unsub",
            "name": "Unsubscribed",
            "kind": "conversion",
            "event_types": "unsubscribe",
            "higher_is_better": "0",
        },
    )
    assert response.status_code == 302
    metric = Metric.objects.get(project=project, key="unsub")
    assert metric.event_types == ["unsubscribe"] and metric.higher_is_better is False
    page = client.get("/lift/metrics/")
    assert page.status_code == 200 and "Unsubscribed" in page.content.decode()
    bad = client.post(
        "/lift/metrics/new", {"key": "x", "name": "X", "kind": "count", "window_days": "999"}, follow=True
    )
    assert "window_days: give a whole number of days between 1 and 365" in bad.content.decode()
