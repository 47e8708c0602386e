"""Shared helpers of the dashboard pages: the current workspace, role checks, partial-or-page."""

import json
from dataclasses import dataclass
from functools import wraps

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme

from personalization.models import Membership
from personalization.workspace import permissions

# The dashboard's sections: URL name (also the action that opens it, see permissions.ACTIONS) and label.
NAV = [
    ("overview", "Overview"),
    ("experiences", "Experiences"),
    ("segments", "Segments"),
    ("lift", "Lift"),
    ("privacy", "Privacy"),
    ("visitors", "Visitors"),
    ("settings", "Settings"),
]


@dataclass(frozen=True)
class Workspace:
    membership: Membership
    memberships: list[Membership]

    @property
    def project(self):
        return self.membership.project

    @property
    def role(self) -> str:
        return self.membership.role

    def nav(self) -> list[tuple[str, str]]:
        return [(name, label) for name, label in NAV if self.can(name)]

    @property
    def allowed(self) -> set[str]:
        """The actions the role may use, for templates: `{% if "lift" in workspace.allowed %}`."""
        return permissions.role_actions(role=self.role)

    def can(self, action: str) -> bool:
        return permissions.principal_allows(principal=self.role, action=action)


_ACTION_VERBS = {
    "experiences.edit": "change experiences",
    "lift.compute": "compute lift reports",
    "keys.manage": "manage API keys",
    "members.manage": "change members",
}


def workspace_for(request) -> Workspace | None:
    memberships = list(Membership.objects.filter(user=request.user).select_related("project").order_by("project__name"))
    if not memberships:
        return None
    wanted = request.session.get("project_id")
    current = next((m for m in memberships if m.project_id == wanted), memberships[0])
    request.session["project_id"] = current.project_id
    return Workspace(membership=current, memberships=memberships)


def workspace_view(action: str):
    """Login required, a project membership required, and `action` allowed for the user's role.

    The action names the page's section before any dot ("experiences.edit" is in Experiences).
    """
    permissions.action_check(action)
    section = action.split(".", 1)[0]

    def decorator(view):
        @login_required
        @wraps(view)
        def wrapper(request, *args, **kwargs):
            workspace = workspace_for(request)
            if workspace is None:
                return render(request, "no_project.html")  # the first-run page: create a project
            request.workspace = workspace  # also for the 403 page's navigation
            request.section = section
            if not workspace.can(action):
                raise PermissionDenied(
                    f"Your role ({workspace.role}) cannot {_ACTION_VERBS.get(action, f'open {section}')}; "
                    "ask an admin of this project."
                )
            return view(request, *args, **kwargs)

        wrapper.kairos_action = action
        return wrapper

    return decorator


def figures_json(figures: dict[str, str]) -> str:
    """Plotly figures (JSON text) by chart element id, as one JSON object safe inside a
    `<script type="application/json" class="kairos-charts">` block that static/js/dashboard.js draws.
    Names and labels are user text, so `<`, `>` and `&` are escaped."""
    text = "{" + ",".join(f"{json.dumps(name)}:{figure}" for name, figure in figures.items()) + "}"
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def is_partial(request) -> bool:
    return bool(getattr(request, "htmx", False)) and not request.htmx.boosted


def render_page(request, template: str, partial: str, context: dict, status: int = 200):
    """The whole page for a normal request, only the partial for an htmx request."""
    return render(request, partial if is_partial(request) else template, context, status=status)


def safe_next(request, default: str) -> str:
    """The POSTed `next` when it is a path on this site, else `default`: never a redirect elsewhere."""
    wanted = request.POST.get("next", "")
    if wanted and url_has_allowed_host_and_scheme(
        wanted, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return wanted
    return default


def back(request, default: str):
    return redirect(safe_next(request, default))
