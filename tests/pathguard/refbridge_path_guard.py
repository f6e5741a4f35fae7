"""Path guard: with REFBRIDGE_PATH_GUARD=1, a test run fails when anything touches a path beside
the checkout (docs/development.md; `.ci/run` turns it on).

Fenced: the checkout's parent directory, plus the directories listed in
REFBRIDGE_PATH_GUARD_FENCE (os.pathsep-separated). Inside a fence these stay allowed: the
checkout, the Python installation, the temporary directory and the hidden entries of $HOME,
when they lie inside it. Everywhere else (/tmp, /proc, /dev, system directories) is not fenced.

This module is a pytest plugin (tests/conftest.py loads it) and, through the sitecustomize.py
next to it on PYTHONPATH, a hook in every Python process the tests start. Both report to one log
file; the session fails if the log is not empty, even when the code that tripped the guard caught
the error. The audit events cover opening, listing, creating, removing and running files; a
bare os.stat (Path.exists) raises no audit event and goes unseen.

pytest-xdist workers are such children too: they report to their controller's log.
PYTEST_DONT_REWRITE: in a worker, sitecustomize imports this module before pytest loads it as a
plugin, too late to rewrite its asserts (it has none); the marker spares the warning about it.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ENABLE = "REFBRIDGE_PATH_GUARD"
FENCE = "REFBRIDGE_PATH_GUARD_FENCE"
LOG = "REFBRIDGE_PATH_GUARD_LOG"
SITE_DIR = Path(__file__).resolve().parent
CHECKOUT = SITE_DIR.parents[1]

# Audit event → positions of its path arguments (see the "Audit events table" of Python's docs).
EVENTS: dict[str, tuple[int, ...]] = {
    "open": (0,),
    "os.listdir": (0,),
    "os.scandir": (0,),
    "os.chdir": (0,),
    "os.mkdir": (0,),
    "os.remove": (0,),
    "os.rmdir": (0,),
    "os.rename": (0, 1),
    "os.symlink": (0, 1),
    "os.link": (0, 1),
    "os.truncate": (0,),
    "os.chmod": (0,),
    "os.chown": (0,),
    "os.utime": (0,),
    "shutil.copyfile": (0, 1),
    "shutil.copytree": (0, 1),
    "shutil.move": (0, 1),
    "shutil.rmtree": (0,),
    "glob.glob": (0,),
    "os.exec": (0,),
    "os.posix_spawn": (0,),
    "subprocess.Popen": (0, 1, 2),  # executable, args (its program), cwd
}


class PathGuardError(RuntimeError):
    """A path beside the checkout was touched while the guard was on."""


def _forms(path: str | Path) -> set[str]:
    """The absolute and the symlink-free form of a directory, so either spelling matches."""
    return {os.path.abspath(path), os.path.realpath(path)}


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


class Rule:
    """Which paths count as beside the checkout."""

    def __init__(self, fences: Iterable[str]) -> None:
        self.fences = {f for fence in fences if fence for f in _forms(fence)} - {os.sep}
        allowed = [CHECKOUT, sys.prefix, sys.base_prefix, sys.exec_prefix, tempfile.gettempdir()]
        self.allowed = {a for path in allowed for a in _forms(path)}
        self.home = os.path.abspath(os.path.expanduser("~"))

    def violates(self, path: str) -> bool:
        """True for a path inside a fence and outside everything allowed inside that fence."""
        return any(self._fenced_by(path, fence) for fence in self.fences)

    def _fenced_by(self, path: str, fence: str) -> bool:
        if not _under(path, fence):
            return False
        for allowed in self.allowed:
            if _under(allowed, fence) and _under(path, allowed):
                return False
        # Tools keep their settings in hidden entries of $HOME (~/.netrc, ~/.cache): not a sibling.
        return not (_under(self.home, fence) and path.startswith(self.home + os.sep + "."))


class Guard:
    """The audit hook: checks each path argument, logs a violation and raises."""

    def __init__(self, rule: Rule, log: str) -> None:
        self.rule = rule
        self.log = log
        self.reporting = False

    def __call__(self, event: str, args: tuple[Any, ...]) -> None:
        positions = EVENTS.get(event)
        if positions is None or self.reporting:
            return
        for position in positions:
            path = _absolute(args[position] if position < len(args) else None)
            if path is not None and self.rule.violates(path):
                self._report(event, path)
                raise PathGuardError(f"path guard: {event} {path}: outside the checkout {CHECKOUT}")

    def _report(self, event: str, path: str) -> None:
        line = f"path guard: pid {os.getpid()} {event} {path} (outside the checkout {CHECKOUT})\n"
        self.reporting = True  # our own write to the log must not be checked
        try:
            sys.stderr.write(line)
            with open(self.log, "a", encoding="utf-8") as log:
                log.write(line)
        finally:
            self.reporting = False


def _absolute(arg: Any) -> str | None:
    """The argument as an absolute, normalised path, or None when it is no path (a fd, None)."""
    if isinstance(arg, (list, tuple)):  # a program's argv: its first item, if it names a path
        arg = arg[0] if arg else None
        if not isinstance(arg, (str, bytes, os.PathLike)) or os.sep not in os.fsdecode(arg):
            return None
    if not isinstance(arg, (str, bytes, os.PathLike)):
        return None
    return os.path.abspath(os.fsdecode(arg))


_installed = False


def install(log: str) -> None:
    """Install the hook in this process (audit hooks cannot be removed: once per process)."""
    global _installed
    if _installed:
        return
    _installed = True
    fences = [str(CHECKOUT.parent), *os.environ.get(FENCE, "").split(os.pathsep)]
    sys.addaudithook(Guard(Rule(fences), log))


def install_in_child() -> None:
    """From sitecustomize: guard a process started by a guarded test session."""
    log = os.environ.get(LOG)
    if log:
        install(log)


def violations() -> list[str]:
    """The lines every guarded process of this session logged."""
    log = os.environ.get(LOG)
    if not log or not os.path.exists(log):
        return []
    return Path(log).read_text(encoding="utf-8").splitlines()


# --- pytest plugin -------------------------------------------------------------------------------


def pytest_configure(config: Any) -> None:
    """With the guard on: a fresh log, the hook here, and the hook in every Python child."""
    if os.environ.get(ENABLE) != "1":
        return
    if _is_xdist_worker(config):
        # A pytest-xdist worker reports to its controller's log (inherited through the
        # environment, like any child's): the controller reads it when the session ends.
        install_in_child()
        return
    handle, log = tempfile.mkstemp(prefix="refbridge-path-guard-", suffix=".log")
    os.close(handle)
    os.environ[LOG] = log
    pythonpath = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SITE_DIR), pythonpath]))
    install(log)


def _is_xdist_worker(config: Any) -> bool:
    return hasattr(config, "workerinput") and bool(os.environ.get(LOG))


def pytest_report_header(config: Any) -> str | None:
    """Say in the run's header that the guard is on, and what it fences."""
    if os.environ.get(ENABLE) != "1":
        return None
    fences = [str(CHECKOUT.parent), *filter(None, os.environ.get(FENCE, "").split(os.pathsep))]
    return f"path guard: on, fencing {', '.join(fences)} (the checkout {CHECKOUT} stays allowed)"


def pytest_sessionfinish(session: Any, exitstatus: int) -> None:
    """A session that tripped the guard fails, whatever its tests said."""
    if violations():
        session.exitstatus = 1


def pytest_unconfigure(config: Any) -> None:
    """The log goes with the session that made it."""
    log = os.environ.get(LOG)
    if _is_xdist_worker(config):
        return  # the controller's log: it removes it
    if os.environ.get(ENABLE) == "1" and log and os.path.exists(log):
        os.remove(log)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Name every path the guard caught, once, at the end of the run."""
    lines = violations()
    if lines:
        terminalreporter.section("paths outside the checkout", sep="=", red=True)
        for line in dict.fromkeys(lines):
            terminalreporter.line(line)
