"""`refbridge run`: embedded Redis (when REDIS_URL is unset), web and worker, stopped together.

A child that dies is started again, with backoff; only a configuration error or a child that
keeps exiting at once stops the run (see `_child_exited`).
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import structlog

from bridge.logs import configure_logging
from bridge.ops.embedded_redis import EmbeddedRedis, RedisStartError
from bridge.ops.preflight import check_port_free, check_redis, lock_data_dir, redis_address
from bridge.ops.process_tree import (
    die_with_parent,
    kill_group,
    leave_terminal,
    stop_child,
    yield_cpu,
)
from bridge.ops.process_tree import (
    terminal_fds as tty_fds,
)
from bridge.ops.readiness import Readiness, probe_host
from bridge.redis_client import connect, sentinels_of
from config import ConfigError, Settings

log = structlog.get_logger("refbridge.run")

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# What each child gets from the kernel when we die without stopping it (SIGKILL, a crash).
# gunicorn's SIGTERM shutdown is bounded (graceful_timeout). Celery's warm shutdown is not when
# its broker is gone, as the embedded Redis is then too (seen: a worker that stayed for
# minutes); an attempt cut short is taken up again by the ledger, like any crashed one.
DEATH_SIGNALS = {"web": signal.SIGTERM, "worker": signal.SIGKILL}
# A child that dies sooner than this after its start failed "at once": restarting it again and
# again would only fill the log, so MAX_QUICK_EXITS of those in a row stop the run.
QUICK_EXIT = 10.0
MAX_QUICK_EXITS = 5
# The wait before a restart: RESTART_DELAY, doubled for each quick exit in a row, at most
# RESTART_DELAY_MAX. A child that ran a while (a crash, an OOM kill) comes back at once.
RESTART_DELAY = 0.5
RESTART_DELAY_MAX = 30.0
# Exit statuses that mean the configuration is invalid (gunicorn's for a worker that cannot
# boot, the Celery worker's for our ConfigError): a restart would fail the same way.
CONFIG_ERROR_EXITS = {"web": 3, "worker": 2}


def _children(host: str, port: int, concurrency: int, worker_name: str) -> dict[str, list[str]]:
    python = sys.executable
    web = ["-m", "gunicorn", "-c", "python:bridge.web.gunicorn_conf", "--bind", f"{host}:{port}"]
    worker = ["-m", "celery", "-A", "celery_app", "--quiet", "worker", "--loglevel", "INFO"]
    return {
        "web": [python, *web, "--workers", "2", "bridge:create_app()"],
        "worker": [python, *worker, "--concurrency", str(concurrency), "-n", worker_name],
    }


@dataclass
class Life:
    """One child's restarts: when it last started, its quick exits in a row, its next start."""

    started: float = field(default_factory=time.monotonic)
    quick_exits: int = 0
    restarts: int = 0
    code: int | None = None
    delay: float = 0.0
    restart_at: float | None = None


@dataclass
class Tree:
    """What one `refbridge run` started; every process gets SIGTERM from the kernel if we die."""

    data_dir: Path
    lock: IO[str]
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    redis: EmbeddedRedis | None = None
    stop_requested: bool = False
    commands: dict[str, list[str]] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    lives: dict[str, Life] = field(default_factory=dict)
    # Why a child's death stopped the run: the one line printed once everything is stopped.
    failure: str | None = None
    # Known before a hang-up: a terminal that is gone no longer answers isatty().
    terminal_fds: tuple[int, ...] = field(default_factory=tty_fds)

    def request_stop(self, signum: int, _: object) -> None:
        """Signal handler: the main loop stops everything in order."""
        self.stop_requested = True
        if signum == signal.SIGHUP:
            leave_terminal(self.terminal_fds)

    def start_redis(self) -> str:
        """Start the embedded Redis under the data directory; its URL, also in redis.url."""
        self.lives["redis"] = Life()
        self.redis = EmbeddedRedis(self.data_dir.resolve()).start(pass_fds=(self.lock.fileno(),))
        url_file = self.data_dir / "redis.url"
        url_file.with_suffix(".tmp").write_text(self.redis.url + "\n")
        url_file.with_suffix(".tmp").replace(url_file)  # `refbridge status` never reads half
        return self.redis.url

    def start(self, name: str, cmd: list[str], env: dict[str, str]) -> None:
        """Start one child in its own session: a Ctrl-C reaches us only, we stop them in order."""
        self.commands[name], self.env = cmd, env
        self.lives.setdefault(name, Life()).started = time.monotonic()
        self.procs[name] = subprocess.Popen(
            cmd,
            env=env,
            start_new_session=True,
            preexec_fn=die_with_parent(DEATH_SIGNALS[name]),
            # The lock goes with them: a run's data directory stays locked while any of it lives.
            pass_fds=(self.lock.fileno(),),
        )

    def exited(self) -> str | None:
        """A child (Redis included) that is no longer running and waits for no restart, if any."""
        return next(
            (n for n in self.lives if self.exit_code(n) is not None and not self._waits(n)), None
        )

    def exit_code(self, name: str) -> int | None:
        """A child's exit status, or None while it runs."""
        proc = self.redis.process if name == "redis" and self.redis else self.procs.get(name)
        return proc.poll() if proc else None

    def _waits(self, name: str) -> bool:
        return self.lives[name].restart_at is not None

    def restart(self, name: str) -> int:
        """Start a child that died again, as it was started (Redis: same port and data); its pid.

        Whatever the dead one left in its process group goes first (a worker's pool, gunicorn's
        workers). The new one is set up like the first: its own session, the parent-death
        signal and the lock, so a SIGKILLed run still leaves nothing behind.
        """
        life = self.lives[name]
        life.restart_at = None
        life.restarts += 1
        life.started = time.monotonic()
        if name == "redis" and self.redis and self.redis.process:
            kill_group(self.redis.process.pid)
            self.redis.start(pass_fds=(self.lock.fileno(),))
            return self.redis.process.pid
        kill_group(self.procs[name].pid)
        self.start(name, self.commands[name], self.env)
        pid = self.procs[name].pid
        if name == "worker":
            yield_cpu(pid)
        return pid

    def stop(self) -> None:
        """Stop web, worker, then Redis (they write to it until they are gone)."""
        for name in ("web", "worker"):
            if name in self.procs:
                stop_child(self.procs[name])
        if self.redis:
            self.redis.stop()
            (self.data_dir / "redis.url").unlink(missing_ok=True)


def run(settings: Settings, host: str, port: int | None, concurrency: int, data_dir: Path) -> int:
    """Check, start everything, wait for a stop signal (or a child's death), stop; exit status."""
    configure_logging()
    settings.require("REFCAMPAIGN_API_KEY")
    web_port = port or _env_port()
    lock = lock_data_dir(data_dir)
    try:
        check_port_free(host, web_port)
        if settings.redis_url:
            check_redis(settings.redis_url, sentinels_of(settings))
        tree = Tree(data_dir, lock)
        for signum in STOP_SIGNALS:
            signal.signal(signum, tree.request_stop)
        try:
            code = _run_tree(tree, settings, host, web_port, concurrency)
        finally:
            tree.stop()
            log.info("refbridge_stopped", restarts=_restarts(tree))
    finally:
        lock.close()
    if tree.failure:
        print(f"refbridge: {tree.failure}", file=sys.stderr, flush=True)
    return code


def _run_tree(tree: Tree, settings: Settings, host: str, port: int, concurrency: int) -> int:
    env = dict(os.environ)
    if settings.redis_url:
        redis_url, where = settings.redis_url, "REDIS_URL"
    else:
        redis_url, where = tree.start_redis(), f"embedded, {tree.data_dir}"
        env["REDIS_URL"] = redis_url
        log.info("embedded_redis_started", url=redis_url, data_dir=str(tree.data_dir), aof=True)
    worker_name = f"refbridge-{secrets.token_hex(4)}@{socket.gethostname()}"
    for name, cmd in _children(host, port, concurrency, worker_name).items():
        if not tree.stop_requested:
            tree.start(name, cmd, env)
    if tree.stop_requested:
        return 0
    # Celery imports for about a second before it forks its pool: the pool inherits this.
    worker_nice = yield_cpu(tree.procs["worker"].pid)
    web = f"http://{host}:{port}"
    log.info("refbridge_starting", web=web, pids=_pids(tree), worker_nice=worker_nice)
    readyz = f"http://{probe_host(host)}:{port}/readyz"
    sentinels = sentinels_of(settings)
    ready = Readiness(readyz, connect(redis_url, sentinels=sentinels), worker_name)
    shown = sentinels.label if sentinels else redis_address(redis_url)
    return _watch(tree, ready, web=web, redis=f"{shown} ({where})")


def _watch(tree: Tree, ready: Readiness, **ready_line: str) -> int:
    """Until a stop is asked for or a child exits: say once when the service is ready."""
    announced = False
    while not tree.stop_requested:
        dead = tree.exited()
        if dead:
            code = _child_exited(tree, dead)
            if code is not None:
                return code
        _restart_due(tree)
        if not announced and ready.check():
            announced = True
            log.info("refbridge_ready", **ready_line, seconds=ready.seconds())
        time.sleep(0.2)
    return 0


def _child_exited(tree: Tree, name: str) -> int | None:
    """A child died on its own: the exit status to stop everything with, or None to go on.

    It is restarted after a delay (see RESTART_DELAY), unless its exit status says that its
    configuration is invalid or it exited at once MAX_QUICK_EXITS times in a row: then
    `tree.failure` says why, in one line.
    """
    life = tree.lives[name]
    life.code = tree.exit_code(name)
    log.error("process_exited", process=name, code=life.code)
    if life.code == CONFIG_ERROR_EXITS.get(name):
        tree.failure = (
            f"{name} exited with status {life.code}: its configuration is invalid "
            "(its own error is above); stopping"
        )
        return 1
    quick = time.monotonic() - life.started < QUICK_EXIT
    life.quick_exits = life.quick_exits + 1 if quick else 0
    if life.quick_exits >= MAX_QUICK_EXITS:
        tree.failure = (
            f"{name} exited within {QUICK_EXIT:g} s of starting {life.quick_exits} times in a "
            f"row (last status {life.code}); stopping"
        )
        return 1
    life.delay = min(RESTART_DELAY_MAX, RESTART_DELAY * 2**life.quick_exits)
    life.restart_at = time.monotonic() + life.delay
    return None


def _restart_due(tree: Tree) -> None:
    """Restart the children whose delay is over."""
    for name, life in tree.lives.items():
        if life.restart_at is None or time.monotonic() < life.restart_at:
            continue
        try:
            pid = tree.restart(name)
        except RedisStartError as exc:
            # Counted like any other exit at once: the next look finds it dead.
            if tree.redis:
                tree.redis.kill()
            log.error("process_restart_failed", process=name, error=str(exc))
            continue
        log.warning(
            "process_restarted",
            process=name,
            code=life.code,
            attempt=life.quick_exits + 1,
            delay=life.delay,
            restarts=life.restarts,
            pid=pid,
        )


def _restarts(tree: Tree) -> dict[str, int]:
    return {name: life.restarts for name, life in tree.lives.items() if life.restarts}


def _env_port() -> int:
    raw = os.environ.get("PORT") or "8000"
    if not (raw.isascii() and raw.isdigit() and 0 < int(raw) < 65536):
        raise ConfigError("PORT", "expected a TCP port number (1-65535)")
    return int(raw)


def _pids(tree: Tree) -> dict[str, int]:
    pids = {n: p.pid for n, p in tree.procs.items()}
    if tree.redis and tree.redis.process:
        pids["redis"] = tree.redis.process.pid
    return pids
