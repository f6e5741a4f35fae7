"""One catch-up run: page through a source's events, map each, record a page in one round trip.

An interrupted run loses nothing: each page is recorded before the next is asked for, and a
re-run finds what was recorded as duplicates.

Pages come newest first, so a renewal is read before the checkout that named its affiliate
when both are in the window. A payment that asks memory for its ids and finds none waits until
the run has read every page (at most MAX_WAITING of them), then is recorded: by then the
checkout, however many pages later, has left its ids to remember.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import redis

from bridge.catchup.source import EventSource, ProviderEvent
from bridge.catchup.summary import Summary
from bridge.conversion import Conversion, Ignored
from bridge.delivery import intake, memory
from bridge.delivery.keys import item_key
from bridge.delivery.ledger import Ledger
from bridge.delivery.stats import STATS, parse_stat, stat
from bridge.refund import Refund

COUNTER = "catchup_events"
RUNS = "rb:catchup:runs"  # recent runs, newest first (JSON), for operators and the tests
RUNS_KEEP = 100
# Payments held back for memory until the end of a run; past this many, recorded at once.
MAX_WAITING = 10_000
Progress = Callable[[Summary], None]


def last_run_field(provider: str) -> str:
    """The stats-hash field holding a provider's last run (JSON): read with the counters."""
    return f"catchup_last_run:provider={provider}"


def last_runs(counters: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """Each provider's last run, from the stats hash's fields (as read for status and /metrics)."""
    found = {}
    for field, text in counters.items():
        name, labels = parse_stat(field)
        if name == "catchup_last_run" and "provider" in labels:
            try:
                found[labels["provider"]] = dict(json.loads(text))
            except (ValueError, TypeError):
                continue  # not ours to crash on: a record written by hand
    return found


def run_catchup(
    source: EventSource,
    ledger: Ledger,
    since: int,
    until: int,
    *,
    dry_run: bool = False,
    progress: Progress | None = None,
    trigger: str = "cli",
) -> Summary:
    """Catch up on `source`'s events created in [since, until]; the summary.

    A failure to read the source (SourceError) or Redis ends the run: it is recorded as the
    last run's error and raised again; what was recorded before it stays recorded.
    """
    summary = Summary(source.provider, since, until, dry_run=dry_run)
    started = time.time()
    waiting: list[tuple[Conversion, str]] = []
    refunds: list[tuple[Refund, str]] = []
    try:
        for page in source.pages(since, until):
            _take_page(source, ledger, page, summary, waiting, refunds)
            summary.pages += 1
            summary.requests = source.requests
            if progress:
                progress(summary)
        # A run that fails before this point records none of them: the next run reads them
        # again, never recorded.
        if waiting:
            _record(ledger, source.provider, waiting, summary, Counter())
        # Refunds last: their sales, on older pages or held back above, are recorded by now.
        _record_refunds(ledger, source.provider, refunds, summary)
    except Exception as exc:
        summary.error = str(exc) or type(exc).__name__
        raise
    finally:
        summary.requests = source.requests
        summary.duration = time.time() - started
        if not dry_run:
            _record_run(ledger, summary, started, trigger)
    return summary


def _take_page(
    source: EventSource,
    ledger: Ledger,
    page: Sequence[ProviderEvent],
    summary: Summary,
    waiting: list[tuple[Conversion, str]],
    held: list[tuple[Refund, str]],
) -> None:
    provider = source.provider
    summary.seen += len(page)
    if page:
        summary.reached = min(e.created for e in page)
    counts: Counter[str] = Counter({stat(COUNTER, provider=provider, outcome="seen"): len(page)})
    conversions: list[tuple[Conversion, str]] = []
    refunds: list[tuple[Refund, str]] = []
    for event in reversed(page):  # oldest first, as they happened
        mapped = source.map(event)
        if isinstance(mapped, Refund):
            refunds.append((mapped, event.event_id))
        elif isinstance(mapped, Ignored):
            summary.ignored[mapped.reason] += 1
            counts[stat(COUNTER, provider=provider, outcome="ignored", reason=mapped.reason)] += 1
        elif summary.dry_run:  # its preview reads memory itself, without writing
            conversions.append((mapped, event.event_id))
        else:
            # Attributed here, once: a payment memory still has nothing for waits for the end.
            mapped = ledger.memory.attribute(mapped)
            wait = len(waiting) < MAX_WAITING and memory.asks_memory(mapped)
            (waiting if wait else conversions).append((mapped, event.event_id))
    if summary.dry_run:
        _preview(ledger, provider, conversions, summary)
        _preview_refunds(ledger, refunds, summary)
        return
    _record(ledger, provider, conversions, summary, counts)
    if len(held) + len(refunds) > MAX_WAITING:
        _record_refunds(ledger, provider, held, summary)  # past the bound: recorded now
        held.clear()
    held.extend(refunds)


def _record_refunds(
    ledger: Ledger, provider: str, refunds: Sequence[tuple[Refund, str]], summary: Summary
) -> None:
    """Record the run's refunds (a worker sends each after its sale)."""
    stats = (
        stat(COUNTER, provider=provider, outcome="accepted"),
        stat(COUNTER, provider=provider, outcome="duplicate"),
    )
    for refund, event_id in refunds:
        result = intake.accept_refund(
            ledger,
            refund,
            provider=provider,
            event_id=event_id,
            received_at=time.time(),
            stats=stats,
            via="catchup",
        )
        if isinstance(result, intake.Accepted):
            summary.recorded += 1
            summary.refunds += 1
        else:
            summary.duplicate += 1


def _preview_refunds(
    ledger: Ledger, refunds: Sequence[tuple[Refund, str]], summary: Summary
) -> None:
    """What recording the refunds would do, read without writing."""
    for refund, _ in refunds:
        if ledger.redis.exists(f"rb:seen:refund:{refund.key}", item_key(refund.item_id)):
            summary.duplicate += 1
        else:
            summary.recorded += 1
            summary.refunds += 1


def _record(
    ledger: Ledger,
    provider: str,
    conversions: Sequence[tuple[Conversion, str]],
    summary: Summary,
    counts: Counter[str],
) -> None:
    """Record `conversions` through the intake, one pipeline, and count what became of them."""
    results = intake.accept_conversions(
        ledger,
        conversions,
        provider=provider,
        received_at=time.time(),
        counter=COUNTER,
        counts=counts,
    )
    for result in results:
        if isinstance(result, intake.Accepted):
            summary.recorded += 1
        elif isinstance(result, intake.Duplicate):
            summary.duplicate += 1
        else:
            summary.unattributed += 1


def _preview(
    ledger: Ledger,
    provider: str,
    conversions: Sequence[tuple[Conversion, str]],
    summary: Summary,
) -> None:
    """What recording would do, read without writing (the same test as the intake's)."""
    remembered = [(ledger.memory.attribute(c, refresh=False), e) for c, e in conversions]
    attributed = [(c, e) for c, e in remembered if c.attributed]
    summary.unattributed += len(conversions) - len(attributed)
    pipe = ledger.redis.pipeline(transaction=False)
    for conversion, event_id in attributed:
        pipe.exists(intake.seen_key(provider, event_id), item_key(conversion.external_id))
    for found in pipe.execute() if attributed else []:
        if found:
            summary.duplicate += 1
        else:
            summary.recorded += 1


def _record_run(ledger: Ledger, summary: Summary, started: float, trigger: str) -> None:
    """The last-run record (status, /metrics) and the list of recent runs."""
    record = {
        **summary.as_json(),
        "startedAt": started,
        "finishedAt": time.time(),
        "trigger": trigger,
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }
    text = json.dumps(record)
    outcome = "failed" if summary.error else "completed"
    try:
        pipe = ledger.redis.pipeline(transaction=False)
        pipe.hset(STATS, last_run_field(summary.provider), text)
        pipe.hincrby(STATS, stat("catchup_runs", provider=summary.provider, outcome=outcome), 1)
        pipe.lpush(RUNS, text)
        pipe.ltrim(RUNS, 0, RUNS_KEEP - 1)
        pipe.execute()
    except redis.exceptions.RedisError:
        pass  # Redis is what failed the run: its own error is raised
