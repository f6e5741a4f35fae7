"""What `refbridge run` checks before it starts anything: its data directory, port and Redis."""

from __future__ import annotations

import errno
import fcntl
import os
import socket
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

import redis

from bridge.redis_client import REDIS_ERRORS, Sentinels, connect

LOCK_FILE = "run.lock"


class RunRefused(Exception):
    """`refbridge run` cannot start; the message is the one line to print."""


def lock_data_dir(data_dir: Path) -> IO[str]:
    """Hold `data_dir`'s lock for as long as the returned file stays open.

    The kernel drops the lock when the last process holding it (this one, or a child it was
    passed to) exits, however it exits: a lock is never left behind by a killed run.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    lock = (data_dir / LOCK_FILE).open("a+")
    try:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip() or "?"
        lock.close()
        raise RunRefused(
            f"another `refbridge run` (pid {holder}) is using {data_dir}; stop it first, "
            "or give this one its own --data-dir"
        ) from None
    lock.seek(0)
    lock.truncate()
    lock.write(f"{os.getpid()}\n")
    lock.flush()
    return lock


def check_port_free(host: str, port: int) -> None:
    """Refuse at once when something already listens on host:port (as gunicorn binds it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # gunicorn sets SO_REUSEADDR too: a port left in TIME_WAIT is not "taken".
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise RunRefused(
                    f"port {port} on {host} is already in use; stop what uses it "
                    "or choose another with --port"
                ) from None
            raise RunRefused(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def redis_address(url: str) -> str:
    """host:port (or the socket path) of a Redis URL, without its credentials."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return parts.path
    host = parts.hostname or "localhost"
    return f"[{host}]:{parts.port or 6379}" if ":" in host else f"{host}:{parts.port or 6379}"


def check_redis(url: str, sentinels: Sentinels | None = None) -> None:
    """Refuse when the Redis of REDIS_URL (or the primary of REDIS_SENTINELS) does not answer
    or refuses the credentials."""
    if sentinels is None:
        client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3)
        where, hint = (
            f"{redis_address(url)} (REDIS_URL)",
            "or unset REDIS_URL to run an embedded one",
        )
    else:
        client = connect(url, sentinels=sentinels)
        where, hint = f"{sentinels.label} (REDIS_SENTINELS)", "or check REDIS_SENTINELS"
    try:
        client.ping()
    except redis.exceptions.AuthenticationError:
        raise RunRefused(f"Redis at {where} refused the credentials") from None
    except (*REDIS_ERRORS, OSError) as exc:
        raise RunRefused(
            f"cannot reach Redis at {where}: {_reason(exc)}; start it, {hint}"
        ) from None
    except redis.exceptions.RedisError as exc:
        raise RunRefused(f"Redis at {where} answered with {type(exc).__name__}") from None
    finally:
        client.close()


def _reason(exc: Exception) -> str:
    cause = exc.__context__ if isinstance(exc.__context__, OSError) else exc
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror.lower()
    return type(exc).__name__
