"""The models of the personalization app, one module per job; import them from here."""

from personalization.models.experiences import (
    Arm,
    BanditWeights,
    Experience,
    ExperienceStatus,
    Exposure,
    ExposureClaim,
    Policy,
    Variant,
)
from personalization.models.ingest import DeadLetter
from personalization.models.people import Event, EventClaim, IdentityKind, Profile, ProfileIdentity
from personalization.models.workspace import ApiKey, AuditEntry, KeyKind, Membership, Project, Role, new_salt

# Migrations 0001 and 0002 name the salt default by this path.
_new_salt = new_salt

__all__ = [
    "ApiKey",
    "Arm",
    "AuditEntry",
    "BanditWeights",
    "DeadLetter",
    "Event",
    "EventClaim",
    "Experience",
    "ExperienceStatus",
    "Exposure",
    "ExposureClaim",
    "IdentityKind",
    "KeyKind",
    "Membership",
    "Policy",
    "Profile",
    "ProfileIdentity",
    "Project",
    "Role",
    "Variant",
]
