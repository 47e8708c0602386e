"""Pages for compliance staff: the request queue, request detail with its timeline and job progress,
the export download and erasure certificate, the processing record and the privacy settings.

Only roles allowed the "privacy" section (admin, compliance) reach any of them; every download
and every look at a request is audited.
"""

from pathlib import Path

import orjson
from django.contrib import messages
from django.http import FileResponse, Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from personalization.workspace.web import render_page, workspace_view
from privacy import selectors, services
from privacy.models import DataSubjectRequest, Regime, RequestKind, RequestStatus
from privacy.services.requests import request_audit


def _request_of(request, request_id: int) -> DataSubjectRequest:
    return get_object_or_404(DataSubjectRequest, pk=request_id, project=request.workspace.project)


@workspace_view("privacy")
def queue(request):
    project = request.workspace.project
    status = request.GET.get("status", "open")
    context = {
        "requests": selectors.request_queue(project_id=project.pk, status=status),
        "counts": selectors.request_counts(project_id=project.pk),
        "status": status,
        "statuses": [("open", "Open"), *RequestStatus.choices, ("all", "All")],
        "kinds": RequestKind.choices,
        "regimes": Regime.choices,
        "form": request.session.pop("privacy_form", {}),
    }
    return render_page(request, "privacy/queue.html", "privacy/partials/queue_table.html", context)


@require_POST
@workspace_view("privacy")
def request_create(request):
    post = request.POST
    identifiers = {name: post.get(name, "").strip() for name in ("user_id", "anonymous_id", "email")}
    try:
        created = services.dsr_create(
            project_id=request.workspace.project.pk,
            kind=post.get("kind", ""),
            regime=post.get("regime", Regime.GDPR),
            identifiers=identifiers,
            verification=post.get("verification", ""),
            external_ref=post.get("external_ref", "").strip(),
            by=request.user,
        )
    except services.RequestError as exc:
        messages.error(request, f"{exc.field}: {exc.message}")
        request.session["privacy_form"] = {k: v for k, v in post.items() if k != "csrfmiddlewaretoken"}
        return redirect("privacy")
    messages.success(request, f"{created.reference} recorded; due {created.due_at:%Y-%m-%d}.")
    return redirect("privacy-request", request_id=created.pk)


@workspace_view("privacy")
def request_detail(request, request_id: int):
    dsr = _request_of(request, request_id)
    request_audit(dsr, request.user, "viewed")
    context = {
        "dsr": dsr,
        "due_state": selectors.request_due_state(request=dsr),
        "timeline": selectors.request_timeline(request=dsr),
        "export_available": _export_available(dsr),
        "certificate_json": orjson.dumps(dsr.certificate, option=orjson.OPT_INDENT_2).decode()
        if dsr.certificate
        else "",
    }
    return render(request, "privacy/request.html", context)


@workspace_view("privacy")
def request_progress(request, request_id: int):
    """The job's progress bar; htmx polls it every second while the job runs. When the job is done
    the whole page reloads (HX-Refresh) to show the certificate or the download."""
    dsr = _request_of(request, request_id)
    response = render(request, "privacy/partials/progress.html", {"dsr": dsr})
    if dsr.status != RequestStatus.PROCESSING and request.GET.get("running"):
        response["HX-Refresh"] = "true"
    return response


_ACTIONS = {
    "verify": lambda dsr, post, user: services.dsr_verify(
        request=dsr, verification=post.get("verification", ""), by=user
    ),
    "process": lambda dsr, post, user: services.dsr_process(request=dsr, by=user),
    "reject": lambda dsr, post, user: services.dsr_reject(request=dsr, reason=post.get("reason", ""), by=user),
    "extend": lambda dsr, post, user: services.dsr_extend(request=dsr, reason=post.get("reason", ""), by=user),
    "lift": lambda dsr, post, user: services.restriction_lift(
        request=dsr, subject_notified=post.get("subject_notified") == "on", by=user
    ),
}


@require_POST
@workspace_view("privacy")
def request_action(request, request_id: int, action: str):
    dsr = _request_of(request, request_id)
    if action not in _ACTIONS:
        raise Http404(f"no action {action}")
    try:
        _ACTIONS[action](dsr, request.POST, request.user)
    except services.RequestError as exc:
        messages.error(request, f"{exc.field}: {exc.message}")
    return redirect("privacy-request", request_id=dsr.pk)


def _export_available(dsr: DataSubjectRequest) -> bool:
    return bool(
        dsr.export_path
        and dsr.export_expires_at
        and dsr.export_expires_at > timezone.now()
        and Path(dsr.export_path).exists()
    )


@workspace_view("privacy")
def export_download(request, request_id: int):
    dsr = _request_of(request, request_id)
    if not _export_available(dsr):
        messages.error(request, "export: the link has expired or the file was deleted; process the request again.")
        return redirect("privacy-request", request_id=dsr.pk)
    request_audit(dsr, request.user, "export_downloaded")
    return FileResponse(open(dsr.export_path, "rb"), as_attachment=True, filename=f"{dsr.reference}-export.zip")


@workspace_view("privacy")
def certificate_download(request, request_id: int):
    dsr = _request_of(request, request_id)
    if not dsr.certificate:
        raise Http404("no certificate yet: the request has not completed")
    request_audit(dsr, request.user, "certificate_downloaded")
    response = HttpResponse(orjson.dumps(dsr.certificate, option=orjson.OPT_INDENT_2), content_type="application/json")
    response["Content-Disposition"] = f'attachment; filename="{dsr.reference}-certificate.json"'
    return response


@workspace_view("privacy")
def record(request):
    project = request.workspace.project
    text = services.processing_record(project_id=project.pk, project_name=project.name)
    if request.GET.get("download"):
        response = HttpResponse(text, content_type="text/plain; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="processing-record-{project.slug}.txt"'
        return response
    context = {"record": text, "settings": selectors.privacy_settings_get(project_id=project.pk)}
    return render(request, "privacy/record.html", context)


@require_POST
@workspace_view("privacy.settings")
def settings_save(request):
    try:
        services.privacy_settings_set(
            project_id=request.workspace.project.pk,
            require_consent=request.POST.get("require_consent") == "on",
            honor_gpc=request.POST.get("honor_gpc") == "on",
            event_retention_days=request.POST.get("event_retention_days", ""),
            by=request.user,
        )
        messages.success(request, "Privacy settings saved; decide applies them within a second.")
    except services.RequestError as exc:
        messages.error(request, f"{exc.field}: {exc.message}")
    return redirect("privacy-record")
