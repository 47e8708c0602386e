"""Lift broken down by the live state every exposure records (`Exposure.live`): the journey stage at
exposure, the first-touch channel, the tenure cohort and the device class; and by the day of first
exposure in the project's time zone. Exposures without live state (or without the device, recorded
before it was kept) form their own row. The statistics are the existing per-segment decomposition's:
the report equals the one by a profile attribute holding the same values, and its counts equal a
direct count in the database."""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from django.db.models import Count, Q
from django.db.models.functions import TruncDate

from experiments import selectors, services
from experiments.breakdown import MISSING_LABEL, NO_SEGMENT, Breakdown, BreakdownError
from experiments.models import LiftReport
from experiments.tasks import lift_report_task
from personalization.experiences.conditions import facts_record
from personalization.models import Exposure, Profile
from tests.factories import assert_same_report, exposures_simulated, lift_compute_recent, rows_copy

NOW = datetime.now(UTC)
STAGES = ["exploring", "comparing", "deciding"]
EFFECTS = {"exploring": -0.03, "comparing": 0.06, "deciding": 0.0}  # planted lift per stage
CHANNELS = ["search", "social", "email", "direct"]
DEVICES = ["mobile", "desktop", "tablet"]
FIELDS = ("stage", "first_touch", "tenure", "device")
TENURES = [0, 1, 7, 8, 30, 31, 400, None]  # every cohort's edges; None: the state did not know
COHORT = {0: "0 days", 1: "1–7 days", 7: "1–7 days", 8: "8–30 days", 30: "8–30 days", 31: "31+ days", 400: "31+ days"}


def _person(i: int) -> dict | None:
    """The live state recorded at person i's exposure; None (1 in 10) when it was not kept."""
    if i % 10 == 7:
        return None
    live = {
        "stage": STAGES[i % 3],
        "visitor": "returning" if i % 2 else "new",
        "first_touch": CHANNELS[i % 4],
        "tenure_days": TENURES[i % 8],
        "session.cart_adds": i % 2,  # a fact some targeting read
    }
    if i % 10 != 3:  # 1 in 10 recorded before exposures kept the device
        live["device"] = DEVICES[i % 3]
    return live


def _value(live: dict | None, field: str) -> str:
    """What each live breakdown should find for this exposure, computed here without SQL."""
    if live is None or (field == "device" and "device" not in live):
        return MISSING_LABEL
    if field == "tenure":
        return NO_SEGMENT if live["tenure_days"] is None else COHORT[live["tenure_days"]]
    return live[field]


@pytest.fixture
def exposed(project):
    """3,000 people exposed to "hero" (about 10 % held out), each with the live state at exposure;
    their profile attributes hold the very values the live breakdowns should find."""

    def make(*, held_arm: str, key: str = "hero") -> list[Exposure]:
        rng = np.random.default_rng(11)
        lives = [_person(i) for i in range(3000)]
        profiles = rows_copy(
            Profile,
            (
                Profile(
                    project=project,
                    first_seen=NOW,
                    last_seen=NOW,
                    # no attribute: the attribute breakdown's "(none)" row, as the live one's
                    attributes={f"live_{f}": _value(live, f) for f in FIELDS if _value(live, f) != MISSING_LABEL},
                )
                for live in lives
            ),
        )
        return exposures_simulated(
            project=project,
            people=list(zip(profiles, lives, strict=True)),
            rng=rng,
            held_arm=held_arm,
            key=key,
            effect=lambda live: 0.0 if live is None else EFFECTS[live["stage"]],
            recorded=lambda live: {"live": live},
        )

    return make


def _compute(project, segment_by: str, **options) -> dict:
    return lift_compute_recent(project=project, segment_by=segment_by, **options)


def _db_counts(project, field: str, value: str) -> tuple[int, int]:
    """(treated, held out) exposures with this value, counted by the ORM straight from the table."""
    rows = Exposure.objects.filter(project=project, experience_key="hero")
    if value == MISSING_LABEL:
        before = ~Q(live__has_key="device") if field == "device" else Q(pk__in=[])  # kept live state, not the device
        rows = rows.filter(Q(live__isnull=True) | before)
    elif field == "tenure":
        bounds = {"0 days": (None, 1), "1–7 days": (1, 8), "8–30 days": (8, 31), "31+ days": (31, None)}
        if value == NO_SEGMENT:
            rows = rows.filter(live__tenure_days=None).exclude(live__isnull=True)
        else:
            low, high = bounds[value]
            rows = rows.exclude(live__tenure_days=None)  # JSON null sorts below every number
            rows = rows.filter(live__tenure_days__gte=low) if low is not None else rows
            rows = rows.filter(live__tenure_days__lt=high) if high is not None else rows
    else:
        rows = rows.filter(**{f"live__{field}": value})
    return rows.filter(arm="variant").count(), rows.exclude(arm="variant").count()


@pytest.mark.django_db
@pytest.mark.parametrize("field", FIELDS)
def test_lift_by_live_state__counts_match_the_database_and_statistics_the_attribute_breakdown(project, exposed, field):
    rows = exposed(held_arm="holdout_experience")
    result = _compute(project, f"live:{field}")

    segments = {s["name"]: s["conversion"] for s in result["report"]["segments"]}
    expected = {_value(row.live, field) for row in rows}
    assert set(segments) == expected and MISSING_LABEL in expected
    for name, conversion in segments.items():
        assert (conversion["users_treatment"], conversion["users_holdout"]) == _db_counts(project, field, name), name
    if field == "tenure":
        assert set(segments) == {*COHORT.values(), NO_SEGMENT, MISSING_LABEL}

    by_attribute = _compute(project, f"attribute:live_{field}")
    assert_same_report(result["report"], by_attribute["report"])
    assert_same_report(result["daily"], by_attribute["daily"])
    missing = sum(_value(row.live, field) == MISSING_LABEL for row in rows)
    assert result["missing"] == {"users": missing, "excluded": False}
    assert result["segment_labels"] == {
        MISSING_LABEL: "Recorded before live state was kept",
        NO_SEGMENT: "Not known at exposure",
    }


@pytest.mark.django_db
@pytest.mark.parametrize("experience_key,held_arm", [("hero", "holdout_experience"), ("", "holdout_global")])
def test_lift_by_stage__recovers_the_planted_sign_per_stage(project, exposed, experience_key, held_arm):
    exposed(held_arm=held_arm)
    result = _compute(project, "live:stage", experience_key=experience_key)
    lift = {s["name"]: s["conversion"]["absolute_lift"]["value"] for s in result["report"]["segments"]}
    assert lift["comparing"] > 0.02 and lift["exploring"] < 0
    # Sentences name the value with its breakdown, and the row without live state in words.
    text = " ".join(result["sentences"])
    assert "journey stage at exposure = comparing" in text, text


@pytest.mark.django_db
def test_lift_by_stage__exclude_missing__leaves_out_exposures_without_live_state(project, exposed):
    rows = exposed(held_arm="holdout_experience")
    unknown = sum(row.live is None for row in rows)
    result = _compute(project, "live:stage", exclude_missing=True)
    assert result["missing"] == {"users": unknown, "excluded": True}
    assert MISSING_LABEL not in {s["name"] for s in result["report"]["segments"]}
    overall = result["report"]["overall"]["conversion"]
    assert overall["users_treatment"] + overall["users_holdout"] == len(rows) - unknown


def test_breakdown_parse__live_fields__named_and_unknown_ones_refused():
    assert Breakdown.parse("live:stage").label == "journey stage at exposure"
    assert Breakdown.parse("live:tenure").label == "tenure cohort"
    assert Breakdown.parse("live:device").label == "device class at exposure"
    assert Breakdown.parse("exposure:day").label == "day of first exposure"
    with pytest.raises(BreakdownError, match="live:stage, live:first_touch, live:tenure or live:device"):
        Breakdown.parse("live:cart")


@pytest.mark.django_db
def test_segmentation_choices__offer_the_live_breakdowns(project):
    groups = dict(selectors.lift_segmentation_choices(project_id=project.pk))
    assert groups["Live state at exposure"] == [
        ("live:stage", "Journey stage at exposure"),
        ("live:first_touch", "First-touch channel"),
        ("live:tenure", "Tenure cohort"),
        ("live:device", "Device class at exposure"),
    ]
    assert groups[""] == [("exposure:segment", "Segment at exposure"), ("exposure:day", "Day of first exposure")]


@pytest.mark.django_db
def test_lift_api__by_stage__report_with_the_stages_and_a_400_for_an_unknown_field(
    client, project, secret_key, exposed
):
    rows = exposed(held_arm="holdout_experience")
    auth = {"HTTP_AUTHORIZATION": f"Bearer {secret_key}"}
    response = client.get("/api/v1/lift/?experience=hero&segment_by=live:stage", **auth)
    assert response.status_code == 202, response.content
    lift_report_task(response.json()["id"])  # what the worker runs
    done = client.get(response.json()["poll"], **auth)
    assert done.status_code == 200
    segments = {s["name"]: s["conversion"] for s in done.json()["result"]["report"]["segments"]}
    assert set(segments) == {*STAGES, MISSING_LABEL}
    assert segments["comparing"]["users_treatment"] == _db_counts(project, "stage", "comparing")[0]
    assert done.json()["result"]["missing"]["users"] == sum(row.live is None for row in rows)

    bad = client.get("/api/v1/lift/?experience=hero&segment_by=live:cart", **auth)
    assert bad.status_code == 400
    assert bad.json()["error"]["field"] == "segment_by" and "live:stage" in bad.json()["error"]["message"]
    assert LiftReport.objects.filter(project=project).count() == 1  # nothing half written


@pytest.mark.django_db
def test_lift_page__by_stage__offers_it_and_names_the_row_without_live_state(client, project, marketer, exposed):
    exposed(held_arm="holdout_experience")
    report = services.lift_report_request(project=project, experience_key="hero", segment_by="live:stage")
    lift_report_task(report.pk)
    body = client.get("/lift/?experience=hero&segment_by=live:stage").content.decode()
    assert '<optgroup label="Live state at exposure">' in body
    assert '<option value="live:stage" selected>Journey stage at exposure</option>' in body
    assert "300 of 3,000 exposures (10.0 %) were recorded before live state was kept" in body
    assert "they are the row “Recorded before live state was kept”" in body


@pytest.mark.django_db
def test_lift_by_exposure_day__rows_are_the_projects_calendar_days_counted_in_the_database(project, exposed):
    project.time_zone = "America/Los_Angeles"
    project.save(update_fields=["time_zone"])
    rows = exposed(held_arm="holdout_experience")
    rng = np.random.default_rng(4)
    for row in rows:  # spread over the hours of the day, so UTC and Los Angeles days differ for many
        row.exposed_at -= timedelta(hours=int(rng.integers(0, 24)))
    Exposure.objects.bulk_update(rows, ["exposed_at"], batch_size=1000)
    result = _compute(project, "exposure:day")

    by_day = (
        Exposure.objects.filter(project=project, experience_key="hero")
        .annotate(day=TruncDate("exposed_at", tzinfo=ZoneInfo("America/Los_Angeles")))
        .values("day")
        .annotate(treated=Count("pk", filter=Q(arm="variant")), held=Count("pk", filter=~Q(arm="variant")))
    )
    expected = {str(r["day"]): (r["treated"], r["held"]) for r in by_day}
    found = {
        s["name"]: (s["conversion"]["users_treatment"], s["conversion"]["users_holdout"])
        for s in result["report"]["segments"]
    }
    assert found == expected and len(found) >= 6
    utc_days = [str(r.exposed_at.astimezone(UTC).date()) for r in rows]
    assert {day: n for day, (t, h) in found.items() if (n := t + h)} != {d: utc_days.count(d) for d in set(utc_days)}
    assert result["missing"]["users"] == 0  # every exposure has a day
    assert "day of first exposure = " in " ".join(result["sentences"])


def test_facts_record__keeps_the_device_class_the_device_breakdown_reads():
    assert facts_record({"stage": "comparing", "device": "tablet"}, [])["device"] == "tablet"
    assert facts_record({"stage": "comparing"}, [])["device"] is None  # kept, as "not known at exposure"
