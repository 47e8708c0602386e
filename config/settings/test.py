"""Tests: same settings, but their own Redis database so they never touch the demo's data.

PostgreSQL isolation comes from pytest-django's own test database (test_kairos).
"""

from config import embedded
from config.env import env_str

from . import *  # noqa: F403

REDIS_URL = env_str("KAIROS_TEST_REDIS_URL", embedded.redis_url(15))
CACHES["default"]["LOCATION"] = REDIS_URL  # noqa: F405
CELERY_BROKER_URL = REDIS_URL
CELERY_RESULT_BACKEND = REDIS_URL
CELERY_TASK_ALWAYS_EAGER = False
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast logins in tests
# Tests send thousands of requests a second from one address; the throttling tests set their own limits.
KAIROS_DECIDE_PER_KEY_PER_SECOND = KAIROS_DECIDE_PER_IP_PER_SECOND = 1_000_000
KAIROS_EVENTS_PER_KEY_PER_SECOND = KAIROS_EVENTS_PER_IP_PER_SECOND = 1_000_000
