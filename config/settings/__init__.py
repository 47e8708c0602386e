"""Kairos settings, split by concern; every value comes from the environment (config.env)."""

from .api import *  # noqa: F403
from .base import *  # noqa: F403
from .data import *  # noqa: F403
from .privacy import *  # noqa: F403
from .security import *  # noqa: F403
from .tasks import *  # noqa: F403
