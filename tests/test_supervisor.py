"""`refbridge run`'s process handling that a unit can show: the worker's lower CPU priority."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from bridge.supervisor import WORKER_NICE, yield_cpu

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
