"""Real processes for integration tests: the web and a Celery worker, started and killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class _Process:
    """A process in its own process group (a session), its output kept in a log file."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def _spawn(self, cmd: list[str]) -> subprocess.Popen[bytes]:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                cmd,
                env=self.env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self.proc

    def output(self, offset: int = 0) -> str:
        if not self.log_path.exists():
            return ""
        with self.log_path.open("rb") as fh:
            fh.seek(offset)
            return fh.read().decode("utf-8", "replace")

    def kill(self) -> None:
        """SIGKILL the whole process group (main process and children), as a crash would."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()


class WorkerProcess(_Process):
    """`celery -A celery_app worker` in its own process group, output kept in a log file."""

    def __init__(self, env: dict[str, str], log_path: Path, concurrency: int = 2) -> None:
        super().__init__(env, log_path)
        self.concurrency = concurrency

    def start(self, timeout: float = 30.0) -> WorkerProcess:
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        # The Procfile's worker command, with mingle and gossip off to start faster.
        cmd = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "celery_app",
            "--quiet",
            "worker",
            "--loglevel",
            "INFO",
            "--concurrency",
            str(self.concurrency),
            "--without-mingle",
            "--without-gossip",
        ]
        proc = self._spawn(cmd)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"worker exited early:\n{self.output()[-3000:]}")
            if "ready." in self.output(offset):
                return self
            time.sleep(0.1)
        self.kill()  # never leave a half-started worker behind
        raise RuntimeError(f"worker not ready:\n{self.output()[-3000:]}")


# The Procfile's web command, less its bind address.
WEB_ARGS = ["-c", "python:bridge.web.gunicorn_conf", "--workers", "2"]


class WebProcess(_Process):
    """The Procfile's gunicorn web process on a free port, output kept in a log file."""

    def __init__(self, env: dict[str, str], log_path: Path, port: int) -> None:
        super().__init__(env, log_path)
        self.port = port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> WebProcess:
        import requests

        cmd = [sys.executable, "-m", "gunicorn", *WEB_ARGS, "--bind", f"127.0.0.1:{self.port}"]
        proc = self._spawn([*cmd, "bridge:create_app()"])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"web exited early:\n{self.output()[-3000:]}")
            try:
                if requests.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return self
            except requests.RequestException:
                pass  # not listening yet, or slow to answer on a loaded machine: ask again
            time.sleep(0.1)
        self.stop(timeout=5)  # never leave a half-started web process behind
        raise RuntimeError(f"web not ready:\n{self.output()[-3000:]}")
