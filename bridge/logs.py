"""Structured logging: one JSON object per line on standard output, for every process."""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from typing import Any, TextIO

import structlog
from structlog._output import WRITE_LOCKS

from bridge import json_text

_configured = False
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+")
# Stripe's secret keys (sk_) and restricted keys (rk_, what catch-up reads events with).
_SECRET = re.compile(r"(whsec_|[sr]k_live_|[sr]k_test_|Bearer\s+)\S+")


def scrub(text: str) -> str:
    """Mask anything shaped like an email address or a secret in free text."""
    # Both patterns need one of these: most log values have none and skip the regexes.
    if (
        "@" not in text
        and "whsec_" not in text
        and "sk_" not in text
        and "rk_" not in text
        and "Bearer" not in text
    ):
        return text
    return _SECRET.sub(r"\1[redacted]", _EMAIL.sub("[email]", text))


def _scrub_event(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    for key, value in event.items():
        if isinstance(value, str):
            event[key] = scrub(value)
    return event


_LEVELS = {"warn": "warning", "exception": "error", "fatal": "critical"}


def _annotate(logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
    """Level, logger name and UTC timestamp, then secrets and emails masked, in one step.

    The same fields, format and masking as _SHARED's five processors, for refbridge's own lines
    (one per webhook, so their cost counts: bench/NOTES.md).
    """
    now = time.time()
    event["level"] = _LEVELS.get(method, method)
    event["logger"] = logger.name
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
    event["timestamp"] = f"{seconds}.{int(now % 1 * 1_000_000):06d}Z"
    return _scrub_event(logger, method, event)


_OWN: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.processors.format_exc_info,
    _annotate,
]

_SHARED: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    structlog.processors.format_exc_info,
    _scrub_event,
]


class _NamedWriteLogger(structlog.WriteLogger):
    """structlog's fast line writer, with the name `add_logger_name` reports."""

    def __init__(self, name: str, stream: TextIO) -> None:
        super().__init__(stream)
        self.name = name


class _NamedWriteLoggerFactory:
    def __init__(self, stream: TextIO | None) -> None:
        self.stream = stream

    def __call__(self, *args: Any) -> _NamedWriteLogger:
        # Standard output as it is when the logger is made, not when logging was configured.
        stream = self.stream or sys.stdout
        return _NamedWriteLogger(str(args[0]) if args else "refbridge", stream)


def _dumps(event: dict[str, Any], **_: Any) -> str:
    # ASCII, as the stdlib renderer wrote: a value sent by anyone (an IPN's ipn_track_id) must
    # not fail to encode on a non-UTF-8 standard output and turn a webhook into a 500.
    return json_text.dumps(event, ascii_only=True)


def json_formatter() -> logging.Formatter:
    """A stdlib formatter that renders any record (ours, Celery's, gunicorn's) as one JSON line."""
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_SHARED,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.JSONRenderer(serializer=_dumps),
        ],
    )


def _reinit_write_locks() -> None:
    """In a forked child, release structlog's write locks: a thread of the parent (the sweeper,
    the watchdog) may have held one at the instant of the fork, and in the child nothing would
    ever release it, so the child's first log line would hang. Each lock is reset in place, as
    the standard library's logging does for its handlers' locks after a fork (every logger
    holds its lock object, so a new one would not reach them)."""
    for lock in list(WRITE_LOCKS.values()):
        lock._at_fork_reinit()  # type: ignore[attr-defined]


os.register_at_fork(after_in_child=_reinit_write_locks)


def configure_logging(level: int = logging.INFO, stream: TextIO | None = None) -> None:
    """Route structlog and the standard library (Celery, gunicorn) to JSON lines on `stream`
    (standard output; a CLI command whose output is its result uses standard error); idempotent."""
    global _configured
    if _configured:
        return
    _configured = True
    # refbridge's own lines skip the standard library's machinery (measured: the largest cost
    # of a webhook after Redis); Celery's and gunicorn's records go through json_formatter.
    structlog.configure(
        processors=[*_OWN, structlog.processors.JSONRenderer(serializer=_dumps)],
        logger_factory=_NamedWriteLoggerFactory(stream),
        wrapper_class=structlog.make_filtering_bound_logger(level),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(json_formatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.captureWarnings(True)
