from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from personalization import services as personalization_services
from personalization.models import ProfileIdentity
from personalization.services import demo as demo_services

# Today at midnight: recent enough for the 30-day behavior window, fixed within a test session.
DEMO_END = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


@pytest.fixture
def demo_project(db, tmp_path):
    """The demo shop with 3,000 visitors over 14 days: raw events, planted intents kept aside."""
    return demo_services.demo_seed(profiles=3000, days=14, seed=11, keys_path=tmp_path / "keys.json", end=DEMO_END)


def yoga_events_ingest(project, profile_id: int, n: int = 60) -> None:
    """A minute of yoga browsing by the profile (its anonymous id), accepted but not drained yet."""
    unit = ProfileIdentity.objects.filter(profile_id=profile_id, kind="anon").values_list("value", flat=True).first()
    now = timezone.now()
    events = [
        {
            "event_id": f"yoga-{i}",
            "type": "page_view",
            "anonymous_id": unit,
            "timestamp": (now - timedelta(seconds=n - i)).isoformat(),
            "properties": {"url": "/c/yoga", "category": "yoga", "item": "cork-yoga-mat", "dwell_ms": 20_000},
        }
        for i in range(n)
    ]
    personalization_services.events_ingest(project_id=project.pk, payload={"events": events})
