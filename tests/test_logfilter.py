"""Log lines carry no personal data: the filter on the console handler masks it."""

import logging

from config.logfilter import RedactPersonalData, redact


def test_redact__emails_addresses_and_keys_masked():
    line = "login failed for ann.lee+x@example.co.uk from 203.0.113.7 and 2001:db8::1:2 with ks_AbCdEf123456789"
    assert redact(line) == "login failed for [email] from [ip] and [ip] with [key]"


def test_redact__ids_versions_and_times_kept():
    line = "drain: dropping 12 events of deleted project 42 at 12:30:01, version 1.2.3"
    assert redact(line) == line


def test_filter__message_with_args_and_exception__masked(caplog):
    logger = logging.getLogger("kairos.test")
    logger.addFilter(RedactPersonalData())
    try:
        raise ValueError("user bob@example.com")
    except ValueError:
        with caplog.at_level(logging.WARNING, logger="kairos.test"):
            logger.exception("request from %s failed", "198.51.100.20")
    record = caplog.records[-1]
    assert record.getMessage() == "request from [ip] failed"
    assert "bob@example.com" not in record.exc_text and "[email]" in record.exc_text


def test_settings__console_handler_uses_the_filter(settings):
    assert "redact" in settings.LOGGING["handlers"]["console"]["filters"]
