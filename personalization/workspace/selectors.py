"""Reads of projects, members, keys and the audit trail."""

from personalization.models import (
    ApiKey,
    AuditEntry,
    Membership,
    Profile,
    Project,
)


def project_keys(*, project: Project) -> list[ApiKey]:
    return list(ApiKey.objects.filter(project=project).order_by("revoked_at", "-created_at"))


def project_members(*, project: Project) -> list[Membership]:
    return list(Membership.objects.filter(project=project).select_related("user").order_by("user__username"))


def project_counts(*, project: Project) -> dict:
    return {
        "profiles": Profile.objects.filter(project=project).count(),
    }


def audit_entries(*, project_id: int, object_type: str, object_key: str) -> list[AuditEntry]:
    """One object's audit trail, oldest first."""
    return list(
        AuditEntry.objects.filter(project_id=project_id, object_type=object_type, object_key=object_key)
        .select_related("actor")
        .order_by("at", "pk")
    )


def projects_all() -> list[Project]:
    return list(Project.objects.order_by("pk"))


def project_by_id(*, project_id: int) -> Project:
    return Project.objects.get(pk=project_id)


def project_by_slug_or_id(*, value: str) -> Project | None:
    project = Project.objects.filter(slug=value).first()
    if project is None and value.isdigit():
        project = Project.objects.filter(pk=int(value)).first()
    return project


def project_by_id_or_none(*, project_id: int) -> Project | None:
    return Project.objects.filter(pk=project_id).first()


def projects_of_user(*, user) -> list[Project]:
    return list(Project.objects.filter(memberships__user=user).order_by("name"))


def member_role(*, user, project_id: int) -> str | None:
    """`user`'s role in the project, or None when they are not a member."""
    return Membership.objects.filter(user=user, project_id=project_id).values_list("role", flat=True).first()
