"""Multi-metric lift reports: the one SQL scan equals a per-person computation in Python, and the
report carries every chosen metric with its corrections, CUPED and guardrail warning."""

import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import numpy as np
import pytest
from django.db import connection
from django.db.models import Case, F, When

from experiments import metric_report, selectors, services
from experiments.breakdown import Breakdown
from experiments.metric_services import experience_metrics_set, metric_create, metric_defaults_ensure
from experiments.metrics_stats import Moments
from experiments.models import LiftReport, Metric
from experiments.survival import kaplan_meier
from personalization.models import Event, Exposure, Profile
from segments.models import ProfileScore
from tests.factories import rows_copy

NOW = datetime.now(UTC).replace(microsecond=0)
DAY = timedelta(days=1)


def _world(project, *, n=300, seed=11, retention_drop=0.0, scores=False):
    """People with exposures over the last 60 days and events from 20 days before to 45 after.
    `scores`: most exposures record the predictive scores decide read (live["scores"]), the chance to
    buy forecasting conversion; one in ten recorded none (from a generator of their own, so the
    people and events are the same either way)."""
    rng = np.random.default_rng(seed)
    scorer = np.random.default_rng(seed + 1000)
    profiles = rows_copy(
        Profile,
        (
            Profile(project=project, first_seen=NOW, last_seen=NOW, attributes={"plan": "pro" if i % 3 else "free"})
            for i in range(n)
        ),
    )
    exposures, events = [], []
    for i, p in enumerate(profiles):
        treated = rng.random() < 0.5
        exposed = NOW - timedelta(days=float(rng.uniform(0, 60)))
        converted = bool(rng.random() < 0.3)
        live = None
        if scores and scorer.random() >= 0.1:
            buy = float(np.clip(0.3 + 0.5 * (converted - 0.3) + scorer.normal(0, 0.15), 0, 1))
            live = {"stage": "exploring", "scores": {"likely_to_buy": round(buy, 4), "expected_revenue": 12.5}}
        exposures.append(
            Exposure(
                project=project,
                profile=p,
                experience_key="hero",
                variant_key="b" if treated else "",
                arm="variant" if treated else "holdout_experience",
                exposed_at=exposed,
                converted=converted,
                revenue=0,
                live=live,
            )
        )
        for k in range(int(rng.poisson(6))):
            offset = timedelta(days=float(rng.uniform(-20, 45)))
            if treated and offset > 8 * DAY and rng.random() < retention_drop:
                continue  # the planted harm: treated people come back less after day 8
            kind = str(rng.choice(["page", "purchase", "refund"], p=[0.7, 0.2, 0.1]))
            value = Decimal(str(round(float(rng.gamma(2, 40)), 2))) if kind == "purchase" else None
            events.append(
                Event(
                    project=project,
                    profile=p,
                    event_id=f"e{i}-{k}",
                    type=kind,
                    ts=exposed + offset,
                    session_id=f"s{i}-{int(rng.integers(0, 3))}",
                    value=value,
                    received_at=NOW,
                )
            )
    rows_copy(Exposure, exposures)
    rows_copy(Event, events)
    if scores:  # the project has scored people now (segments' scores): the report carries CUPAC's column
        ProfileScore.objects.create(project=project, profile=profiles[0], likely_to_buy=0.5, run_id=1, scored_at=NOW)
    return exposures, events


def _hero_by_plan_run(project) -> LiftReport:
    """The "hero" report by plan over every exposure, computed as a worker would."""
    report = LiftReport.objects.create(
        project=project,
        experience_key="hero",
        segment_by="attribute:plan",
        span="exposures",
        start=NOW - 90 * DAY,
        end=NOW + DAY,
    )
    return services.lift_report_run(report=report)


PREDICTED_BY = {"revenue": "expected_revenue", "retention": "lapse_risk"}  # the rest: likely_to_buy


def _hero_by_plan_compute(project) -> dict:
    """The "hero" report by plan over every exposure, computed in process."""
    return services.lift_compute(
        project=project,
        experience_key="hero",
        breakdown=Breakdown.parse("attribute:plan"),
        start=NOW - 90 * DAY,
        end=NOW + DAY,
    )


def _per_person(spec, exposure, events, as_of):
    """The metric's columns and eligibility for one person, straight from the definitions, then the
    score recorded at exposure that forecasts it (CUPAC's covariate; 0 when none was recorded)."""
    columns, eligible = _own_columns(spec, exposure, events, as_of)
    score = ((exposure.live or {}).get("scores") or {}).get(PREDICTED_BY.get(spec["kind"], "likely_to_buy"), 0.0)
    return [*columns, float(score)], eligible


def _own_columns(spec, exposure, events, as_of):
    x = exposure.exposed_at
    pre = [e for e in events if x - 14 * DAY <= e.ts < x]
    post = [e for e in events if x <= e.ts < x + spec["window_days"] * DAY]

    def typed(rows, types, empty):
        return [e for e in rows if (e.type in types if types else empty(e))]

    def part(rows, kind):
        if kind == "sum":
            return sum(float(e.value or 0) for e in rows)
        if kind == "sessions":
            return len({e.session_id for e in rows if e.session_id})
        return len(rows)

    kind, types = spec["kind"], spec["event_types"]
    if kind == "ratio":
        return [
            part(typed(rows, spec[f"{side}_event_types"], lambda e: True), spec[f"{side}_part"])
            for rows in (post, pre)
            for side in ("numerator", "denominator")
        ], True
    if kind == "conversion":
        goal = typed(pre, types, lambda e: e.type == "purchase")
        value = exposure.converted if not types else bool(typed(post, types, lambda e: True))
        return [float(value), float(bool(goal))], True
    if kind == "revenue":
        has_value = lambda e: e.value is not None  # noqa: E731
        return [part(typed(post, types, has_value), "sum"), part(typed(pre, types, has_value), "sum")], True
    if kind == "count":
        return [len(typed(post, types, lambda e: True)), len(typed(pre, types, lambda e: True))], True
    if kind == "retention":
        first, last = spec["return_from_day"], spec["return_to_day"]
        back = [e for e in typed(events, types, lambda e: True) if x + first * DAY <= e.ts < x + (last + 1) * DAY]
        return [float(bool(back)), float(bool(typed(pre, types, lambda e: True)))], x <= as_of - (last + 1) * DAY
    window = spec["window_days"] * 24.0
    hits = typed(post, types, lambda e: e.type == "purchase")
    hours = min(((min(e.ts for e in hits) - x).total_seconds() / 3600) if hits else window, window)
    return [hours, float(bool(typed(pre, types, lambda e: e.type == "purchase")))], x <= as_of - spec[
        "window_days"
    ] * DAY


@pytest.mark.django_db
def test_lift_metric_cells__every_kind__equals_per_person_python(project):
    exposures, events = _world(project, scores=True)
    metric_defaults_ensure(project=project)
    metric_create(
        project=project,
        key="revenue-per-session",
        data={
            "name": "Revenue per session",
            "kind": "ratio",
            "numerator_event_types": ["purchase"],
            "numerator_part": "sum",
            "denominator_part": "sessions",
            "winsorize_percentile": 0.9,
        },
    )
    metric_create(
        project=project, key="refund", data={"name": "Refunded", "kind": "conversion", "event_types": ["refund"]}
    )
    metric_create(
        project=project, key="ttc", data={"name": "Time to buy", "kind": "time_to_conversion", "window_days": 10}
    )
    specs = [m.spec() for m in Metric.objects.filter(project=project).order_by("pk")]
    assert {s["kind"] for s in specs} == {"conversion", "revenue", "retention", "count", "ratio", "time_to_conversion"}
    population = selectors.lift_population(
        project_id=project.pk, experience_key="hero", comparison="holdout", start=NOW - 90 * DAY, end=NOW + DAY
    )
    cells = selectors.lift_metric_cells(
        population=population, breakdown=Breakdown.parse("attribute:plan"), specs=specs, as_of=NOW
    )
    by_person = {}
    for e in events:
        by_person.setdefault(e.profile_id, []).append(e)
    plans = {p.pk: p.attributes["plan"] for p in Profile.objects.filter(project=project)}
    for index, spec in enumerate(specs):
        values = {x.profile_id: _per_person(spec, x, by_person.get(x.profile_id, []), NOW) for x in exposures}
        matrix = np.array([v for v, _ in values.values()], dtype=float)
        if spec["winsorize_percentile"]:  # percentile_cont over everyone exposed, zeros included; not the score
            own = matrix[:, :-1]
            matrix[:, :-1] = np.minimum(own, np.quantile(own, spec["winsorize_percentile"], axis=0))
        capped = dict(zip(values, matrix, strict=True))
        for plan in ("pro", "free"):
            for treated in (True, False):
                rows = np.array(
                    [
                        capped[x.profile_id]
                        for x in exposures
                        if plans[x.profile_id] == plan and (x.arm == "variant") == treated and values[x.profile_id][1]
                    ]
                ).reshape(-1, matrix.shape[1])
                found = [c[3][index] for c in cells if c[0] == plan and c[2] == treated]
                total = sum(found[1:], found[0])
                assert total.n == len(rows), spec["key"]
                np.testing.assert_allclose(total.sums, rows.sum(axis=0), rtol=1e-9, atol=1e-9, err_msg=spec["key"])
                np.testing.assert_allclose(total.products, rows.T @ rows, rtol=1e-9, atol=1e-6, err_msg=spec["key"])
    # Retention counts only people whose window has closed: the most recently exposed are left out.
    retention = specs.index(next(s for s in specs if s["kind"] == "retention"))
    assert sum(c[3][retention].n for c in cells) < len(exposures)


@pytest.mark.django_db
def test_lift_report_cells__with_every_metric__conversion_cells_equal_the_plain_scan(project):
    # The report's one scan (lateral join to events, capped metrics materialized) must give the
    # conversion figures the plain GROUP BY of the exposures gives: the statistics are exact on them.
    _world(project)
    Exposure.objects.filter(project=project).update(
        pre_activity=F("id") % 7, revenue=Case(When(converted=True, then=(F("id") % 13) * 7.31), default=0.0)
    )
    metric_defaults_ensure(project=project)
    specs = [m.spec() for m in Metric.objects.filter(project=project).order_by("pk")]
    population = selectors.lift_population(
        project_id=project.pk, experience_key="hero", comparison="holdout", start=NOW - 90 * DAY, end=NOW + DAY
    )
    breakdown = Breakdown.parse("attribute:plan")
    alone = sorted(selectors.lift_cells(population=population, breakdown=breakdown), key=lambda c: c[:3])
    cells, metric_cells = selectors.lift_report_cells(
        population=population, breakdown=breakdown, specs=specs, as_of=NOW
    )
    assert [c[:3] for c in sorted(cells, key=lambda c: c[:3])] == [c[:3] for c in alone]
    for (*_, mine), (*_, plain) in zip(sorted(cells, key=lambda c: c[:3]), alone, strict=True):
        assert (mine.n, mine.conversions) == (plain.n, plain.conversions)
        for field in ("sum_y", "sum_y2", "sum_x", "sum_x2", "sum_xy"):
            assert getattr(mine, field) == pytest.approx(getattr(plain, field), rel=1e-12, abs=1e-9), field
    assert sum(c[3].sum_xy for c in alone) > 0 and sum(c[3].conversions for c in alone) > 0  # not all zeros
    assert [c[:3] for c in metric_cells] == [c[:3] for c in cells] and all(
        len(c[3]) == len(specs) for c in metric_cells
    )


@pytest.mark.django_db
def test_lift_metric_cells__without_a_sessions_part__same_moments_and_planner_settings_restored(project):
    # Without a distinct-sessions part the events are grouped once per person, with one per person
    # and session; both must give the same moments (the per-person test above checks the latter).
    # The planner settings of that one query must not outlive it: the caller's transaction goes on.
    _world(project, n=120, seed=3)
    metric_defaults_ensure(project=project)
    metric_create(project=project, key="ttc", data={"name": "Time to buy", "kind": "time_to_conversion"})
    plain = [m.spec() for m in Metric.objects.filter(project=project).order_by("pk")]
    ratio = metric_create(
        project=project,
        key="per-session",
        data={"name": "Revenue per session", "kind": "ratio", "numerator_event_types": ["purchase"]},
    ).spec()
    population = selectors.lift_population(
        project_id=project.pk, experience_key="hero", comparison="holdout", start=NOW - 90 * DAY, end=NOW + DAY
    )
    with connection.cursor() as cursor:
        cursor.execute("SHOW work_mem")
        work_mem = cursor.fetchone()[0]
    found = {}
    for specs in (plain, [*plain, ratio]):
        cells = selectors.lift_metric_cells(
            population=population, breakdown=Breakdown.parse("attribute:plan"), specs=specs, as_of=NOW
        )
        found[len(specs)] = {c[:3]: c[3][: len(plain)] for c in cells}
    assert found[len(plain)].keys() == found[len(plain) + 1].keys()
    for key, moments in found[len(plain)].items():
        for one, two in zip(moments, found[len(plain) + 1][key], strict=True):
            assert one.n == two.n
            np.testing.assert_allclose(one.sums, two.sums, rtol=1e-12, atol=1e-9)
            np.testing.assert_allclose(one.products, two.products, rtol=1e-12, atol=1e-9)
    assert sum(m.sums[0] for moments in found[len(plain)].values() for m in moments) > 0  # not all zeros
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('enable_nestloop'), current_setting('work_mem')")
        assert cursor.fetchone() == ("on", work_mem)


@pytest.mark.django_db
def test_lift_compute__guardrail_worse__warned_with_its_sentence(project):
    _world(project, n=1500, seed=5, retention_drop=0.8)
    result = _hero_by_plan_compute(project)
    keys = [(m["key"], m["role"]) for m in result["metrics"]]
    assert keys == [
        ("conversion", "primary"),
        ("revenue", "secondary"),
        ("events", "secondary"),
        ("return-30d", "guardrail"),
    ]
    guardrail = result["metrics"][-1]
    assert guardrail["worse"] is True
    assert result["guardrails_worse"] == ["return-30d"]
    assert guardrail["sentences"][0].startswith("Guardrail Came back on days 8–30 got worse: -")
    assert {s["name"] for s in guardrail["segments"]} == {"pro", "free"}
    assert all(s["q_value"] is not None for s in guardrail["segments"])
    assert guardrail["overall"]["always_valid"]["ci_low"] < guardrail["overall"]["difference"]["ci_low"]


@pytest.mark.django_db
def test_lift_compute__scores_recorded_at_exposure__cupac_equals_ols_and_removes_variance(project):
    exposures, _ = _world(project, n=1200, seed=9, scores=True)
    result = _hero_by_plan_compute(project)
    conversion = next(m for m in result["metrics"] if m["key"] == "conversion")
    cupac = conversion["overall"]["cupac"]

    # Reference: OLS of converted on the arm and the score recorded at exposure (0 where none was).
    y = np.array([float(x.converted) for x in exposures])
    treat = np.array([float(x.arm == "variant") for x in exposures])
    score = np.array([((x.live or {}).get("scores") or {}).get("likely_to_buy", 0.0) for x in exposures])
    design = np.column_stack([np.ones_like(y), treat, score])
    coefficients, *_ = np.linalg.lstsq(design, y, rcond=None)
    assert cupac["difference"]["value"] == pytest.approx(coefficients[1], abs=1e-9)
    assert cupac["variance_reduction"] > 0.3, "the score forecasts conversion: most of its variance goes"
    assert cupac["variance_reduction"] > conversion["overall"]["cuped"]["variance_reduction"]
    assert any("(CUPAC)" in sentence for sentence in conversion["sentences"])
    assert all(row["cupac"] is not None for row in conversion["segments"])
    revenue = next(m for m in result["metrics"] if m["key"] == "revenue")
    # Everyone's expected revenue is the same (or missing): it forecasts nothing, and removes next to nothing.
    assert 0 <= revenue["overall"]["cupac"]["variance_reduction"] < 0.01


@pytest.mark.django_db
def test_lift_compute__no_scores_recorded__no_cupac_and_the_page_says_so(client, project, marketer):
    _world(project, n=300, seed=9)
    result = _hero_by_plan_compute(project)
    assert all(m["overall"]["cupac"] is None for m in result["metrics"])
    assert not any("CUPAC" in sentence for m in result["metrics"] for sentence in m["sentences"])
    _hero_by_plan_run(project)
    page = client.get("/lift/?experience=hero&segment_by=attribute:plan&metric=conversion").content.decode()
    missing = '<small class="muted">no scores at exposure</small>'
    assert "CUPAC variance reduction" in page and page.count(missing) == len(result["metrics"])


@pytest.mark.django_db
def test_lift_page__scores_recorded__cupac_reduction_and_sentence_shown(client, project, marketer):
    _world(project, n=600, seed=9, scores=True)
    _hero_by_plan_run(project)
    page = client.get("/lift/?experience=hero&segment_by=attribute:plan&metric=conversion").content.decode()
    # Every metric but 30-day return, whose lapse risk no exposure recorded, has its CUPAC figure.
    assert page.count('<small class="muted">no scores at exposure</small>') == 1
    assert "Adjusting for each person&#x27;s predicted score at exposure (CUPAC) gives" in page
    assert "Variance CUPAC removed" in page


def test_metric_section__one_segment__q_equals_p_and_decomposition_adds_up():
    rng = np.random.default_rng(2)
    treat, hold = rng.normal(1.2, 1, (500, 2)), rng.normal(1.0, 1, (400, 2))
    spec = {"key": "m", "name": "M", "kind": "count", "higher_is_better": True}
    section = metric_report.metric_section(
        spec=spec, segments=[("a", Moments.from_values(treat), Moments.from_values(hold))]
    )
    row = section["segments"][0]
    assert row["q_value"] == pytest.approx(row["p_value"], rel=1e-12)
    parts = section["decomposition"]
    assert sum(c["contribution"] for c in parts["contributions"]) + parts["mix"] == pytest.approx(parts["total"])
    assert section["overall"]["difference"]["value"] == pytest.approx(treat[:, 0].mean() - hold[:, 0].mean())


@pytest.mark.django_db
def test_lift_page__guardrail_worse__badge_and_sentence_shown(client, project, marketer):
    _world(project, n=1500, seed=5, retention_drop=0.8)
    _hero_by_plan_run(project)
    page = client.get("/lift/?experience=hero&segment_by=attribute:plan&metric=return-30d").content.decode()
    assert 'class="badge bad lift-guardrail"' in page
    assert "Guardrail worse: Came back on days 8–30" in page
    assert "Guardrail Came back on days 8–30 got worse: -" in page
    assert 'id="lift-metrics-table"' in page and "Always-valid interval:" in page
    assert '"metric-forest"' in page and '"metric-waterfall"' in page  # the picked metric's charts


@pytest.mark.django_db
def test_lift_compute__time_to_conversion__kaplan_meier_from_the_database_and_drawn(client, project, marketer):
    exposures, events = _world(project, n=300, seed=7)
    metric_defaults_ensure(project=project)
    metric_create(
        project=project,
        key="ttc",
        data={"name": "Time to buy", "kind": "time_to_conversion", "window_days": 10, "event_types": ["purchase"]},
    )
    experience_metrics_set(
        project=project, experience_key="hero", primary="conversion", secondary=["ttc"], guardrails=[]
    )
    report = _hero_by_plan_run(project)
    section = next(m for m in report.result["metrics"] if m["key"] == "ttc")
    # By hand: hours to the first purchase within 10 days, else the hours watched (as of the report).
    as_of = datetime.fromisoformat(report.result["as_of"])
    for arm, treated in (("treatment", True), ("holdout", False)):
        times, converted = [], []
        for x in (x for x in exposures if (x.arm == "variant") == treated):
            bought = [
                e.ts
                for e in events
                if e.profile_id == x.profile_id
                and e.type == "purchase"
                and x.exposed_at <= e.ts < min(x.exposed_at + 10 * DAY, as_of)
            ]
            seconds = (min(bought) - x.exposed_at if bought else min(as_of - x.exposed_at, 10 * DAY)).total_seconds()
            times.append(seconds // 3600)
            converted.append(bool(bought))
        time, hit = np.array(times), np.array(converted)
        expected = kaplan_meier(
            times=np.unique(time).tolist(),
            events=[int(hit[time == t].sum()) for t in np.unique(time)],
            censored=[int((~hit[time == t]).sum()) for t in np.unique(time)],
        )
        curve = section["survival"][arm]
        assert curve["users"] == len(times) and hit.sum() >= 10, arm  # enough conversions to draw
        assert curve["times"] == list(expected.times) and curve["survival"] == pytest.approx(expected.survival)
        assert curve["median"] == (expected.median if math.isfinite(expected.median) else None)
    page = client.get("/lift/?experience=hero&segment_by=attribute:plan&metric=ttc").content.decode()
    assert '"metric-survival"' in page and 'id="lift-survival-table"' in page
    assert "Median hours to convert" in page
    assert page.index("<tr><td>Treated</td>") < page.index("<tr><td>Held out</td>")
