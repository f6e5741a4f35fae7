"""The time window of a catch-up run: `--since 72h` or an ISO 8601 time with its zone."""

from __future__ import annotations

import re
from datetime import datetime

_DURATION = re.compile(r"([0-9]{1,9})([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_moment(text: str, now: float) -> float:
    """Unix time of `text`: a duration back from `now` (30m, 72h, 7d) or an ISO 8601 time
    with a zone (2026-05-01T00:00:00Z, …+02:00); ValueError saying what is accepted."""
    cleaned = text.strip()
    duration = _DURATION.fullmatch(cleaned)
    if duration:
        return now - int(duration.group(1)) * _UNIT_SECONDS[duration.group(2)]
    try:
        moment = datetime.fromisoformat(cleaned)
    except ValueError:
        raise ValueError(
            f"{text!r} is neither a duration (30m, 72h, 7d) nor an ISO 8601 time"
        ) from None
    if moment.tzinfo is None:
        # A time without a zone means a different instant on every machine.
        raise ValueError(f"{text!r} has no time zone: add Z or an offset such as +02:00")
    return moment.timestamp()


def parse_window(since: str, until: str | None, now: float) -> tuple[int, int]:
    """Whole Unix seconds (since, until), both inclusive; ValueError when it is empty."""
    start = int(parse_moment(since, now))
    end = int(parse_moment(until, now)) if until else int(now)
    if start > end:
        raise ValueError("--since is after --until: the window is empty")
    return start, end
