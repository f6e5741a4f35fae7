"""The child processes of `refbridge run`: started so that they never outlive it (Linux), the
worker niced below the web, stopped with what they forked, and the terminal let go of."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import structlog

PR_SET_PDEATHSIG = 1
log = structlog.get_logger("refbridge.run")

# How much nicer than the web the worker runs. Under a burst the web's 200s come first: a
# webhook left unanswered is resent, and an endpoint that keeps timing out gets disabled, while
# a delivery can wait a few seconds. With both on the same cores, the web then acknowledges
# about twice as fast while the worker delivers (bench/NOTES.md, figure 1 with the worker);
# the worker still gets ~10 % of a contended CPU and all of an idle one.
WORKER_NICE = 10


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A `preexec_fn` for subprocess.Popen: the child gets `sig` when its parent dies.

    The kernel sends it even when the parent is SIGKILLed. It is not inherited across fork:
    gunicorn's workers notice their master's death themselves, Celery's pool children are
    set up the same way by Celery. None where prctl does not exist (not Linux).
    """
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).prctl
    parent = os.getpid()

    def set_death_signal() -> None:
        prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
        # The parent may have died between fork and prctl: no signal would ever come then.
        if os.getppid() != parent:
            os.kill(os.getpid(), sig)

    return set_death_signal


def terminal_fds() -> tuple[int, ...]:
    return tuple(fd for fd in (1, 2) if os.isatty(fd))


def leave_terminal(fds: tuple[int, ...]) -> None:
    """After a hang-up our terminal is gone: writing to it would fail, so write nowhere."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for fd in fds:
        os.dup2(devnull, fd)
    os.close(devnull)


def yield_cpu(pid: int, steps: int = WORKER_NICE) -> int | None:
    """Make process `pid`, a session leader just started, `steps` nicer than it is (at most 19).

    Under load it then gets less CPU than its siblings (the web); children it forks later
    (Celery's pool) inherit the niceness. Linux's autogroup (on when processes live in the root
    CPU cgroup) first shares the CPU between sessions and applies a process's own niceness only
    within its session, so the niceness of the session, new and at 0, is set to `steps` too.
    Returns the process's niceness now, or None when it could not be changed (logged).
    """
    try:
        nice = min(19, os.getpriority(os.PRIO_PROCESS, pid) + steps)
        os.setpriority(os.PRIO_PROCESS, pid, nice)
    except OSError as exc:
        log.warning("worker_priority_unchanged", error=type(exc).__name__)
        return None
    _set_session_nice(pid, steps)
    return nice


def _set_session_nice(pid: int, nice: int) -> None:
    autogroup = Path(f"/proc/{pid}/autogroup")
    for _ in range(5):
        try:
            autogroup.write_text(str(nice))
            return
        except FileNotFoundError:
            return  # no autogroup (another OS, or a kernel without it): the niceness is what counts
        except BlockingIOError:
            # EAGAIN: without CAP_SYS_ADMIN, one such change per 100 ms on the whole machine.
            time.sleep(0.1)
        except OSError as exc:
            log.warning("worker_session_priority_unchanged", error=type(exc).__name__)
            return
    log.warning("worker_session_priority_unchanged", error="BlockingIOError")


def stop_child(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    kill_group(proc.pid)


def kill_group(pid: int) -> None:
    """SIGKILL what a child forked and left behind (it led its own process group)."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
