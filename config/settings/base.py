"""Django core: apps, middleware, templates, static files, auth."""

from pathlib import Path

from config.env import ConfigError, env_bool, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent.parent

DEBUG = env_bool("DJANGO_DEBUG", default=False)
# The embedded default is a local development install; production sets DJANGO_SECRET_KEY.
SECRET_KEY = env_str("DJANGO_SECRET_KEY", "kairos-local-development-only-change-me")
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])

# "web" serves the dashboard and REST API; "decide" serves only /api/v1/decide and /api/v1/events
# with the smallest middleware stack, as its own process (docker compose service `decide`).
KAIROS_ROLE = env_str("KAIROS_ROLE", "web")

# How often an open experience page redraws its charts (seconds).
KAIROS_LIVE_CHARTS_SECONDS = env_int("KAIROS_LIVE_CHARTS_SECONDS", 10)
# How often the Overview refreshes its live counters (seconds).
KAIROS_OVERVIEW_LIVE_SECONDS = env_int("KAIROS_OVERVIEW_LIVE_SECONDS", 5)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_htmx",
    "axes",
    "personalization",
    "segments",
    "experiments",
    "privacy",
    "demo",
]

if KAIROS_ROLE == "decide":
    MIDDLEWARE: list[str] = []
    ROOT_URLCONF = "config.decide_urls"
else:
    MIDDLEWARE = [
        "django.middleware.security.SecurityMiddleware",
        "config.security.SecurityHeadersMiddleware",
        "whitenoise.middleware.WhiteNoiseMiddleware",
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.middleware.common.CommonMiddleware",
        "config.security.StorableInputMiddleware",
        "django.middleware.csrf.CsrfViewMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        "django.contrib.messages.middleware.MessageMiddleware",
        "django.middleware.clickjacking.XFrameOptionsMiddleware",
        "django_htmx.middleware.HtmxMiddleware",
        # Last, as django-axes asks: it answers a locked-out login before the view runs.
        "axes.middleware.AxesMiddleware",
    ]
    ROOT_URLCONF = "config.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "personalization.workspace.context.workspace",
            ],
        },
    },
]

WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # refuses locked-out logins (config/settings/security.py)
    "django.contrib.auth.backends.ModelBackend",
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "overview"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "var" / "staticfiles"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # WhiteNoise expects it even when serving via finders
# Serve straight from static/ without collectstatic in the one-machine setup.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

SESSION_COOKIE_HTTPONLY = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    # Logs carry no personal data: addresses, e-mails and keys are masked (config/logfilter.py).
    "filters": {"redact": {"()": "config.logfilter.RedactPersonalData"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["redact"]}},
    "root": {"handlers": ["console"], "level": env_str("KAIROS_LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

# Share of meaning (what people's searches, titles and product names are about, as text vectors) beside
# behavior in the similarity that behavior segments and lookalikes use, in percent; 0 turns it off.
# The default is measured on the demo's planted intents (docs/benchmarks.md, "Meaning in segments").
_MEANING_PERCENT = env_int("KAIROS_MEANING_WEIGHT_PERCENT", 40)
if not 0 <= _MEANING_PERCENT <= 100:
    raise ConfigError(f"KAIROS_MEANING_WEIGHT_PERCENT={_MEANING_PERCENT} must be between 0 and 100")
SEGMENTS_MEANING_WEIGHT = _MEANING_PERCENT / 100
# The same for lookalikes, off by default: on MovieLens genre fans meaning did not find more fans (precision
# 0.650 against 0.64 on behavior alone) and the precision ranges, calibrated on behavior vectors, held the
# truth 21 times of 30 instead of 28 of 32 (tests/segments/test_lookalike_datasets.py).
_LOOKALIKE_MEANING_PERCENT = env_int("KAIROS_LOOKALIKE_MEANING_WEIGHT_PERCENT", 0)
if not 0 <= _LOOKALIKE_MEANING_PERCENT <= 100:
    raise ConfigError(f"KAIROS_LOOKALIKE_MEANING_WEIGHT_PERCENT={_LOOKALIKE_MEANING_PERCENT} must be between 0 and 100")
SEGMENTS_LOOKALIKE_MEANING_WEIGHT = _LOOKALIKE_MEANING_PERCENT / 100
