"""Who may do what: one map of principal × action, read by the dashboard and the REST API alike.

A principal is a member's role in the current project, or `SECRET_KEY` for a request made with a
project's secret key (`ks_…`). An action is a name such as "lift" (open the Lift page, read the lift
report over REST) or "experiences.edit". The dashboard checks it with
`personalization.workspace.web.workspace_view("<action>")`, the navigation shows the sections whose action the
role has, and DRF views name theirs in `required_action` (checked by `auth.RoleAllows`). Tests walk
every URL and check every principal against this map (tests/personalization/test_permissions.py).

To add an action (a page or endpoint of segments, privacy, …): add one line to ACTIONS below, then
decorate the view or set `required_action` on the DRF view. A view that names an action missing here
fails at import, so a typo cannot open a page to everyone.
"""

from personalization.models import Role

SECRET_KEY = "secret_key"  # noqa: S105 -- the name of a principal, not a secret
PRINCIPALS: tuple[str, ...] = (*Role.values, SECRET_KEY)

_ALL_ROLES = frozenset(Role.values)
_ADMIN, _MARKETER, _ANALYST, _COMPLIANCE, _DEVELOPER = (
    Role.ADMIN.value,
    Role.MARKETER.value,
    Role.ANALYST.value,
    Role.COMPLIANCE.value,
    Role.DEVELOPER.value,
)

# action → principals allowed. A section's page is the action named after it.
ACTIONS: dict[str, frozenset[str]] = {
    "overview": _ALL_ROLES,
    "project": frozenset({*_ALL_ROLES, SECRET_KEY}),
    "experiences": frozenset({_ADMIN, _MARKETER, _ANALYST, _DEVELOPER, SECRET_KEY}),
    "experiences.edit": frozenset({_ADMIN, _MARKETER, SECRET_KEY}),
    "segments": frozenset({_ADMIN, _MARKETER, _ANALYST, SECRET_KEY}),
    "lift": frozenset({_ADMIN, _MARKETER, _ANALYST, SECRET_KEY}),
    "lift.compute": frozenset({_ADMIN, _MARKETER, _ANALYST}),
    # Profiles are personal data; reading them over REST is for admins, marketers and integrations.
    "profiles": frozenset({_ADMIN, _MARKETER, SECRET_KEY}),
    "privacy": frozenset({_ADMIN, _COMPLIANCE}),
    # Data subject requests and consent over REST: compliance staff and the customer's own systems.
    "privacy.api": frozenset({_ADMIN, _COMPLIANCE, SECRET_KEY}),
    "privacy.settings": frozenset({_ADMIN, _COMPLIANCE}),
    # A visitor's live state and recent events, for debugging an integration: the people who wire the
    # site up, not every role (it is one person's behavior, looked up by id).
    "visitors": frozenset({_ADMIN, _DEVELOPER}),
    "settings": frozenset({_ADMIN, _DEVELOPER}),
    "keys.manage": frozenset({_ADMIN, _DEVELOPER}),
    "members.manage": frozenset({_ADMIN}),
    # Projects: anyone logged in may start one (even with no project yet); a secret key belongs to one.
    "projects": frozenset({*_ALL_ROLES, SECRET_KEY}),
    "projects.create": _ALL_ROLES,
    "projects.manage": frozenset({_ADMIN, SECRET_KEY}),
    # Dead letters hold the personal data of events that could not be stored.
    "dead_letters": frozenset({_ADMIN}),
}


def action_check(action: str) -> str:
    """`action`, after making sure the map declares it (called where a view names its action)."""
    if action not in ACTIONS:
        raise KeyError(
            f"permission action {action!r} is not declared in ACTIONS of personalization/workspace/permissions.py"
        )
    return action


def principal_allows(*, principal: str, action: str) -> bool:
    return principal in ACTIONS[action_check(action)]


def role_actions(*, role: str) -> set[str]:
    return {action for action, principals in ACTIONS.items() if role in principals}
