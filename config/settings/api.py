"""Django REST Framework, the OpenAPI schema, and the limits of the public endpoints."""

from config.env import env_bool, env_int

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "personalization.workspace.auth.SecretKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["personalization.workspace.auth.HasProject"],
    "DEFAULT_PARSER_CLASSES": [
        "personalization.parsers.JSONParser",  # a body too deep to parse is a 400, not a 500
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "personalization.pagination.BoundedPagination",
    "PAGE_SIZE": 100,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Kairos API",
    "DESCRIPTION": (
        "Personalization and experimentation. Public keys (kp_…) may call decide and send events; "
        "secret keys (ks_…) use the REST API. Send the key as `Authorization: Bearer <key>`."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Adds the public-key endpoints (events, decide), their Bearer scheme and every error answer.
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "personalization.openapi.schema_complete",
    ],
}

# Public endpoints (decide, events): requests per second per API key and per client IP, counted
# in Redis across every process (0 turns a limit off). Over a limit: 429 with Retry-After.
KAIROS_DECIDE_PER_KEY_PER_SECOND = env_int("KAIROS_DECIDE_PER_KEY_PER_SECOND", 5000)
KAIROS_DECIDE_PER_IP_PER_SECOND = env_int("KAIROS_DECIDE_PER_IP_PER_SECOND", 500)
KAIROS_EVENTS_PER_KEY_PER_SECOND = env_int("KAIROS_EVENTS_PER_KEY_PER_SECOND", 1000)
KAIROS_EVENTS_PER_IP_PER_SECOND = env_int("KAIROS_EVENTS_PER_IP_PER_SECOND", 100)
# Events of one project waiting in the Redis stream for the drain; at the cap events answer 503
# with Retry-After, so one project cannot fill Redis's memory (0: no cap).
KAIROS_STREAM_CAP_PER_PROJECT = env_int("KAIROS_STREAM_CAP_PER_PROJECT", 1_000_000)
# How many proxies in front of Kairos append to X-Forwarded-For (0: use the socket's address).
# How long a server trusts an API key it has looked up: a revoked key stops working everywhere within this.
KAIROS_KEY_CACHE_MS = env_int("KAIROS_KEY_CACHE_MS", 10_000)
KAIROS_TRUSTED_PROXIES = env_int("KAIROS_TRUSTED_PROXIES", 0)
# The events request folds each batch into its visitors' live session state (one more Redis round
# trip). Off (0): events are stored as usual but live targeting conditions see no new behaviour;
# bench/live.py measures the events endpoint both ways.
KAIROS_LIVE_STATE = env_bool("KAIROS_LIVE_STATE", default=True)
