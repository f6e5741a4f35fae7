"""What one catch-up run saw and did: the CLI's summary, the last-run record, the log line."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bridge.conversion import iso_utc


@dataclass
class Summary:
    """Counts of one run; `recorded` is what it recovered (never arrived as a webhook)."""

    provider: str
    since: int
    until: int
    dry_run: bool = False
    seen: int = 0
    duplicate: int = 0
    recorded: int = 0
    refunds: int = 0  # of `recorded`, refunds and lost disputes
    unattributed: int = 0
    ignored: Counter[str] = field(default_factory=Counter)
    reached: int | None = None  # the oldest `created` read so far (events come newest first)
    pages: int = 0
    requests: int = 0
    duration: float = 0.0
    error: str | None = None

    @property
    def covered(self) -> float:
        """The share of the window read so far, 0 to 1."""
        if self.reached is None or self.until <= self.since:
            return 0.0
        return min(1.0, max(0.0, (self.until - self.reached) / (self.until - self.since)))

    @property
    def ignored_total(self) -> int:
        return sum(self.ignored.values())

    def as_json(self) -> dict[str, Any]:
        """One object: the CLI's `--json` and the last-run record."""
        return {
            "provider": self.provider,
            "since": _iso(self.since),
            "until": _iso(self.until),
            "dryRun": self.dry_run,
            "seen": self.seen,
            "alreadyRecorded": self.duplicate,
            "newlyRecorded": self.recorded,
            "refunds": self.refunds,
            "ignored": self.ignored_total,
            "ignoredByReason": dict(sorted(self.ignored.items())),
            "unattributed": self.unattributed,
            "requests": self.requests,
            "durationSeconds": round(self.duration, 3),
            "error": self.error,
        }

    def lines(self) -> list[str]:
        """The summary as text, a line per count."""
        recorded = "would be recorded" if self.dry_run else "newly recorded"
        out = [
            f"{self.provider} events {_iso(self.since)} .. "
            f"{_iso(self.until)}{' (dry run: nothing recorded)' if self.dry_run else ''}",
            f"  seen              {self.seen}",
            f"  already recorded  {self.duplicate}",
            f"  {recorded:<17} {self.recorded}",
            f"    of them refunds      {self.refunds}",
            f"  ignored           {self.ignored_total}",
        ]
        out += [f"    {reason:<22} {n}" for reason, n in sorted(self.ignored.items())]
        out.append(f"  unattributed      {self.unattributed}")
        return out


def _iso(seconds: float) -> str:
    return iso_utc(datetime.fromtimestamp(seconds, UTC))
