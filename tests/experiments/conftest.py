import pytest

from tests import factories


@pytest.fixture
def marketer(client, project):
    """A marketer of `project`, logged in on `client`."""
    user = factories.member_make(project=project, role="marketer")
    client.force_login(user)
    return user
