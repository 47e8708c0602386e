"""Dashboard pages of the personalization app: Overview and Settings."""

from datetime import UTC, datetime

import plotly.graph_objects as go
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.http import HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from personalization import hooks, selectors, services
from personalization.models import ApiKey, Experience, ExperienceStatus, KeyKind, Membership, Role
from personalization.people.journey import MEASURES, JourneyDefinitionError, definition_sentences, journey_definition
from personalization.views.live import sessions_context
from personalization.workspace.web import back, figures_json, is_partial, render_page, workspace_view


def _live_numbers(project_id: int) -> dict:
    events = selectors.metric_per_minute(project_id=project_id, name="events", minutes=60)
    decisions = selectors.metric_per_minute(project_id=project_id, name="decisions", minutes=60)
    return {
        # the last complete minute, so the number does not sag at the start of each minute
        "events_per_min": events[-2][1],
        "decisions_per_min": decisions[-2][1],
        "events_last_hour": sum(v for _, v in events),
        "decisions_last_hour": sum(v for _, v in decisions),
        "series": (events, decisions),
    }


def _chart_json(series) -> str:
    events, decisions = series
    times = [datetime.fromtimestamp(m * 60, tz=UTC) for m, _ in events]
    fig = go.Figure()
    fig.add_bar(x=times, y=[v for _, v in events], name="events", marker_color="#4f46e5")
    fig.add_scatter(x=times, y=[v for _, v in decisions], name="decisions", mode="lines", line_color="#f59e0b")
    fig.update_layout(
        margin={"l": 40, "r": 10, "t": 10, "b": 30},
        height=300,
        legend={"orientation": "h", "y": 1.1},
        yaxis_title="per minute",
        template="plotly_white",
    )
    return figures_json({"events-chart": fig.to_json()})


def _lift_headline(project_id: int) -> str:
    """The first sentence of the newest finished global-holdout lift report, if there is one
    (experiments answers through a hook; without it, no sentence)."""
    headline = hooks.lift_headline.get()
    return headline(project_id=project_id) if headline is not None else ""


@workspace_view("overview")
def overview(request):
    project = request.workspace.project
    live = _live_numbers(project.pk)
    context = {
        "live": live,
        "live_seconds": settings.KAIROS_OVERVIEW_LIVE_SECONDS,
        "chart_json": _chart_json(live["series"]),
        "counts": selectors.project_counts(project=project),
        "running_experiences": Experience.objects.filter(project=project, status=ExperienceStatus.RUNNING).count(),
        "lift_headline": _lift_headline(project.pk),
        "public_key": ApiKey.objects.filter(project=project, kind=KeyKind.PUBLIC, revoked_at__isnull=True).first(),
        **sessions_context(project),
    }
    return render(request, "personalization/overview.html", context)


@workspace_view("overview")
def overview_live(request):
    live = _live_numbers(request.workspace.project.pk)
    return render(request, "personalization/partials/live_counters.html", {"live": live})


@workspace_view("overview")
def overview_chart(request):
    live = _live_numbers(request.workspace.project.pk)
    return render(request, "personalization/partials/events_chart.html", {"chart_json": _chart_json(live["series"])})


def _journey_rules(project) -> list[dict]:
    """The journey definition as the settings form shows it: each stage, its sentence and its thresholds."""
    try:
        definition = journey_definition(project.journey)
    except JourneyDefinitionError:
        definition = journey_definition()
    sentences = definition_sentences(definition)
    return [
        {
            "stage": rule["stage"],
            "sentence": sentence,
            "thresholds": [
                {"measure": measure, "label": MEASURES[measure], "value": value, "fixed": measure == "session_ended"}
                for measure, value in [*rule["all"].items(), *rule["any"].items()]
            ],
        }
        for rule, sentence in zip(definition, sentences, strict=True)
    ]


@workspace_view("settings")
def settings_page(request):
    project = request.workspace.project
    context = {
        "keys": selectors.project_keys(project=project),
        "members": selectors.project_members(project=project),
        "roles": Role.choices,
        "key_kinds": KeyKind.choices,
        "new_key": request.session.pop("new_key", None),
        "can_manage_members": request.workspace.can("members.manage"),
        "can_manage_project": request.workspace.can("projects.manage"),
        "journey_rules": _journey_rules(project),
    }
    if request.workspace.can("dead_letters"):
        context["dead"] = selectors.dead_letters_summary(project_id=project.pk)
    return render_page(request, "personalization/settings.html", "personalization/partials/keys.html", context)


@require_POST
@workspace_view("keys.manage")
def key_create(request):
    kind = request.POST.get("kind", "")
    if kind not in KeyKind.values:
        return HttpResponseBadRequest("kind: choose public or secret")
    key, raw = services.api_key_create(
        project=request.workspace.project, kind=kind, name=request.POST.get("name", "").strip()[:80], by=request.user
    )
    # Shown once on the next page view, then gone: only its hash is stored.
    request.session["new_key"] = {"raw": raw, "name": key.name, "kind": key.kind}
    return redirect("settings")


@require_POST
@workspace_view("keys.manage")
def key_revoke(request, key_id: int):
    key = get_object_or_404(ApiKey, pk=key_id, project=request.workspace.project)
    services.api_key_revoke(key=key, by=request.user)
    messages.success(request, f"Key {key.name} ({key.prefix}…) revoked; it stops working within 10 seconds.")
    return redirect("settings")


@workspace_view("dead_letters")
def dead_letters_panel(request):
    """Settings → Dead letters: the count and the newest few (admin only; they hold personal data)."""
    dead = selectors.dead_letters_summary(project_id=request.workspace.project.pk)
    return render(request, "personalization/partials/dead_letters.html", {"dead": dead})


@require_POST
@workspace_view("dead_letters")
def dead_letters_act(request, action: str):
    """Retry (back into the stream) or delete one dead letter (`id`) or all of the project's."""
    project_id = request.workspace.project.pk
    raw_id = request.POST.get("id", "")
    if raw_id and not raw_id.isdigit():
        return HttpResponseBadRequest("id: give the number of a dead letter, or leave it out for all")
    ids = [int(raw_id)] if raw_id else None
    if action == "retry":
        retried, kept = services.dead_letters_retry(project_id=project_id, ids=ids)
        note = f"{retried} sent back to the drain" + (f"; {kept} are not valid JSON and stay" if kept else "")
    elif action == "delete":
        note = f"{services.dead_letters_delete(project_id=project_id, ids=ids)} deleted"
    else:
        return HttpResponseBadRequest("action: use retry or delete")
    if not is_partial(request):
        messages.success(request, f"Dead letters: {note}.")
        return redirect("settings")
    dead = selectors.dead_letters_summary(project_id=project_id)
    return render(request, "personalization/partials/dead_letters.html", {"dead": dead, "note": note})


@require_POST
@workspace_view("members.manage")
def member_set(request):
    username = request.POST.get("username", "").strip()
    role = request.POST.get("role", "")
    user = get_user_model().objects.filter(username=username).first()
    if user is None:
        messages.error(request, f"username: no user called “{username}”; they must have an account first.")
    elif role not in Role.values:
        messages.error(request, f"role: choose one of {', '.join(Role.values)}.")
    elif user == request.user and role != Role.ADMIN:
        messages.error(request, "role: you cannot remove your own admin role; ask another admin.")
    else:
        services.membership_set(project=request.workspace.project, user=user, role=role, by=request.user)
        messages.success(request, f"{username} is now {role}.")
    return redirect("settings")


@require_POST
@workspace_view("overview")
def project_switch(request):
    wanted = request.POST.get("project_id", "")
    if wanted.isdigit() and Membership.objects.filter(user=request.user, project_id=int(wanted)).exists():
        request.session["project_id"] = int(wanted)
    return back(request, "overview")
