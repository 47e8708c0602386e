"""Data subject requests: recording them with their due dates, and moving them through their statuses.

received → verified → processing → completed / rejected; every change is audited with who and when.
The request is named in the audit trail by its reference (DSR-<id>) and the subject by a keyed
digest, never by an identifier.
"""

import calendar
from datetime import datetime, timedelta

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from personalization.services import audit_record
from privacy.models import DataSubjectRequest, Regime, RequestKind, RequestStatus
from privacy.selectors import digest_of

IDENTIFIER_FIELDS = {"user_id": 128, "anonymous_id": 128, "email": 254}
CCPA_CONFIRM_BUSINESS_DAYS = 10
CCPA_ANSWER_DAYS = 45


class RequestError(ValueError):
    """A user-fixable problem with a request; names the field and the fix."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def add_months(moment: datetime, months: int) -> datetime:
    """The same day `months` later, or the month's last day when it has no such day (31 Jan → 28 Feb)."""
    month = moment.month - 1 + months
    year, month = moment.year + month // 12, month % 12 + 1
    return moment.replace(year=year, month=month, day=min(moment.day, calendar.monthrange(year, month)[1]))


def add_business_days(moment: datetime, days: int) -> datetime:
    while days > 0:
        moment += timedelta(days=1)
        if moment.weekday() < 5:
            days -= 1
    return moment


def due_dates(*, regime: str, received_at: datetime) -> tuple[datetime, datetime | None]:
    """(answer due, receipt confirmation due). GDPR Art. 12(3): one month. CCPA: confirm within 10
    business days, answer within 45 calendar days."""
    if regime == Regime.CCPA:
        return received_at + timedelta(days=CCPA_ANSWER_DAYS), add_business_days(
            received_at, CCPA_CONFIRM_BUSINESS_DAYS
        )
    return add_months(received_at, 1), None


def _identifiers_clean(identifiers: object) -> dict[str, str]:
    if not isinstance(identifiers, dict):
        raise RequestError("identifiers", 'give an object like {"user_id": "u-42", "email": "ada@example.com"}')
    unknown = set(identifiers) - set(IDENTIFIER_FIELDS)
    if unknown:
        raise RequestError(
            f"identifiers.{sorted(unknown)[0]}", f"unknown identifier; use {', '.join(IDENTIFIER_FIELDS)}"
        )
    clean = {}
    for name, limit in IDENTIFIER_FIELDS.items():
        value = identifiers.get(name)
        if value is None or value == "":
            continue
        if not isinstance(value, str) or len(value.strip()) > limit:
            raise RequestError(f"identifiers.{name}", f"must be text of at most {limit} characters")
        clean[name] = value.strip()
    if "email" in clean and "@" not in clean["email"]:
        raise RequestError("identifiers.email", "is not an email address (it needs an @)")
    if not clean:
        raise RequestError("identifiers", "give at least one of user_id, anonymous_id or email")
    return clean


def _subject_key(project_id: int, identifiers: dict[str, str]) -> str:
    first = identifiers.get("user_id") or identifiers.get("anonymous_id") or "email:" + identifiers["email"]
    return digest_of(project_id=project_id, identifier=first)


def request_audit(request: DataSubjectRequest, by, action: str, changes: dict | None = None) -> None:
    audit_record(
        project_id=request.project_id,
        actor=by,
        action=action,
        object_type="privacy_request",
        object_key=request.reference,
        changes={"subject": request.subject_digest[:16], "kind": request.kind, **(changes or {})},
    )


def dsr_create(
    *,
    project_id: int,
    kind: str,
    identifiers: object,
    regime: str = Regime.GDPR,
    verification: str = "",
    by: AbstractBaseUser | None = None,
    source: str = "dashboard",
    external_ref: str = "",
) -> DataSubjectRequest:
    """Record a request; with `verification` given it is verified at once (both steps audited)."""
    if kind not in RequestKind.values:
        raise RequestError("kind", f"choose one of {', '.join(RequestKind.values)}")
    if regime not in Regime.values:
        raise RequestError("regime", f"choose one of {', '.join(Regime.values)}")
    if not isinstance(verification, str) or len(verification) > 2000:
        raise RequestError("verification", "describe how identity was checked, in at most 2000 characters")
    if not isinstance(external_ref, str) or len(external_ref) > 120:
        raise RequestError("external_ref", "must be text of at most 120 characters")
    clean = _identifiers_clean(identifiers)
    received_at = timezone.now()
    due_at, confirm_by = due_dates(regime=regime, received_at=received_at)
    with transaction.atomic():
        request = DataSubjectRequest.objects.create(
            project_id=project_id,
            kind=kind,
            regime=regime,
            identifiers=clean,
            subject_digest=_subject_key(project_id, clean),
            source=source,
            external_ref=external_ref,
            received_at=received_at,
            due_at=due_at,
            confirm_by=confirm_by,
            created_by=by if by is not None and by.is_authenticated else None,
        )
        request_audit(request, by, "received", {"due_at": due_at.isoformat(), "source": source})
        if verification.strip():
            dsr_verify(request=request, verification=verification, by=by)
    return request


def dsr_verify(*, request: DataSubjectRequest, verification: str, by: AbstractBaseUser | None) -> DataSubjectRequest:
    if request.status != RequestStatus.RECEIVED:
        raise RequestError("status", f"only a received request can be verified; this one is {request.status}")
    if not verification.strip():
        raise RequestError("verification", "say how the subject's identity was checked, e.g. 'login session'")
    request.verification = verification.strip()[:2000]
    request.status = RequestStatus.VERIFIED
    request.save(update_fields=["verification", "status", "updated_at"])
    request_audit(request, by, "verified", {"status": [RequestStatus.RECEIVED, RequestStatus.VERIFIED]})
    return request


def dsr_reject(*, request: DataSubjectRequest, reason: str, by: AbstractBaseUser | None) -> DataSubjectRequest:
    if not request.is_open or request.status == RequestStatus.PROCESSING:
        raise RequestError("status", f"a {request.status} request cannot be rejected")
    if not reason.strip():
        raise RequestError("reason", "say why, e.g. 'identity could not be verified'; the subject must be told")
    before = request.status
    request.status = RequestStatus.REJECTED
    request.rejection_reason = reason.strip()[:2000]
    request.completed_at = timezone.now()
    request.save(update_fields=["status", "rejection_reason", "completed_at", "updated_at"])
    request_audit(request, by, "rejected", {"status": [before, RequestStatus.REJECTED]})
    return request


def dsr_extend(*, request: DataSubjectRequest, reason: str, by: AbstractBaseUser | None) -> DataSubjectRequest:
    """GDPR: two more months, decided within the first month; CCPA: 45 more days. Once."""
    now = timezone.now()
    if request.extended_at is not None:
        raise RequestError("extension", "this request was already extended once; no further extension is allowed")
    if not request.is_open:
        raise RequestError("status", f"a {request.status} request cannot be extended")
    if now > request.due_at:
        raise RequestError("extension", "the deadline has passed; an extension must be sent before it")
    if not reason.strip():
        raise RequestError("reason", "give the reason, which must be sent to the subject")
    before = request.due_at
    if request.regime == Regime.CCPA:
        request.due_at = request.due_at + timedelta(days=CCPA_ANSWER_DAYS)
    else:
        request.due_at = add_months(request.due_at, 2)
    request.extended_at = now
    request.extension_reason = reason.strip()[:2000]
    request.save(update_fields=["due_at", "extended_at", "extension_reason", "updated_at"])
    request_audit(request, by, "extended", {"due_at": [before.isoformat(), request.due_at.isoformat()]})
    return request


def dsr_process(*, request: DataSubjectRequest, by: AbstractBaseUser | None) -> DataSubjectRequest:
    """Start the job for a verified request (export, erasure, objection or restriction)."""
    from privacy import tasks  # circular: tasks imports privacy.services, which imports this module

    if request.status != RequestStatus.VERIFIED:
        raise RequestError("status", f"verify the subject's identity first; this request is {request.status}")
    with transaction.atomic():
        request.status = RequestStatus.PROCESSING
        request.progress_step = "queued"
        request.save(update_fields=["status", "progress_step", "updated_at"])
        request_audit(request, by, "processing", {"status": [RequestStatus.VERIFIED, RequestStatus.PROCESSING]})
        transaction.on_commit(lambda: tasks.dsr_run_task.delay(request.pk))
    return request
