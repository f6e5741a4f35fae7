"""`refbridge run`: embedded Redis (when REDIS_URL is unset), web and worker, stopped together."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import structlog

from bridge.embedded_redis import EmbeddedRedis
from bridge.logs import configure_logging
from config import Settings

log = structlog.get_logger("refbridge.run")

# How much nicer than the web the worker runs. Under a burst the web's 200s come first: a
# webhook left unanswered is resent, and an endpoint that keeps timing out gets disabled, while
# a delivery can wait a few seconds. With both on the same cores, the web then acknowledges
# about twice as fast while the worker delivers (BENCHMARKS.md, figure 1); the worker still
# gets ~10 % of a contended CPU and all of an idle one.
WORKER_NICE = 10


def _children(host: str, port: int, concurrency: int) -> dict[str, list[str]]:
    python = sys.executable
    web = ["-m", "gunicorn", "-c", "python:bridge.gunicorn_conf", "--bind", f"{host}:{port}"]
    worker = ["-m", "celery", "-A", "celery_app", "--quiet", "worker", "--loglevel", "INFO"]
    return {
        "web": [python, *web, "--workers", "2", "bridge:create_app()"],
        "worker": [python, *worker, "--concurrency", str(concurrency)],
    }


def run(settings: Settings, host: str, port: int | None, concurrency: int, data_dir: Path) -> int:
    """Start everything, wait for Ctrl-C (or a child's death), stop everything; exit status."""
    configure_logging()
    settings.require("REFCAMPAIGN_API_KEY")
    env = dict(os.environ)
    redis_server = None
    if not settings.redis_url:
        redis_server = EmbeddedRedis(data_dir.resolve()).start()
        (data_dir / "redis.url").write_text(redis_server.url + "\n")
        env["REDIS_URL"] = redis_server.url
        log.info("embedded_redis_started", url=redis_server.url, data_dir=str(data_dir), aof=True)
    web_port = port or int(env.get("PORT") or 8000)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    stopping = False

    def request_stop(signum: int, _: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        for name, cmd in _children(host, web_port, concurrency).items():
            # Own sessions: a Ctrl-C reaches us only, and we stop the children in order.
            procs[name] = subprocess.Popen(cmd, env=env, start_new_session=True)
        # Celery imports for about a second before it forks its pool: the pool inherits this.
        worker_nice = yield_cpu(procs["worker"].pid)
        log.info(
            "refbridge_running",
            web=f"http://{host}:{web_port}",
            pids={n: p.pid for n, p in procs.items()},
            worker_nice=worker_nice,
        )
        while not stopping:
            dead = [n for n, p in procs.items() if p.poll() is not None]
            if dead:
                log.error("process_exited", process=dead[0], code=procs[dead[0]].returncode)
                return 1
            time.sleep(0.2)
        return 0
    finally:
        for name in ("web", "worker"):
            if name in procs:
                _stop(procs[name])
        if redis_server:
            redis_server.stop()
            (data_dir / "redis.url").unlink(missing_ok=True)
        log.info("refbridge_stopped")


def yield_cpu(pid: int, steps: int = WORKER_NICE) -> int | None:
    """Make process `pid`, a session leader just started, `steps` nicer than it is (at most 19).

    Under load it then gets less CPU than its siblings (the web); children it forks later
    (Celery's pool) inherit the niceness. Linux's autogroup (on when processes live in the root
    CPU cgroup) first shares the CPU between sessions and applies a process's own niceness only
    within its session, so the niceness of the session, new and at 0, is set to `steps` too.
    Returns the process's niceness now, or None when it could not be changed (logged).
    """
    try:
        nice = min(19, os.getpriority(os.PRIO_PROCESS, pid) + steps)
        os.setpriority(os.PRIO_PROCESS, pid, nice)
    except OSError as exc:
        log.warning("worker_priority_unchanged", error=type(exc).__name__)
        return None
    _set_session_nice(pid, steps)
    return nice


def _set_session_nice(pid: int, nice: int) -> None:
    autogroup = Path(f"/proc/{pid}/autogroup")
    for _ in range(5):
        try:
            autogroup.write_text(str(nice))
            return
        except FileNotFoundError:
            return  # no autogroup (another OS, or a kernel without it): the niceness is what counts
        except BlockingIOError:
            # EAGAIN: without CAP_SYS_ADMIN, one such change per 100 ms on the whole machine.
            time.sleep(0.1)
        except OSError as exc:
            log.warning("worker_session_priority_unchanged", error=type(exc).__name__)
            return
    log.warning("worker_session_priority_unchanged", error="BlockingIOError")


def _stop(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
