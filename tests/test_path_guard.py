"""The path guard `.ci/run` turns on: a run that touches a path beside the checkout fails.

Each case runs pytest in a subprocess on a one-test file that tries to open a path; the path
beside the checkout does not exist (nothing is created outside the checkout), which is enough:
the audit event comes before the open itself.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.pathguard import refbridge_path_guard as guard

PROBE = """
import os, subprocess, sys


def test_probe():
    target = os.environ["PROBE_TARGET"]
    if os.environ["PROBE_IN"] == "child":
        subprocess.run([sys.executable, "-c", f"open({target!r}).close()"], check=False)
        return
    try:
        open(target).close()
    except Exception:
        pass  # a test that swallows the error: the run must fail anyway
"""


def run_probe(
    tmp_path: Path, target: Path, *, guarded: bool, where: str = "here", workers: int = 0
) -> str:
    """Run the probe under pytest (in `workers` pytest-xdist workers, if any); its exit code
    and output."""
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_probe.py").write_text(PROBE)
    env = {k: v for k, v in os.environ.items() if not k.startswith(guard.ENABLE)}
    env.update(PYTHONPATH=str(guard.SITE_DIR), PROBE_TARGET=str(target), PROBE_IN=where)
    if guarded:
        env[guard.ENABLE] = "1"
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "refbridge_path_guard",
        "-p",
        "no:cacheprovider",
        *(["-n", str(workers)] if workers else ["-p", "no:xdist"]),
    ]
    done = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    return f"exit {done.returncode}\n{done.stdout}{done.stderr}"


def beside_the_checkout() -> Path:
    """A path next to the checkout that does not exist."""
    return guard.CHECKOUT.parent / f"refbridge-path-guard-probe-{uuid.uuid4().hex}"


@pytest.mark.parametrize("workers", [0, 2], ids=["serial", "xdist"])
@pytest.mark.parametrize("where", ["here", "child"])
def test_a_path_beside_the_checkout_fails_the_guarded_run(
    tmp_path: Path, where: str, workers: int
) -> None:
    target = beside_the_checkout()
    output = run_probe(tmp_path, target, guarded=True, where=where, workers=workers)
    assert output.startswith("exit 1\n"), output
    assert "paths outside the checkout" in output and str(target) in output, output


@pytest.mark.parametrize("where", ["here", "child"])
def test_without_the_guard_the_same_run_passes(tmp_path: Path, where: str) -> None:
    output = run_probe(tmp_path, beside_the_checkout(), guarded=False, where=where)
    assert output.startswith("exit 0\n"), output


@pytest.mark.parametrize(
    "target",
    [
        guard.CHECKOUT / "README.md",
        guard.CHECKOUT / "tests" / "samples" / "stripe" / "SOURCES.md",
        Path("/proc/self/status"),
        Path("/dev/null"),
        Path(sys.base_prefix) / "lib",
        None,  # the test's own temporary directory
    ],
)
def test_the_checkout_and_the_system_stay_allowed(tmp_path: Path, target: Path | None) -> None:
    output = run_probe(tmp_path, target or tmp_path / "scratch", guarded=True)
    assert output.startswith("exit 0\n"), output
