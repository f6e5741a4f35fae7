"""An unreachable Redis, for real: each long-running process names it once (host and port,
never the password), retries quietly, and says once more when Redis answers again."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from bridge import create_app
from bridge.ops.embedded_redis import EmbeddedRedis, free_port
from config import Settings
from tests.integration.test_startup_errors import (
    API_KEY,
    CELERY_WORKER,
    launch,
    user_env,
)
from tests.integration.test_stripe_flow import checkout_event
from tests.processes import ROOT, WorkerProcess
from tests.signing import stripe_body, stripe_headers

PASSWORD = "redis-pw-0ff1ce"


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def events(text: str, name: str) -> list[dict[str, Any]]:
    return [line for line in json_lines(text) if line.get("event") == name]


def assert_quiet_outage(output: str, address: str) -> None:
    """One line naming the address, never the password, no traceback, no Celery retry noise."""
    [line] = events(output, "redis_unreachable")
    assert line["redis"] == address
    assert line["level"] == "warning"
    assert PASSWORD not in output
    assert "Traceback" not in output
    assert "Cannot connect" not in output
    assert "Connection to broker lost" not in output
    assert "sweep_failed" not in output
    assert "CPendingDeprecationWarning" not in output


@pytest.fixture()
def closed_url() -> tuple[str, str]:
    port = free_port()
    return f"redis://:{PASSWORD}@127.0.0.1:{port}/0", f"127.0.0.1:{port}"


def test_worker_names_an_unreachable_redis_once_and_keeps_trying(tmp_path, closed_url):
    url, address = closed_url
    env = user_env(tmp_path, REDIS_URL=url, REFCAMPAIGN_API_KEY=API_KEY)
    result = launch([*CELERY_WORKER, "--concurrency", "1"], env, ROOT, timeout=12)
    assert result.returncode is None, "the worker gave up instead of retrying"
    output = result.stdout + result.stderr
    assert_quiet_outage(output, address)
    assert API_KEY not in output
    # Celery's own start-up notices aside (running as root warns), nothing else was said.
    ours = [line for line in json_lines(output) if line.get("logger") != "py.warnings"]
    assert len(ours) == 1, ours


@pytest.fixture()
def web_down(tmp_path: Path, closed_url: tuple[str, str]) -> Iterator[tuple[str, Path, str]]:
    url, address = closed_url
    port = free_port()
    log_path = tmp_path / "web.log"
    env = user_env(tmp_path, REDIS_URL=url, REFCAMPAIGN_API_KEY=API_KEY)
    env["STRIPE_WEBHOOK_SECRET"] = "whsec_test_unreachable"
    cmd = [sys.executable, "-m", "gunicorn", "-c", "python:bridge.web.gunicorn_conf"]
    cmd += ["--bind", f"127.0.0.1:{port}", "--workers", "1", "bridge:create_app()"]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            assert time.monotonic() < deadline and proc.poll() is None, log_path.read_text()
            time.sleep(0.1)
    yield f"http://127.0.0.1:{port}", log_path, address
    proc.terminate()
    proc.wait(15)


def test_web_names_an_unreachable_redis_once_and_answers_503(web_down):
    base, log_path, address = web_down
    deadline = time.monotonic() + 10
    while not events(log_path.read_text(), "redis_unreachable"):
        assert time.monotonic() < deadline, "the web did not say it at start"
        time.sleep(0.1)
    assert requests.get(f"{base}/healthz", timeout=10).status_code == 200
    body = stripe_body(checkout_event("cs_test_web_down"))
    headers = stripe_headers(body, secret="whsec_test_unreachable")
    for _ in range(5):
        assert requests.get(f"{base}/readyz", timeout=10).status_code == 503
        answer = requests.post(f"{base}/webhooks/stripe", data=body, headers=headers, timeout=10)
        assert answer.status_code == 503
    output = log_path.read_text()
    assert_quiet_outage(output, address)
    assert "redis_unavailable" not in output


def test_worker_says_once_when_redis_goes_and_once_when_it_is_back(env, tmp_path, refcampaign):
    own = EmbeddedRedis(tmp_path / "redis").start()
    worker = WorkerProcess({**env, "REDIS_URL": own.url}, tmp_path / "worker.log").start()
    try:
        own.stop()
        time.sleep(8)  # eight sweeps and several broker reconnections fail meanwhile
        outage = worker.output()
        assert_quiet_outage(outage, f"127.0.0.1:{own.port}")
        own.start()
        deadline = time.monotonic() + 30
        while not events(worker.output(), "redis_reachable"):
            assert time.monotonic() < deadline, worker.output()[-3000:]
            time.sleep(0.2)
        # Still delivering: a webhook taken in now reaches RefCampaign.
        web = create_app(Settings.from_env({**env, "REDIS_URL": own.url})).test_client()
        body = stripe_body(checkout_event("cs_test_after_outage"))
        assert (
            web.post("/webhooks/stripe", data=body, headers=stripe_headers(body)).status_code == 200
        )
        refcampaign.wait_for(1, timeout=30)
    finally:
        worker.stop()
        own.stop()
    output = worker.output()
    assert len(events(output, "redis_unreachable")) == 1
    [back] = events(output, "redis_reachable")
    assert back["redis"] == f"127.0.0.1:{own.port}" and back["down_seconds"] >= 5
