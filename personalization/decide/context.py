"""The context decide derives itself from a request: local hour and weekday in the project's time
zone, device class, referrer class. Pure Python: no Django, no I/O; each function a few microseconds.

New or returning comes from the live state (`SessionView.returning`), not from here.
"""

import re
from datetime import UTC, datetime
from functools import lru_cache
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DEVICES = ("mobile", "tablet", "desktop")
# "referral" beyond the five classes of the issue: a link from a blog or a shop is none of them, and
# calling it "direct" would hide the campaigns that work.
REFERRERS = ("search", "social", "email", "paid", "referral", "direct")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

# The same rules as the snippet's device() (static/kairos.js), for callers that send no class.
_TABLET = re.compile(r"iPad|Tablet|PlayBook|Silk|Kindle", re.IGNORECASE)
_ANDROID = re.compile(r"Android", re.IGNORECASE)
_MOBILE = re.compile(r"Mobi|iPhone|iPod|Windows Phone|IEMobile|BlackBerry|Opera Mini", re.IGNORECASE)

_PAID_MEDIA = {"cpc", "ppc", "paid", "paidsearch", "paid_search", "paid-search", "paidsocial", "paid_social"}
_PAID_MEDIA |= {"paid-social", "display", "cpm", "cpv", "banner", "retargeting", "affiliate", "sponsored"}
_EMAIL_MEDIA = {"email", "e-mail", "e_mail", "newsletter", "mail"}
_SOCIAL_MEDIA = {"social", "social-media", "social_media", "sm", "social-network"}
_ORGANIC_MEDIA = {"organic"}
# Click ids an ad platform appends: a visit that carries one was paid for, whatever the referrer.
_CLICK_IDS = ("gclid", "gbraid", "wbraid", "msclkid", "fbclid", "ttclid", "li_fat_id", "dclid")
_SEARCH_HOSTS = ("google.", "bing.", "duckduckgo.", "yahoo.", "yandex.", "baidu.", "ecosia.", "qwant.", "startpage.")
_SEARCH_HOSTS += ("search.brave.", "naver.", "seznam.")
_SOCIAL_HOSTS = ("facebook.", "instagram.", "twitter.", "x.com", "t.co", "linkedin.", "lnkd.in", "pinterest.")
_SOCIAL_HOSTS += ("reddit.", "tiktok.", "youtube.", "youtu.be", "threads.net", "mastodon.", "bsky.app", "whatsapp.")
_SOCIAL_HOSTS += ("telegram.", "t.me", "vk.com", "snapchat.", "tumblr.", "quora.")
_SOCIAL_SOURCES = {"facebook", "fb", "instagram", "ig", "twitter", "x", "linkedin", "pinterest", "reddit", "tiktok"}
_SOCIAL_SOURCES |= {"youtube", "threads", "mastodon", "bluesky", "whatsapp", "telegram", "snapchat"}
_EMAIL_HOSTS = ("mail.", "outlook.", "webmail.", "mail.google.")


@lru_cache(maxsize=256)
def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def time_zone_valid(name: str) -> bool:
    """For the project settings form: a name the tz database knows (e.g. "Europe/Paris")."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def local_time(now: float, time_zone: str) -> tuple[int, str]:
    """(hour 0-23, weekday "mon".."sun") at unix time `now` in the project's time zone (UTC when the
    name is unknown: a bad setting must not stop decide)."""
    return _local_minute(int(now // 60), time_zone)


@lru_cache(maxsize=64)  # every decide request of a minute asks the same: once per minute and zone
def _local_minute(minute: int, time_zone: str) -> tuple[int, str]:
    local = datetime.fromtimestamp(minute * 60, UTC).astimezone(_zone(time_zone))
    return local.hour, WEEKDAYS[local.weekday()]


def device_class(user_agent: str, provided: object = None) -> str:
    """mobile, tablet or desktop. The snippet's class wins (it also knows the screen and touch)."""
    if isinstance(provided, str) and provided.lower() in DEVICES:
        return provided.lower()
    return _agent_class(user_agent or "")


@lru_cache(maxsize=4096)  # a site's visitors come with a few hundred user agents: three regex searches each
def _agent_class(ua: str) -> str:
    if _TABLET.search(ua) or (_ANDROID.search(ua) and "mobile" not in ua.lower()):
        return "tablet"
    if _MOBILE.search(ua):
        return "mobile"
    return "desktop"


@lru_cache(maxsize=4096)  # decide classifies the same few referrers and pages over and over
def _host(url: str) -> str:
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:
        return ""
    return host.removeprefix("www.").removeprefix("m.")


def _host_in(host: str, names: tuple[str, ...]) -> bool:
    """`names` end with "." (any top-level domain: google.de) or are whole hosts (t.co)."""
    for name in names:
        if name.endswith("."):
            if host.startswith(name) or f".{name}" in f".{host}":
                return True
        elif host == name or host.endswith("." + name):
            return True
    return False


@lru_cache(maxsize=4096)  # a shop's landing URLs repeat; the answer is read, never changed
def _query(url: str) -> dict[str, str]:
    try:
        pairs = parse_qs(urlsplit(url).query)
    except ValueError:
        return {}
    return {k.lower(): v[0] for k, v in pairs.items() if v}


def referrer_class(referrer: str = "", url: str = "", utm: dict | None = None, own_host: str = "") -> str:
    """search, social, email, paid, referral or direct, for the page the visit landed on.

    The campaign tags win over the referrer (a newsletter link opened in a webmail has a webmail
    referrer or none): utm_medium first, then an ad click id in the URL, then utm_source, then the
    referrer's host. A referrer on the site's own host (`own_host`) is navigation: direct.
    `utm` is what the snippet sent ({"medium", "source", ...}); tags in `url` fill what it did not.
    """
    params = _query(url)
    tags = {k.removeprefix("utm_"): v for k, v in params.items() if k.startswith("utm_")}
    tags.update({k.removeprefix("utm_"): v for k, v in (utm or {}).items() if isinstance(v, str)})
    medium = (tags.get("medium") or "").strip().lower()
    source = (tags.get("source") or "").strip().lower()
    if medium in _PAID_MEDIA or any(name in params for name in _CLICK_IDS):
        return "paid"
    if medium in _EMAIL_MEDIA:
        return "email"
    if medium in _SOCIAL_MEDIA:
        return "social"
    if medium in _ORGANIC_MEDIA:
        return "search"
    if source in _SOCIAL_SOURCES:
        return "social"
    if source in _EMAIL_MEDIA:
        return "email"
    host = _host(referrer) if referrer else ""
    if not host or (own_host and host == _host("//" + own_host)):
        return "referral" if source else "direct"
    if _host_in(host, _EMAIL_HOSTS):
        return "email"
    if _host_in(host, _SEARCH_HOSTS):
        return "search"
    if _host_in(host, _SOCIAL_HOSTS):
        return "social"
    return "referral"
