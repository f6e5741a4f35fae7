"""The `refbridge` command: run the service, show its state, work the dead-letter queue,
pull scheduled retries forward, catch up on missed webhooks."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis

from bridge.delivery.ledger import Ledger
from bridge.ops import catchup_cmd, reports
from bridge.ops.preflight import RunRefused
from bridge.redis_client import REDIS_ERRORS, client_for, connect
from config import ConfigError, Settings

DATA_DIR = Path(".refbridge")


class CliError(Exception):
    """A failure to report as one line on standard error."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="refbridge", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    data_dir = argparse.ArgumentParser(add_help=False)
    data_dir.add_argument(
        "--data-dir",
        type=Path,
        default=DATA_DIR,
        help="the data directory of `refbridge run` (its lock, embedded Redis and redis.url)",
    )
    run = sub.add_parser(
        "run", parents=[data_dir], help="run web, worker (and an embedded Redis) in one tree"
    )
    run.add_argument("--host", default="127.0.0.1", help="address the web process binds")
    run.add_argument("--port", type=int, default=None, help="web port (default $PORT or 8000)")
    run.add_argument("--concurrency", type=int, default=4, help="worker processes")
    status = sub.add_parser(
        "status", parents=[data_dir], help="queue depth, retries, dead letters, counters"
    )
    status.add_argument("--json", action="store_true")
    dlq = sub.add_parser("dlq", help="the dead-letter queue").add_subparsers(
        dest="action", required=True
    )
    dlq.add_parser("list", parents=[data_dir]).add_argument("--json", action="store_true")
    dlq.add_parser("show", parents=[data_dir]).add_argument("id")
    for action in ("replay", "purge"):
        cmd = dlq.add_parser(action, parents=[data_dir])
        cmd.add_argument("ids", nargs="*")
        cmd.add_argument("--all", action="store_true")
    retry_now = sub.add_parser(
        "retry-now",
        parents=[data_dir],
        help="make scheduled retries due now (after an outage is fixed)",
    )
    retry_now.add_argument("ids", nargs="*")
    retry_now.add_argument("--all", action="store_true")
    retry_now.add_argument("--json", action="store_true")
    catchup_cmd.add_parser(sub, [data_dir])
    verify = sub.add_parser(
        "verify",
        parents=[data_dir],
        help="confirm that the conversions delivered in a window are still at RefCampaign",
    )
    verify.add_argument("--since", required=True, help="a duration back (30m, 72h, 7d) or ISO time")
    verify.add_argument("--until", default=None, help="end of the window (default now)")
    verify.add_argument("--json", action="store_true")
    show = sub.add_parser(
        "show",
        parents=[data_dir],
        help="the story of one payment, by its externalId or any provider id",
    )
    show.add_argument("id")
    show.add_argument("--json", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "run":
            from bridge.ops.supervisor import run

            return run(_settings(), args.host, args.port, args.concurrency, args.data_dir)
        # Catch-up's own arguments and credentials are checked before Redis is needed.
        catchup = catchup_cmd.prepare(args, _settings()) if args.command == "catchup" else None
        settings = _settings()
        client = (
            client_for(settings)
            if settings.redis_sentinels
            else connect(_redis_url(settings, args.data_dir))
        )
        ledger = Ledger(client, settings.attribution_memory_days)
        if args.command == "status":
            return _status(ledger, args.json)
        if args.command == "retry-now":
            return _retry_now(ledger, args)
        if catchup is not None:
            return catchup(ledger)
        if args.command == "verify":
            return _verify(ledger, settings, args)
        if args.command == "show":
            return _show(ledger, args.id, args.json)
        return _dlq(ledger, args)
    except ConfigError as exc:
        print(f"refbridge: configuration error: {exc}", file=sys.stderr)
    except (CliError, RunRefused, catchup_cmd.CatchupRefused) as exc:
        print(f"refbridge: {exc}", file=sys.stderr)
    except redis.exceptions.AuthenticationError:
        print("refbridge: Redis refused the credentials in REDIS_URL", file=sys.stderr)
    except REDIS_ERRORS as exc:
        print(
            f"refbridge: cannot reach Redis ({type(exc).__name__}); is it running?", file=sys.stderr
        )
    except redis.exceptions.RedisError as exc:
        print(f"refbridge: Redis refused the command: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `refbridge dlq show ID | head`: the reader left. Python's own advice: point stdout at
        # /dev/null so that the flush at exit does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    return 1


def _verify(ledger: Ledger, settings: Settings, args: argparse.Namespace) -> int:
    from bridge.catchup.window import parse_window
    from bridge.logs import configure_logging
    from bridge.ops.verify import run_verify

    configure_logging(stream=sys.stderr)
    try:
        since, until = parse_window(args.since, args.until, time.time())
    except ValueError as exc:
        raise CliError(f"verify: {exc}") from None
    settings.require("REFCAMPAIGN_API_KEY")
    return run_verify(ledger, settings, since, until, args.json)


def _show(ledger: Ledger, asked: str, as_json: bool) -> int:
    from bridge.ops import show

    told = show.story(ledger, asked)
    if told is None:
        # The id as typed may be anything: shown only when it looks like an id.
        shown = asked if asked.isprintable() and len(asked) <= 255 else "that id"
        raise CliError(f"show: nothing is known of {shown} (kept 30 days)")
    print(json.dumps(told, indent=2) if as_json else show.render(told))
    return 0


def _settings() -> Settings:
    return Settings.from_env()


def _redis_url(settings: Settings, data_dir: Path) -> str:
    """REDIS_URL when set, else the embedded Redis of a `refbridge run` using `data_dir`."""
    if settings.redis_url:
        return settings.redis_url
    url_file = data_dir / "redis.url"
    if url_file.is_file():
        return url_file.read_text().strip()
    raise ConfigError(
        "REDIS_URL", f"is not set (and no `refbridge run` found in {data_dir}; see --data-dir)"
    )


def _status(ledger: Ledger, as_json: bool) -> int:
    data = reports.status(ledger)
    if as_json:
        print(json.dumps(data, indent=2))
        return 0
    print(_status_table(data))
    return 0


STATUS_SECTIONS = {
    "Work": (
        "pending",
        "queue_depth",
        "scheduled_retries",
        "overdue",
        "dead_letter",
        "oldest_undelivered_age_seconds",
        "workers",
    ),
    "Counts": (
        "accepted",
        "delivered",
        "retried",
        "crashed",
        "worker_died",
        "dead_lettered",
        "limit_exceeded",
        "rejected",
        "unattributed",
        "ignored",
        "duplicate",
        "consumer_stuck",
    ),
    "PayPal REST webhooks": (
        "paypal_webhook_verified",
        "paypal_webhook_failure",
        "paypal_webhook_retried",
        "paypal_webhook_dead_lettered",
        "paypal_webhook_rejected",
    ),
    "Latest": ("last_delivered_at", "last_error", "last_error_at"),
}


def _status_table(data: dict[str, Any]) -> str:
    width = max(len(k) for k in data)
    lines = []
    for title, keys in STATUS_SECTIONS.items():
        lines.append(title)
        for key in keys:
            value = data.get(key)
            lines.append(f"  {key.replace('_', ' '):<{width}}  {'-' if value is None else value}")
    lines.append("Refunds")
    for key, value in data.get("refunds", {}).items():
        lines.append(f"  {key.replace('_', ' '):<{width}}  {value}")
    for provider, run in data.get("catchup", {}).items():
        lines.append(f"Catch-up ({provider})")
        for key, value in run.items():
            lines.append(f"  {key.replace('_', ' '):<{width}}  {'-' if value is None else value}")
    return "\n".join(lines)


def _dlq(ledger: Ledger, args: argparse.Namespace) -> int:
    if args.action == "list":
        entries = reports.dead_letters(ledger)
        print(json.dumps(entries, indent=2) if args.json else _table(entries))
        return 0
    if args.action == "show":
        entry = reports.dead_letter_entry(ledger, args.id)
        if entry is None:
            raise CliError(f"no dead-letter entry {args.id!r}")
        print(json.dumps(entry, indent=2))
        return 0
    if args.all == bool(args.ids):
        raise CliError(f"dlq {args.action}: give entry ids or --all (not both)")
    ids = ledger.dead_letter_ids() if args.all else args.ids
    done = ledger.replay(ids) if args.action == "replay" else ledger.purge(ids)
    verb = "replayed" if args.action == "replay" else "purged"
    print(f"{verb} {len(done)} entr{'y' if len(done) == 1 else 'ies'}")
    skipped = [i for i in ids if i not in done]
    unknown = [i for i in skipped if ledger.get(i) is None]
    for entry_id in set(skipped) - set(unknown):
        state = (ledger.get(entry_id) or {}).get("status", "unknown")
        print(
            f"refbridge: {entry_id} is not dead-lettered (status {state}); left as is",
            file=sys.stderr,
        )
    if unknown:
        raise CliError(f"no such entry: {', '.join(unknown)}")
    return 0


# Why an id given to `retry-now` was left as is, by the word the ledger answered.
NOT_RETRIED = {
    "running": "an attempt is running now",
    "due": "already due; a worker takes it next",
}


def _retry_now(ledger: Ledger, args: argparse.Namespace) -> int:
    if args.all == bool(args.ids):
        raise CliError("retry-now: give item ids or --all (not both)")
    ids = ledger.scheduled_retry_ids() if args.all else args.ids
    words = ledger.retry_now(ids)
    done = [i for i, word in words.items() if word == "now"]
    if args.json:
        print(json.dumps({"retried_now": len(done), "ids": done}))
    else:
        print(f"retried now: {len(done)}")
    if args.all:
        return 0  # what changed since the list was read needs no note
    unknown = [i for i, word in words.items() if word == "missing"]
    for item, word in words.items():
        if word not in ("now", "missing"):
            why = NOT_RETRIED.get(word, f"status {word}")
            print(
                f"refbridge: {item} is not scheduled for a retry ({why}); left as is",
                file=sys.stderr,
            )
    if unknown:
        raise CliError(f"no such item: {', '.join(unknown)}")
    return 0


def _table(entries: list[dict[str, Any]]) -> str:
    if not entries:
        return "dead-letter queue is empty"
    rows = [("ID", "REASON", "STATUS", "ATTEMPTS", "LAST ATTEMPT")]
    rows += [
        (
            e["id"],
            e["reason"] or "-",
            str(e["status"] or "-"),
            str(e["attempts"]),
            e["lastAttemptAt"] or "-",
        )
        for e in entries
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows)
