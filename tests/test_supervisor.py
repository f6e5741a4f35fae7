"""`refbridge run`'s process handling that a unit can show: the worker's lower CPU priority,
children that die with their parent, the data directory's lock, the checks before a start."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from bridge.ops.preflight import RunRefused, check_port_free, lock_data_dir, redis_address
from bridge.ops.process_tree import WORKER_NICE, yield_cpu

OWN_NICE = psutil.Process().nice()
# A runner already at nice 10 or more leaves no room to be 10 steps nicer: nothing to see.
needs_room = pytest.mark.skipif(OWN_NICE + WORKER_NICE > 19, reason="runner is niced past 9")


@needs_room
def test_yield_cpu_lowers_the_session_and_what_it_forks_later():
    # A session leader that forks a child only after yield_cpu ran (as Celery forks its pool).
    script = "import subprocess, sys; sys.stdin.readline(); subprocess.run(['sleep', '30'])"
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, start_new_session=True
    )
    parent = psutil.Process(proc.pid)
    own_session = Path("/proc/self/autogroup")
    before = own_session.read_text() if own_session.exists() else ""
    try:
        assert parent.nice() == OWN_NICE
        assert yield_cpu(proc.pid) == OWN_NICE + WORKER_NICE
        assert proc.stdin is not None
        proc.stdin.write(b"go\n")
        proc.stdin.flush()
        children = []
        for _ in range(100):
            children = parent.children()
            if children:
                break
            time.sleep(0.05)
        assert children, "the child was never forked"
        assert parent.nice() == OWN_NICE + WORKER_NICE
        assert children[0].nice() == OWN_NICE + WORKER_NICE
        autogroup = Path(f"/proc/{proc.pid}/autogroup")
        if autogroup.exists():  # Linux with autogroup: the whole session weighs less
            assert autogroup.read_text().split()[-1] == str(WORKER_NICE)
            assert own_session.read_text() == before, "the caller's session keeps its priority"
    finally:
        for child in _tree(proc.pid):
            child.kill()
        proc.kill()
        proc.wait()


def test_yield_cpu_on_a_process_gone_is_a_warning_not_an_error(capfd):
    proc = subprocess.Popen(["true"], start_new_session=True)
    proc.wait()  # reaped: the pid names nothing now
    assert yield_cpu(proc.pid) is None
    out = capfd.readouterr().out
    assert "worker_priority_unchanged" in out
    assert "Traceback" not in out


def _tree(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def test_a_child_started_with_die_with_parent_goes_when_its_parent_is_sigkilled():
    # A parent that starts `sleep` as refbridge run starts its children, then is SIGKILLed.
    script = (
        "import subprocess, sys, time\n"
        "from bridge.ops.process_tree import die_with_parent\n"
        "child = subprocess.Popen(['sleep', '60'], preexec_fn=die_with_parent(),"
        " start_new_session=True)\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child = psutil.Process(int(parent.stdout.readline()))
    try:
        assert child.is_running()
        parent.kill()
        parent.wait()
        child.wait(timeout=10)  # raises TimeoutExpired if it outlived its parent
    finally:
        if child.is_running():
            child.kill()


def test_the_data_directory_lock_is_held_once(tmp_path):
    first = lock_data_dir(tmp_path / "data")
    with pytest.raises(RunRefused) as refused:
        lock_data_dir(tmp_path / "data")
    assert str(refused.value) == (
        f"another `refbridge run` (pid {os.getpid()}) is using {tmp_path / 'data'}; "
        "stop it first, or give this one its own --data-dir"
    )
    first.close()  # as when the run exits, however it exits
    lock_data_dir(tmp_path / "data").close()


def test_a_port_in_use_is_refused_before_anything_starts():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with pytest.raises(RunRefused, match=f"port {port} on 127.0.0.1 is already in use"):
            check_port_free("127.0.0.1", port)
    check_port_free("127.0.0.1", port)


def test_redis_address_never_shows_credentials():
    assert redis_address("redis://user:s3cret@cache.internal:6380/2") == "cache.internal:6380"
    assert redis_address("rediss://:s3cret@10.0.0.5/0") == "10.0.0.5:6379"
    assert redis_address("redis://[::1]:7000/0") == "[::1]:7000"
    assert redis_address("unix:///run/redis.sock?db=0") == "/run/redis.sock"
