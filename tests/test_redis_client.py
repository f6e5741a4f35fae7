"""The Redis client every process uses: lazy, safe across threads and forks, one line an outage."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import redis

from bridge.delivery.ledger import Ledger
from bridge.ops.embedded_redis import EmbeddedRedis
from bridge.redis_client import connect, redis_address


@pytest.fixture()
def own_redis(tmp_path: Path):
    server = EmbeddedRedis(tmp_path / "redis")
    yield server
    server.stop()


def test_it_starts_while_redis_is_down_and_connects_on_first_use(own_redis: EmbeddedRedis):
    client = connect(own_redis.url)  # nothing listens yet
    with pytest.raises(redis.exceptions.ConnectionError):
        client.ping()
    own_redis.start()
    assert client.ping()


def test_it_reconnects_after_redis_restarts(own_redis: EmbeddedRedis):
    client = connect(own_redis.start().url)
    client.set("k", "v")
    own_redis.stop()
    with pytest.raises(redis.exceptions.ConnectionError):
        client.get("k")
    own_redis.start()
    assert client.get("k") == b"v"  # reconnected; the AOF kept the key


def test_threads_share_a_client_safely(own_redis: EmbeddedRedis):
    client = connect(own_redis.start().url)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(200):
                client.incr("shared")
                client.set("scratch", "x" * 2000)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert client.get("shared") == b"1600"


def test_a_reply_left_unread_is_never_read_as_the_next_commands(own_redis: EmbeddedRedis):
    # A real interruption while the client waits for a reply (a signal handler raising, as a
    # timeout or Ctrl-C would): the connection that still owes that reply must not be reused.
    client = connect(own_redis.start().url)
    client.set("b", "2")

    def interrupt(*_: object) -> None:
        raise RuntimeError("interrupted while waiting for BLPOP's reply")

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        with pytest.raises(RuntimeError):
            client.blpop(["waiting"], timeout=2)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    # Were the interrupted connection pooled again, Redis would hold this GET behind the
    # blocked BLPOP, and the client would read BLPOP's reply ([waiting, late]) as GET's.
    got: list[object] = []
    reader = threading.Thread(target=lambda: got.append(client.get("b")))
    reader.start()
    reader.join(0.5)
    connect(own_redis.url).lpush("waiting", "late")
    reader.join(10)
    assert got == [b"2"]
    assert client.get("b") == b"2"


def test_a_script_is_never_sent_again_after_a_read_timeout(own_redis: EmbeddedRedis):
    # Redis busy for longer than the client's 3 s read timeout (DEBUG SLEEP stands for a slow
    # disk or a long script): the claim it already holds runs once when it wakes, and only once.
    ledger = Ledger(connect(own_redis.start().url))
    for n in range(4):
        ledger.enqueue(f"it_{n}", f"rb:seen:test:{n}", {"kind": "conversion"})
    assert ledger.claim([], lease=30).claims == []  # the script loaded: no NOSCRIPT later
    sleeping = threading.Event()

    def sleep() -> None:
        client = redis.Redis.from_url(own_redis.url, socket_timeout=10)
        sleeping.set()
        client.execute_command("DEBUG", "SLEEP", "5")

    busy = threading.Thread(target=sleep)
    busy.start()
    assert sleeping.wait(5)
    time.sleep(0.5)
    started = time.monotonic()
    with pytest.raises(redis.exceptions.TimeoutError):
        ledger.claim([f"it_{n}" for n in range(4)], lease=30)
    assert time.monotonic() - started >= 2.5  # it waited on the sleeping Redis
    busy.join()
    leased = [n for n in range(4) if (ledger.get(f"it_{n}") or {}).get("token")]
    attempts = [(ledger.get(f"it_{n}") or {}).get("attempts") for n in range(4)]
    assert len(leased) == 4 and attempts == ["1"] * 4, f"the claim ran more than once: {attempts}"


def test_a_redis_error_reply_keeps_the_connection(own_redis: EmbeddedRedis):
    client = connect(own_redis.start().url)
    client.set("s", "text")
    first = client.client_id()
    with pytest.raises(redis.exceptions.ResponseError):
        client.incr("s")
    assert client.client_id() == first


def test_a_forked_child_gets_its_own_connection(own_redis: EmbeddedRedis):
    client = connect(own_redis.start().url)
    client.set("k", "parent")
    parent_id = client.client_id()
    pid = os.fork()
    if pid == 0:  # the child: its own connection, and the parent's socket left alone
        ok = client.client_id() != parent_id and client.get("k") == b"parent"
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    assert client.client_id() == parent_id
    assert client.get("k") == b"parent"


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("redis://:pw-1@cache.internal:6380/0", "cache.internal:6380"),
        ("redis://user:pw-1@cache.internal/0", "cache.internal:6379"),
        ("rediss://:pw-1@[::1]:6390", "[::1]:6390"),
        ("unix://:pw-1@/run/redis/redis.sock?db=2", "/run/redis/redis.sock"),
        ("redis://", "localhost:6379"),
    ],
)
def test_redis_address_never_shows_the_password(url, address):
    assert redis_address(url) == address


WATCHED = """
import sys
from pathlib import Path

import redis

from bridge.delivery.ledger import Ledger
from bridge.ops.embedded_redis import EmbeddedRedis
from bridge.logs import configure_logging
from bridge.redis_client import connect, redis_address

configure_logging()
server = EmbeddedRedis(Path(sys.argv[1]))
client = connect(server.url, watched=sys.argv[2] == "watched")
for _ in range(5):
    try:
        client.ping()
    except redis.exceptions.ConnectionError:
        pass
server.start()
try:
    for _ in range(3):
        client.ping()
finally:
    server.stop()
print(server.port)
"""


def run_watched(directory: Path, *args: str) -> tuple[list[dict[str, object]], int]:
    done = subprocess.run(
        [sys.executable, "-c", WATCHED, str(directory), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    *lines, port = done.stdout.splitlines()
    assert "Traceback" not in done.stderr
    return [json.loads(line) for line in lines], int(port)


def test_a_watched_client_logs_an_outage_once_and_its_end_once(tmp_path):
    lines, port = run_watched(tmp_path, "watched")
    assert [line["event"] for line in lines] == ["redis_unreachable", "redis_reachable"]
    assert {line["redis"] for line in lines} == {f"127.0.0.1:{port}"}


def test_an_unwatched_client_logs_nothing(tmp_path):
    lines, _ = run_watched(tmp_path, "unwatched")
    assert lines == []


def test_the_methods_the_watch_wraps_are_still_redis_pys():
    # bridge.redis_client._Watched overrides these two methods of redis-py's connections: a
    # release that renamed or dropped one would silently end the outage lines. This fails then.
    for name in ("connect_check_health", "read_response"):
        method = getattr(redis.connection.AbstractConnection, name, None)
        assert callable(method), f"redis-py's connections no longer have {name}()"
