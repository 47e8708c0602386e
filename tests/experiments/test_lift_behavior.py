"""Lift broken down by the behavior segments every exposure records: a clustering run's segments,
or one rule/lookalike segment. The statistics are the existing per-segment decomposition's: the
report equals the one by a profile attribute holding the same values, and a direct computation."""

from datetime import UTC, datetime

import numpy as np
import orjson
import pytest

from experiments import charts, selectors, services
from experiments.breakdown import MISSING_LABEL, NO_SEGMENT
from experiments.models import LiftReport
from experiments.tasks import lift_report_task
from personalization.models import Exposure, Profile
from segments.models import ClusteringRun, RunStatus, Segment, SegmentKind
from tests.factories import assert_same_report, exposures_simulated, lift_compute_recent, rows_copy
from tests.personalization.test_decide import make_experience

NOW = datetime.now(UTC)
NAMES = ["Trail runners", "Bargain <hunters>", "Gift shoppers"]  # a marketer's text, tags and all
EFFECTS = [0.05, -0.03, 0.0]  # planted lift per cluster


def _run(project, k: int) -> ClusteringRun:
    run = ClusteringRun.objects.create(project=project, k=k, status=RunStatus.DONE, finished_at=NOW)
    for index in range(k):
        Segment.objects.create(
            project=project,
            key=f"{run.key_prefix}{index}",
            kind=SegmentKind.BEHAVIOR,
            run=run,
            index=index,
            name=NAMES[index] if k == len(NAMES) else f"Other {index}",
        )
    return run


@pytest.fixture
def behavior(project):
    """Two kept runs and a rule segment; 3,000 people exposed to "hero" (10 % held out), each with
    the memberships recorded at exposure: one segment of each run, sometimes the rule segment; some
    in no segment of the first run, some recorded before segments were kept (NULL).

    The profile attribute "cluster" holds the very value the run breakdown should find (key,
    "(no segment)", or nothing), so a report by it must equal the report by the run."""
    run, other = _run(project, 3), _run(project, 2)
    Segment.objects.create(project=project, key="repeat-buyers", kind=SegmentKind.RULE, name="Repeat buyers")
    rng = np.random.default_rng(7)
    people = []
    for i in range(3000):
        cluster = i % 3
        keys = [f"{other.key_prefix}{(i // 3) % 2}"]
        if i % 10 != 9:
            keys.insert(0, f"{run.key_prefix}{cluster}")
        if i % 4 == 0:
            keys.append("repeat-buyers")
        recorded = None if i % 10 == 8 else keys
        value = None if recorded is None else (keys[0] if i % 10 != 9 else NO_SEGMENT)
        people.append((cluster, recorded, value))
    profiles = rows_copy(
        Profile,
        (
            Profile(
                project=project, first_seen=NOW, last_seen=NOW, attributes={} if value is None else {"cluster": value}
            )
            for _, _, value in people
        ),
    )
    return run, other, rng, list(zip(profiles, people, strict=True))


def _expose(project, people, rng, *, held_arm: str, key: str = "hero") -> list[Exposure]:
    return exposures_simulated(
        project=project,
        people=people,
        rng=rng,
        held_arm=held_arm,
        key=key,
        effect=lambda person: EFFECTS[person[0]],
        recorded=lambda person: {"behavior_segments": person[1]},
    )


def _compute(project, segment_by: str, *, experience_key: str = "hero", exclude_missing: bool = False) -> dict:
    return lift_compute_recent(
        project=project, segment_by=segment_by, experience_key=experience_key, exclude_missing=exclude_missing
    )


def _direct(rows, key_of) -> dict[str, dict]:
    """Per segment, straight from the exposure rows: people and converted per arm, and the lift."""
    out: dict[str, dict] = {}
    for row in rows:
        cell = out.setdefault(key_of(row), {"n_t": 0, "n_h": 0, "c_t": 0, "c_h": 0})
        arm = "t" if row.arm == "variant" else "h"
        cell[f"n_{arm}"] += 1
        cell[f"c_{arm}"] += int(row.converted)
    for cell in out.values():
        cell["lift"] = cell["c_t"] / cell["n_t"] - cell["c_h"] / cell["n_h"]
    return out


def _run_value(run):
    def key_of(row) -> str:
        if row.behavior_segments is None:
            return MISSING_LABEL
        return next((k for k in row.behavior_segments if k.startswith(run.key_prefix)), NO_SEGMENT)

    return key_of


@pytest.mark.django_db
@pytest.mark.parametrize("experience_key,held_arm", [("hero", "holdout_experience"), ("", "holdout_global")])
def test_lift_by_run__matches_direct_computation_and_the_same_decomposition(
    project, behavior, experience_key, held_arm
):
    run, _, rng, people = behavior
    rows = _expose(project, people, rng, held_arm=held_arm)
    result = _compute(project, f"run:{run.pk}", experience_key=experience_key)

    direct = _direct(rows, _run_value(run))
    segments = {s["name"]: s for s in result["report"]["segments"]}
    assert set(segments) == {f"{run.key_prefix}{i}" for i in range(3)} | {NO_SEGMENT, MISSING_LABEL}
    for name, truth in direct.items():
        conversion = segments[name]["conversion"]
        assert (conversion["users_treatment"], conversion["users_holdout"]) == (truth["n_t"], truth["n_h"])
        assert (conversion["conversions_treatment"], conversion["conversions_holdout"]) == (truth["c_t"], truth["c_h"])
        assert conversion["absolute_lift"]["value"] == pytest.approx(truth["lift"], abs=1e-12)
    # The planted +5 points for the first cluster is found, the −3 points for the second too.
    first, second = (segments[f"{run.key_prefix}{i}"]["conversion"]["absolute_lift"]["value"] for i in (0, 1))
    assert first > 0.02 and second < 0

    # Exactly the statistics of the existing per-segment breakdown on the same values.
    by_attribute = _compute(project, "attribute:cluster", experience_key=experience_key)
    assert_same_report(result["report"], by_attribute["report"])
    assert_same_report(result["daily"], by_attribute["daily"])
    assert result["missing"] == {
        "users": direct[MISSING_LABEL]["n_t"] + direct[MISSING_LABEL]["n_h"],
        "excluded": False,
    }


@pytest.mark.django_db
def test_lift_by_run__names_not_keys_in_sentences_table_charts_and_csv(project, behavior):
    run, _, rng, people = behavior
    _expose(project, people, rng, held_arm="holdout_experience")
    result = _compute(project, f"run:{run.pk}")
    labels = result["segment_labels"]
    assert labels[f"{run.key_prefix}0"] == "Trail runners"
    assert labels[NO_SEGMENT] == "No segment" and labels[MISSING_LABEL] == "Recorded before segments were kept"

    text = " ".join(result["sentences"])
    assert "Trail runners" in text and run.key_prefix not in text, text

    rows = charts.table_rows(result)
    assert {r[0] for r in rows} == {*NAMES, "No segment", "Recorded before segments were kept", "All users"}
    keys = {r[0]: r[-1] for r in rows}
    assert keys["Trail runners"] == f"{run.key_prefix}0" and keys["No segment"] == "" and keys["All users"] == ""
    assert charts.CSV_HEADER[-1] == "segment_key"

    for figure in (charts.waterfall(result), charts.forest(result)):
        ticks = orjson.loads(figure)["data"][0]
        labels_shown = ticks["x"] if "Waterfall" in str(ticks.get("type", "")).title() else ticks["y"]
        joined = " | ".join(labels_shown)
        assert f"Trail runners<br><span style='font-size:10px;color:#6b7280'>{run.key_prefix}0</span>" in joined
        assert "Bargain &lt;hunters&gt;" in joined and "<hunters>" not in joined  # shown, not obeyed
        assert "No segment" in joined and "Recorded before segments were kept" in joined


@pytest.mark.django_db
def test_lift_by_run__exclude_missing__leaves_them_out_and_still_says_how_many(project, behavior):
    run, _, rng, people = behavior
    rows = _expose(project, people, rng, held_arm="holdout_experience")
    unknown = sum(r.behavior_segments is None for r in rows)
    assert unknown == 300
    result = _compute(project, f"run:{run.pk}", exclude_missing=True)
    assert result["missing"] == {"users": unknown, "excluded": True}
    assert MISSING_LABEL not in {s["name"] for s in result["report"]["segments"]}
    overall = result["report"]["overall"]["conversion"]
    assert overall["users_treatment"] + overall["users_holdout"] == len(rows) - unknown


@pytest.mark.django_db
def test_lift_by_rule_segment__in_it_or_not(project, behavior):
    _, _, rng, people = behavior
    rows = _expose(project, people, rng, held_arm="holdout_experience")
    result = _compute(project, "segment:repeat-buyers")

    def key_of(row) -> str:
        if row.behavior_segments is None:
            return MISSING_LABEL
        return "repeat-buyers" if "repeat-buyers" in row.behavior_segments else NO_SEGMENT

    direct = _direct(rows, key_of)
    segments = {s["name"]: s["conversion"] for s in result["report"]["segments"]}
    assert set(segments) == set(direct) == {"repeat-buyers", NO_SEGMENT, MISSING_LABEL}
    for name, truth in direct.items():
        assert (segments[name]["users_treatment"], segments[name]["users_holdout"]) == (truth["n_t"], truth["n_h"])
        assert segments[name]["absolute_lift"]["value"] == pytest.approx(truth["lift"], abs=1e-12)
    assert result["segment_labels"]["repeat-buyers"] == "Repeat buyers"
    assert result["segment_labels"][NO_SEGMENT] == "Not in Repeat buyers"


@pytest.mark.django_db
def test_segmentation_choices__kept_runs_and_rule_segments_grouped(project, behavior):
    run, other, _, _ = behavior
    ClusteringRun.objects.create(project=project, status=RunStatus.RUNNING)  # not finished: not offered
    groups = dict(selectors.lift_segmentation_choices(project_id=project.pk))
    assert groups[""] == [("exposure:segment", "Segment at exposure"), ("exposure:day", "Day of first exposure")]
    assert groups["Behavior segments"] == [
        (f"run:{other.pk}", f"Behavior segments — run #{other.pk} (k=2)"),
        (f"run:{run.pk}", f"Behavior segments — run #{run.pk} (k=3)"),
    ]
    assert groups["Rule and lookalike segments"] == [("segment:repeat-buyers", "Rule: Repeat buyers")]
    assert ("attribute:cluster", "Profile attribute: cluster") in groups["Profile attributes"]


@pytest.mark.django_db
def test_lift_page__no_run_yet__says_how_to_get_behavior_segments(client, project, marketer):
    body = client.get("/lift/").content.decode()
    assert 'id="lift-no-runs"' in body and "run a clustering on the Segments page" in body
    assert "Behavior segments" not in body


@pytest.mark.django_db
def test_lift_page__by_run__names_keys_and_missing_count(client, project, marketer, behavior):
    run, _, rng, people = behavior
    _expose(project, people, rng, held_arm="holdout_experience")
    report = services.lift_report_request(project=project, experience_key="hero", segment_by=f"run:{run.pk}")
    lift_report_task(report.pk)  # what the worker runs
    body = client.get(f"/lift/?experience=hero&segment_by=run:{run.pk}").content.decode()
    assert 'id="lift-no-runs"' not in body
    assert '<optgroup label="Behavior segments">' in body
    assert f'<option value="run:{run.pk}" selected>Behavior segments — run #{run.pk} (k=3)</option>' in body
    assert f'Trail runners<br><small class="muted">{run.key_prefix}0</small>' in body
    assert "Bargain &lt;hunters&gt;" in body
    assert "300 of 3,000 exposures (10.0 %) were recorded before segments were kept" in body
    csv_lines = client.get(f"/lift/reports/{report.pk}.csv").content.decode().splitlines()
    assert csv_lines[0].endswith(",segment_key")
    assert any(line.startswith("Trail runners,") and line.endswith(f",{run.key_prefix}0") for line in csv_lines)


@pytest.mark.django_db
def test_lift_api__run_of_another_project_or_unfinished__400_naming_segment_by(
    client, project, secret_key, other_project
):
    foreign = _run(other_project, 3)
    running = ClusteringRun.objects.create(project=project, status=RunStatus.RUNNING)
    for run_id in (foreign.pk, running.pk, 999999):
        response = client.get(f"/api/v1/lift/?segment_by=run:{run_id}", HTTP_AUTHORIZATION=f"Bearer {secret_key}")
        assert response.status_code == 400, response.content
        error = response.json()["error"]
        assert error["field"] == "segment_by" and f"run #{run_id}" in error["message"]
        assert "Segments page" in error["message"]
    _run(project, 3)
    for segment_by, field_hint in (("segment:no-such-segment", "no segment with that key"), ("run:0", "run:<")):
        response = client.get(f"/api/v1/lift/?segment_by={segment_by}", HTTP_AUTHORIZATION=f"Bearer {secret_key}")
        assert response.status_code == 400, response.content
        assert response.json()["error"]["field"] == "segment_by" and field_hint in response.json()["error"]["message"]
    assert not LiftReport.objects.filter(project=project).exists()  # nothing half-written


@pytest.mark.django_db
def test_lift_page__sample_ratio_warning__names_the_segment_not_its_key(client, project, marketer, behavior):
    run, _, rng, people = behavior
    make_experience(project, holdout_share=0.1)
    rows = _expose(project, people, rng, held_arm="holdout_experience")
    # Tracking broke for the first cluster: half its treated exposures never arrived.
    lost = [
        r.pk for r in rows if r.arm == "variant" and r.behavior_segments and f"{run.key_prefix}0" in r.behavior_segments
    ]
    Exposure.objects.filter(pk__in=lost[::2]).delete()
    report = services.lift_report_request(project=project, experience_key="hero", segment_by=f"run:{run.pk}")
    lift_report_task(report.pk)
    body = client.get(f"/lift/?experience=hero&segment_by=run:{run.pk}").content.decode()
    assert "Sample ratio mismatch in 1 group" in body
    assert 'title="Sample ratio mismatch (Trail runners): ' in body  # the badge
    assert '<p class="badge warn">Sample ratio mismatch (Trail runners): ' in body  # the warning under it
    assert f"({run.key_prefix}0)" not in body
