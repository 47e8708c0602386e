"""Every principal × every dashboard page and REST endpoint, generated from personalization.workspace.permissions.

The cases come from walking the URL configuration: a dashboard view carries the action it checks
(`workspace_view`), a DRF view its `required_action`. Objects named in URLs do not exist, so an allowed
caller gets a page, a form error or a 404, and a refused one a 403 (a secret key on a dashboard page:
the login redirect). A new page or endpoint joins these tests by existing.
"""

from dataclasses import dataclass

import pytest
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from personalization.workspace import auth, permissions
from tests import factories

# URL prefixes that are not part of the permission map: public-key endpoints, sign-in, the Django
# admin (staff only), the API schema and docs, health checks, the demo shop (a stand-in for a
# customer's site), the history import, the SDK snapshot and OFREP (an API key's own check) and the
# new-project page (anyone logged in, also before they have a project).
UNMAPPED_PREFIXES = (
    "api/v1/events/import",
    "projects/new",
    "api/v1/events",
    "api/v1/decide",
    "api/v1/ping",
    "api/v1/sdk/",
    "ofrep/",
    "accounts/",
    "admin/",
    "api/schema/",
    "api/docs/",
    "healthz",
    "readyz",
    "demo/shop/",
)


PLACEHOLDER_ID = "999999"


@dataclass(frozen=True)
class Case:
    url: str
    method: str
    action: str
    rest: bool

    def __str__(self) -> str:
        return f"{self.method} {self.url}"

    def url_for(self, project) -> str:
        """REST URLs name the caller's own project where they name a project (/api/v1/projects/<id>/),
        so the role check, not a 404, decides; no other object has that id."""
        return self.url.replace(PLACEHOLDER_ID, str(project.pk)) if self.rest else self.url


def _fill(pattern) -> dict[str, str]:
    """Values for a pattern's parameters that name no existing object."""
    converters = getattr(pattern, "converters", {})
    names = list(converters) or list(pattern.regex.groupindex)
    values = {}
    for name in names:
        converter = type(converters.get(name)).__name__
        values[name] = PLACEHOLDER_ID if converter == "IntConverter" or name == "pk" else "no-such"
    return values


def _walk(patterns, prefix: str = ""):
    for entry in patterns:
        route = prefix + str(entry.pattern)
        if isinstance(entry, URLResolver):
            yield from _walk(entry.url_patterns, route)
        elif isinstance(entry, URLPattern):
            yield route, entry


def _cases() -> list[Case]:
    cases = []
    for route, entry in _walk(get_resolver().url_patterns):
        if route.lstrip("^").startswith(UNMAPPED_PREFIXES) or "format" in entry.pattern.regex.groupindex:
            continue
        callback = entry.callback
        url = reverse(entry.name, kwargs=_fill(entry.pattern))
        view_class = getattr(callback, "cls", None)
        if view_class is not None:  # DRF: one case per HTTP method and viewset action
            for method, name in (getattr(callback, "actions", None) or {"get": "get"}).items():
                view = view_class()
                view.action = name
                cases.append(Case(url, method.upper(), auth.view_action(view), rest=True))
        else:
            action = getattr(callback, "kairos_action", None)
            assert action, f"{route} ({callback.__module__}.{callback.__name__}) declares no permission action"
            cases.append(Case(url, "GET", action, rest=False))
    return cases


CASES = _cases()


def test_cases__cover_every_mapped_action_and_rest_endpoint():
    actions = {case.action for case in CASES}
    # Every action a page or endpoint uses is declared, and the REST API is among the cases.
    assert actions <= set(permissions.ACTIONS)
    assert {"profiles", "lift", "project", "experiences.edit", "members.manage"} <= actions
    assert any(case.rest for case in CASES) and any(not case.rest for case in CASES)


@pytest.mark.django_db
@pytest.mark.parametrize("principal", permissions.PRINCIPALS)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_permission_map__principal_and_endpoint__allowed_exactly_as_declared(client, project, principal, case):
    headers = {}
    if principal == permissions.SECRET_KEY:
        headers["HTTP_AUTHORIZATION"] = f"Bearer {factories.key_make(project=project, kind='secret')}"
    else:
        client.force_login(factories.member_make(project=project, role=principal))
    url = case.url_for(project)
    response = client.generic(case.method, url, **headers)
    if response.status_code == 405 and case.method == "GET":  # a form's target (require_POST)
        response = client.post(url, **headers)
    # The dashboard is for people: a key is never a session there.
    allowed = permissions.principal_allows(principal=principal, action=case.action) and (
        case.rest or principal != permissions.SECRET_KEY
    )
    login_redirect = response.status_code == 302 and "/accounts/login/" in response.get("Location", "")
    if allowed:
        assert response.status_code not in (401, 403) and not login_redirect, response.content[:300]
    elif case.rest or principal != permissions.SECRET_KEY:
        assert response.status_code == 403, response.content[:300]
        if principal != permissions.SECRET_KEY:  # the message names the role that was refused
            assert principal in response.content.decode()
    else:
        assert login_redirect


@pytest.mark.django_db
def test_rest__session_user_of_no_project__refused(client):
    client.force_login(factories.user_make())
    assert client.get("/api/v1/project/").status_code == 403


@pytest.mark.django_db
def test_navigation__shows_exactly_the_sections_the_role_may_open(client, project):
    for role in ("compliance", "developer", "analyst"):
        client.force_login(factories.member_make(project=project, role=role))
        page = client.get("/").content.decode()
        nav = page[page.index('<nav class="nav">') : page.index("</nav>")]
        for name in ("experiences", "segments", "lift", "privacy", "visitors", "settings"):
            allowed = permissions.principal_allows(principal=role, action=name)
            assert (f'href="/{name}/"' in nav) == allowed, (role, name)
            if not allowed:  # nor anywhere else on the Overview
                assert f'href="/{name}/"' not in page, (role, name)


def test_unknown_action__refused_when_the_view_is_declared():
    from personalization.workspace.web import workspace_view

    with pytest.raises(KeyError, match="not declared"):
        workspace_view("segmnets")


def test_user_guide__permissions_table_matches_the_map():
    from django.conf import settings

    guide = (settings.BASE_DIR / "docs" / "user-guide.md").read_text()
    rows = {}
    for line in guide.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 2 + len(permissions.PRINCIPALS) and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = {p for p, mark in zip(permissions.PRINCIPALS, cells[2:], strict=True) if mark}
    assert rows == {action: set(who) for action, who in permissions.ACTIONS.items()}
