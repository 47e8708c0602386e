"""Projects from the dashboard: create (the creator becomes its admin), rename, delete."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from personalization import services
from personalization.workspace.web import workspace_for, workspace_view


@login_required
def project_new(request):
    """The form, and the first-run page's target: anyone logged in may start a project."""
    request.workspace = workspace_for(request)
    error = None
    name = ""
    if request.method == "POST":
        name = request.POST.get("name", "")
        try:
            project = services.project_create(name=name, owner=request.user)
        except services.ProjectError as exc:
            error = exc
        else:
            request.session["project_id"] = project.pk
            messages.success(
                request,
                f"Project “{project.name}” created; you are its admin. Next: create a public key for your site"
                " and a secret key for the REST API.",
            )
            return redirect("settings")
    template = "personalization/project_new.html" if request.workspace else "no_project.html"
    return render(request, template, {"error": error, "name": name}, status=400 if error else 200)


@require_POST
@workspace_view("projects.manage")
def project_rename(request):
    try:
        project = services.project_rename(
            project=request.workspace.project, name=request.POST.get("name", ""), by=request.user
        )
    except services.ProjectError as exc:
        messages.error(request, f"{exc.field}: {exc.message}")
    else:
        messages.success(request, f"The project is now called “{project.name}”.")
    return redirect("settings")


def _whole_number(raw: str, field: str) -> int:
    try:
        return int(raw.strip())
    except ValueError:
        raise services.ProjectError(field, f"“{raw[:20]}” is not a whole number") from None


@require_POST
@workspace_view("projects.manage")
def project_live(request):
    """The live-intent settings; the journey thresholds come as journey.<stage>.<measure> fields."""
    post = request.POST
    try:
        journey: dict = {}
        for name in post:
            parts = name.split(".")
            if len(parts) == 3 and parts[0] == "journey" and post[name].strip():
                journey.setdefault(parts[1], {})[parts[2]] = _whole_number(post[name], name)
        services.project_live_update(
            project=request.workspace.project,
            live_idle_minutes=_whole_number(post.get("live_idle_minutes", ""), "live_idle_minutes"),
            time_zone=post.get("time_zone", ""),
            journey=journey,
            by=request.user,
        )
    except services.ProjectError as exc:
        messages.error(request, f"{exc.field}: {exc.message}")
    else:
        messages.success(request, "Live intent settings saved; decide uses them within a few seconds.")
    return redirect("settings")


@require_POST
@workspace_view("projects.manage")
def project_delete(request):
    project = request.workspace.project
    name = project.name
    try:
        services.project_delete(project=project, confirm=request.POST.get("confirm", ""), by=request.user)
    except services.ProjectError as exc:
        messages.error(request, f"{exc.field}: {exc.message}")
        return redirect("settings")
    request.session.pop("project_id", None)
    messages.success(request, f"Project “{name}” and everything in it were deleted.")
    return redirect("overview")
