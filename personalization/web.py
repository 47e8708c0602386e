"""Shared helpers of the dashboard pages: the current workspace, role checks, partial-or-page."""

from dataclasses import dataclass
from functools import wraps

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect, render

from personalization.models import Membership, Role

# Which roles see which part of the dashboard.
NAV = [
    ("overview", "Overview", set(Role.values)),
    ("experiences", "Experiences", {Role.ADMIN, Role.MARKETER, Role.ANALYST, Role.DEVELOPER}),
    ("segments", "Segments", {Role.ADMIN, Role.MARKETER, Role.ANALYST}),
    ("lift", "Lift", {Role.ADMIN, Role.MARKETER, Role.ANALYST}),
    ("privacy", "Privacy", {Role.ADMIN, Role.COMPLIANCE}),
    ("settings", "Settings", {Role.ADMIN, Role.DEVELOPER}),
]
SECTION_ROLES = {name: roles for name, _, roles in NAV}


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
        return [(name, label) for name, label, roles in NAV if self.role in roles]


def workspace_for(request) -> Workspace | None:
    memberships = list(Membership.objects.filter(user=request.user).select_related("project").order_by("project__name"))
    if not memberships:
        return None
    wanted = request.session.get("project_id")
    current = next((m for m in memberships if m.project_id == wanted), memberships[0])
    request.session["project_id"] = current.project_id
    return Workspace(membership=current, memberships=memberships)


def workspace_view(section: str):
    """Login required, a project membership required, and the section allowed for the user's role."""

    def decorator(view):
        @login_required
        @wraps(view)
        def wrapper(request, *args, **kwargs):
            workspace = workspace_for(request)
            if workspace is None:
                return render(request, "no_project.html")  # the first-run page: create a project
            if workspace.role not in SECTION_ROLES[section]:
                raise PermissionDenied(f"Your role ({workspace.role}) cannot open {section}.")
            request.workspace = workspace
            request.section = section
            return view(request, *args, **kwargs)

        return wrapper

    return decorator


def is_partial(request) -> bool:
    return bool(getattr(request, "htmx", False)) and not request.htmx.boosted


def render_page(request, template: str, partial: str, context: dict, status: int = 200):
    """The whole page for a normal request, only the partial for an htmx request."""
    return render(request, partial if is_partial(request) else template, context, status=status)


def back(request, default: str):
    return redirect(request.POST.get("next") or default)
