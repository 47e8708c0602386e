"""Privacy: the suppression-list secret, where exports are written and how long they live."""

import secrets

from config.env import env_int, env_str
from config.settings.base import BASE_DIR


def _privacy_key() -> bytes:
    """The HMAC secret of the suppression list, kept apart from the database (KAIROS_PRIVACY_KEY or
    KAIROS_PRIVACY_KEY_FILE). The one-machine default keeps it in var/privacy.key, created once:
    a database backup alone then cannot tell whose identifiers were erased."""
    configured = env_str("KAIROS_PRIVACY_KEY")
    if configured:
        return configured.encode()
    path = BASE_DIR / "var" / "privacy.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(path, "x") as handle:
                handle.write(secrets.token_hex(32))
            path.chmod(0o600)
        except FileExistsError:
            pass  # another process created it first
    return path.read_text().strip().encode()


KAIROS_PRIVACY_KEY = _privacy_key()
KAIROS_EXPORT_DIR = env_str("KAIROS_EXPORT_DIR", str(BASE_DIR / "var" / "exports"))
KAIROS_EXPORT_LINK_HOURS = env_int("KAIROS_EXPORT_LINK_HOURS", 72)
KAIROS_EXPORT_KEEP_DAYS = env_int("KAIROS_EXPORT_KEEP_DAYS", 7)
