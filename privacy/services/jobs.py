"""The jobs behind data subject requests: erasure with its certificate, export, objection and restriction.

Every job fixes the subject (profiles and ids) on the request before touching anything, works in
chunks that commit on their own, and can be run again: after a crash (the Celery task is acks_late,
so a killed worker's job is delivered again) it picks up from what is left and ends in the same state.
"""

import time
from collections.abc import Callable

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from personalization import selectors as personalization_selectors
from personalization import services as personalization_services
from personalization import services as subject_data
from privacy import registry
from privacy.models import DataSubjectRequest, RequestKind, RequestStatus, Suppression
from privacy.selectors import digest_of
from privacy.services.requests import RequestError, request_audit

_ERASE_PASSES = 3
_PROGRESS_EVERY_SECONDS = 0.5


def subject_fix(*, request: DataSubjectRequest) -> registry.Subject:
    """The subject the job works on, resolved once from the identifiers and kept on the request."""
    if not request.subject.get("profile_ids") and not request.subject.get("unit_ids"):
        ids = request.identifiers
        profile_ids, unit_ids = personalization_selectors.subject_resolve(
            project_id=request.project_id,
            user_ids=[ids["user_id"]] if ids.get("user_id") else [],
            anonymous_ids=[ids["anonymous_id"]] if ids.get("anonymous_id") else [],
            emails=[ids["email"]] if ids.get("email") else [],
        )
        request.subject = {**request.subject, "profile_ids": profile_ids, "unit_ids": unit_ids}
        request.save(update_fields=["subject", "updated_at"])
    return registry.Subject(
        project_id=request.project_id,
        profile_ids=tuple(request.subject.get("profile_ids", ())),
        unit_ids=tuple(request.subject.get("unit_ids", ())),
    )


class Progress:
    """Counts work done and saves it on the request about twice a second, for the page's progress bar."""

    def __init__(self, request: DataSubjectRequest, total: int):
        self.request = request
        self.saved_at = 0.0
        request.progress_total = max(total, 1)
        request.progress_done = 0
        self.save(force=True)

    def step(self, name: str) -> None:
        self.request.progress_step = name
        self.save(force=True)

    def add(self, n: int) -> None:
        self.request.progress_done = min(self.request.progress_done + n, self.request.progress_total)
        self.save()

    def save(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self.saved_at >= _PROGRESS_EVERY_SECONDS:
            self.request.save(update_fields=["progress_done", "progress_total", "progress_step", "updated_at"])
            self.saved_at = now


def _suppress(request: DataSubjectRequest, subject: registry.Subject) -> int:
    """Before anything is deleted: late events and decide calls for these ids are dropped from now on."""
    identifiers = list(subject.unit_ids)
    if request.identifiers.get("email"):
        identifiers.append("email:" + request.identifiers["email"])
    digests = sorted({digest_of(project_id=request.project_id, identifier=i) for i in identifiers})
    first = not Suppression.objects.filter(project_id=request.project_id).exists()
    Suppression.objects.bulk_create(
        [Suppression(project_id=request.project_id, digest=d, request=request) for d in digests],
        ignore_conflicts=True,
    )
    subject_data.suppression_publish(project_id=request.project_id, digests=digests)
    personalization_services.snapshot_publish(project_id=request.project_id)
    if first:
        # Decide processes learn that the project has erased subjects with their next snapshot
        # check; until then a decide call could still write the subject's sticky assignments.
        time.sleep(personalization_selectors.decide_snapshot_settle_seconds())
    return len(digests)


def subject_erase(*, request: DataSubjectRequest, progress_hook: Callable[[int], None] | None = None) -> dict:
    """Erase the subject from every registered location, verify, and keep the certificate.

    Suppression comes first, so an event sent during the erasure is dropped by the drain; the stream
    is purged before the tables, so no pending event re-creates a deleted row. A location found not
    empty on verification (an event drained in the very moment of its purge) is erased again.
    """
    if request.status == RequestStatus.COMPLETED:
        return request.certificate  # run twice: already done, and the proof is kept
    started = timezone.now()
    subject = subject_fix(request=request)
    suppressed = _suppress(request, subject)
    remaining = {loc.name: loc.verify(subject) for loc in registry.locations()}
    progress = Progress(request, sum(remaining.values()))
    removed = dict.fromkeys(remaining, 0)
    for _ in range(_ERASE_PASSES):
        for loc in registry.locations():
            if not remaining[loc.name]:
                continue
            progress.step(f"erasing {loc.name}")

            def note(n: int) -> None:
                progress.add(n)
                if progress_hook is not None:
                    progress_hook(n)

            removed[loc.name] += loc.erase(subject, note)
        progress.step("verifying")
        remaining = {loc.name: loc.verify(subject) for loc in registry.locations()}
        if not any(remaining.values()):
            break
    verified = timezone.now()
    certificate = {
        "request": request.reference,
        "subject": request.subject_digest,
        "requested_at": request.received_at.isoformat(),
        "started_at": started.isoformat(),
        "completed_at": verified.isoformat(),
        "verified_at": verified.isoformat(),
        "complete": not any(remaining.values()),
        "profiles": len(subject.profile_ids),
        "identifiers": len(subject.unit_ids),
        "locations": [
            {
                "name": loc.name,
                "store": loc.store,
                "mechanism": loc.mechanism,
                "removed": removed[loc.name],
                "remaining": remaining[loc.name],
            }
            for loc in registry.locations()
        ],
        "suppression": {
            "digests": suppressed,
            "how": "HMAC-SHA256 of each identifier, keyed with KAIROS_PRIVACY_KEY (kept outside the database)",
        },
        "kept": "aggregates that identify no one: bandit counts, report totals; this certificate and the audit trail",
    }
    _finish(request, certificate, "erased")
    return certificate


def _finish(request: DataSubjectRequest, certificate: dict, action: str) -> None:
    with transaction.atomic():
        complete = certificate.get("complete", True)
        request.certificate = certificate
        request.status = RequestStatus.COMPLETED if complete else RequestStatus.PROCESSING
        request.completed_at = timezone.now() if complete else None
        request.progress_done = request.progress_total
        request.progress_step = "done" if complete else "incomplete: run again"
        fields = ["certificate", "status", "completed_at", "progress_done", "progress_step", "updated_at"]
        if request.kind == RequestKind.ERASURE and complete:
            # The proof stays; the identifiers go: only the keyed digest names the subject now.
            request.identifiers = {}
            request.subject = {"profiles": len(request.subject.get("profile_ids", ()))}
            fields += ["identifiers", "subject"]
        request.save(update_fields=fields)
        request_audit(request, None, action, {"status": [RequestStatus.PROCESSING, request.status]})


def subject_object(*, request: DataSubjectRequest) -> dict:
    """Objection to profiling (Art. 21(3)): absolute. The subject is no longer personalized and
    the data derived by profiling (segment memberships, embeddings, lookalike results) is deleted."""
    subject = subject_fix(request=request)
    progress = Progress(request, len(subject.profile_ids) + 1)
    progress.step("switching personalization off")
    subject_data.profiles_personalization_set(
        project_id=request.project_id, profile_ids=list(subject.profile_ids), do_not_personalize=True
    )
    subject_data.unit_hashes_unprofile(project_id=request.project_id, unit_ids=list(subject.unit_ids))
    removed = {}
    for loc in registry.locations():
        if loc.profiling:
            progress.step(f"deleting {loc.name}")
            removed[loc.name] = loc.erase(subject, progress.add)
    certificate = {
        "request": request.reference,
        "do_not_personalize": True,
        "profiles": len(subject.profile_ids),
        "profiling_data_deleted": removed,
        "completed_at": timezone.now().isoformat(),
    }
    _finish(request, certificate, "objection_applied")
    return certificate


def subject_restrict(*, request: DataSubjectRequest) -> dict:
    """Restriction (Art. 18): the data stays but is used for nothing until the restriction is lifted."""
    subject = subject_fix(request=request)
    Progress(request, 1).step("restricting")
    subject_data.profiles_personalization_set(
        project_id=request.project_id, profile_ids=list(subject.profile_ids), do_not_personalize=True
    )
    certificate = {
        "request": request.reference,
        "restricted": True,
        "profiles": len(subject.profile_ids),
        "completed_at": timezone.now().isoformat(),
    }
    _finish(request, certificate, "restriction_applied")
    return certificate


def restriction_lift(
    *, request: DataSubjectRequest, subject_notified: bool, by: AbstractBaseUser | None
) -> DataSubjectRequest:
    """Art. 18(3): the subject is told before the restriction is lifted; lifting says so."""
    if request.kind != RequestKind.RESTRICTION or request.status != RequestStatus.COMPLETED:
        raise RequestError("request", "only a completed restriction can be lifted")
    if request.restriction_lifted_at is not None:
        raise RequestError("request", "this restriction was already lifted")
    if not subject_notified:
        raise RequestError("subject_notified", "tell the subject before lifting the restriction, then tick the box")
    subject_data.profiles_personalization_set(
        project_id=request.project_id,
        profile_ids=list(request.subject.get("profile_ids", ())),
        do_not_personalize=False,
    )
    request.restriction_lifted_at = timezone.now()
    request.save(update_fields=["restriction_lifted_at", "updated_at"])
    request_audit(request, by, "restriction_lifted", {"subject_notified": True})
    return request


def dsr_run(*, request_id: int) -> str:
    """The job of a request in processing; returns what it did. Quiet when there is nothing to do
    (the request is gone, or finished by an earlier delivery of the same task)."""
    from privacy.services.export import subject_export  # circular: export imports this module

    request = DataSubjectRequest.objects.filter(pk=request_id).first()
    if request is None or request.status != RequestStatus.PROCESSING:
        return "nothing to do"
    jobs = {
        RequestKind.ERASURE: subject_erase,
        RequestKind.ACCESS: subject_export,
        RequestKind.OBJECTION: subject_object,
        RequestKind.RESTRICTION: subject_restrict,
    }
    jobs[RequestKind(request.kind)](request=request)
    return request.kind
