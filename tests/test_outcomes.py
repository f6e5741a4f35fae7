"""Outcomes of one attempt: Retry-After, redirects, and what a log line may say of a failure."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bridge.delivery.outcomes import (
    Crashed,
    DeadLetter,
    RetryLater,
    classify_postback,
    classify_verification,
    log_error,
    redirect_host,
    retry_after_seconds,
)

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
POSTBACK_URL = "https://app.refcampaign.com/api/v1/conversions/postback"


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("0", 0.0),
        ("Fri, 02 Jan 2026 03:05:05 GMT", 60.0),
        ("Fri, 02 Jan 2026 03:00:00 GMT", 0.0),  # in the past: at once
        (None, None),
        ("", None),
        ("soon", None),
        ("²", None),  # str.isdigit() says yes, float() raises
        ("١٢", None),  # Arabic-Indic digits
        ("1_0", None),
        ("1e3", None),
        ("-5", None),
        ("+5", None),
        ("1.5", None),
        ("inf", None),
        ("nan", None),
        ("9" * 5000, float("inf")),  # ASCII digits, however many: the caller caps the delay
    ],
)
def test_retry_after_accepts_ascii_digits_or_an_http_date(header, seconds):
    assert retry_after_seconds(header, now=NOW) == seconds


def test_a_429_with_a_non_ascii_digit_is_retried_on_the_backoff():
    outcome = classify_postback(429, {"Retry-After": "²"}, "slow down", None)
    assert outcome == RetryLater(429, "slow down", None)


@pytest.mark.parametrize(
    ("location", "host"),
    [
        ("https://login.example.test/sso?next=/x", "login.example.test"),
        ("https://user:pa55word@evil.example.test:8443/", "evil.example.test:8443"),
        ("HTTPS://Login.Example.TEST/", "login.example.test"),
        ("//cdn.example.test/moved", "cdn.example.test"),
        ("/login", "app.refcampaign.com"),  # relative: resolved against the request
        ("login", "app.refcampaign.com"),
        ("", "app.refcampaign.com"),
        (None, "app.refcampaign.com"),
        ("http://[::1]:8080/", "[::1]:8080"),
        ("http://host.example.test:notaport/", "unknown host"),
        ("http://[::1/", "unknown host"),
        ('http://a<b>"c.example/', "a?b??c.example"),
        ("http://" + "a" * 300 + "/", "a" * 100),
    ],
)
def test_redirect_host_names_where_a_3xx_points(location, host):
    assert redirect_host(location, POSTBACK_URL) == host


@pytest.mark.parametrize("status", [300, 301, 302, 303, 304, 307, 308, 399])
def test_a_3xx_postback_is_retried_with_its_target_as_the_error(status):
    outcome = classify_postback(
        status, {"Location": "/login"}, "<html>moved</html>", None, POSTBACK_URL
    )
    assert outcome == RetryLater(status, "redirect to app.refcampaign.com")


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_3xx_verification_is_retried_with_its_target_as_the_error(status):
    headers = {"Location": "https://www.paypal.com/signin"}
    url = "https://ipnpb.paypal.com/cgi-bin/webscr"
    outcome = classify_verification(status, "VERIFIED", headers, url)
    assert outcome == RetryLater(status, "redirect to www.paypal.com")


@pytest.mark.parametrize(
    ("outcome", "said"),
    [
        (RetryLater(503, "jane@example.com Bearer rc_live_key"), "HTTP 503"),
        (RetryLater(429, "slow down", 3.0), "HTTP 429"),
        (
            RetryLater(302, "redirect to login.example.test"),
            "HTTP 302, redirect to login.example.test",
        ),
        (RetryLater(None, "timeout"), "timeout"),
        (
            RetryLater(None, "connection error: ConnectionError"),
            "connection error: ConnectionError",
        ),
        (Crashed("attempt crashed: KeyError"), "attempt crashed: KeyError"),
        (DeadLetter("invalid_payload", 422, '{"error":"jane@example.com"}'), "HTTP 422"),
    ],
)
def test_log_error_never_quotes_a_response_body(outcome, said):
    assert log_error(outcome) == said
