"""Waiting for what the ledger or a worker recorded, before asserting that something did not
happen (issue 27).

A test that sleeps and then finds no second postback proves nothing on a slow machine: the
sleep may end before the worker even looked at the message. These wait for the positive record
that the processing ended instead, after which an absence is a fact: an item whose status is
final has left `rb:due` in the same script (lua/finish.lua, lua/drop.lua), so nothing attempts
it again unless something puts it back; its `attempts` counts every claim ever made of it, so no
other attempt of it can still be running; and an attempt records its outcome only after its HTTP
exchange ended, so the stand-in holds every request it made.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import redis

from bridge.delivery.keys import DUE, item_key, text
from bridge.delivery.stats import STATS
from tests.processes import WorkerProcess
from tests.waiting import wait_until


def fields(r: redis.Redis, item: str) -> dict[str, str]:
    """Every field of ledger item `item` ({} when there is none)."""
    raw: dict[bytes, bytes] = r.hgetall(item_key(item))  # type: ignore[assignment]
    return {text(k): text(v) for k, v in raw.items()}


def recorded(
    r: redis.Redis, outcomes: Mapping[str, str], timeout: float = 20.0
) -> dict[str, dict[str, str]]:
    """Wait until each ledger item in `outcomes` has the status given there, an outcome that
    leaves it no work (`delivered`, `verified`, `rejected`, `dead`), and is out of `rb:due`;
    every field of each."""

    def check() -> dict[str, dict[str, str]] | None:
        found = {item: fields(r, item) for item in outcomes}
        done = all(
            found[item].get("status") == status and r.zscore(DUE, item_key(item)) is None
            for item, status in outcomes.items()
        )
        return found if done else None

    try:
        return wait_until(check, timeout)
    except AssertionError:
        now = {item: fields(r, item).get("status") for item in outcomes}
        raise AssertionError(
            f"timed out after {timeout:g} s waiting for the statuses {dict(outcomes)};"
            f" the ledger has {now}"
        ) from None


def counter(r: redis.Redis, field: str) -> int:
    """Counter `field` of `rb:stats` (bridge/delivery/stats.py): 0 when it was never counted."""
    value = r.hget(STATS, field)
    return int(value) if value is not None else 0  # type: ignore[arg-type]


def logged(
    worker: WorkerProcess, event: str, timeout: float = 20.0, **match: Any
) -> list[dict[str, Any]]:
    """Wait until `worker` has logged a line `event` whose fields include `match`; every such
    line, oldest first (an `attempt_finished` line comes after its outcome is recorded)."""

    def lines() -> list[dict[str, Any]]:
        found = []
        output = worker.output()
        # Whole lines only: the last one may be still being written.
        for line in output[: output.rfind("\n") + 1].splitlines():
            if not line.startswith("{"):
                continue
            entry = json.loads(line)
            if entry.get("event") == event and all(entry.get(k) == v for k, v in match.items()):
                found.append(entry)
        return found

    return wait_until(lines, timeout, f"a {event} line with {match}")  # type: ignore[no-any-return]
