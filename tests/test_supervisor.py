"""`refbridge run`'s process handling that a unit can show: the worker's lower CPU priority."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import psutil

from bridge.supervisor import WORKER_NICE, yield_cpu


def test_yield_cpu_lowers_the_session_and_what_it_forks_later():
    # A session leader that forks a child only after yield_cpu ran (as Celery forks its pool).
    script = "import subprocess, sys; sys.stdin.readline(); subprocess.run(['sleep', '30'])"
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, start_new_session=True
    )
    own_session = Path("/proc/self/autogroup")
    before = own_session.read_text() if own_session.exists() else ""
    try:
        base = psutil.Process().nice()  # the child starts at ours: the runner may be niced
        assert psutil.Process(proc.pid).nice() == base
        yield_cpu(proc.pid)
        assert proc.stdin is not None
        proc.stdin.write(b"go\n")
        proc.stdin.flush()
        parent = psutil.Process(proc.pid)
        children = []
        for _ in range(100):
            children = parent.children()
            if children:
                break
            time.sleep(0.05)
        assert children, "the child was never forked"
        assert parent.nice() == min(19, base + WORKER_NICE)
        assert children[0].nice() == min(19, base + WORKER_NICE)
        autogroup = Path(f"/proc/{proc.pid}/autogroup")
        if autogroup.exists():  # Linux with autogroup: the whole session weighs less
            assert autogroup.read_text().split()[-1] == str(WORKER_NICE)
            assert own_session.read_text() == before, "the caller's session keeps its priority"
    finally:
        for child in psutil.Process(proc.pid).children(recursive=True):
            child.kill()
        proc.kill()
        proc.wait()
