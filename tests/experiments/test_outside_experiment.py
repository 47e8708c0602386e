"""Acceptance: an experiment run by another tool, registered and sent exactly as docs/user-guide.md shows
(secret key: POST /api/v1/experiences/; public key: exposure and goal events to /api/v1/events),
with conversions exactly at the window's end and two segments with opposite effects. The report's
per-segment lifts, intervals, p and BH q equal statsmodels on the same per-user data; imported as
90-day-old history from a JSONL file, the same experiment gives the same report."""

import json
import random
import re
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from django.conf import settings
from django.core.management import call_command
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import confint_proportions_2indep, proportions_ztest

from experiments.tasks import lift_report_task
from personalization import services
from tests import factories


def _guide_bodies() -> list:
    """The JSON bodies (`-d '…'`) of the curl examples under "## Experiments run elsewhere"."""
    guide = (settings.BASE_DIR / "docs" / "user-guide.md").read_text()
    section = guide.split("\n## Experiments run elsewhere\n", 1)[1].split("\n## ", 1)[0]
    return [json.loads(body) for body in re.findall(r"-d '(.*?)'", section, re.S)]


# What the user guide registers and sends: the test follows it field for field.
REGISTRATION, GUIDE_EVENTS = _guide_bodies()
EXPOSURE_TEMPLATE, GOAL_TEMPLATE = GUIDE_EVENTS["events"]
WINDOW_HOURS = REGISTRATION["attribution_hours"]
# segment -> (control rate, variant rate): the variant helps on mobile and hurts on desktop
RATES = {"mobile": (0.10, 0.17), "desktop": (0.17, 0.10)}


def test_guide_example__conversion_exactly_at_the_window_end():
    exposed = datetime.fromisoformat(EXPOSURE_TEMPLATE["timestamp"])
    converted = datetime.fromisoformat(GOAL_TEMPLATE["timestamp"])
    assert converted - exposed == timedelta(hours=WINDOW_HOURS)
    assert GOAL_TEMPLATE["type"] == REGISTRATION["goal_event"] and REGISTRATION["external"] is True


def _experiment(n: int, end: datetime, seed: int = 11) -> tuple[list[dict], dict]:
    """Events of n people, and the truth: segment -> variant -> [people, converted within the window]."""
    rng = random.Random(seed)
    events, truth = [], {s: {"plain": [0, 0], "promo": [0, 0]} for s in RATES}
    for i in range(n):
        segment = "mobile" if i % 2 else "desktop"
        variant = "promo" if rng.random() < 0.5 else "plain"
        exposed = end - timedelta(days=12) + timedelta(seconds=rng.randrange(8 * 86400))
        person = f"p{i}"
        properties = {**EXPOSURE_TEMPLATE["properties"], "variant": variant, "segment": segment}
        events.append(
            {
                **EXPOSURE_TEMPLATE,
                "event_id": f"x-{i}",
                "user_id": person,
                "timestamp": exposed.isoformat(),
                "properties": properties,
            }
        )
        truth[segment][variant][0] += 1
        rate = RATES[segment][variant == "promo"]
        draw = rng.random()
        if draw < rate:
            # a tenth of the conversions land exactly at the end of the window: they count
            at_end = rng.random() < 0.1
            after = (
                timedelta(hours=WINDOW_HOURS) if at_end else timedelta(seconds=rng.randrange(1, WINDOW_HOURS * 3600))
            )
            truth[segment][variant][1] += 1
        elif draw < rate + 0.05:
            after = timedelta(hours=WINDOW_HOURS, seconds=1)  # one second late: does not count
        else:
            continue
        events.append(
            {**GOAL_TEMPLATE, "event_id": f"s-{i}", "user_id": person, "timestamp": (exposed + after).isoformat()}
        )
    return events, truth


def _register(client, secret_key):
    response = client.post(
        "/api/v1/experiences/",
        data=orjson.dumps(REGISTRATION),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {secret_key}",
    )
    assert response.status_code == 201, response.content
    assert response.json()["external"] is True


def _drain():
    while services.events_drain(claim_idle_ms=0):
        pass


def _report(client, secret_key, days: int) -> dict:
    return _lift(client, secret_key, f"&days={days}")["result"]


@pytest.mark.django_db
def test_outside_experiment__sent_as_documented__matches_statsmodels(client, project, secret_key, public_key):
    _register(client, secret_key)
    events, truth = _experiment(4000, end=datetime.now(UTC) - timedelta(hours=1))
    for start in range(0, len(events), 1000):
        response = factories.events_post(client, public_key, events[start : start + 1000])
        assert response.status_code == 200 and response.json()["rejected"] == [], response.content
        assert response.json()["warnings"] == []
    _drain()
    result = _report(client, secret_key, days=30)

    segments = {s["name"]: s for s in result["report"]["segments"]}
    assert set(segments) == set(RATES)
    names = sorted(RATES)
    p_values = []
    for name in names:
        (n_c, c_c), (n_t, c_t) = truth[name]["plain"], truth[name]["promo"]
        conversion = segments[name]["conversion"]
        assert (conversion["users_treatment"], conversion["conversions_treatment"]) == (n_t, c_t)
        assert (conversion["users_holdout"], conversion["conversions_holdout"]) == (n_c, c_c)
        low, high = confint_proportions_2indep(c_t, n_t, c_c, n_c, method="wald", compare="diff")
        _, p_value = proportions_ztest([c_t, c_c], [n_t, n_c])
        lift = conversion["absolute_lift"]
        assert lift["value"] == pytest.approx(c_t / n_t - c_c / n_c, abs=1e-9)
        assert lift["ci_low"] == pytest.approx(low, abs=1e-9) and lift["ci_high"] == pytest.approx(high, abs=1e-9)
        assert conversion["p_value"] == pytest.approx(p_value, abs=1e-9)
        p_values.append(p_value)
    _, q_values, _, _ = multipletests(p_values, method="fdr_bh")
    for name, q in zip(names, q_values, strict=True):
        assert segments[name]["conversion_q_value"] == pytest.approx(q, abs=1e-9)
    # opposite, clear effects; the split is checked against the registered 50/50
    assert segments["mobile"]["conversion"]["absolute_lift"]["ci_low"] > 0
    assert segments["desktop"]["conversion"]["absolute_lift"]["ci_high"] < 0
    assert result["report"]["overall"]["sample_ratio"]["expected_holdout_share"] == pytest.approx(0.5)
    assert any("mobile" in s and "desktop" in s for s in result["sentences"])


@pytest.mark.django_db
def test_outside_experiment__imported_90_days_old__same_report_as_live(
    client, project, secret_key, public_key, other_project, tmp_path
):
    end = datetime.now(UTC) - timedelta(hours=1)
    live_events, _ = _experiment(1500, end=end)
    _register(client, secret_key)
    for start in range(0, len(live_events), 1000):
        assert factories.events_post(client, public_key, live_events[start : start + 1000]).status_code == 200
    _drain()
    live = _report(client, secret_key, days=30)

    old_events, _ = _experiment(1500, end=end - timedelta(days=90))
    old_secret = factories.key_make(project=other_project, kind="secret")
    _register(client, old_secret)
    refused = factories.events_post(client, factories.key_make(project=other_project), old_events[:1])
    assert refused.status_code == 400 and "import history" in refused.json()["rejected"][0]["message"]
    history = tmp_path / "history.jsonl"
    history.write_text("".join(json.dumps(e) + "\n" for e in old_events))
    call_command("events_import", str(history), project=other_project.slug)
    call_command("events_import", str(history), project=other_project.slug)  # again: nothing twice
    _drain()
    imported = _report(client, old_secret, days=120)

    assert imported["report"] == live["report"]
    assert imported["sentences"] == live["sentences"]
    assert len(imported["daily"]) == len(live["daily"])


def _shifted(events: list[dict], by: timedelta) -> list[dict]:
    return [{**e, "timestamp": (datetime.fromisoformat(e["timestamp"]) - by).isoformat()} for e in events]


def _lift(client, secret_key, query: str = "") -> dict:
    """A report with the API's defaults plus `query`: asked for, run as a worker would, polled."""
    url = f"/api/v1/lift/?experience={REGISTRATION['key']}&comparison=control&segment_by=exposure:segment{query}"
    auth = {"HTTP_AUTHORIZATION": f"Bearer {secret_key}"}
    queued = client.get(url, **auth)
    assert queued.status_code == 202, queued.content
    lift_report_task(queued.json()["id"])
    done = client.get(queued.json()["poll"], **auth)
    assert done.status_code == 200 and done.json()["status"] == "done", done.content
    return done.json()


@pytest.mark.django_db
def test_outside_experiment__imported_ten_years_old_over_http__same_report_as_live_by_default(
    client, project, secret_key, public_key, other_project
):
    live_events, _ = _experiment(1500, end=datetime.now(UTC) - timedelta(hours=1), seed=23)
    _register(client, secret_key)
    for start in range(0, len(live_events), 1000):
        assert factories.events_post(client, public_key, live_events[start : start + 1000]).status_code == 200
    _drain()
    live = _lift(client, secret_key)

    decade = timedelta(days=3653)  # whole days: every exposure keeps its UTC day of the week and hour
    old_secret = factories.key_make(project=other_project, kind="secret")
    _register(client, old_secret)
    body = b"".join(orjson.dumps(e) + b"\n" for e in _shifted(live_events, decade))
    answer = client.post(
        "/api/v1/events/import",
        data=body,
        content_type="application/x-ndjson",
        HTTP_AUTHORIZATION=f"Bearer {old_secret}",
    )
    final = orjson.loads(b"".join(answer.streaming_content).splitlines()[-1])
    assert final["accepted"] == len(live_events) and final["rejected_count"] == 0, final
    _drain()
    imported = _lift(client, old_secret)  # no range given: the experience's own exposures, ten years back

    assert imported["span"] == live["span"] == "exposures"
    assert imported["result"]["report"] == live["result"]["report"]
    assert imported["result"]["sentences"] == live["result"]["sentences"]
    assert len(imported["result"]["daily"]) == len(live["result"]["daily"]) > 1
    first_day = datetime.fromisoformat(live["start"]) - decade
    assert datetime.fromisoformat(imported["start"]).date() == first_day.date()

    # Asked for the last 30 days, the answer says where the exposures really are.
    recent = _lift(client, old_secret, "&days=30")["result"]
    assert recent["empty"]
    assert f"spring-email's exposures run from {first_day.date().isoformat()}" in recent["message"]
    # The same range given as dates gives the same report.
    last_day = datetime.fromisoformat(imported["end"]) - timedelta(seconds=1)
    dated = _lift(client, old_secret, f"&start={first_day.date()}&end={last_day.date()}")
    assert dated["span"] == f"dates:{first_day.date()}..{last_day.date()}"
    assert dated["result"]["report"] == live["result"]["report"]


def _import(client, secret_key, events: list[dict]) -> None:
    body = b"".join(orjson.dumps(e) + b"\n" for e in events)
    answer = client.post(
        "/api/v1/events/import",
        data=body,
        content_type="application/x-ndjson",
        HTTP_AUTHORIZATION=f"Bearer {secret_key}",
    )
    final = orjson.loads(b"".join(answer.streaming_content).splitlines()[-1])
    assert final["accepted"] == len(events), final


@pytest.mark.django_db
def test_lift_api__report_asked_before_the_drain__not_reused_once_the_import_is_stored(client, project, secret_key):
    _register(client, secret_key)
    events, truth = _experiment(400, end=datetime.now(UTC) - timedelta(days=800), seed=5)
    url = f"/api/v1/lift/?experience={REGISTRATION['key']}&comparison=control"
    auth = {"HTTP_AUTHORIZATION": f"Bearer {secret_key}"}

    def ask(query: str = "") -> tuple[int, dict]:
        answer = client.get(url + query, **auth)
        return answer.status_code, answer.json()

    _import(client, secret_key, events)
    status, before = ask()  # the import is still in the stream
    assert status == 202
    lift_report_task(before["id"])
    status, again = ask()
    assert status == 200 and again["id"] == before["id"] and again["result"]["empty"]
    assert again["newer_data"] is False and again["age_seconds"] >= 0 and again["computed_at"]

    _drain()
    status, after = ask()
    assert status == 202 and after["id"] != before["id"], "newer exposures were stored: not reused"
    assert client.get(before["poll"], **auth).json()["newer_data"] is True
    lift_report_task(after["id"])
    status, done = ask()
    assert status == 200 and done["id"] == after["id"] and done["newer_data"] is False
    users = sum(
        s["conversion"]["users_treatment"] + s["conversion"]["users_holdout"]
        for s in done["result"]["report"]["segments"]
    )
    assert users == sum(n for arms in truth.values() for n, _ in arms.values())

    # Another event type says nothing new about this experience: still reused.
    _import(
        client, secret_key, [factories.event_make(i, type="visit", timestamp=events[0]["timestamp"]) for i in range(5)]
    )
    _drain()
    status, still = ask()
    assert status == 200 and still["id"] == done["id"]
    # Its goal events alone (a conversion arriving late) make it out of date.
    late = {**GOAL_TEMPLATE, "event_id": "late-1", "user_id": "p3", "timestamp": events[0]["timestamp"]}
    _import(client, secret_key, [late])
    _drain()
    status, goal = ask()
    assert status == 202 and goal["id"] != done["id"]
    lift_report_task(goal["id"])
    # fresh=true computes a new one even when nothing changed.
    status, fresh = ask("&fresh=true")
    assert status == 202 and fresh["id"] != goal["id"]
