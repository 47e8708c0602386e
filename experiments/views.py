"""The Lift page: per-segment lift decomposition with charts, computed by a worker on demand."""

import csv
from datetime import date
from urllib.parse import urlencode

from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from experiments import charts, metric_services, selectors, services
from experiments.breakdown import MISSING_LABEL
from experiments.models import LiftReport, MetricKind, ReportStatus
from personalization.workspace.web import figures_json, render_page, workspace_view

_DEFAULTS = {
    "experience": "",
    "segment_by": "exposure:segment",
    "days": "",  # empty: an experience's whole exposure range, the global holdout's last 14 days
    "start": "",
    "end": "",
    "comparison": "holdout",
    "correction": "bh",
    "metric": "",  # the metric whose charts are shown; empty: the report's primary metric
}


def _params(source) -> dict:
    params = {name: (source.get(name) or default) for name, default in _DEFAULTS.items()}
    params["days"] = int(params["days"]) if str(params["days"]).isdigit() else ""
    # A checkbox: absent when off. Kept as "" / "1" so the hidden fields and the URL carry it as is.
    params["exclude_missing"] = "1" if source.get("exclude_missing") in ("1", "true", "on") else ""
    return params


def _arm_labels(comparison: str) -> dict:
    if comparison == "control":
        return {"treatment_label": "Variants", "holdout_label": "Control"}
    return {"treatment_label": "Treated", "holdout_label": "Held out"}


def _metrics_context(result: dict, picked: str, comparison: str) -> dict:
    """The metrics panel: every metric's overall line, guardrail warnings, and the picked metric's charts."""
    sections = result.get("metrics") or []
    if not sections:
        return {}
    section = next((m for m in sections if m["key"] == picked), sections[0])
    labels = result.get("segment_labels") or {}  # its per-segment table names segments as the marketer does
    section = {**section, "segments": [{**r, "label": labels.get(r["name"], r["name"])} for r in section["segments"]]}
    figures = {"metric-forest": charts.metric_forest(result, section)}
    if section.get("survival"):
        arms = _arm_labels(comparison)
        figures["metric-survival"] = charts.conversion_curve(section, **arms)
        # Treated first: the stored JSON (jsonb) keeps keys in its own order, not the report's.
        section["survival_rows"] = [
            (arms["treatment_label"], section["survival"]["treatment"]),
            (arms["holdout_label"], section["survival"]["holdout"]),
        ]
    waterfall = charts.metric_waterfall(result, section)
    if waterfall:
        figures["metric-waterfall"] = waterfall
    return {
        "metrics": sections,
        "metric": section,
        "metric_figures": figures,
        "guardrails_worse": [m for m in sections if m["role"] == "guardrail" and m["worse"]],
    }


def _report_context(report: LiftReport | None, picked: str = "") -> dict:
    if report is None or report.status != ReportStatus.DONE or not report.result or report.result.get("empty"):
        return {}
    result = report.result
    srm_failed = [
        s for s in [result["report"]["overall"], *result["report"]["segments"]] if s["sample_ratio"]["mismatch"]
    ]
    warnings = result["report"]["warnings"]
    srm_title = srm_failed[0]["sample_ratio"]["warning"] if srm_failed else ""
    for value, name in (result.get("segment_labels") or {}).items():  # warnings name segments by key
        warnings = [w.replace(f"({value})", f"({name})") for w in warnings]
        srm_title = srm_title.replace(f"({value})", f"({name})")
    overall = result["report"]["overall"]["conversion"]
    missing = result.get("missing") or {}
    context = {}
    if result.get("segment_labels") and missing.get("users"):
        total = overall["users_treatment"] + overall["users_holdout"] + (missing["users"] if missing["excluded"] else 0)
        row = result["segment_labels"].get(MISSING_LABEL) or "Recorded before segments were kept"
        context["missing"] = {**missing, "total": total, "percent": 100 * missing["users"] / total, "row": row}
    metrics = _metrics_context(result, picked, report.comparison)
    return (
        context
        | metrics
        | {
            "charts_json": figures_json(
                {
                    "waterfall": charts.waterfall(result),
                    "forest": charts.forest(result),
                    "over-time": charts.over_time(result),
                    **metrics.get("metric_figures", {}),
                }
            ),
            "rows": charts.table_rows(result),
            "overall": result["report"]["overall"],
            "heterogeneity": result["report"]["conversion_heterogeneity"],
            "decomposition": result["report"]["conversion_decomposition"],
            "warnings": warnings,
            "srm_failed": srm_failed,
            "srm_title": srm_title,
        }
    )


def _range(params: dict) -> dict:
    """days / start / end as lift_span takes them."""
    dates = {}
    for name in ("start", "end"):
        try:
            dates[name] = date.fromisoformat(params[name]) if params[name] else None
        except ValueError:
            raise services.LiftInputError(name, "must be a date as YYYY-MM-DD") from None
    days = None if dates["start"] or dates["end"] else params["days"] or None  # dates, when given, win
    return {"days": days, **dates}


@workspace_view("lift")
def lift_page(request):
    project = request.workspace.project
    params = _params(request.GET)
    try:
        span = services.lift_span(experience_key=params["experience"], **_range(params))
    except services.LiftInputError as exc:
        messages.error(request, f"{exc.field}: {exc.message}")
        span = services.lift_span(experience_key=params["experience"])
    report = selectors.lift_report_latest(
        project_id=project.pk,
        experience_key=params["experience"],
        segment_by=params["segment_by"],
        comparison=params["comparison"],
        correction=params["correction"],
        span=span,
        exclude_missing=bool(params["exclude_missing"]),
    )
    segmentations = selectors.lift_segmentation_choices(project_id=project.pk)
    context = {
        "params": params,
        "report": report,
        "experiences": selectors.lift_experience_keys(project_id=project.pk),
        "segmentations": segmentations,
        "behavior_breakdowns": any(
            value.startswith(("run:", "segment:")) for _, choices in segmentations for value, _ in choices
        ),
        **_report_context(report, params["metric"]),
    }
    return render(request, "experiments/lift.html", context)


@require_POST
@workspace_view("lift.compute")
def lift_compute(request):
    params = _params(request.POST)
    try:
        services.lift_report_request(
            project=request.workspace.project,
            experience_key=params["experience"],
            segment_by=params["segment_by"],
            comparison=params["comparison"],
            correction=params["correction"],
            **_range(params),
            exclude_missing=bool(params["exclude_missing"]),
            by=request.user,
        )
    except services.LiftInputError as exc:
        messages.error(request, f"{exc.field}: {exc.message}")
    return redirect(f"{reverse('lift')}?{urlencode(params)}")


@workspace_view("lift")
def lift_progress(request, report_id: int):
    report = get_object_or_404(LiftReport, pk=report_id, project=request.workspace.project)
    response = render(request, "experiments/partials/lift_progress.html", {"report": report})
    if report.status in (ReportStatus.DONE, ReportStatus.FAILED):
        response["HX-Refresh"] = "true"
    return response


@workspace_view("lift")
def lift_csv(request, report_id: int):
    report = get_object_or_404(LiftReport, pk=report_id, project=request.workspace.project, status=ReportStatus.DONE)
    response = HttpResponse(content_type="text/csv")
    name = report.experience_key or "global-holdout"
    response["Content-Disposition"] = f'attachment; filename="lift-{name}-{report.segment_by.replace(":", "-")}.csv"'
    writer = csv.writer(response)
    writer.writerow(charts.CSV_HEADER)
    if report.result and not report.result.get("empty"):
        writer.writerows([csv_cell(value) for value in row] for row in charts.table_rows(report.result))
    return response


_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value):
    """A CSV cell a spreadsheet will not run: text starting with = + - @ tab or CR (segment names are
    attribute values anyone with the public key can set) gets a leading ', as OWASP recommends.
    Numbers stay numbers."""
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


@workspace_view("lift")
def lift_metrics(request):
    """The project's metrics, a form to add one, and which an experience's report shows."""
    project = request.workspace.project
    metric_services.metric_defaults_ensure(project=project)
    experience = request.GET.get("experience", "")
    metrics = selectors.metrics_for_project(project_id=project.pk)
    metric_services.metric_values_resume(metrics=metrics)  # a lost backfill is queued again when seen
    rows = [(m, metric_services.metric_values_state(m)) for m in metrics]
    context = {
        "metrics": metrics,
        "rows": rows,
        "computing": any(state == "computing" for _, state in rows),
        "kinds": MetricKind.choices,
        "experiences": selectors.lift_experience_keys(project_id=project.pk),
        "experience": experience,
        "choice": selectors.experience_metrics_choice(project_id=project.pk, experience_key=experience),
    }
    return render_page(request, "experiments/metrics.html", "experiments/partials/metrics_table.html", context)


@require_POST
@workspace_view("experiences.edit")
def lift_metric_create(request):
    data = {name: request.POST[name] for name in metric_services.FIELDS if request.POST.get(name, "") != ""}
    data["higher_is_better"] = request.POST.get("higher_is_better") != "0"
    try:
        metric = metric_services.metric_create(
            project=request.workspace.project, key=request.POST.get("key", ""), data=data
        )
        messages.success(request, f"Metric {metric.name} added.")
    except services.LiftInputError as exc:
        messages.error(request, f"{exc.field}: {exc.message}")
    return redirect("lift-metrics")


@require_POST
@workspace_view("experiences.edit")
def lift_metrics_choose(request):
    experience = request.POST.get("experience", "")
    try:
        metric_services.experience_metrics_set(
            project=request.workspace.project,
            experience_key=experience,
            primary=request.POST.get("primary", ""),
            secondary=request.POST.getlist("secondary"),
            guardrails=request.POST.getlist("guardrails"),
        )
        messages.success(request, "Saved: reports computed from now on show these metrics.")
    except services.LiftInputError as exc:
        messages.error(request, f"{exc.field}: {exc.message}")
    return redirect(f"{reverse('lift-metrics')}?{urlencode({'experience': experience})}")
