from datetime import UTC, datetime

import pytest

from personalization.services import demo as demo_services

# Today at midnight: recent enough for the 30-day behavior window, fixed within a test session.
DEMO_END = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


@pytest.fixture
def demo_project(db, tmp_path):
    """The demo shop with 3,000 visitors over 14 days: raw events, planted intents kept aside."""
    return demo_services.demo_seed(profiles=3000, days=14, seed=11, keys_path=tmp_path / "keys.json", end=DEMO_END)
