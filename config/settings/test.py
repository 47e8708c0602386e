"""Tests: same settings, but their own Redis database so they never touch the demo's data.

PostgreSQL isolation comes from pytest-django's own test database (test_kairos).
"""

import os

from config import embedded
from config.env import env_str

from . import *  # noqa: F403

# pytest-xdist runs tests in worker processes gw0, gw1 …: each gets a Redis database of its own (pytest-django
# already gives each its own PostgreSQL database, test_kairos_gw0 …). Databases 14 and 12 are the benches'.
_XDIST_REDIS_DBS = (15, 13, 11, 10, 9, 8)
_worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
REDIS_URL = env_str("KAIROS_TEST_REDIS_URL", embedded.redis_url(_XDIST_REDIS_DBS[_worker % len(_XDIST_REDIS_DBS)]))
CACHES["default"]["LOCATION"] = REDIS_URL  # noqa: F405
CELERY_BROKER_URL = REDIS_URL
CELERY_RESULT_BACKEND = REDIS_URL
CELERY_TASK_ALWAYS_EAGER = False
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast logins in tests
# Tests send thousands of requests a second from one address; the throttling tests set their own limits.
KAIROS_DECIDE_PER_KEY_PER_SECOND = KAIROS_DECIDE_PER_IP_PER_SECOND = 1_000_000
KAIROS_EVENTS_PER_KEY_PER_SECOND = KAIROS_EVENTS_PER_IP_PER_SECOND = 1_000_000
# The experience page's charts redraw every second, so a browser test sees the next redraw without waiting 10 s.
KAIROS_LIVE_CHARTS_SECONDS = 1
# Likewise the Overview's counters: a test sees new traffic a second later, not five.
KAIROS_OVERVIEW_LIVE_SECONDS = 1
