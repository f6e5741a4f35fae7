"""Real processes for the benches: a fresh embedded Redis, the RefCampaign stand-in, gunicorn
with the Procfile's web settings and a Celery worker with the Procfile's worker settings.

Everything listens on 127.0.0.1 and lives in one temporary directory (logs included).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import psutil

from bridge.ops.embedded_redis import EmbeddedRedis, free_port
from bridge.ops.process_tree import yield_cpu
from tests.signing import OTHER_SECRET, SECRET

ROOT = Path(__file__).resolve().parents[1]
API_KEY = "rc_bench_key_0001"
PY = sys.executable
# The Procfile's `web` line; `--bind` goes to loopback only.
WEB_ARGS = ["-c", "python:bridge.web.gunicorn_conf", "--workers", "2"]
# The Procfile's `worker` line.
WORKER_ARGS = ["-A", "celery_app", "--quiet", "worker", "--loglevel", "INFO", "--concurrency", "4"]
# gunicorn's defaults (sync workers, no access log, no config file) with the same worker count:
# what a merchant's own Flask app would most likely run on.
DEFAULT_GUNICORN_ARGS = ["--workers", "2"]


def _get_json(url: str, data: bytes | None = None) -> Any:
    with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=10) as answer:
        return json.loads(answer.read())


def _wait(predicate: Any, timeout: float, what: str, step: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(step)
    raise RuntimeError(f"timed out after {timeout}s waiting for {what}")


class Process:
    """A child process in its own session, output to a log file; stopped by its pid only."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                cmd,
                env=env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def tree(self) -> list[psutil.Process]:
        """This process and its children (gunicorn workers, Celery pool processes)."""
        try:
            parent = psutil.Process(self.proc.pid)
            return [parent, *parent.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def rss(self) -> dict[str, int]:
        """RSS in bytes of each process of the tree, by 'role pid'."""
        out = {}
        for i, proc in enumerate(self.tree()):
            try:
                out[f"{'main' if i == 0 else 'child'} {proc.pid}"] = proc.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return out

    def cpu_seconds(self) -> float:
        """User + system CPU seconds used so far by the tree's live processes."""
        total = 0.0
        for proc in self.tree():
            try:
                times = proc.cpu_times()
                total += times.user + times.system
            except psutil.NoSuchProcess:
                pass
        return total

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)  # its own session: only its own tree
            self.proc.wait()


class StandIn:
    """bench.standin as a child process."""

    def __init__(self, env: dict[str, str], log_dir: Path, delay: float = 0.0) -> None:
        cmd = [PY, "-m", "bench.standin", "--api-key", API_KEY, "--delay", str(delay)]
        self.proc = subprocess.Popen(
            cmd,
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            text=True,
        )
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()
        if not self.url.startswith("http://127.0.0.1:"):
            raise RuntimeError("stand-in did not start")
        self.postback_url = self.url + "/api/v1/conversions/postback"

    def count(self) -> dict[str, int]:
        return dict(_get_json(self.url + "/_bench/count"))

    def arrivals(self) -> list[tuple[str, float]]:
        return [(e, at) for e, at in _get_json(self.url + "/_bench/arrivals")]

    def reset(self) -> None:
        _get_json(self.url + "/_bench/reset", data=b"")

    def wait_accepted(self, count: int, timeout: float) -> None:
        _wait(lambda: self.count()["accepted"] >= count, timeout, f"{count} postbacks", 0.1)

    def wait_accepted_ids(self, ids: set[str], timeout: float) -> None:
        """Until a postback for each of `ids` has arrived (whatever else arrives meanwhile)."""

        def arrived() -> bool:
            return ids <= {e for e, _ in self.arrivals()}

        _wait(arrived, timeout, f"{len(ids)} postbacks", 0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


class Stack(AbstractContextManager["Stack"]):
    """Redis + stand-in (+ web/baseline apps and workers started on demand), torn down on exit."""

    def __init__(self, standin_delay: float = 0.0, extra_env: dict[str, str] | None = None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="refbridge-bench-"))
        self.redis = EmbeddedRedis(self.dir / "redis").start()
        base = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("REFCAMPAIGN_", "STRIPE_", "PAYPAL_", "DELIVERY_", "REDIS_"))
        }
        self.env = {**base, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
        self.standin = StandIn(self.env, self.dir, standin_delay)
        self.env.update(
            {
                "REDIS_URL": self.redis.url,
                "REFCAMPAIGN_API_KEY": API_KEY,
                "REFCAMPAIGN_API_URL": self.standin.url,
                "STRIPE_WEBHOOK_SECRET": f"{SECRET},{OTHER_SECRET}",
                **(extra_env or {}),
            }
        )
        self.processes: list[Process] = []

    def web(
        self,
        app: str = "bridge:create_app()",
        name: str = "web",
        extra: list[str] | None = None,
        settings: list[str] | None = None,
    ) -> tuple[Process, int]:
        """gunicorn serving `app` with the Procfile's settings (or `settings` instead, e.g.
        DEFAULT_GUNICORN_ARGS), plus `extra`; (process, port) once it answers."""
        port = free_port()
        base = WEB_ARGS if settings is None else settings
        cmd = [PY, "-m", "gunicorn", *base, *(extra or []), "--bind", f"127.0.0.1:{port}", app]
        proc = self._start(name, cmd)

        def up() -> bool:
            if proc.proc.poll() is not None:
                tail = proc.log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{name} exited with {proc.proc.returncode}:\n{tail}")
            return _healthy(port)

        _wait(up, 60, f"{name} on port {port}", 0.1)
        return proc, port

    def worker(
        self, name: str = "worker", extra: list[str] | None = None, *, shares_cpu: bool = True
    ) -> Process:
        """A Celery worker with the Procfile's arguments (ready when it has consumers).

        `shares_cpu`: started as `refbridge run` starts it, at the lower CPU priority that it
        and the systemd unit give a worker on a machine shared with the web.
        """
        proc = self._start(name, [PY, "-m", "celery", *WORKER_ARGS, *(extra or [])])
        if shares_cpu:
            yield_cpu(proc.proc.pid)
        _wait(lambda: b"ready" in proc.log_path.read_bytes(), 30, f"{name} ready", 0.1)
        return proc

    def _start(self, name: str, cmd: list[str]) -> Process:
        proc = Process(name, cmd, self.env, self.dir)
        self.processes.append(proc)
        return proc

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds used so far per role: each live process tree, Redis, stand-in, us."""
        out = {p.name: p.cpu_seconds() for p in self.processes if p.proc.poll() is None}
        for name, pid in (
            ("redis", self.redis.process.pid if self.redis.process else 0),
            ("standin", self.standin.proc.pid),
            ("loadgen", os.getpid()),
        ):
            try:
                times = psutil.Process(pid).cpu_times()
                out[name] = times.user + times.system
            except psutil.NoSuchProcess:
                pass
        return out

    def __exit__(self, *exc: object) -> None:
        for proc in reversed(self.processes):
            proc.stop()
        self.standin.stop()
        self.redis.stop()
        if os.environ.get("BENCH_KEEP_LOGS"):
            print(f"logs kept in {self.dir}", file=sys.stderr)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


def write_result(name: str, result: dict[str, Any]) -> None:
    """Print a figure's result as JSON and keep it under bench/results/."""
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    result = {"figure": name, "at": time.strftime("%Y-%m-%dT%H:%M:%S"), **result}
    (out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


def cpu_per_request(before: dict[str, float], after: dict[str, float], requests: int) -> dict:
    """CPU milliseconds per request per role between two `Stack.cpu_seconds()` readings."""
    return {k: round(1000 * (after[k] - before.get(k, 0.0)) / max(requests, 1), 3) for k in after}
