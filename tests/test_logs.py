"""Log lines are JSON on one line, ASCII, with secrets and emails masked, whatever the locale."""

from __future__ import annotations

import json
import os
import subprocess
import sys

SCRIPT = """
import structlog
from bridge.logs import configure_logging
configure_logging()
structlog.contextvars.bind_contextvars(provider_event_id="trk_\\u00e9\\u4e2d")
structlog.get_logger("refbridge.web").info("webhook_recorded", note="whsec_abc a@b.co caf\\u00e9")
print("still running")
"""


def test_non_ascii_values_log_on_an_ascii_stdout() -> None:
    env = {**os.environ, "PYTHONIOENCODING": "ascii", "LC_ALL": "C", "PYTHONUTF8": "0"}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    first, second = done.stdout.decode("ascii").splitlines()
    line = json.loads(first)
    assert line["provider_event_id"] == "trk_\u00e9\u4e2d"
    assert line["note"] == "whsec_[redacted] [email] caf\u00e9"
    assert line["level"] == "info" and line["logger"] == "refbridge.web"
    assert second == "still running"


def test_stripe_secret_and_restricted_keys_are_masked() -> None:
    from bridge.logs import scrub

    for key in ("sk_live_51abcDEF", "sk_test_51abcDEF", "rk_live_51abcDEF", "rk_test_51abcDEF"):
        assert scrub(f"refused {key} today") == f"refused {key[:8]}[redacted] today"
