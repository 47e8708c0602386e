"""Experiences pages: the list (with the global holdout), the create/edit form, and the detail page
with its live charts. Writes go through `personalization.services`, reads through `selectors`."""

import json
import math

from django.conf import settings
from django.contrib import messages
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from personalization import hooks, selectors, services
from personalization.experiences.conditions import FIELDS, KEYED_FIELDS
from personalization.models import Arm, Experience, Policy
from personalization.views import experience_charts as charts
from personalization.views import experience_forms as forms
from personalization.views.experience_migrate import migration_notice
from personalization.workspace.web import back, figures_json, is_partial, workspace_view

_TRANSITIONS = {
    "start": services.experience_start,
    "pause": services.experience_pause,
    "complete": services.experience_complete,
}


def _can_edit(request) -> bool:
    return request.workspace.can("experiences.edit")


def _experience_or_404(request, key: str) -> Experience:
    experience = selectors.experience_for_project(project=request.workspace.project, key=key)
    if experience is None:
        raise Http404(f"No experience “{key}” in this project.")
    return experience


# ---------------------------------------------------------------------------------------------
# List and global holdout


def _latest_run_id(project) -> int | None:
    run = hooks.segments().run_latest_done(project_id=project.pk)
    return run.pk if run else None


def _rows(project, experiences: list[Experience]) -> list[dict]:
    users = selectors.experience_users_by_arm(project=project, keys=[e.key for e in experiences])
    latest_run = _latest_run_id(project)
    rows = []
    for experience in experiences:
        arms = users.get(experience.key, {})
        rows.append(
            {
                "experience": experience,
                "users": arms.get(Arm.VARIANT, 0),
                "held_out": arms.get(Arm.HOLDOUT_GLOBAL, 0) + arms.get(Arm.HOLDOUT_EXPERIENCE, 0),
                "holdout_percent": 100 * experience.holdout_share,
                "migration": migration_notice(experience=experience, latest_run_id=latest_run),
                "compile_error": services.experience_compile_problem(experience=experience),
            }
        )
    return rows


def _list_context(request, **extra) -> dict:
    project = request.workspace.project
    holdout = selectors.project_global_holdout_users(project=project)
    return {
        "rows": _rows(project, selectors.experiences_for_project(project=project)),
        "can_edit": _can_edit(request),
        "holdout": {
            **holdout,
            "observed_percent": 100 * holdout["held_out"] / holdout["exposed"] if holdout["exposed"] else None,
            "value": project.global_holdout_share,
            "percent": 100 * project.global_holdout_share,
        },
        **extra,
    }


@workspace_view("experiences")
def experience_list(request):
    return render(request, "personalization/experiences/list.html", _list_context(request))


@require_POST
@workspace_view("experiences.edit")
def global_holdout_set(request):
    raw = request.POST.get("global_holdout_share", "").strip()
    try:
        share = float(raw)
        if not math.isfinite(share):
            raise ValueError(raw)
        services.project_holdout_set(project=request.workspace.project, share=share, by=request.user)
    except ValueError as exc:
        # ExperienceError is a ValueError too; both are the user's to fix, next to the field.
        message = exc.message if isinstance(exc, services.ExperienceError) else "enter a share such as 0.05 (5 %)"
        context = _list_context(request, holdout_error=message, holdout_input=raw)
        return render(request, "personalization/experiences/list.html", context)
    messages.success(request, f"Global holdout set to {share:.1%} of people, from the next decision on.")
    return redirect("experiences")


@require_POST
@workspace_view("experiences.edit")
def experience_transition(request, key: str, action: str):
    experience = _experience_or_404(request, key)
    if action not in _TRANSITIONS:
        raise Http404(f"No action “{action}”: use start, pause or complete.")
    error = ""
    try:
        _TRANSITIONS[action](experience=experience, by=request.user)
    except services.ExperienceError as exc:
        error = exc.message
    if is_partial(request):
        # The list swaps the row in place; the status badge, counts and buttons all change together.
        (fresh,) = selectors.experiences_for_project(project=request.workspace.project, key=key)
        context = {"row": _rows(request.workspace.project, [fresh])[0], "can_edit": True, "row_error": error}
        return render(request, "personalization/partials/experience_row.html", context)
    if error:
        messages.error(request, f"{experience.name}: {error}.")
    else:
        messages.success(request, f"{experience.name} is now {experience.get_status_display().lower()}.")
    return back(request, reverse("experience-detail", args=[key]))


# ---------------------------------------------------------------------------------------------
# Create and edit


def _render_form(request, parsed: forms.ParsedForm, experience: Experience | None):
    # Errors re-render the form with 200, as Django forms do: the page itself loaded fine.
    rows = list(parsed.variant_rows)
    while len(rows) < 2:
        rows.append({"key": "", "name": "", "payload": "", "weight": "1", "is_control": False, "error": ""})
    for row in rows:
        row["lines"] = min(max(row["payload"].count("\n") + 2, 3), 14)  # show a pretty-printed payload whole
    context = {
        "experience": experience,
        "form": parsed,
        "values": parsed.values,
        "errors": parsed.errors,
        "variant_rows": rows,
        "condition_rows": parsed.condition_rows,
        "policies": Policy.choices,
        "ops": forms.TARGET_OPS,
        "example_payload": forms.EXAMPLE_PAYLOAD,
        "picker": forms.segment_picker(project_id=request.workspace.project.pk, selected=parsed.values["segments"]),
        "condition_facts": [(name, meaning) for name, (_, _, meaning) in FIELDS.items()]
        + [(f"{name}[name]", meaning) for name, meaning in KEYED_FIELDS.items()],
    }
    return render(request, "personalization/experiences/form.html", context)


@workspace_view("experiences.edit")
def experience_new(request):
    if request.method != "POST":
        return _render_form(request, forms.form_values(None), None)
    parsed = forms.form_parse(request.POST, creating=True)
    if not parsed.problems:
        try:
            experience = services.experience_create(
                project=request.workspace.project,
                key=parsed.values["key"],
                variants=parsed.variants,
                by=request.user,
                external=request.POST.get("external") == "1",
                **parsed.fields,
            )
        except services.ExperienceError as exc:
            forms.service_error_place(parsed, exc)
        else:
            if experience.status == "external":
                messages.success(request, f"{experience.name} registered: send its exposures to the events API.")
            else:
                messages.success(request, f"{experience.name} created as a draft: start it when you are ready.")
            return redirect("experience-detail", key=experience.key)
    return _render_form(request, parsed, None)


@workspace_view("experiences.edit")
def experience_edit(request, key: str):
    experience = _experience_or_404(request, key)
    if request.method != "POST":
        return _render_form(request, forms.form_values(experience), experience)
    parsed = forms.form_parse(request.POST, creating=False)
    if not parsed.problems:
        changed = {name: value for name, value in parsed.fields.items() if getattr(experience, name) != value}
        # Replacing identical variants would still log them as changed and bump the version.
        variants = parsed.variants if parsed.variants != forms.current_variants(experience) else None
        if not changed and variants is None:
            messages.info(request, "Nothing changed.")
            return redirect("experience-detail", key=key)
        try:
            services.experience_update(experience=experience, by=request.user, variants=variants, **changed)
        except services.ExperienceError as exc:
            forms.service_error_place(parsed, exc)
        else:
            messages.success(request, f"{experience.name} saved as version {experience.version}.")
            return redirect("experience-detail", key=key)
    return _render_form(request, parsed, experience)


# ---------------------------------------------------------------------------------------------
# Detail and live charts


def _cumulative(buckets: list[dict], order: list[str]) -> tuple[list, list[dict]]:
    """Per-bucket counts → running totals per variant at the end of each bucket."""
    times: list = []
    totals = {key: [0, 0] for key in order}
    snapshots: list[dict] = []
    for row in buckets:
        if row["variant_key"] not in totals:
            continue  # a variant since removed
        if not times or times[-1] != row["at"]:
            times.append(row["at"])
            snapshots.append({})
        totals[row["variant_key"]][0] += row["users"]
        totals[row["variant_key"]][1] += row["converted"]
        snapshots[-1] = {key: tuple(value) for key, value in totals.items()}
    return times, snapshots


def _live(experience: Experience, segment: str) -> dict:
    """Everything the polled part of the detail page shows."""
    variants = list(experience.variants.all())
    order = [v.key for v in variants]
    control = next((v.key for v in variants if v.is_control), "")
    colors = charts.variant_colors(order, control)
    outcomes = selectors.experience_arm_outcomes(experience=experience)
    exposures = {key: [0, 0] for key in order}
    held = {Arm.HOLDOUT_GLOBAL: 0, Arm.HOLDOUT_EXPERIENCE: 0}
    for row in outcomes:
        if row["arm"] == Arm.VARIANT and row["variant_key"] in exposures:
            exposures[row["variant_key"]][0] += row["users"]
            exposures[row["variant_key"]][1] += row["converted"]
        elif row["arm"] in held:
            held[row["arm"]] += row["users"]
    total_weight = sum(v.weight for v in variants) or 1.0
    fixed_shares = {v.key: v.weight / total_weight for v in variants}

    segments, history = [], []
    if experience.policy != Policy.FIXED:
        segments = selectors.experience_weight_segments(experience=experience)
        segment = segment if segment in segments else ""
        history = selectors.experience_weight_history(experience=experience, segment=segment)
    else:
        segment = ""
    revision = f"{experience.key}:{segment}"

    figures: dict[str, str] = {}
    if experience.policy == Policy.FIXED:
        figures["chart-allocation"] = charts.split_figure(fixed_shares, colors=colors, revision=revision)
    elif history:
        figures["chart-allocation"] = charts.allocation_figure(
            [h.computed_at for h in history],
            [h.weights for h in history],
            order=order,
            colors=colors,
            revision=revision,
        )
    if history:
        # What the bandit itself saw at each update: cumulative [exposures, conversions] per variant.
        rate_times, rate_counts = [h.computed_at for h in history], [h.stats for h in history]
        counts = {key: tuple(history[-1].stats.get(key, (0, 0))) for key in order}
        weights = {key: history[-1].weights.get(key, 0.0) for key in order}
    else:
        span = selectors.experience_exposure_span(experience=experience)
        young = span["first"] is None or (span["last"] - span["first"]).total_seconds() <= 3 * 86400
        buckets = selectors.experience_conversion_buckets(experience=experience, bucket="hour" if young else "day")
        rate_times, rate_counts = _cumulative(buckets, order)
        counts = {key: tuple(value) for key, value in exposures.items()}
        # Before its first update a bandit serves the configured weights.
        weights = fixed_shares
    if any(n for n, _ in counts.values()):
        figures["chart-rate"] = charts.rate_figure(
            rate_times, rate_counts, order=order, colors=colors, revision=revision
        )
        figures["chart-posterior"] = charts.posterior_figure(counts, colors=colors, revision=revision)
    exposed = sum(row["users"] for row in outcomes)
    if exposed:
        bars = [(key, exposures[key][0], colors[key]) for key in order]
        bars.append(("global holdout", held[Arm.HOLDOUT_GLOBAL], charts.HOLDOUT_GLOBAL_COLOR))
        bars.append(("experience holdout", held[Arm.HOLDOUT_EXPERIENCE], charts.HOLDOUT_EXPERIENCE_COLOR))
        figures["chart-arms"] = charts.arms_figure(bars, revision=revision)

    table = []
    for v in variants:
        n, c = counts[v.key]
        posterior = charts.posterior_summary(n, c)
        table.append(
            {
                "variant": v,
                "color": colors[v.key],
                "users": n,
                "converted": c,
                "rate_percent": 100 * c / n if n else None,
                "low_percent": 100 * posterior["low"],
                "high_percent": 100 * posterior["high"],
                "weight_percent": 100 * weights.get(v.key, 0.0),
            }
        )
    in_variants = sum(n for n, _ in exposures.values())
    converted = sum(c for _, c in exposures.values())
    return {
        "segment": segment,
        "segments": segments,
        "has_history": bool(history),
        "exposed": exposed,
        "in_variants": in_variants,
        "converted": converted,
        "converted_percent": 100 * converted / in_variants if in_variants else None,
        "held_global": held[Arm.HOLDOUT_GLOBAL],
        "held_experience": held[Arm.HOLDOUT_EXPERIENCE],
        "table": table,
        "figures_json": figures_json(figures),
        "figures": set(figures),
    }


def _value_text(value) -> str:
    if value in ("", None, {}, []):
        return "(empty)"
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _audit_lines(entry) -> list[str]:
    """What an audit entry changed, in words."""
    changes = entry.changes or {}
    if entry.action == "create":
        keys = [v.get("key", "?") for v in changes.get("variants", [])]
        policy = changes.get("fields", {}).get("policy", "")
        return [f"created with variants {', '.join(keys)}" + (f" · policy {policy}" if policy else "")]
    if entry.action == "migrate" and changes.get("migration"):
        return [_migration_line(changes["migration"])]
    lines = []
    for name, value in changes.items():
        label = forms.FIELD_LABELS.get(name, name)
        if name == "variants":
            keys = [v.get("key", "?") + (" (control)" if v.get("is_control") else "") for v in value]
            lines.append(f"variants set to {', '.join(keys)}")
        elif isinstance(value, list) and len(value) == 2:
            lines.append(f"{label}: {_value_text(value[0])} → {_value_text(value[1])}")
        else:
            lines.append(f"{label}: {_value_text(value)}")
    return lines or ["saved without changes"]


def _migration_line(migration: dict) -> str:
    pairs = [f"{old} → {new}" if new else f"{old} dropped" for old, new in (migration.get("mapping") or {}).items()]
    line = f"migrated to clustering run #{migration.get('to_run')}" + (": " + ", ".join(pairs) if pairs else "")
    if migration.get("bandit"):
        line += f"; per-segment bandit {migration['bandit'][0]} → {migration['bandit'][1]}"
    return line


def _targeting_lines(targeting: dict, names: dict[str, str]) -> list[str]:
    ops = dict(forms.TARGET_OPS)
    lines = []
    for c in targeting.get("attributes", []):
        values = ", ".join(c.get("values", []))
        lines.append(f"{c.get('attribute')} {ops.get(c.get('op', 'in'), c.get('op'))} {values}".strip())
    if targeting.get("segments"):
        labels = [f"{names[key]} ({key})" if key in names else key for key in targeting["segments"]]
        lines.append(f"in segment {' or '.join(labels)}")
    if targeting.get("conditions"):
        lines.append(f"now: {targeting['conditions']}")
    return lines


@workspace_view("experiences")
def experience_detail(request, key: str):
    experience = _experience_or_404(request, key)
    variants = list(experience.variants.all())
    context = {
        "experience": experience,
        "variants": [{"variant": v, "payload": json.dumps(v.payload, indent=2, ensure_ascii=False)} for v in variants],
        "targeting": _targeting_lines(
            experience.targeting or {}, hooks.segments().segment_names(project_id=experience.project_id)
        ),
        "migration": migration_notice(experience=experience, latest_run_id=_latest_run_id(request.workspace.project)),
        "compile_error": services.experience_compile_problem(experience=experience),
        "audit": [
            {"entry": entry, "lines": _audit_lines(entry)}
            for entry in selectors.experience_audit(experience=experience)
        ],
        "percents": {
            "experience": 100 * experience.holdout_share,
            "global": 100 * request.workspace.project.global_holdout_share,
        },
        "can_edit": _can_edit(request),
        "live": _live(experience, request.GET.get("segment", "")),
        "live_seconds": settings.KAIROS_LIVE_CHARTS_SECONDS,
    }
    return render(request, "personalization/experiences/detail.html", context)


@workspace_view("experiences")
def experience_live(request, key: str):
    experience = _experience_or_404(request, key)
    context = {"experience": experience, "live": _live(experience, request.GET.get("segment", ""))}
    return render(request, "personalization/partials/experience_live.html", context)
