"""PayPal's REST API client against the stand-in: the per-process token, shared by threads."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from bridge.delivery import paypal_api
from bridge.delivery.http_client import new_session
from bridge.delivery.outcomes import Invalid, RetryLater, Verified
from bridge.delivery.paypal_api import Api, TokenCache, classify_webhook_verification
from config import Settings
from tests.standins.paypal_api import CLIENT_ID, CLIENT_SECRET, TOKEN_PATH, PayPalApi, Scripted


@pytest.fixture()
def api(_paypal_api: PayPalApi) -> PayPalApi:
    _paypal_api.reset()
    return _paypal_api


def access(server: PayPalApi, tokens: TokenCache, timeout: float = 1.0) -> Api:
    settings = Settings(
        paypal_client_id=CLIENT_ID,
        paypal_client_secret=CLIENT_SECRET,
        paypal_api_url=server.url,
        delivery_timeout=timeout,
    )
    return Api(new_session(), settings, tokens, until=time.time() + 30)


class Clock:
    """The token cache's `time`: `monotonic` moved by the test, `time` the real one (the
    attempt's deadline)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    time = staticmethod(time.time)


def test_one_token_serves_every_thread_until_shortly_before_it_expires(
    api: PayPalApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()  # however slowly the threads come, it is the same moment for all of them
    monkeypatch.setattr(paypal_api, "time", clock)
    api.expires_in = 2  # renewed after 1 s: half its life, when that is under a minute
    tokens = TokenCache()
    paypal = access(api, tokens)
    with ThreadPoolExecutor(8) as pool:
        first = set(pool.map(lambda _: tokens.current(paypal), range(8)))
    assert len(first) == 1 and api.tokens_issued == 1
    clock.now = 1000.99
    assert tokens.current(paypal) in first
    clock.now = 1001.0
    assert tokens.current(paypal) not in first
    assert api.tokens_issued == 2


class CountedLock:
    """The token cache's lock, counting the threads that came for it (holding or waiting)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.came = threading.Condition()
        self.count = 0

    def __enter__(self) -> bool:
        with self.came:
            self.count += 1
            self.came.notify_all()
        return self.lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self.lock.release()

    def wait_for(self, count: int) -> None:
        with self.came:
            assert self.came.wait_for(lambda: self.count >= count, timeout=30), self.count


def test_a_hung_token_request_is_made_once_for_all_waiting_threads(
    api: PayPalApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    api.script(TOKEN_PATH, Scripted(hang=3.0))
    lock = CountedLock()
    tokens = TokenCache(lock=lock)  # type: ignore[arg-type]
    fetch = paypal_api.fetch_token

    def fetch_once_all_wait(api: Api) -> Any:
        # However slowly the threads start, the other seven wait for the lock before this
        # fetch (hung, so up to its 1 s timeout) fails.
        lock.wait_for(8)
        return fetch(api)

    monkeypatch.setattr(paypal_api, "fetch_token", fetch_once_all_wait)
    paypal = access(api, tokens, timeout=1.0)
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: tokens.current(paypal), range(8)))
    assert all(isinstance(a, RetryLater) and "timeout" in a.error for a in answers)
    assert len(api.calls(TOKEN_PATH)) == 1
    # Not eight timeouts in a row: the threads that waited got the one fetch's failure.
    assert all(answer is answers[0] for answer in answers)
    assert isinstance(tokens.current(paypal), str)  # asked again later: PayPal is back


def test_refused_credentials_never_show_the_secret(api: PayPalApi) -> None:
    api.client_secret = "another"
    answer = TokenCache().current(access(api, TokenCache()))
    assert isinstance(answer, RetryLater) and answer.status == 401
    assert "PAYPAL_CLIENT_ID/PAYPAL_CLIENT_SECRET" in answer.error
    assert CLIENT_SECRET not in answer.error


def test_an_attempt_out_of_time_makes_no_call(api: PayPalApi) -> None:
    paypal = access(api, TokenCache())
    late = Api(paypal.session, paypal.settings, paypal.tokens, until=time.time() + 0.1)
    assert isinstance(late.tokens.current(late), RetryLater)
    assert api.requests == []


@pytest.mark.parametrize(
    ("status", "body", "headers", "expected"),
    [
        (200, '{"verification_status": "SUCCESS"}', {}, Verified()),
        (200, '{"verification_status": "FAILURE"}', {}, Invalid()),
        (200, '{"verification_status": "MAYBE"}', {}, RetryLater),
        (200, "<html>", {}, RetryLater),
        (429, "{}", {"Retry-After": "7"}, RetryLater(429, "{}", 7.0)),
        (503, "down", {}, RetryLater(503, "down")),
        (302, "", {"Location": "https://elsewhere.example/x"}, RetryLater),
        (400, '{"name":"VALIDATION_ERROR"}', {}, RetryLater),
    ],
)
def test_verification_answers(status, body, headers, expected) -> None:
    outcome = classify_webhook_verification(status, body, headers, "https://api-m.paypal.com/v1")
    if isinstance(expected, type):
        assert isinstance(outcome, expected)
    else:
        assert outcome == expected
    if status == 302:
        assert isinstance(outcome, RetryLater) and outcome.error == "redirect to elsewhere.example"
