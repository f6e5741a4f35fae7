"""Redis that fails over without losing a webhook (issue 26): a primary, a replica and three
Sentinels (tests/sentinel_cluster.py), the Procfile's web and worker finding the primary through
REDIS_SENTINELS, Stripe webhooks sent steadily while the primary is SIGKILLed: with one
replica, and with two and REDIS_MIN_REPLICAS=1 (every 200 confirmed on a replica, which the
Sentinels promote: the one with the most data), the case SPEC promises loses nothing."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from pathlib import Path

import pytest
import redis
import requests
from redis.sentinel import Sentinel

from bridge.ops.embedded_redis import free_port
from tests.conftest import deployment_env
from tests.integration.test_stripe_flow import checkout_event
from tests.processes import WebProcess, WorkerProcess
from tests.sentinel_cluster import MASTER, SentinelCluster
from tests.signing import stripe_body, stripe_headers
from tests.standins.paypal import PayPalVerifier
from tests.standins.paypal_api import PayPalApi
from tests.standins.refcampaign import PATH, RefCampaign
from tests.waiting import wait_until

pytestmark = pytest.mark.timeout(180)


# What the Sentinels need to elect a new primary once the old one dies: down-after 1 s, then
# a vote and the promotion (measured: ~2-3 s in all).
PROMOTION_WITHIN = 10.0
# A restarted old primary is demoted by the Sentinels at their second INFO round to it (10 s
# apart) after it comes back: measured 18.7-20.2 s.
DEMOTION_WITHIN = 40.0
DATA_PASSWORD = "data-pw-7c1e55"
SENTINEL_PASSWORD = "sentinel-pw-93ab0d"


@pytest.fixture()
def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SentinelCluster]:
    """A primary, one replica (or as many as the test's parameter says) and three Sentinels,
    started; stopped after the test."""
    found = SentinelCluster(tmp_path / "redis", replicas=getattr(request, "param", 1)).start()
    yield found
    found.stop()


@pytest.fixture()
def min_replicas(request: pytest.FixtureRequest) -> str:
    """REDIS_MIN_REPLICAS of the test's deployment (0 unless its parameter says)."""
    return str(getattr(request, "param", 0))


def sentinel_env(
    cluster: SentinelCluster,
    refcampaign: RefCampaign,
    paypal: PayPalVerifier,
    paypal_api: PayPalApi,
    url: str | None = None,
    **extra: str,
) -> dict[str, str]:
    """The test deployment's environment, Redis named by its Sentinels only: REDIS_URL names
    a port nothing listens on, and supplies only the password and the database."""
    url = url or f"redis://127.0.0.1:{free_port()}/0"
    env = deployment_env(url, refcampaign, paypal, paypal_api)
    env = {k: v for k, v in env.items() if not k.startswith("REDIS_") or k == "REDIS_URL"}
    return {**env, "REDIS_SENTINELS": cluster.sentinels, **extra}


def children(pid: int) -> set[int]:
    """The pids of `pid`'s child processes (gunicorn's workers, Celery's pool)."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found.update(int(p) for p in (task / "children").read_text().split())
    return found


def post(url: str, session: str, timeout: float = 15.0) -> requests.Response:
    """A signed `checkout.session.completed` for `session`, signed now (a resend is signed
    afresh, as Stripe does)."""
    body = stripe_body(checkout_event(session))
    return requests.post(
        f"{url}/webhooks/stripe", data=body, headers=stripe_headers(body), timeout=timeout
    )


# --- the harness alone ------------------------------------------------------------------------


def discover(sentinel: Sentinel) -> tuple[str, int]:
    """Where redis-py's Sentinel client finds the primary."""
    found: tuple[str, int] = sentinel.discover_master(MASTER)  # type: ignore[no-untyped-call]
    return found


def test_harness_fails_over(cluster: SentinelCluster) -> None:
    sentinel = Sentinel(cluster.sentinel_addresses, socket_timeout=0.5)  # type: ignore[no-untyped-call]
    primary = sentinel.master_for(  # type: ignore[no-untyped-call]
        MASTER, socket_timeout=0.5, socket_connect_timeout=0.5
    )
    assert primary.set("before", "1")
    assert primary.wait(1, 2000) == 1  # on the replica too
    old = cluster.primary_port()
    assert discover(sentinel) == ("127.0.0.1", old)

    assert cluster.kill_primary() == old
    promoted_at = cluster.wait_for_promotion(timeout=15)
    assert cluster.killed_at is not None
    assert promoted_at - cluster.killed_at < PROMOTION_WITHIN, cluster.promotions
    new = cluster.primary_port()
    assert new != old

    # The same client finds the new primary by itself, with what was written before.
    def written() -> bool:
        try:
            return bool(primary.set("after", "2"))
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
            return False

    wait_until(written, timeout=5, what="a write on the new primary")
    assert primary.get("before") == b"1"
    assert discover(sentinel) == ("127.0.0.1", new)

    # The old primary comes back from its own data, believing it is the primary; the
    # Sentinels make it a replica of the new one, and it catches up.
    cluster.restart_old_primary()
    cluster.wait_for_replica(old, timeout=DEMOTION_WITHIN)
    with cluster.node(old).client() as client:
        assert client.get("after") == "2"
        assert client.info("replication")["role"] == "slave"
    assert cluster.primary_port() == new
    for client in [*sentinel.sentinels, primary]:
        client.close()

    pids = cluster.pids()
    assert len(pids) == 5
    cluster.stop()
    assert not [pid for pid in pids if Path(f"/proc/{pid}").exists()], "stop() left a server"


# --- end to end, through the Procfile's processes --------------------------------------------


@dataclasses.dataclass(frozen=True)
class Answer:
    """One attempt to deliver one webhook: its HTTP status (None: no answer at all)."""

    session: str
    status: int | None
    error: str
    started: float  # time.time()
    duration: float


class StripeSender:
    """Stripe, sending `checkout.session.completed` webhooks at `rate` a second, each for a
    session of its own, and sending again one answered anything but 200 (after `resend_after`
    seconds; Stripe waits longer) until it is answered 200."""

    def __init__(self, url: str, rate: float = 20.0, resend_after: float = 0.5) -> None:
        self.url = url
        self.rate = rate
        self.resend_after = resend_after
        self.answers: list[Answer] = []
        self.accepted: dict[str, float] = {}  # session -> time.time() of its 200
        self.sessions: list[str] = []
        self._lock = threading.Lock()
        self._no_more = threading.Event()
        self._give_up = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=48, thread_name_prefix="stripe")
        self._futures: list[Future[None]] = []
        self._thread = threading.Thread(target=self._schedule, name="stripe-sender", daemon=True)

    def start(self) -> StripeSender:
        self._thread.start()
        return self

    def _schedule(self) -> None:
        due = time.monotonic()
        while not self._no_more.is_set():
            session = f"cs_test_failover_{len(self.sessions):05d}"
            self.sessions.append(session)
            self._futures.append(self._pool.submit(self._send_until_accepted, session))
            due += 1 / self.rate
            self._no_more.wait(max(0.0, due - time.monotonic()))

    def _send_until_accepted(self, session: str) -> None:
        while True:
            started, clock = time.time(), time.monotonic()
            status, error = None, ""
            try:
                status = post(self.url, session).status_code
            except requests.RequestException as exc:
                error = f"{type(exc).__name__}: {exc}"[:300]
            answer = Answer(session, status, error, started, time.monotonic() - clock)
            with self._lock:
                self.answers.append(answer)
                if status == 200:
                    self.accepted[session] = time.time()
            if status == 200 or self._give_up.wait(self.resend_after):
                return

    def stop(self, finish_within: float = 30.0) -> None:
        """Send no new webhook; give the ones not yet accepted `finish_within` seconds more."""
        self._no_more.set()
        self._thread.join()
        wait_futures(self._futures, timeout=finish_within)
        self.close()

    def close(self) -> None:
        self._no_more.set()
        self._give_up.set()
        if self._thread.is_alive():
            self._thread.join()
        self._pool.shutdown(wait=True)

    @property
    def unanswered(self) -> list[str]:
        """Sessions never answered 200."""
        with self._lock:
            return [s for s in self.sessions if s not in self.accepted]


@pytest.fixture()
def procfile(
    cluster: SentinelCluster,
    refcampaign: RefCampaign,
    paypal: PayPalVerifier,
    paypal_api: PayPalApi,
    tmp_path: Path,
    min_replicas: str,
) -> Iterator[tuple[WebProcess, WorkerProcess]]:
    """The Procfile's web and worker, their Redis named by the cluster's Sentinels only."""
    env = sentinel_env(cluster, refcampaign, paypal, paypal_api, REDIS_MIN_REPLICAS=min_replicas)
    web = WebProcess(env, tmp_path / "web.log", free_port())
    worker = WorkerProcess(env, tmp_path / "worker.log")
    try:
        yield web.start(), worker.start()
    finally:
        web.stop()
        worker.stop()


def logs(cluster: SentinelCluster, *processes: WebProcess | WorkerProcess) -> str:
    """The tails of every log, for an assertion's message."""
    tails = [f"--- {type(p).__name__}:\n{p.output()[-4000:]}" for p in processes]
    return "\n".join([*tails, cluster.logs(15)])


@pytest.mark.alone  # SIGKILLs Redis under traffic and times the answers and the recovery
@pytest.mark.parametrize(
    ("cluster", "min_replicas"),
    [(1, 0), (2, 1)],
    ids=["one replica", "two replicas, REDIS_MIN_REPLICAS=1"],
    indirect=True,
)
def test_no_webhook_is_lost_when_the_primary_dies_under_traffic(
    cluster: SentinelCluster,
    procfile: tuple[WebProcess, WorkerProcess],
    refcampaign: RefCampaign,
) -> None:
    web, worker = procfile
    assert web.proc is not None and worker.proc is not None
    before = (web.proc.pid, children(web.proc.pid), worker.proc.pid)
    sender = StripeSender(web.url).start()
    try:
        time.sleep(3)
        old = cluster.kill_primary()
        promoted_at = cluster.wait_for_promotion(timeout=15)
        # The old primary's machine comes back while the webhooks keep coming: for a while it
        # is a second primary, with the data it had, until the Sentinels demote it. Nothing
        # may be written to it then (it would be lost when it resyncs from the new primary).
        time.sleep(2)
        cluster.restart_old_primary()
        restarted_at = time.time()
        cluster.wait_for_replica(old, timeout=DEMOTION_WITHIN)
        demoted_after = time.time() - restarted_at
        assert cluster.killed_at is not None
        time.sleep(max(2.0, cluster.killed_at + 15 - time.time()))
        sender.stop(finish_within=30)
    finally:
        sender.close()
    answers = sender.answers
    refused = [a for a in answers if a.status == 503]
    summary = {
        "sessions": len(sender.sessions),
        "attempts": len(answers),
        "503s": len(refused),
        "503s from, to (s after the kill)": [
            round(f(a.started for a in refused) - cluster.killed_at, 2) for f in (min, max)
        ]
        if refused
        else None,
        "slowest answer (s)": round(max(a.duration for a in answers), 2),
        "promotion": cluster.promotions,
        "old primary a replica after restart (s)": round(demoted_after, 1),
    }
    print(summary)  # shown with -s, and with a failure
    context = f"{summary}\n{logs(cluster, web, worker)}"

    odd = [a for a in answers if a.status not in (200, 503)]
    assert not odd, f"answers neither 200 nor 503: {odd[:5]}\n{context}"
    slowest = max(answers, key=lambda a: a.duration)
    assert slowest.duration <= 10, f"an answer took {slowest.duration:.1f} s: {slowest}"
    assert not sender.unanswered, f"never answered 200: {sender.unanswered[:10]}\n{context}"
    assert len(sender.accepted) >= 200, f"only {len(sender.accepted)} webhooks were sent"

    accepted = set(sender.accepted)

    def delivered() -> set[str]:
        with refcampaign.lock:
            return {p["externalId"] for p in refcampaign.accepted}

    try:
        wait_until(lambda: accepted <= delivered(), timeout=60, what="every postback")
    except AssertionError:
        lost = sorted(accepted - delivered())
        message = f"{len(lost)} answered 200, never delivered: {lost[:10]}\n{context}"
        raise AssertionError(message) from None
    with refcampaign.lock:
        after = [r["at"] for r in refcampaign.requests if r["path"] == PATH]
    first_after = min((at for at in after if at > promoted_at), default=None)
    assert first_after is not None and first_after - promoted_at <= 30, context
    print({"first postback after the promotion (s)": round(first_after - promoted_at, 2)})

    # No storm of lines: one when the primary is lost and one when the new one answers, per
    # process (gunicorn's two workers, the Celery worker's main process and pool).
    for process in (web, worker):
        output = process.output()
        assert output.count("redis_unreachable") <= 4, output[-4000:]
        assert "Traceback" not in output, output[-4000:]
    assert web.proc.poll() is None and worker.proc.poll() is None, "a process died"
    now = (web.proc.pid, children(web.proc.pid), worker.proc.pid)
    assert now == before, "the web (or one of its workers) or the worker was restarted"


@pytest.mark.alone  # times how soon a webhook is refused once the replica is gone
def test_min_replicas_refuses_without_a_replica(
    cluster: SentinelCluster,
    refcampaign: RefCampaign,
    paypal: PayPalVerifier,
    paypal_api: PayPalApi,
    tmp_path: Path,
) -> None:
    env = sentinel_env(
        cluster,
        refcampaign,
        paypal,
        paypal_api,
        REDIS_MIN_REPLICAS="1",
        REDIS_WAIT_TIMEOUT="0.5",
    )
    web = WebProcess(env, tmp_path / "web.log", free_port()).start()
    try:
        assert post(web.url, "cs_test_replicated_1").status_code == 200

        cluster.stop_replica()
        started = time.monotonic()
        answer = post(web.url, "cs_test_unreplicated")
        took = time.monotonic() - started
        assert answer.status_code == 503, f"{answer.status_code} {answer.text[:200]}"
        assert took < 2, f"the 503 took {took:.1f} s"

        cluster.start_replica()

        def accepted(session: str) -> bool:
            return post(web.url, session).status_code == 200

        wait_until(lambda: accepted("cs_test_replicated_2"), timeout=5, what="a 200 again")
        # Stripe resends the one refused; it is taken now.
        assert post(web.url, "cs_test_unreplicated").status_code == 200
    finally:
        web.stop()


def test_passwords_come_from_redis_url_and_sentinel_password(
    refcampaign: RefCampaign,
    paypal: PayPalVerifier,
    paypal_api: PayPalApi,
    tmp_path: Path,
) -> None:
    """Redis's password in REDIS_URL (its host and port ignored), the Sentinels' own in
    REDIS_SENTINEL_PASSWORD: the web, the worker and the CLI all get through, and say neither."""
    cluster = SentinelCluster(
        tmp_path / "redis", password=DATA_PASSWORD, sentinel_password=SENTINEL_PASSWORD
    )
    url = f"redis://:{DATA_PASSWORD}@127.0.0.1:{free_port()}/0"
    web = worker = None
    try:
        cluster.start()
        env = sentinel_env(
            cluster,
            refcampaign,
            paypal,
            paypal_api,
            url=url,
            REDIS_SENTINEL_PASSWORD=SENTINEL_PASSWORD,
        )
        web = WebProcess(env, tmp_path / "web.log", free_port()).start()
        worker = WorkerProcess(env, tmp_path / "worker.log").start()
        answer = post(web.url, "cs_test_sentinel_auth")
        assert answer.status_code == 200, answer.text[:300]
        refcampaign.wait_for(1)

        cli = str(Path(sys.executable).parent / "refbridge")
        cli_env = {k: v for k, v in env.items() if k != "PYTHONPATH"}
        shown = subprocess.run(
            [cli, "show", "cs_test_sentinel_auth"],
            env=cli_env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert shown.returncode == 0, shown.stderr
        assert "cs_test_sentinel_auth" in shown.stdout
        said = web.output() + worker.output() + shown.stdout + shown.stderr
        assert DATA_PASSWORD not in said and SENTINEL_PASSWORD not in said
    finally:
        for process in (web, worker):
            if process is not None:
                process.stop()
        cluster.stop()
