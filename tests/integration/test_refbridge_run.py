"""`refbridge run` as a new user runs it: embedded Redis, web, worker; stopped or killed, nothing
of it is left; a second run on the same data directory or port is refused with one line."""

from __future__ import annotations

import copy
import fcntl
import json
import os
import pty
import select
import signal
import socket
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests

from bridge.ops.embedded_redis import free_port
from bridge.ops.process_tree import WORKER_NICE
from tests.fixtures import stripe_fixture
from tests.signing import SECRET, stripe_body, stripe_headers

REFBRIDGE = str(Path(sys.executable).parent / "refbridge")


def run_env(refcampaign: Any, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "STRIPE_", "REFC"))}
    env.update(
        REFCAMPAIGN_API_KEY=refcampaign.api_key,
        REFCAMPAIGN_API_URL=refcampaign.url,
        STRIPE_WEBHOOK_SECRET=SECRET,
        **extra,
    )
    return env


class Run:
    """`refbridge run ARGS` in `cwd`, its output in a file (read while it runs)."""

    def __init__(self, cwd: Path, env: dict[str, str], *args: str) -> None:
        self.log = cwd / f"run-{time.monotonic_ns()}.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [REFBRIDGE, "run", "--concurrency", "1", *args],
                cwd=cwd,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, timeout: float = 60.0) -> str:
        """The ready line, once `refbridge run` printed it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready = [line for line in self.output().splitlines() if "refbridge_ready" in line]
            if ready:
                return ready[0]
            assert self.proc.poll() is None, f"exited early:\n{self.output()[-3000:]}"
            time.sleep(0.2)
        raise AssertionError(f"never ready:\n{self.output()[-3000:]}")

    def tree(self) -> list[psutil.Process]:
        return [psutil.Process(self.proc.pid), *psutil.Process(self.proc.pid).children(True)]

    def stop(self, signum: int = signal.SIGINT, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signum)
        return self.proc.wait(timeout)


def alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    return [p for p in procs if _running(p)]


def _running(process: psutil.Process) -> bool:
    """Running and not a zombie; a process that exits between the two questions is gone."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_gone(procs: list[psutil.Process], timeout: float = 20.0) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    while alive(procs) and time.monotonic() < deadline:
        time.sleep(0.2)
    return alive(procs)


def post_checkout(base: str, n: int) -> None:
    body = stripe_body(event("checkout.session.completed", session(f"cs_run_{n}"), n))
    answer = requests.post(
        f"{base}/webhooks/stripe", data=body, headers=stripe_headers(body), timeout=10
    )
    assert answer.status_code == 200, answer.text


def cli(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [REFBRIDGE, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=30
    )


def wait_ready(base: str, proc: subprocess.Popen[bytes], timeout: float = 40.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "refbridge run exited early"
        try:
            if requests.get(f"{base}/readyz", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass  # not listening yet, or slow to answer while it starts: ask again
        time.sleep(0.2)
    raise AssertionError("refbridge run never became ready")


def event(event_type: str, obj: dict[str, Any], n: int) -> dict[str, Any]:
    base = copy.deepcopy(stripe_fixture("srm__checkout.session.completed.json"))
    base.update(id=f"evt_run_{n}", type=event_type, created=1_760_000_000 + n)
    base["data"]["object"] = obj
    return base


def session(sid: str, **changes: Any) -> dict[str, Any]:
    obj = copy.deepcopy(stripe_fixture("srm__checkout.session.completed.json")["data"]["object"])
    obj.update(id=sid, metadata={"rcsid": "rcs_run"}, **changes)
    return obj


def test_refbridge_run_end_to_end(tmp_path, refcampaign):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "STRIPE_", "REFC"))}
    env.update(
        REFCAMPAIGN_API_KEY=refcampaign.api_key,
        REFCAMPAIGN_API_URL=refcampaign.url,
        STRIPE_WEBHOOK_SECRET=SECRET,
        PORT=str(port),
    )
    proc = subprocess.Popen(
        [REFBRIDGE, "run", "--concurrency", "2"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, proc)
        tree = psutil.Process(proc.pid).children(recursive=True)
        assert any(p.name() == "redis-server" for p in tree)
        # Acks before deliveries: the worker's processes run at a lower priority, the web's not.
        worker = [p for p in tree if "celery" in " ".join(p.cmdline())]
        web = [p for p in tree if "gunicorn" in " ".join(p.cmdline())]
        assert worker and web
        own_nice = psutil.Process().nice()
        assert {p.nice() for p in worker} == {min(19, own_nice + WORKER_NICE)}
        assert {p.nice() for p in web} == {own_nice}
        worker_session = Path(f"/proc/{worker[0].pid}/autogroup")
        web_session = Path(f"/proc/{web[0].pid}/autogroup")
        if worker_session.exists():  # Linux with autogroup: the niceness of each session
            assert worker_session.read_text().split()[-1] == str(WORKER_NICE)
            assert web_session.read_text().split()[-1] == "0"
        invoice = copy.deepcopy(stripe_fixture("srm__invoice.paid.json")["data"]["object"])
        invoice.update(
            id="in_run_renewal", billing_reason="subscription_cycle", metadata={"cid": "clk_run"}
        )
        events = [
            event("checkout.session.completed", session("cs_run_paid"), 1),
            event(
                "checkout.session.completed",
                session(
                    "cs_run_trial",
                    payment_status="no_payment_required",
                    mode="subscription",
                    amount_total=0,
                ),
                2,
            ),
            event(
                "checkout.session.completed", session("cs_run_later", payment_status="unpaid"), 3
            ),
            event("checkout.session.async_payment_succeeded", session("cs_run_later"), 4),
            event("invoice.paid", invoice, 5),
        ]
        for e in events:
            body = stripe_body(e)
            answer = requests.post(
                f"{base}/webhooks/stripe", data=body, headers=stripe_headers(body), timeout=5
            )
            assert answer.status_code == 200, answer.text
            assert answer.json() == {"received": True}
        forged = stripe_body(events[0])
        bad = requests.post(
            f"{base}/webhooks/stripe",
            data=forged,
            headers=stripe_headers(forged, secret="whsec_other"),
            timeout=5,
        )
        assert bad.status_code == 400
        delivered = {p["externalId"]: p for p in refcampaign.wait_for(4, timeout=30)}
        assert sorted(delivered) == [
            "cs_run_later",
            "cs_run_paid",
            "cs_run_trial",
            "in_run_renewal",
        ]
        assert delivered["cs_run_trial"]["conversionType"] == "TRIAL"
        assert delivered["cs_run_trial"]["amount"] == 0
        assert delivered["in_run_renewal"]["clickId"] == "clk_run"
        assert delivered["cs_run_paid"]["convertedAt"] == "2025-10-09T08:53:21Z"
        status = subprocess.run(
            [REFBRIDGE, "status", "--json"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=20,
        )
        assert status.returncode == 0, status.stderr
        assert '"delivered": 4' in status.stdout
        assert (tmp_path / ".refbridge" / "appendonly.aof").exists() or any(
            (tmp_path / ".refbridge").glob("appendonly*")
        )
    finally:
        proc.send_signal(signal.SIGINT)
        output = proc.communicate(timeout=60)[0].decode()
    assert proc.returncode == 0, output[-3000:]
    assert '"refbridge_ready"' in output
    assert not [p for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not (tmp_path / ".refbridge" / "redis.url").exists()
    assert SECRET not in output and refcampaign.api_key not in output
    assert "Traceback" not in output


def test_sigkilled_run_leaves_nothing_behind_and_a_new_run_starts(tmp_path, refcampaign):
    port = free_port()
    env = run_env(refcampaign)
    data = ["--data-dir", "state", "--port", str(port)]
    first = Run(tmp_path, env, *data)
    tree: list[psutil.Process] = []
    try:
        first.wait_ready()
        tree = first.tree()
        names = " ".join(" ".join(p.cmdline()) for p in tree)
        assert all(word in names for word in ("redis-server", "gunicorn", "celery"))
        assert len(tree) >= 6  # us, redis, gunicorn master + 2 workers, celery + its pool child
        first.proc.kill()
        first.proc.wait(10)
        assert not wait_gone(tree, timeout=15), "survivors of a SIGKILLed refbridge run"
    finally:
        for p in alive(tree):
            p.kill()
    # The killed run's redis.url is stale, but a new run on the same directory starts and works.
    second = Run(tmp_path, env, *data)
    try:
        second.wait_ready()
        post_checkout(f"http://127.0.0.1:{port}", 1)
        assert [p["externalId"] for p in refcampaign.wait_for(1, timeout=30)] == ["cs_run_1"]
        status = cli(tmp_path, env, "status", "--json", "--data-dir", "state")
        assert status.returncode == 0, status.stderr
        assert '"delivered": 1' in status.stdout
        assert not (tmp_path / ".refbridge").exists(), "--data-dir is honoured everywhere"
    finally:
        assert second.stop() == 0, second.output()[-3000:]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_stop_it_cleanly(tmp_path, refcampaign, signum):
    run = Run(tmp_path, run_env(refcampaign), "--port", str(free_port()))
    run.wait_ready()
    tree = run.tree()
    assert (tmp_path / ".refbridge" / "redis.url").exists()
    assert run.stop(signum) == 0, run.output()[-3000:]
    assert not alive(tree)
    assert not (tmp_path / ".refbridge" / "redis.url").exists()
    output = run.output()
    # In order: web and worker first, the Redis they write to last.
    assert output.index("Shutting down: Master") < output.index('"refbridge_stopped"')
    assert "Traceback" not in output


def test_ready_line_then_a_second_run_is_refused_in_one_line(tmp_path, refcampaign):
    port = free_port()
    env = run_env(refcampaign)
    first = Run(tmp_path, env, "--port", str(port))
    try:
        ready = first.wait_ready()
        assert f"http://127.0.0.1:{port}" in ready
        # Not before the worker's own "ready." (it consumes from then on) nor the web's workers.
        output = first.output()
        assert output.index(" ready.") < output.index("refbridge_ready")
        assert output.index("Booting worker") < output.index("refbridge_ready")
        # Ready means ready: the web answers and the worker consumes, at once.
        post_checkout(f"http://127.0.0.1:{port}", 2)
        assert len(refcampaign.wait_for(1, timeout=10)) == 1
        url_file = tmp_path / ".refbridge" / "redis.url"
        redis_url = url_file.read_text()
        same_dir = cli(tmp_path, env, "run", "--port", str(free_port()))
        assert same_dir.returncode != 0
        assert same_dir.stdout == ""
        assert len(same_dir.stderr.splitlines()) == 1, same_dir.stderr
        assert "another `refbridge run`" in same_dir.stderr
        assert url_file.read_text() == redis_url, "the losing run left the winner's files alone"
        same_port = cli(tmp_path, env, "run", "--port", str(port), "--data-dir", "other")
        assert same_port.returncode != 0
        assert same_port.stderr.splitlines() == [
            f"refbridge: port {port} on 127.0.0.1 is already in use; stop what uses it "
            "or choose another with --port"
        ]
        assert not list((tmp_path / "other").glob("*.aof")) and not list(
            (tmp_path / "other").glob("appendonly*")
        ), "no Redis was started"
        status = cli(tmp_path, env, "status", "--json")
        assert status.returncode == 0, status.stderr
        assert '"delivered": 1' in status.stdout
        assert requests.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200
    finally:
        assert first.stop() == 0, first.output()[-3000:]


def children_named(run: Run, word: str) -> list[psutil.Process]:
    """The direct children of `refbridge run` whose command line has `word`."""
    return [p for p in psutil.Process(run.proc.pid).children() if word in " ".join(p.cmdline())]


def wait_for_line(run: Run, text: str, timeout: float = 60.0, count: int = 1) -> str:
    """The output once `text` appears in it `count` times."""
    deadline = time.monotonic() + timeout
    while run.output().count(text) < count:
        assert time.monotonic() < deadline, f"no {text!r} in:\n{run.output()[-3000:]}"
        time.sleep(0.2)
    return run.output()


def test_a_worker_killed_is_restarted_and_deliveries_go_on(tmp_path, refcampaign):
    port = free_port()
    run = Run(tmp_path, run_env(refcampaign), "--port", str(port))
    seen: list[psutil.Process] = []
    try:
        run.wait_ready()
        seen = run.tree()
        [worker] = children_named(run, "celery")
        os.killpg(worker.pid, signal.SIGKILL)  # the main process and its pool, as an OOM kill
        output = wait_for_line(run, '"process_restarted"')
        [restarted] = [json.loads(ln) for ln in output.splitlines() if "process_restarted" in ln]
        assert restarted["process"] == "worker"
        assert restarted["code"] == -signal.SIGKILL
        assert restarted["restarts"] == 1
        # Killed within QUICK_EXIT of its start, it may count as a quick exit: 0.5 s or 1 s.
        assert restarted["attempt"] in (1, 2) and restarted["delay"] <= 1
        [new_worker] = children_named(run, "celery")
        assert new_worker.pid != worker.pid
        assert new_worker.nice() == min(19, psutil.Process().nice() + WORKER_NICE)
        post_checkout(f"http://127.0.0.1:{port}", 7)
        assert [p["externalId"] for p in refcampaign.wait_for(1, timeout=60)] == ["cs_run_7"]
        assert run.proc.poll() is None, "the run went on"
        seen += run.tree()
        # Restarted children die with the run like the first ones: nothing is left.
        run.proc.kill()
        run.proc.wait(10)
        assert not wait_gone(seen, timeout=15), "survivors of a SIGKILLed refbridge run"
    finally:
        for p in alive(seen):
            p.kill()
        run.stop()
    assert "Traceback" not in run.output()


def test_redis_killed_is_restarted_on_its_port_with_its_data(tmp_path, refcampaign):
    port = free_port()
    env = run_env(refcampaign)
    run = Run(tmp_path, env, "--port", str(port))
    try:
        run.wait_ready()
        post_checkout(f"http://127.0.0.1:{port}", 8)
        refcampaign.wait_for(1, timeout=30)
        url = (tmp_path / ".refbridge" / "redis.url").read_text()
        [redis_server] = children_named(run, "redis-server")
        time.sleep(1.5)  # appendfsync everysec
        redis_server.kill()
        wait_for_line(run, '"process_restarted"')
        [again] = children_named(run, "redis-server")
        assert again.pid != redis_server.pid
        assert (tmp_path / ".refbridge" / "redis.url").read_text() == url
        status = cli(tmp_path, env, "status", "--json")
        assert status.returncode == 0, status.stderr
        assert '"delivered": 1' in status.stdout, "the same data"
        # The web reconnects by itself and records again.
        deadline = time.monotonic() + 30
        while True:
            body = stripe_body(event("checkout.session.completed", session("cs_run_9"), 9))
            answer = requests.post(
                f"http://127.0.0.1:{port}/webhooks/stripe",
                data=body,
                headers=stripe_headers(body),
                timeout=10,
            )
            if answer.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert answer.status_code == 200, answer.text
    finally:
        assert run.stop() == 0, run.output()[-3000:]


def test_a_child_that_keeps_failing_at_once_stops_the_run_in_one_line(tmp_path, refcampaign):
    run = Run(tmp_path, run_env(refcampaign), "--port", str(free_port()))
    tree: list[psutil.Process] = []
    try:
        run.wait_ready()
        tree = run.tree()
        [redis_server] = children_named(run, "redis-server")
        redis_url = (tmp_path / ".refbridge" / "redis.url").read_text().strip()
        redis_port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
        # Something else takes Redis's port as soon as it dies: each restart fails at once.
        with socket.socket() as squatter:
            squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            redis_server.kill()
            deadline = time.monotonic() + 5
            while True:
                try:
                    squatter.bind(("127.0.0.1", redis_port))
                    break
                except OSError:
                    assert time.monotonic() < deadline, "the port never came free"
                    time.sleep(0.01)
            squatter.listen()
            assert run.proc.wait(90) == 1
        assert not wait_gone(tree, timeout=15)
    finally:
        run.stop(signal.SIGKILL)
        for p in alive(tree):
            p.kill()
    output = run.output()
    assert output.count('"process_exited"') == 5  # the kill, then four restarts that failed
    assert output.count('"process_restart_failed"') == 4
    failures = [line for line in output.splitlines() if line.startswith("refbridge: ")]
    assert failures == [
        "refbridge: redis exited within 10 s of starting 5 times in a row (last status 1); stopping"
    ]
    assert output.rstrip().endswith(failures[0]), "the last word"
    assert not (tmp_path / ".refbridge" / "redis.url").exists()


def test_a_configuration_error_on_restart_stops_the_run_in_one_line(tmp_path, refcampaign):
    run = Run(tmp_path, run_env(refcampaign), "--port", str(free_port()))
    tree: list[psutil.Process] = []
    try:
        run.wait_ready()
        tree = run.tree()
        # The configuration went bad since the run started (children read `.env` at start).
        (tmp_path / ".env").write_text("DELIVERY_TIMEOUT=abc\n")
        [worker] = children_named(run, "celery")
        os.killpg(worker.pid, signal.SIGKILL)
        assert run.proc.wait(60) == 1
        assert not wait_gone(tree, timeout=15)
    finally:
        run.stop(signal.SIGKILL)
        for p in alive(tree):
            p.kill()
    output = run.output()
    assert output.count('"process_restarted"') == 1
    # The worker's own line says what is wrong; the run's last line, why it stopped.
    assert output.splitlines()[-1] == (
        "refbridge: worker exited with status 2: its configuration is invalid "
        "(its own error is above); stopping"
    )
    assert "refbridge: configuration error: DELIVERY_TIMEOUT: expected a number" in output
    assert "Traceback" not in output


def test_unreachable_redis_url_is_one_line_without_the_password(tmp_path, refcampaign):
    env = run_env(refcampaign, REDIS_URL="redis://:hunter2pw@127.0.0.1:1/0")
    started = time.monotonic()
    result = cli(tmp_path, env, "run", "--port", str(free_port()))
    assert time.monotonic() - started < 20
    assert result.returncode != 0
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "refbridge: cannot reach Redis at 127.0.0.1:1 (REDIS_URL): connection refused; "
        "start it, or unset REDIS_URL to run an embedded one"
    ]


def test_closing_its_terminal_stops_it_cleanly(tmp_path, refcampaign):
    # A real terminal: `refbridge run` leads a session whose controlling terminal is a pty;
    # closing the pty's master is what closing a terminal window does (the kernel's SIGHUP).
    master, slave = pty.openpty()

    def take_terminal() -> None:
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen(
        [REFBRIDGE, "run", "--concurrency", "1", "--port", str(free_port())],
        cwd=tmp_path,
        env=run_env(refcampaign),
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
        preexec_fn=take_terminal,
    )
    os.close(slave)
    seen = bytearray()
    reading = threading.Event()
    reading.set()

    def drain() -> None:  # a terminal shows everything: nobody may block on a full pty
        while reading.is_set():
            if select.select([master], [], [], 0.2)[0]:
                try:
                    seen.extend(os.read(master, 65536))
                except OSError:
                    return

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    deadline = time.monotonic() + 60
    while b"refbridge_ready" not in seen and time.monotonic() < deadline:
        assert proc.poll() is None, seen.decode(errors="replace")[-3000:]
        time.sleep(0.2)
    assert b"refbridge_ready" in seen, seen.decode(errors="replace")[-3000:]
    tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(True)]
    reading.clear()
    reader.join()  # a read in progress would keep the terminal open past close()
    os.close(master)
    closed = time.monotonic()
    try:
        assert proc.wait(60) == 0
        # Not held up by a child stuck writing to the terminal that is gone (it took 20 s, then
        # a SIGKILL, when Celery's shutdown notice failed with EIO).
        assert time.monotonic() - closed < 15
        assert not wait_gone(tree, timeout=15)
        assert not (tmp_path / ".refbridge" / "redis.url").exists()
    finally:
        for p in alive(tree):
            p.kill()


@pytest.mark.parametrize("port", ["²", "abc", "70000"])
def test_a_port_that_is_not_a_port_is_one_line(tmp_path, refcampaign, port):
    result = cli(tmp_path, run_env(refcampaign, PORT=port), "run")
    assert result.returncode != 0
    assert result.stderr.splitlines() == [
        "refbridge: configuration error: PORT: expected a TCP port number (1-65535)"
    ]
    assert not list(tmp_path.glob(".refbridge/appendonly*")), "nothing was started"
