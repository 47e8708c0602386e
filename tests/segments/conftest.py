from datetime import UTC, datetime

import pytest

from personalization.services import demo as demo_services

DEMO_END = datetime(2026, 11, 20, 12, tzinfo=UTC)


@pytest.fixture
def demo_project(db, tmp_path):
    """The demo shop with 3,000 visitors over 14 days: raw events, planted intents kept aside."""
    return demo_services.demo_seed(profiles=3000, days=14, seed=11, keys_path=tmp_path / "keys.json", end=DEMO_END)
