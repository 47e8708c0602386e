"""HTTPS, cookies and login throttling. Everything from the environment; docs/deployment.md "Security settings".

DJANGO_HTTPS=true (the docker-compose default) says the site is served over HTTPS, usually by a TLS
proxy in front: cookies get the `Secure` flag and HTTPS answers carry HSTS. The embedded one-machine
default serves plain HTTP on 127.0.0.1, where `Secure` cookies would not be sent back.
"""

from datetime import timedelta

from config.env import env_bool, env_int

HTTPS = env_bool("DJANGO_HTTPS", default=env_bool("DJANGO_SECURE_COOKIES", default=False))
SESSION_COOKIE_SECURE = HTTPS
CSRF_COOKIE_SECURE = HTTPS
SESSION_COOKIE_SAMESITE = "Lax"
# SecurityMiddleware sends HSTS only on requests it sees as HTTPS.
SECURE_HSTS_SECONDS = env_int("DJANGO_HSTS_SECONDS", 31_536_000) if HTTPS else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_HSTS_INCLUDE_SUBDOMAINS", default=False)
SECURE_SSL_REDIRECT = env_bool("DJANGO_SSL_REDIRECT", default=False)
# Behind a TLS proxy the request reaches Django as HTTP; the proxy says it was HTTPS. Only trust that
# header when a proxy that sets it is the only way in.
if env_bool("DJANGO_TRUST_X_FORWARDED_PROTO", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

# Login throttling (django-axes): after AXES_FAILURE_LIMIT wrong passwords for one username from one
# address, that pair is locked out for the cool-off time; a right password resets the count.
AXES_ENABLED = env_bool("KAIROS_LOGIN_THROTTLE", default=True)
AXES_FAILURE_LIMIT = env_int("KAIROS_LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("KAIROS_LOGIN_COOLOFF_MINUTES", 15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_HTTP_RESPONSE_CODE = 429
# Log lines of axes name no username or address (logs carry no personal data).
AXES_VERBOSE = False

# Dashboard forms and REST bodies Django reads into memory (default 2.5 MB). Raised so that an
# oversized field (a variant payload of several MB) is read and refused by the field's own check,
# naming it (e.g. variants[1].payload, limit 64 KB); past this the answer is a 413 naming the body.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("KAIROS_MAX_FORM_BYTES", 16 * 1024 * 1024)
