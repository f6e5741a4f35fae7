"""`refbridge catchup PROVIDER --since …`: one catch-up run, with a progress bar on a terminal."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from tqdm import tqdm

from bridge.catchup.paypal_events import PayPalEvents
from bridge.catchup.run import Progress, run_catchup
from bridge.catchup.source import EventSource, SourceError
from bridge.catchup.stripe_events import StripeEvents
from bridge.catchup.summary import Summary
from bridge.catchup.window import parse_window
from bridge.delivery.ledger import Ledger
from bridge.logs import configure_logging
from config import Settings

PROVIDERS = ("stripe", "paypal")


class CatchupRefused(Exception):
    """A run that could not start or finish; the message is one line, with no secret."""


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    """The `catchup` subcommand."""
    cmd = sub.add_parser(
        "catchup",
        parents=parents,
        help="recover missed webhooks from the provider's event history",
    )
    cmd.add_argument("provider", choices=PROVIDERS)
    cmd.add_argument("--since", required=True, help="a duration back (30m, 72h, 7d) or ISO time")
    cmd.add_argument("--until", default=None, help="end of the window (default now)")
    cmd.add_argument("--dry-run", action="store_true", help="map and report, record nothing")
    cmd.add_argument("--json", action="store_true", help="print the summary as one JSON object")


def source_for(provider: str, settings: Settings) -> EventSource:
    """The event history of `provider`: PayPal's is its REST webhook events (IPN has none)."""
    if provider == "paypal":
        return PayPalEvents(settings)
    return StripeEvents(settings)


def prepare(args: argparse.Namespace, settings: Settings) -> Callable[[Ledger], int]:
    """Check the window and the provider's credentials, before anything needs Redis; the run."""
    configure_logging(stream=sys.stderr)
    try:
        since, until = parse_window(args.since, args.until, time.time())
    except ValueError as exc:
        raise CatchupRefused(f"catchup: {exc}") from None
    try:
        source = source_for(args.provider, settings)
    except SourceError as exc:
        raise CatchupRefused(f"catchup {args.provider}: {exc}") from None
    return lambda ledger: _run(args, source, ledger, since, until)


def _run(
    args: argparse.Namespace, source: EventSource, ledger: Ledger, since: int, until: int
) -> int:
    """Run catch-up once; the summary on stdout, progress and log lines on stderr."""
    try:
        with _ProgressDisplay(args.provider, sys.stderr) as progress:
            summary = run_catchup(
                source, ledger, since, until, dry_run=args.dry_run, progress=progress
            )
    except SourceError as exc:
        raise CatchupRefused(f"catchup {args.provider}: {exc}") from None
    print(json.dumps(summary.as_json()) if args.json else "\n".join(summary.lines()))
    return 0


class _ProgressDisplay:
    """A tqdm bar on a terminal; otherwise a plain line every 10 pages."""

    def __init__(self, provider: str, stream: TextIO) -> None:
        self.stream = stream
        self.provider = provider
        self.bar: tqdm[Any] | None = None

    def __enter__(self) -> Progress:
        if self.stream.isatty():
            # Events come newest first: the bar is the share of the window read so far.
            self.bar = tqdm(
                desc=f"{self.provider} catch-up",
                total=100,
                unit="%",
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}{postfix}",
                file=self.stream,
            )
        return self.update

    def __exit__(self, failed: object, *_: object) -> None:
        if self.bar is not None:
            if failed is None:
                self.bar.update(100 - self.bar.n)  # the window's oldest part may hold no event
            self.bar.close()

    def update(self, summary: Summary) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(
                f"{summary.seen} events, {summary.recorded} new, {summary.duplicate} known",
                refresh=False,
            )
            self.bar.update(round(summary.covered * 100) - self.bar.n)
        elif summary.pages % 10 == 1:
            print(
                f"catchup {self.provider}: page {summary.pages}, {summary.seen} events seen, "
                f"{summary.recorded} new",
                file=self.stream,
                flush=True,
            )
