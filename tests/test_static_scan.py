"""Static files are served to every test client from WhiteNoise's one scan per process (tests/static_scan.py),
each file with its own bytes, and a file that is not there is still a 404."""

import pytest
from django.conf import settings
from django.test import Client


@pytest.mark.parametrize("path", ["kairos.js", "demo/shop.js", "demo/hero-trail.svg"])
def test_static_file__a_new_client_each_time__served_whole(path):
    on_disk = (settings.BASE_DIR / "static" / path).read_bytes()
    for _ in range(2):  # the first client may scan, the second gets the scan kept
        response = Client().get(f"/static/{path}")
        assert response.status_code == 200
        assert b"".join(response.streaming_content) == on_disk


def test_static_file__not_there__404():
    assert Client().get("/static/not-a-file.js").status_code == 404
