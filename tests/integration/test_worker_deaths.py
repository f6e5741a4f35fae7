"""A conversion that kills its worker every time ends in the dead-letter queue, alone.

The RefCampaign stand-in SIGKILLs the worker's whole process group whenever the postback of
one conversion arrives (what a payload that runs it out of memory would do); a thread of the
test starts the worker again after each death, as a supervisor would.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from types import TracebackType

import redis

from bridge.delivery.ledger import Ledger
from tests.integration.test_cli import cli, dlq_list, ok, status, wait_dead_lettered, wait_until
from tests.integration.test_redis_unreachable import events
from tests.integration.test_stripe_flow import checkout_event, post
from tests.processes import WorkerProcess
from tests.standins.refcampaign import Scripted

__all__ = ["cli"]  # the fixture, used by name

CULPRIT = "cs_test_deaths_culprit"
BYSTANDERS = [f"cs_test_deaths_{n}" for n in range(6)]


class Restarting:
    """While open, starts `worker`, and again whenever it died (even before it was ready)."""

    def __init__(self, worker: WorkerProcess) -> None:
        self.worker = worker
        self.restarts = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def group(self) -> int | None:
        """The worker's process group while it runs (its main process leads it)."""
        proc = self.worker.proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def _watch(self) -> None:
        while not self._stop.wait(0.2):
            proc = self.worker.proc
            if proc is None or proc.poll() is not None:
                self.restarts += proc is not None
                try:
                    self.worker.start()
                except RuntimeError:
                    pass  # killed before it said "ready.": started again on the next turn

    def __enter__(self) -> Restarting:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
        self.worker.stop()


def test_conversion_that_kills_its_worker_is_dead_lettered_and_spares_its_batch(
    client, env, tmp_path: Path, refcampaign, redis_url, cli
):
    # Each answer comes late, so the whole batch is in flight when the culprit's arrives.
    refcampaign.default = Scripted(status=None, delay=0.5)
    for external_id in [*BYSTANDERS[:3], CULPRIT, *BYSTANDERS[3:]]:
        assert post(client, checkout_event(external_id)).status_code == 200
    # Recorded before the worker starts: each pool process takes one at once.
    worker = WorkerProcess({**env, "DELIVERY_TIMEOUT": "1"}, tmp_path / "w.log")  # 12 s leases
    supervisor = Restarting(worker)
    refcampaign.kill_on(CULPRIT, supervisor.group)
    with supervisor:
        # One death beside the others (not counted), then three alone, a lease (12 s) apart.
        assert wait_dead_lettered(redis_url, 1, timeout=75) == [CULPRIT]
        refcampaign.wait_for(len(BYSTANDERS))
        assert refcampaign.kills == 4
        assert supervisor.restarts >= 3

        ledger = Ledger(redis.Redis.from_url(redis_url))
        items = [ledger.get(external_id) or {} for external_id in BYSTANDERS]
        for item in items:
            assert item["status"] == "delivered"
            assert "deaths" not in item and "in_flight" not in item
        # The other pool process's item was in flight when the worker died: spared too.
        spared = {i for i, item in zip(BYSTANDERS, items, strict=True) if int(item["attempts"]) > 1}
        assert spared
        assert [e["id"] for e in dlq_list(cli)] == [CULPRIT]
        [entry] = dlq_list(cli)
        assert entry["reason"] == "worker_died"
        assert entry["response"] == "worker died during 3 attempts"
        assert entry["attempts"] == 4 and entry["deaths"] == 3
        assert entry["lastAttemptAt"] is not None and entry["status"] is None
        counts = status(cli)
        assert counts["worker_died"] == 3 and counts["dead_lettered"] == 1
        assert counts["delivered"] == len(BYSTANDERS)
        assert "worker died during 3 attempts" in ok(cli("status"))
        metrics = client.get("/metrics").get_data(as_text=True)
        assert 'refbridge_postbacks_total{outcome="worker_died",reason=""} 3.0' in metrics
        assert re.search(r'outcome="dead_lettered",reason="worker_died"\} 1\.0', metrics)
        died = events(worker.output(), "worker_died")
        assert {line["externalId"] for line in died if not line["counted"]} >= spared
        assert {line["externalId"] for line in died if line["counted"]} == {CULPRIT}
        assert died[-1]["outcome"] == "dead_lettered" and died[-1]["deaths"] == 3

        # The fault fixed (the stand-in spares it now), a replay delivers it like any entry.
        refcampaign.kill_on(CULPRIT, lambda: None)
        assert ok(cli("dlq", "replay", CULPRIT)) == "replayed 1 entry\n"
        refcampaign.wait_for(len(BYSTANDERS) + 1)
        delivered = lambda: (ledger.get(CULPRIT) or {}).get("status") == "delivered"  # noqa: E731
        wait_until(delivered, 10, "the replayed entry delivered")
        assert "deaths" not in (ledger.get(CULPRIT) or {})
        assert refcampaign.kills == 4
