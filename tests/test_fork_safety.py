"""A pool process forked while a thread of the worker's main process holds a lock starts free:
its first log line and its first look at its resources do not hang (issue 23, finding 4)."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable

import pytest
from structlog._output import WRITE_LOCKS

from bridge.logs import configure_logging
from tasks import resources


def child_exit_code(held: threading.Lock, work: Callable[[], None], timeout: float = 5.0) -> int:
    """Fork while another thread holds `held`; the child runs `work` and exits 0. Its exit
    code, or -SIGKILL when it had to be killed (it hung)."""
    taken, release = threading.Event(), threading.Event()

    def hold() -> None:
        with held:
            taken.set()
            release.wait(10)

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    assert taken.wait(5)
    pid = os.fork()
    if pid == 0:  # the child: only this thread was copied, and the lock as it was
        try:
            work()
        finally:
            os._exit(0)
    release.set()
    holder.join()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return -signal.SIGKILL


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork only")
def test_a_child_forked_while_the_log_lock_is_held_can_log() -> None:
    configure_logging()
    import structlog

    structlog.get_logger("refbridge.test").info("before_fork")  # the logger holds its lock now
    lock = WRITE_LOCKS[sys.stdout]
    code = child_exit_code(lock, lambda: structlog.get_logger("refbridge.test").info("child"))
    assert code == 0, "the child hung on the write lock a parent thread held at the fork"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork only")
def test_a_child_forked_while_the_resources_lock_is_held_can_take_it() -> None:
    def take() -> None:
        with resources._lock:
            pass

    assert child_exit_code(resources._lock, take) == 0
