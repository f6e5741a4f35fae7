"""Child processes that never outlive the process that started them (Linux)."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
from collections.abc import Callable

PR_SET_PDEATHSIG = 1


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
