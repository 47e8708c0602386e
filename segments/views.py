"""Segment pages: the explorer (map, cards, runs), a run's progress, drill-down, lookalike builder, rules."""

from datetime import timedelta

import plotly.graph_objects as go
from django.contrib import messages
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from personalization import selectors as people
from personalization.workspace.web import is_partial, render_page, workspace_view
from segments import embedding, intents, selectors, services
from segments.models import ClusteringRun, Intent, LookalikeBuild, RunStatus, ScoreRun, SegmentKind
from segments.services.embeddings import WINDOW_DAYS

_COLORS = ["#4f46e5", "#f59e0b", "#10b981", "#ef4444", "#06b6d4", "#8b5cf6", "#84cc16", "#ec4899", "#64748b"]


def _map_figure(map_points: list, segments) -> str:
    names = {s.index: s.name for s in segments}
    fig = go.Figure()
    for index in sorted(names):
        points = [p for p in map_points if p[2] == index]
        # SVG, not WebGL: at most 3,000 points draw fast, and browsers without WebGL (VMs, remote
        # desktops, headless) still show the map.
        fig.add_scatter(
            x=[p[0] for p in points],
            y=[p[1] for p in points],
            mode="markers",
            name=names[index],
            marker={"size": 5, "opacity": 0.7, "color": _COLORS[index % len(_COLORS)]},
        )
    fig.update_layout(
        margin={"l": 10, "r": 10, "t": 10, "b": 10},
        height=460,
        template="plotly_white",
        xaxis={"visible": False},
        yaxis={"visible": False},
        legend={"orientation": "h", "y": -0.05},
    )
    return fig.to_json()


@workspace_view("segments")
def explorer(request):
    project = request.workspace.project
    runs = selectors.runs_for_project(project_id=project.pk)
    run_id = request.GET.get("run")
    run = next((r for r in runs if str(r.pk) == run_id and r.status == RunStatus.DONE), None)
    run = run or next((r for r in runs if r.status == RunStatus.DONE), None)
    segments = selectors.run_segments(run=run) if run else []
    map_points = selectors.run_map_points(run=run) if run else []
    context = {
        "runs": runs,
        "run": run,
        "active": [r for r in runs if r.status in (RunStatus.QUEUED, RunStatus.RUNNING)],
        "segments": segments,
        "map_json": _map_figure(map_points, segments) if map_points else "",
        "lookalikes": selectors.segments_of_kind(project_id=project.pk, kind=SegmentKind.LOOKALIKE),
        "rules": selectors.segments_of_kind(project_id=project.pk, kind=SegmentKind.RULE),
        "used_by": people.experiences_by_run(project_id=project.pk),
        "coverage": selectors.embedding_coverage(project_id=project.pk),
    }
    for r in runs:
        r.used_by = context["used_by"].get(r.pk, [])
    return render(request, "segments/explorer.html", context)


@require_POST
@workspace_view("segments")
def run_start(request):
    raw = (request.POST.get("k") or "").strip()
    try:
        if raw and not raw.isdigit():
            raise services.SegmentsError(
                "k", "give a whole number of segments, or leave it empty to choose automatically"
            )
        services.clustering_run_request(project=request.workspace.project, k=int(raw) if raw else None, by=request.user)
    except services.SegmentsError as exc:
        messages.error(request, f"{exc.field}: {exc.message}")
    return redirect("segments")


@workspace_view("segments")
def run_progress(request, run_id: int):
    run = get_object_or_404(ClusteringRun, pk=run_id, project=request.workspace.project)
    response = render(request, "segments/partials/run_progress.html", {"run": run})
    if run.status in (RunStatus.DONE, RunStatus.FAILED):
        response["HX-Refresh"] = "true"
    return response


@require_POST
@workspace_view("segments")
def segment_rename(request, key: str):
    segment = selectors.segment_by_key(project_id=request.workspace.project.pk, key=key)
    if segment is None:
        raise Http404("no such segment")
    try:
        services.segment_rename(segment=segment, name=request.POST.get("name", ""))
    except services.SegmentsError as exc:
        messages.error(request, f"{exc.field}: {exc.message}")
    return redirect(request.POST.get("next") or reverse("segments"))


def _profile_summary(events: list[tuple], now) -> list[str]:
    tokens = embedding.behavior_tokens([embedding.BehaviorEvent(*row) for row in events], now=now)
    top = sorted(((w, t) for t, w in tokens.items() if not t.startswith("type:")), reverse=True)[:4]
    return [embedding.token_label(t) for _, t in top]


@workspace_view("segments")
def segment_detail(request, key: str):
    project = request.workspace.project
    segment = selectors.segment_by_key(project_id=project.pk, key=key)
    if segment is None:
        raise Http404("no such segment")
    sample = selectors.segment_members_sample(segment=segment)
    clock = people.behavior_clock(project_id=project.pk)
    window = selectors.embedding_coverage(project_id=project.pk).get("window_days", WINDOW_DAYS)
    behavior = dict(
        people.profiles_behavior(project_id=project.pk, since=clock - timedelta(days=window), profile_ids=sample)
    )
    examples = [
        {
            "pseudonym": f"Profile #{pid}",
            "events": len(behavior.get(pid, [])),
            "top": _profile_summary(behavior[pid], clock),
        }
        for pid in sample
        if pid in behavior
    ]
    return render(request, "segments/detail.html", {"segment": segment, "examples": examples})


def _curve_figure(curve: list[dict]) -> str:
    shares = [p["share"] * 100 for p in curve]
    fig = go.Figure()
    fig.add_scatter(x=shares, y=[p["recall"] for p in curve], name="recall of the held-out seed", mode="lines+markers")
    fig.add_scatter(
        x=shares,
        y=[p["precision"] for p in curve],
        name="estimated precision (range the data allow)",
        mode="lines+markers",
        error_y={
            "type": "data",
            "symmetric": False,
            "array": [(i[1] - p["precision"]) if (i := p["precision_interval"]) else None for p in curve],
            "arrayminus": [(p["precision"] - i[0]) if (i := p["precision_interval"]) else None for p in curve],
        },
    )
    fig.add_scatter(x=shares, y=shares and [s / 100 for s in shares], name="random", mode="lines", line_dash="dot")
    fig.update_layout(
        margin={"l": 40, "r": 10, "t": 10, "b": 40},
        height=320,
        template="plotly_white",
        xaxis_title="audience size, % of people",
        yaxis={"range": [0, 1.02]},
        legend={"orientation": "h", "y": 1.12},
    )
    return fig.to_json()


def _seed_from_post(project, post):
    source = post.get("seed_source", "segment")
    by_value = post.get("by_value") == "on"
    if source == "segment":
        return services.seed_from_segment(
            project_id=project.pk, segment_key=post.get("seed_segment", ""), by_value=by_value
        )
    if source == "converters":
        raw_days = post.get("seed_days", "30")
        if not raw_days.isdigit() or not 1 <= int(raw_days) <= 365:
            raise services.SegmentsError("seed_days", "choose a window of 1 to 365 days")
        end = people.behavior_clock(project_id=project.pk)
        return services.seed_from_converters(
            project_id=project.pk,
            goal=post.get("seed_goal", "purchase").strip(),
            start=end - timedelta(days=int(raw_days)),
            end=end,
            by_value=by_value,
        )
    if source == "ids":
        return services.seed_from_ids(project_id=project.pk, text=post.get("seed_ids", ""))
    if source == "intent":
        return services.seed_from_intent(project_id=project.pk, intent_key=post.get("seed_intent", ""))
    raise services.SegmentsError("seed_source", "choose a segment, converters on a goal, an intent, or uploaded ids")


@workspace_view("segments")
def lookalike_builder(request):
    project = request.workspace.project
    context = {
        "choices": selectors.segment_choices(project_id=project.pk),
        "intents": selectors.intents_for_project(project_id=project.pk),
        "values": request.POST if request.method == "POST" else {"seed_source": "segment", "seed_days": "30"},
    }
    if request.method == "POST":
        try:
            seed = _seed_from_post(project, request.POST)
            if request.POST.get("action") == "build":
                raw_size = request.POST.get("size", "")
                if not raw_size.isdigit():
                    raise services.SegmentsError("size", "pick a size on the curve")
                build = services.lookalike_build_request(
                    project=project, seed=seed, size=int(raw_size), name=request.POST.get("name", ""), by=request.user
                )
                return redirect("segments-lookalike-build", build_id=build.pk)
            preview = services.lookalike_preview(project_id=project.pk, seed=seed)
            context.update(preview=preview, curve_json=_curve_figure(preview["curve"]))
        except services.SegmentsError as exc:
            context["error"] = exc
    return render_page(request, "segments/lookalike.html", "segments/lookalike.html", context)


@workspace_view("segments")
def lookalike_build_page(request, build_id: int):
    """A lookalike being built: the progress bar, polled every second by htmx (the partial alone), then
    the finished lookalike or why it failed (HX-Refresh reloads the whole page once)."""
    build = get_object_or_404(LookalikeBuild, pk=build_id, project=request.workspace.project)
    response = render_page(
        request, "segments/lookalike_build.html", "segments/partials/lookalike_build_progress.html", {"build": build}
    )
    if is_partial(request) and build.status in (RunStatus.DONE, RunStatus.FAILED):
        response["HX-Refresh"] = "true"
    return response


def _rule_from_post(post) -> dict:
    """Lines like "plan = pro", "plan in pro, plus", "purchase >= 2 in 30 days"."""
    attributes, events = [], []
    for n, line in enumerate(raw.strip() for raw in post.get("conditions", "").splitlines()):
        if not line:
            continue
        parts = line.split()
        if len(parts) >= 5 and parts[1] in {">=", "<=", "="} and parts[3] == "in":
            events.append({"type": parts[0], "op": parts[1], "count": parts[2], "days": parts[4]})
        elif len(parts) >= 3 and parts[1] in {"=", "!="}:
            attributes.append(
                {"attribute": parts[0], "op": "eq" if parts[1] == "=" else "ne", "value": " ".join(parts[2:])}
            )
        elif len(parts) >= 3 and parts[1] == "in":
            values = [v.strip() for v in " ".join(parts[2:]).split(",") if v.strip()]
            attributes.append({"attribute": parts[0], "op": "in", "values": values})
        else:
            raise services.SegmentsError(
                f"conditions (line {n + 1})",
                "write “plan = pro”, “plan in pro, plus” or “purchase >= 2 in 30 days”",
            )
    return {"attributes": attributes, "events": events}


@workspace_view("segments")
def rule_editor(request):
    context = {"values": request.POST if request.method == "POST" else {"conditions": "purchase >= 2 in 30 days"}}
    if request.method == "POST":
        try:
            segment = services.rule_segment_save(
                project=request.workspace.project,
                key=request.POST.get("key", "").strip(),
                name=request.POST.get("name", ""),
                definition=_rule_from_post(request.POST),
                by=request.user,
            )
            messages.success(request, f"Rule segment “{segment.name}” saved: {segment.size:,} people match now.")
            return redirect("segments")
        except services.SegmentsError as exc:
            context["error"] = exc
    return render(request, "segments/rule.html", context, status=400 if "error" in context else 200)


def _calibration_figure(results: dict) -> str:
    """Calibration (predicted beside observed, by decile) of each probability score, and the revenue
    score's deciles, on one plot; decile 10 is the highest scores."""
    fig = go.Figure()
    for index, (name, result) in enumerate(results.items()):
        deciles = (result.get("figures") or {}).get("calibration") or []
        if not deciles:
            continue
        color = _COLORS[index % len(_COLORS)]
        axis = "y2" if name == "expected_revenue" else "y"
        x = [d["decile"] for d in deciles]
        fig.add_scatter(
            x=x,
            y=[d["observed"] for d in deciles],
            name=f"{name}: observed",
            yaxis=axis,
            mode="lines+markers",
            line={"color": color},
        )
        fig.add_scatter(x=x, y=[d["predicted"] for d in deciles], name=f"{name}: predicted", yaxis=axis,
                        mode="lines", line={"color": color, "dash": "dot"})  # fmt: skip
    fig.update_layout(
        margin={"l": 50, "r": 50, "t": 10, "b": 40},
        height=380,
        template="plotly_white",
        xaxis={"title": "decile of the score (10 = highest)", "dtick": 1},
        yaxis={"title": "rate (likely to buy, lapse risk)"},
        yaxis2={"title": "revenue per person", "overlaying": "y", "side": "right"},
        legend={"orientation": "h", "y": -0.2},
    )
    return fig.to_json()


@workspace_view("segments")
def scores(request):
    project = request.workspace.project
    runs = selectors.score_runs(project_id=project.pk)
    run = next((r for r in runs if r.status == RunStatus.DONE), None)
    in_use = services.score_models_in_use(project_id=project.pk)
    context = {
        "runs": runs[:10],
        "run": run,
        "rows": [
            {"name": name, "result": result, "in_use": in_use.get(name, (None,))[0]}
            for name, result in (run.results if run else {}).items()
        ],
        "active": [r for r in runs if r.status in (RunStatus.QUEUED, RunStatus.RUNNING)],
        "figure_json": _calibration_figure(run.results) if run else "",
        "defaults": services.scores.DEFAULT_HORIZONS,
        "scored": selectors.scores_count(project_id=project.pk),
    }
    return render(request, "segments/scores.html", context)


@require_POST
@workspace_view("segments")
def score_run_start(request):
    horizons = {}
    try:
        for name in services.scores.DEFAULT_HORIZONS:
            raw = (request.POST.get(name) or "").strip()
            if raw:
                if not raw.isdigit():
                    raise services.SegmentsError(name, "give a whole number of days from 1 to 365")
                horizons[name] = int(raw)
        services.score_run_request(
            project=request.workspace.project,
            goal=request.POST.get("goal") or "purchase",
            horizons=horizons,
            placebo=request.POST.get("placebo") == "1",
            by=request.user,
        )
    except services.SegmentsError as exc:
        messages.error(request, f"{exc.field}: {exc.message}")
    return redirect("segments-scores")


@workspace_view("segments")
def score_run_progress(request, run_id: int):
    run = get_object_or_404(ScoreRun, pk=run_id, project=request.workspace.project)
    response = render(request, "segments/partials/score_run_progress.html", {"run": run})
    if run.status in (RunStatus.DONE, RunStatus.FAILED):
        response["HX-Refresh"] = "true"
    return response


def _intent_fields(post) -> dict:
    fields = {"name": post.get("name", ""), "examples": post.get("examples", "")}
    if post.get("key", "").strip():
        fields["key"] = post["key"].strip()
    if post.get("threshold", "").strip():
        fields["threshold"] = post["threshold"].strip()
    return fields


@workspace_view("segments")
def intents_page(request):
    """The project's named intents, and the editor: save with "Save", see what it finds with "Preview"."""
    project = request.workspace.project
    default = f"{intents.DEFAULT_THRESHOLD:g}"
    context = {"values": request.POST if request.method == "POST" else {"threshold": default}, "default": default}
    status = 200
    if request.method == "POST":
        try:
            fields = _intent_fields(request.POST)
            if request.POST.get("action") == "preview":
                context["preview"] = services.intent_preview(
                    project_id=project.pk,
                    name=fields["name"],
                    examples=fields["examples"],
                    threshold=fields.get("threshold"),
                )
            else:
                intent = services.intent_create(project_id=project.pk, by=request.user, **fields)
                messages.success(request, f"Intent “{intent.name}” saved ({intent.key}); everyone is being scored.")
                return redirect("segments-intents")
        except services.SegmentsError as exc:
            # htmx swaps only 2xx answers: the preview partial shows the error in place; a full page says 400.
            context["error"], status = exc, 200 if is_partial(request) else 400
    rows = [(i, selectors.intent_people_above(intent=i)) for i in selectors.intents_for_project(project_id=project.pk)]
    context["intents"] = rows
    return render_page(request, "segments/intents.html", "segments/partials/intent_preview.html", context, status)


@require_POST
@workspace_view("segments")
def intent_delete(request, key: str):
    intent = get_object_or_404(Intent, key=key, project=request.workspace.project)
    services.intent_delete(intent=intent, by=request.user)
    messages.success(request, f"Intent “{intent.name}” deleted with everyone's scores on it.")
    return redirect("segments-intents")
