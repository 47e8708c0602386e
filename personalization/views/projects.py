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
