"""`refbridge verify --since …`: prove that every conversion delivered in a window is still at
RefCampaign, by posting each again (SPEC, CLI).

RefCampaign's list endpoint documents no date filter; its postback is idempotent on
`externalId` and answers a known one with its existing `conversionId` ("Conversion already
tracked"). So a conversion is `confirmed` when RefCampaign answers that way or with the
`conversionId` recorded at delivery; `restored` when it created the conversion anew (it had lost
it: logged at warning, and the new id recorded); `failed`, with the status, otherwise.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from tqdm import tqdm

from bridge.delivery.http_client import (
    OutboundSession,
    answer_data,
    new_session,
    post_to_refcampaign,
)
from bridge.delivery.keys import DELIVERED, item_id, item_key
from bridge.delivery.ledger import Ledger
from bridge.delivery.outcomes import RetryLater
from bridge.delivery.pacing import Throttle
from config import Settings

MAX_RATE = 10.0  # requests a second, at most
ALREADY_TRACKED = "Conversion already tracked"
log = structlog.get_logger("refbridge.verify")


@dataclass
class Verified:
    """What one run found."""

    checked: int = 0
    confirmed: int = 0
    restored: list[str] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "checked": self.checked,
            "confirmed": self.confirmed,
            "restored": len(self.restored),
            "failed": len(self.failed),
            "restoredIds": self.restored,
            "failures": self.failed,
        }

    def lines(self) -> list[str]:
        """The summary as text, a line per count, then each restored or failed conversion."""
        out = ["verify", f"  checked    {self.checked}", f"  confirmed  {self.confirmed}"]
        out.append(f"  restored   {len(self.restored)}")
        out += [f"    {external_id}" for external_id in self.restored]
        out.append(f"  failed     {len(self.failed)}")
        out += [f"    {f['externalId']}: {f['status'] or f['error']}" for f in self.failed]
        return out


def delivered_between(ledger: Ledger, since: float, until: float) -> list[str]:
    """The ids of the conversions delivered in [since, until], whole seconds both, oldest first."""
    found = ledger.redis.zrangebyscore(DELIVERED, since, f"({int(until) + 1}")
    keys: list[bytes] = found  # type: ignore[assignment]
    return [item_id(k.decode()) for k in keys]


def verify(
    ledger: Ledger,
    settings: Settings,
    ids: list[str],
    progress: Callable[[Verified], None] = lambda _: None,
    throttle: Throttle | None = None,
) -> Verified:
    """Post each delivered conversion of `ids` again, at most MAX_RATE a second."""
    session: OutboundSession = new_session(pool_size=1)
    pace, result = throttle or Throttle(MAX_RATE), Verified()
    for conversion in ids:
        item = ledger.get(conversion) or {}
        if item.get("status") != "delivered" or not item.get("payload"):
            continue  # gone since (purged, expired): nothing to prove
        pace.wait()
        payload = json.loads(item["payload"])
        answer = post_to_refcampaign(session, settings, settings.postback_url, payload)
        result.checked += 1
        _judge(ledger, conversion, item, answer, result)
        progress(result)
    return result


def _judge(
    ledger: Ledger, conversion: str, item: dict[str, str], answer: Any, result: Verified
) -> None:
    if isinstance(answer, RetryLater):
        result.failed.append({"externalId": conversion, "status": None, "error": answer.error})
        return
    if not 200 <= answer.status_code < 300:
        result.failed.append(
            {"externalId": conversion, "status": answer.status_code, "error": "refused"}
        )
        return
    data = answer_data(answer)
    found = data.get("conversionId")
    if data.get("message") == ALREADY_TRACKED or (found and found == item.get("conversion_id")):
        result.confirmed += 1
        return
    result.restored.append(conversion)
    log.warning("conversion_restored", externalId=conversion, conversionId=found)
    if isinstance(found, str):
        ledger.redis.hset(item_key(conversion), "conversion_id", found[:200])


def run_verify(ledger: Ledger, settings: Settings, since: int, until: int, as_json: bool) -> int:
    """The CLI's run: a progress bar on a terminal, the summary on stdout."""
    ids = delivered_between(ledger, since, until)
    bar = tqdm(total=len(ids), desc="verify", file=sys.stderr) if sys.stderr.isatty() else None
    started = time.monotonic()

    def progress(done: Verified) -> None:
        if bar is not None:
            bar.update(1)
        elif done.checked % 100 == 0:
            print(f"verify: {done.checked} of {len(ids)} checked", file=sys.stderr, flush=True)

    try:
        result = verify(ledger, settings, ids, progress)
    finally:
        if bar is not None:
            bar.close()
    summary = {**result.as_json(), "durationSeconds": round(time.monotonic() - started, 3)}
    print(json.dumps(summary) if as_json else "\n".join(result.lines()))
    return 0 if not result.failed else 1
