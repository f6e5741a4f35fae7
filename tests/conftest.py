"""Shared fixtures: a real redis-server, stand-ins for RefCampaign and PayPal, a real worker."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from bridge.ops.embedded_redis import EmbeddedRedis
from config import Settings
from tests.processes import WorkerProcess
from tests.signing import OTHER_SECRET, SECRET
from tests.standins.paypal import PayPalVerifier
from tests.standins.paypal_api import CLIENT_ID, CLIENT_SECRET, WEBHOOK_ID, PayPalApi
from tests.standins.refcampaign import RefCampaign

API_KEY = "rc_test_key_5b8f0d2a"

# The path guard `.ci/run` turns on (REFBRIDGE_PATH_GUARD=1): a run that touches a path beside
# the checkout fails. Its directory also goes on the PYTHONPATH of the processes tests start.
sys.path.insert(0, str(Path(__file__).resolve().parent / "pathguard"))
pytest_plugins = ["refbridge_path_guard"]


# Fixtures that start a real process: a test that uses one is `slow`.
PROCESS_FIXTURES = {"redis_server", "redis_url", "env", "settings", "client", "worker"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark as `slow` every test that starts real processes, so `-m "not slow"` is the pure
    core, for the edit-test loop (the README's test command still runs everything)."""
    for item in items:
        integration = "integration" in item.path.parts
        if integration or PROCESS_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture()
def redis_url(redis_server: EmbeddedRedis) -> str:
    return fresh_redis(redis_server)


def fresh_redis(redis_server: EmbeddedRedis) -> str:
    """The session's Redis, running (a test may have stopped it) and empty; its URL."""
    if redis_server.process is None or redis_server.process.poll() is not None:
        redis_server.start()
    redis.Redis.from_url(redis_server.url).flushall()
    return redis_server.url


@pytest.fixture(scope="session")
def _refcampaign() -> Iterator[RefCampaign]:
    server = RefCampaign(API_KEY).start()
    yield server
    server.stop()


@pytest.fixture()
def refcampaign(_refcampaign: RefCampaign) -> RefCampaign:
    _refcampaign.reset()
    return _refcampaign


@pytest.fixture(scope="session")
def _paypal() -> Iterator[PayPalVerifier]:
    server = PayPalVerifier().start()
    yield server
    server.stop()


@pytest.fixture()
def paypal(_paypal: PayPalVerifier) -> PayPalVerifier:
    _paypal.reset()
    return _paypal


@pytest.fixture(scope="session")
def _paypal_api() -> Iterator[PayPalApi]:
    server = PayPalApi().start()
    yield server
    server.stop()


@pytest.fixture()
def paypal_api(_paypal_api: PayPalApi) -> PayPalApi:
    _paypal_api.reset()
    return _paypal_api


@pytest.fixture()
def env(
    redis_url: str, refcampaign: RefCampaign, paypal: PayPalVerifier, paypal_api: PayPalApi
) -> dict[str, str]:
    """The environment of a test deployment: fast retries, short timeouts."""
    return deployment_env(redis_url, refcampaign, paypal, paypal_api)


def module_env(
    redis_server: EmbeddedRedis,
    refcampaign: RefCampaign,
    paypal: PayPalVerifier,
    paypal_api: PayPalApi,
) -> dict[str, str]:
    """`env` for a fixture shared by a whole test module (one worker for all its tests), over
    an empty Redis and a PayPal API stand-in that has issued no token yet."""
    url = fresh_redis(redis_server)
    paypal_api.reset()
    return deployment_env(url, refcampaign, paypal, paypal_api)


def deployment_env(
    redis_url: str, refcampaign: RefCampaign, paypal: PayPalVerifier, paypal_api: PayPalApi
) -> dict[str, str]:
    """`env` for fixtures of a wider scope (a worker shared by a whole test module)."""
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("REFCAMPAIGN_", "STRIPE_", "PAYPAL_", "DELIVERY_"))
    }
    return {
        **base,
        "REDIS_URL": redis_url,
        "REFCAMPAIGN_API_KEY": API_KEY,
        "REFCAMPAIGN_API_URL": refcampaign.url,
        "STRIPE_WEBHOOK_SECRET": f"{SECRET},{OTHER_SECRET}",
        "PAYPAL_IPN_VERIFY_URL": paypal.verify_url,
        "PAYPAL_WEBHOOK_ID": WEBHOOK_ID,
        "PAYPAL_CLIENT_ID": CLIENT_ID,
        "PAYPAL_CLIENT_SECRET": CLIENT_SECRET,
        "PAYPAL_API_URL": paypal_api.url,
        "DELIVERY_BACKOFF_BASE": "0.3",
        "DELIVERY_BACKOFF_MAX": "1",
        "DELIVERY_MAX_AGE": "60",
        "DELIVERY_TIMEOUT": "2",
    }


@pytest.fixture()
def settings(env: dict[str, str]) -> Settings:
    return Settings.from_env(env)


@pytest.fixture()
def client(settings: Settings) -> Any:
    from bridge import create_app

    app = create_app(settings)
    return app.test_client()


@pytest.fixture()
def worker(env: dict[str, str], tmp_path: Path) -> Iterator[WorkerProcess]:
    proc = WorkerProcess(env, tmp_path / "worker.log").start()
    yield proc
    proc.stop()
