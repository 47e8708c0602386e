"""The context decide derives: local time in the project's zone, device class, referrer class."""

from datetime import UTC, datetime

import pytest

from personalization.decide import context


def _at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("utc", "zone", "expected"),
    [
        ("2026-03-02 12:30", "UTC", (12, "mon")),
        ("2026-03-02 12:30", "Europe/Paris", (13, "mon")),  # winter: UTC+1
        ("2026-07-06 12:30", "Europe/Paris", (14, "mon")),  # summer: UTC+2
        ("2026-03-02 02:00", "America/Los_Angeles", (18, "sun")),  # the previous local day
        ("2026-03-02 20:00", "Asia/Kolkata", (1, "tue")),  # a half-hour offset crosses midnight
        ("2026-03-02 12:30", "Not/A_Zone", (12, "mon")),  # a bad setting falls back to UTC
    ],
)
def test_local_time__in_the_projects_zone(utc, zone, expected):
    assert context.local_time(_at(utc), zone) == expected


def test_time_zone_valid():
    assert context.time_zone_valid("Europe/Paris")
    assert not context.time_zone_valid("Mars/Olympus")
    assert not context.time_zone_valid("../etc/passwd")


IPHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148"
IPAD = "Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 Version/16.6 Mobile/15E148"
ANDROID_PHONE = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 Chrome/120.0 Mobile Safari/537.36"
ANDROID_TABLET = "Mozilla/5.0 (Linux; Android 13; SM-X710) AppleWebKit/537.36 Chrome/120.0 Safari/537.36"
WINDOWS = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/120.0 Safari/537.36"


@pytest.mark.parametrize(
    ("ua", "provided", "expected"),
    [
        (IPHONE, None, "mobile"),
        (IPAD, None, "tablet"),
        (ANDROID_PHONE, None, "mobile"),
        (ANDROID_TABLET, None, "tablet"),
        (WINDOWS, None, "desktop"),
        ("", None, "desktop"),
        # the snippet's class wins: it knows an iPad that presents itself as a Mac
        ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7)", "tablet", "tablet"),
        (WINDOWS, "Mobile", "mobile"),
        (IPHONE, "watch", "mobile"),  # an unknown class is ignored, not trusted
        (IPHONE, 3, "mobile"),
    ],
)
def test_device_class(ua, provided, expected):
    assert context.device_class(ua, provided) == expected


@pytest.mark.parametrize(
    ("referrer", "url", "utm", "expected"),
    [
        ("", "/", None, "direct"),
        ("https://www.google.com/", "/", None, "search"),
        ("https://www.google.co.uk/search?q=x", "/", None, "search"),
        ("https://duckduckgo.com/", "/", None, "search"),
        ("https://l.facebook.com/l.php?u=x", "/", None, "social"),
        ("https://t.co/abc", "/", None, "social"),
        ("https://mail.google.com/mail/u/0/", "/", None, "email"),
        ("https://outlook.live.com/", "/", None, "email"),
        ("https://someblog.example/post", "/", None, "referral"),
        ("https://shop.example/cart", "/", None, "direct"),  # own site: navigation (own_host below)
        # campaign tags win over the referrer
        ("https://www.google.com/", "/?utm_medium=cpc&utm_source=google", None, "paid"),
        ("https://www.facebook.com/", "/?utm_medium=paid_social", None, "paid"),
        ("", "/?gclid=abc", None, "paid"),
        ("https://mail.google.com/", "/?utm_medium=newsletter", None, "email"),
        ("", "/?utm_source=Instagram", None, "social"),
        ("", "/?utm_medium=organic&utm_source=google", None, "search"),
        ("", "/", {"medium": "email"}, "email"),
        ("", "/", {"utm_medium": "cpc"}, "paid"),
        ("", "/?utm_source=partner-site", None, "referral"),
        ("not a url", "/", None, "direct"),  # names no site
        ("http://[::1", "/", None, "direct"),  # unreadable referrer
    ],
)
def test_referrer_class(referrer, url, utm, expected):
    assert context.referrer_class(referrer, url, utm, own_host="shop.example") == expected
    assert expected in context.REFERRERS
