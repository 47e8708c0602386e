"""The live pages: an experience's "who would match right now", the Overview's Sessions panel and
a visitor's timeline for developers. They read the live state through people/live_activity.py."""

import time
from datetime import UTC, datetime

import plotly.graph_objects as go
from django.core.cache import cache
from django.shortcuts import render

from personalization import hooks, selectors
from personalization.experiences.conditions import FIELDS, KEYED_FIELDS
from personalization.experiences.live_preview import experience_live_preview
from personalization.people import selectors as people_selectors
from personalization.people.journey import STAGES, definition_sentences
from personalization.people.live_activity import ACTIVE_READ_LIMIT, live_settings_of, sessions_by_stage, visitor_live
from personalization.workspace.web import figures_json, workspace_view

MAX_ID_CHARS = 128
# Counting reads every active visitor's state (0.75 s per 10,000 on the busy development machine), and every open
# Overview polls it: dashboards polling the same project within this many seconds share one count.
SESSIONS_CACHE_SECONDS = 10  # as the events schema allows for user_id / anonymous_id
STAGE_COLORS = {
    "exploring": "#94a3b8",
    "comparing": "#4f46e5",
    "deciding": "#f59e0b",
    "bought": "#10b981",
    "abandoned": "#ef4444",
}
# Left to right as a journey reads, not in the order the rules are tried.
JOURNEY_ORDER = ("exploring", "comparing", "deciding", "bought", "abandoned")
assert set(JOURNEY_ORDER) == set(STAGES)


@workspace_view("experiences")
def experience_preview(request, key: str):
    experience = selectors.experience_for_project(project=request.workspace.project, key=key)
    if experience is None:
        return render(request, "personalization/partials/live_preview.html", {"missing": key}, status=404)
    preview = experience_live_preview(experience=experience)
    context = {"experience": experience, "preview": preview, "limit": ACTIVE_READ_LIMIT}
    return render(request, "personalization/partials/live_preview.html", context)


def _sessions_chart(counts: dict[str, int]) -> str:
    fig = go.Figure()
    fig.add_bar(
        x=list(JOURNEY_ORDER),
        y=[counts[s] for s in JOURNEY_ORDER],
        marker_color=[STAGE_COLORS[s] for s in JOURNEY_ORDER],
        text=[counts[s] for s in JOURNEY_ORDER],
        textposition="outside",
        cliponaxis=False,
    )
    fig.update_layout(
        margin={"l": 40, "r": 10, "t": 20, "b": 30},
        height=260,
        yaxis={"title": "sessions", "rangemode": "tozero", "dtick": 1 if max(counts.values()) <= 5 else None},
        template="plotly_white",
        showlegend=False,
    )
    return figures_json({"sessions-chart": fig.to_json()})


def _stage_counts(project) -> dict:
    stages = sessions_by_stage(project=project)
    # Only the numbers are cached: the states read are a kilobyte per visitor.
    return {"counts": stages.counts, "total": stages.active.total, "read": stages.active.read}


def sessions_context(project) -> dict:
    """What the Overview's Sessions panel shows (also rendered inside the Overview page itself)."""
    stages = cache.get_or_set(f"live:sessions:{project.pk}", lambda: _stage_counts(project), SESSIONS_CACHE_SECONDS)
    counts = stages["counts"]
    total = sum(counts.values())
    return {
        "sessions_total": total,
        "sessions_capped": stages["read"] < stages["total"],
        "sessions_read": stages["read"],
        "sessions_active": stages["total"],
        "stage_rows": [(stage, counts[stage]) for stage in JOURNEY_ORDER],
        "sessions_chart_json": _sessions_chart(counts) if total else "",
        "stage_sentences": definition_sentences(live_settings_of(project).definition),
        "idle_minutes": project.live_idle_minutes,
        "limit": ACTIVE_READ_LIMIT,
    }


@workspace_view("overview")
def overview_sessions(request):
    return render(request, "personalization/partials/sessions_panel.html", sessions_context(request.workspace.project))


def _fact_rows(facts: dict) -> list[tuple[str, str, object]]:
    """The targeting facts as the timeline lists them: name, meaning, value (keyed facts as name[key])."""
    rows = []
    for name, (_, _, meaning) in FIELDS.items():
        if name in facts:
            value = facts[name]
            rows.append((name, meaning, round(value, 1) if isinstance(value, float) else value))
    for name, meaning in KEYED_FIELDS.items():
        for key, value in sorted((facts.get(name + "[]") or {}).items()):
            rows.append((f"{name}[{key}]", meaning, value))
    return rows


def _event_rows(events) -> list[dict]:
    # Pseudonymous: a profile's attributes travel in identify events; the timeline shows behavior only.
    return [
        {
            "type": e.type,
            "ts": e.ts,
            "session_id": e.session_id,
            "value": e.value,
            # Pairs, not a dict: the template's `.items` would read an event property named "items" (a
            # cart's list of items), not the method, and the page failed with a 500.
            "properties": [(k, v) for k, v in (e.properties or {}).items() if k != "attributes"],
        }
        for e in events
    ]


@workspace_view("visitors")
def visitor_timeline(request):
    """Enter a user or anonymous id: its live state (session, stage and reason, targeting facts) and
    its newest stored events. Shows nothing about the person beyond the id typed and their behavior."""
    project = request.workspace.project
    unit_id = request.GET.get("id", "").strip()
    context: dict = {"unit_id": unit_id}
    # NUL and lone surrogates never get here: config/security.py refuses them in any query string.
    if len(unit_id) > MAX_ID_CHARS:
        context["error"] = f"id: at most {MAX_ID_CHARS} characters; paste the user_id or anonymous_id as sent."
        return render(request, "personalization/visitors.html", context, status=400)
    if unit_id:
        live = visitor_live(project=project, unit_id=unit_id)
        if live["found"]:
            view = live["view"]
            context["session_rows"] = _session_rows(view)
            context["fact_rows"] = _fact_rows(live["facts"])
        if live["last_active"] is not None:
            context["last_active"] = datetime.fromtimestamp(live["last_active"], tz=UTC)
        context["live"] = live
        context["events"] = _event_rows(people_selectors.unit_events_recent(project_id=project.pk, unit_id=unit_id))
        context["idle_minutes"] = project.live_idle_minutes
        context["stage_sentences"] = definition_sentences(live_settings_of(project).definition)
        why = hooks.person_why.get()
        context["why"] = why(project_id=project.pk, unit_id=unit_id) if why is not None else None
    return render(request, "personalization/visitors.html", context)


def _when(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    ago = max(0, int(time.time() - seconds))
    stamp = datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"{stamp} ({ago // 60} min {ago % 60} s ago)"


def _session_rows(view) -> list[tuple[str, object]]:
    categories = ", ".join(f"{name} ({n})" for name, n in view.category_views.items()) or "—"
    cart = (
        f"{view.cart_open[1] or 'an item'}, {round(view.minutes_since_cart_add or 0)} min ago"
        if view.cart_open
        else "—"
    )
    return [
        ("Session", "ended (idle past the boundary)" if view.ended else "active"),
        ("Started", _when(view.started)),
        ("Last event", _when(view.last)),
        ("Events", view.events),
        ("Page views", view.page_views),
        ("Distinct items viewed", view.items_viewed),
        ("Categories viewed (most recent first)", categories),
        ("Searches (refined)", f"{view.searches} ({view.search_refinements})"),
        ("Cart adds / removals", f"{view.cart_adds} / {view.cart_removes}"),
        ("Purchases", view.purchases),
        ("Open cart", cart),
        ("Sessions in the last 30 days", view.sessions_30d),
        ("First touch", view.first_touch or "direct"),
        ("First seen", _when(view.first_seen)),
    ]
