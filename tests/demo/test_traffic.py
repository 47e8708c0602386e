"""demo_traffic: live visitors sent to the real decide and events endpoints."""

import json
import threading
import urllib.request

import pytest

from demo import seed as demo_services
from demo.management.commands.demo_traffic import Traffic


@pytest.mark.django_db(transaction=True)
def test_demo_traffic__live_server__decides_and_sends_events(live_server, tmp_path):
    keys_file = tmp_path / "keys.json"
    demo_services.demo_seed(profiles=200, days=1, seed=7, keys_path=keys_file)
    messages = []
    url = live_server.url.replace("localhost", "127.0.0.1")  # "localhost" may try ::1 first and wait
    # The test server's first request is slow (seconds); warm it up before timing the traffic.
    urllib.request.urlopen(f"{url}/healthz", timeout=30).read()  # noqa: S310 -- our own http:// test server
    traffic = Traffic(url=url, rate=20, keys_file=keys_file, say=messages.append, stop=threading.Event())
    stats = traffic.run(3.0)
    assert stats["decisions"] >= 3 and stats["decisions"] == stats["visits"]  # a loaded CI box is slow
    assert stats["events"] > 0 and stats["errors"] == 0, messages


def test_demo_traffic__server_down__waits_without_crashing(tmp_path):
    keys_file = tmp_path / "keys.json"
    keys_file.write_text(json.dumps({"public_key": "kp_x", "profiles": 50, "seed": 7}))
    messages = []
    traffic = Traffic(
        url="http://127.0.0.1:9", rate=20, keys_file=keys_file, say=messages.append, stop=threading.Event()
    )
    stats = traffic.run(1.0)
    assert stats["visits"] == 0
    assert any("cannot reach" in m for m in messages)
