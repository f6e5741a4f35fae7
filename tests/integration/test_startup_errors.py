"""Invalid configuration fails at start: one clear line naming the variable, never a traceback.

Every process is started as a user would start it, from a directory without a `.env`, with an
environment that holds only what the test gives it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from bridge.ops.embedded_redis import free_port

PYTHON = sys.executable
REFBRIDGE = str(Path(sys.executable).parent / "refbridge")
CELERY_WORKER = [PYTHON, "-m", "celery", "-A", "celery_app", "worker", "--loglevel", "INFO"]
API_KEY = "rc_live_startup_secret_31d9"
CLOSED_REDIS = "redis://127.0.0.1:{port}/0"


@dataclass
class Finished:
    returncode: int | None  # None: still running when the test gave up (it was killed)
    stdout: str
    stderr: str
    seconds: float

    @property
    def stderr_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


def user_env(home: Path, **variables: str) -> dict[str, str]:
    """A minimal environment: no PYTHONPATH, nothing of the test run's own variables."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "LANG": "C.UTF-8"}
    env.update(variables)
    return env


def launch(cmd: list[str], env: dict[str, str], cwd: Path, timeout: float = 30.0) -> Finished:
    """Run `cmd` in its own process group; kill the group if it outlives `timeout`."""
    started = time.monotonic()
    proc = subprocess.Popen(
        cmd,
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
        code: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        code = None
    return Finished(
        code,
        out.decode("utf-8", "replace"),
        err.decode("utf-8", "replace"),
        time.monotonic() - started,
    )


def assert_one_clear_line(result: Finished, *needles: str) -> str:
    """Non-zero exit, exactly one stderr line containing `needles`, no traceback anywhere."""
    assert result.returncode is not None, f"still running after {result.seconds:.0f}s"
    assert result.returncode != 0
    everything = result.stdout + result.stderr
    assert "Traceback" not in everything, everything
    assert API_KEY not in everything
    assert len(result.stderr_lines) == 1, result.stderr
    [line] = result.stderr_lines
    for needle in needles:
        assert needle in line, line
    return line


@pytest.fixture()
def workdir(tmp_path: Path) -> Path:
    directory = tmp_path / "cwd"
    directory.mkdir()
    assert not (directory / ".env").exists()
    return directory


# --- celery worker ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variables", "variable"),
    [
        ({"REDIS_URL": "redis://127.0.0.1:6379/0"}, "REFCAMPAIGN_API_KEY"),
        (
            {
                "REDIS_URL": "redis://127.0.0.1:6379/0",
                "REFCAMPAIGN_API_KEY": API_KEY,
                "DELIVERY_TIMEOUT": "abc",
            },
            "DELIVERY_TIMEOUT",
        ),
        (
            {
                "REDIS_URL": "redis://127.0.0.1:6379/0",
                "REFCAMPAIGN_API_KEY": API_KEY,
                "DELIVERY_TIMEOUT": "²",  # str.isdigit() says yes; float() raises
            },
            "DELIVERY_TIMEOUT",
        ),
        (
            {
                "REDIS_URL": "redis://127.0.0.1:6379/0",
                "REFCAMPAIGN_API_KEY": API_KEY,
                "STRIPE_SIGNATURE_TOLERANCE": "³",
            },
            "STRIPE_SIGNATURE_TOLERANCE",
        ),
        (
            {
                "REDIS_URL": "redis://127.0.0.1:6379/0",
                "REFCAMPAIGN_API_KEY": API_KEY,
                "REFCAMPAIGN_API_URL": "http://app.refcampaign.com",
            },
            "REFCAMPAIGN_API_URL",
        ),
        ({"REFCAMPAIGN_API_KEY": API_KEY}, "REDIS_URL"),
        ({"REFCAMPAIGN_API_KEY": API_KEY, "REDIS_URL": "localhost:6379"}, "REDIS_URL"),
    ],
    ids=[
        "api-key-missing",
        "timeout-abc",
        "timeout-superscript",
        "tolerance-superscript",
        "api-url-clear-text",
        "redis-url-missing",
        "redis-url-bad",
    ],
)
def test_celery_worker_refuses_bad_configuration(workdir, variables, variable):
    result = launch(CELERY_WORKER, user_env(workdir, **variables), workdir)
    line = assert_one_clear_line(result, variable)
    assert line.startswith(f"refbridge: configuration error: {variable}: ")
    assert result.stdout == ""
    assert result.seconds < 20


def test_celery_worker_error_never_repeats_the_stripe_secret(workdir):
    secret = "sk_live_oops_not_a_webhook_secret"
    env = user_env(
        workdir,
        REDIS_URL="redis://127.0.0.1:6379/0",
        REFCAMPAIGN_API_KEY=API_KEY,
        STRIPE_WEBHOOK_SECRET=secret,
    )
    result = launch(CELERY_WORKER, env, workdir)
    assert_one_clear_line(result, "STRIPE_WEBHOOK_SECRET")
    assert secret not in result.stdout + result.stderr


# --- refbridge CLI -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variables", "variable"),
    [
        ({}, "REFCAMPAIGN_API_KEY"),
        ({"REFCAMPAIGN_API_KEY": API_KEY, "DELIVERY_TIMEOUT": "abc"}, "DELIVERY_TIMEOUT"),
        ({"REFCAMPAIGN_API_KEY": API_KEY, "DELIVERY_TIMEOUT": "²"}, "DELIVERY_TIMEOUT"),
        ({"REFCAMPAIGN_API_KEY": API_KEY, "DELIVERY_MAX_AGE": "1e3"}, "DELIVERY_MAX_AGE"),
        ({"REFCAMPAIGN_API_KEY": API_KEY, "REDIS_URL": "not-a-url"}, "REDIS_URL"),
    ],
    ids=["api-key-missing", "timeout-abc", "timeout-superscript", "max-age-1e3", "redis-url-bad"],
)
def test_refbridge_run_refuses_bad_configuration_before_starting_anything(
    workdir, variables, variable
):
    result = launch([REFBRIDGE, "run"], user_env(workdir, **variables), workdir)
    line = assert_one_clear_line(result, variable)
    assert line.startswith(f"refbridge: configuration error: {variable}: ")
    # No embedded Redis was started for a run that cannot go on.
    assert not (workdir / ".refbridge").exists()


def test_refbridge_status_refuses_a_redis_url_that_is_not_a_url(workdir):
    result = launch([REFBRIDGE, "status"], user_env(workdir, REDIS_URL="not-a-url"), workdir)
    line = assert_one_clear_line(result, "REDIS_URL")
    assert line == (
        "refbridge: configuration error: REDIS_URL: expected a redis://, rediss:// or unix:// URL"
    )
    assert result.stdout == ""


def test_refbridge_status_without_redis_url_or_local_run(workdir):
    result = launch([REFBRIDGE, "status", "--json"], user_env(workdir), workdir)
    assert_one_clear_line(result, "REDIS_URL", "is not set")
    assert result.stdout == ""


@pytest.mark.parametrize("command", [["status"], ["status", "--json"], ["dlq", "list"]])
def test_refbridge_reports_unreachable_redis_in_one_line(workdir, command):
    url = CLOSED_REDIS.format(port=free_port())
    result = launch([REFBRIDGE, *command], user_env(workdir, REDIS_URL=url), workdir)
    line = assert_one_clear_line(result, "Redis")
    assert line == "refbridge: cannot reach Redis (ConnectionError); is it running?"
    assert result.stdout == ""
    assert result.seconds < 15  # fails fast, no endless reconnecting


def test_console_script_works_from_any_directory(workdir):
    # Regression: an editable install made before the packages had __init__.py imported
    # `config` as an empty namespace package outside the checkout (ImportError, Traceback).
    env = user_env(workdir, REDIS_URL="not-a-url")
    assert "PYTHONPATH" not in env
    result = launch([REFBRIDGE, "status"], env, workdir)
    assert_one_clear_line(result, "REDIS_URL")
    worker = launch(CELERY_WORKER, user_env(workdir), workdir)
    assert_one_clear_line(worker, "REDIS_URL")


# --- gunicorn web ------------------------------------------------------------------------------


def gunicorn(port: int) -> list[str]:
    return [PYTHON, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "bridge:create_app()"]


def test_gunicorn_without_redis_url_fails_with_one_clear_line(workdir):
    env = user_env(workdir, REFCAMPAIGN_API_KEY=API_KEY)
    result = launch(gunicorn(free_port()), env, workdir, timeout=20)
    assert result.returncode is not None, "gunicorn kept running"
    assert result.returncode != 0
    ours = [line for line in result.stderr_lines if "REDIS_URL" in line]
    assert ours and ours[0].startswith("refbridge: configuration error: REDIS_URL: is not set")
    assert "Traceback" not in result.stdout + result.stderr


def test_gunicorn_with_a_non_ascii_number_stops_with_one_clear_line(workdir):
    env = user_env(
        workdir,
        REFCAMPAIGN_API_KEY=API_KEY,
        REDIS_URL="redis://127.0.0.1:1/0",
        DELIVERY_TIMEOUT="²",
    )
    result = launch(gunicorn(free_port()), env, workdir, timeout=10)
    ours = [line for line in result.stderr_lines if line.startswith("refbridge:")]
    assert ours and ours[0] == (
        "refbridge: configuration error: DELIVERY_TIMEOUT: expected a number of seconds"
        " (ASCII digits, e.g. 10 or 2.5), got '²'"
    )
    assert "Traceback" not in result.stdout + result.stderr
    assert result.returncode is not None, "gunicorn kept respawning workers"
    assert result.returncode != 0


def test_gunicorn_with_a_bad_redis_url_stops_instead_of_respawning(workdir):
    env = user_env(workdir, REFCAMPAIGN_API_KEY=API_KEY, REDIS_URL="not-a-url")
    result = launch(gunicorn(free_port()), env, workdir, timeout=10)
    ours = [line for line in result.stderr_lines if line.startswith("refbridge:")]
    assert ours and ours[0] == (
        "refbridge: configuration error: REDIS_URL: expected a redis://, rediss:// or unix:// URL"
    )
    assert "Traceback" not in result.stdout + result.stderr
    assert result.returncode is not None, "gunicorn kept respawning workers"
    assert result.returncode != 0


def test_refbridge_reports_a_redis_that_refuses_commands_in_one_line(workdir, redis_server):
    url = f"redis://127.0.0.1:{redis_server.port}/99"  # the server has 16 databases
    result = launch([REFBRIDGE, "status"], user_env(workdir, REDIS_URL=url), workdir)
    line = assert_one_clear_line(result, "Redis")
    assert line.startswith("refbridge: ")
    assert "DB index is out of range" in line
