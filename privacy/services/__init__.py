"""Every write of the privacy app. Import from here: `from privacy import services`."""

from privacy.services.export import subject_export
from privacy.services.jobs import dsr_run, restriction_lift, subject_erase, subject_object, subject_restrict
from privacy.services.records import (
    exports_expire,
    privacy_settings_set,
    processing_record,
    retention_apply,
    suppression_republish,
)
from privacy.services.requests import RequestError, dsr_create, dsr_extend, dsr_process, dsr_reject, dsr_verify

__all__ = [
    "RequestError",
    "dsr_create",
    "dsr_extend",
    "dsr_process",
    "dsr_reject",
    "dsr_run",
    "dsr_verify",
    "exports_expire",
    "privacy_settings_set",
    "processing_record",
    "restriction_lift",
    "retention_apply",
    "subject_erase",
    "subject_export",
    "subject_object",
    "subject_restrict",
    "suppression_republish",
]
