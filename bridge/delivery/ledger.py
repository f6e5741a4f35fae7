"""The durable ledger: every acknowledged message's state, due time and history, in Redis."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import redis
import structlog

from bridge.delivery import scripts as ledger_scripts
from bridge.delivery.claims import Claim as Claim
from bridge.delivery.claims import Claimed as Claimed
from bridge.delivery.claims import new_token
from bridge.delivery.keys import (
    DELIVERED,
    DLQ,
    DUE,
    KEEP_DONE,
    KEEP_INVALID,
    REFUNDS_WAITING,
    REJECTED,
    REJECTED_KEEP,
    RETRY,
    SEEN_TTL,
    SUSPECT,
    SUSPECTS_WAITING,
    UNDELIVERED,
    item_id,
    item_key,
    pairs,
    purge_keys,
    text,
    waiting_refunds_key,
)
from bridge.delivery.memory import DEFAULT_DAYS, NOTHING, Memory, Writes
from bridge.delivery.publish import BACKLOG, BATCH, MAX_QUEUED, PUBLISH_GRACE, QUEUE
from bridge.delivery.replicas import NO_REPLICAS, Replicas
from bridge.delivery.stats import STATS, WEBHOOK_VERIFICATIONS, latency_fields, stat
from bridge.delivery.story import ATTEMPTS_KEPT, NOT_TOLD, STORY_TTL, Told, attempts_key

# Deaths of its worker, each while it was attempted alone, that dead-letter an item.
MAX_DEATHS = 3
WORKER_DIED = "worker_died"
_DEATH_STATS = (
    stat("postbacks", outcome=WORKER_DIED),
    stat("postbacks", outcome="dead_lettered", reason=WORKER_DIED),
    stat("verifications", outcome=WORKER_DIED),
    stat("verifications", outcome="dead_lettered"),
    stat(WEBHOOK_VERIFICATIONS, outcome=WORKER_DIED),
    stat(WEBHOOK_VERIFICATIONS, outcome="dead_lettered"),
)


# What enqueue_many records: (item, seen, fields, remember, told), as `enqueue` takes them.
Entry = tuple[str, str, Mapping[str, str | int | float], Writes, Told | None]
# Publishes a task that attempts the ledger ids given (bridge/delivery/publish.py).
Publish = Callable[[Sequence[str]], None]
# lua/enqueue.lua's answer when its caller is to publish the item's task.
PUBLISH = 1
log = structlog.get_logger("refbridge.ledger")
# Items per retry-now script call: each call holds Redis for its items only, so pulling a
# backlog of millions forward never blocks the web's writes for long.
RETRY_NOW_CHUNK = 500


class Ledger:
    """Atomic state changes of ledger items (see ledger_scripts for the model)."""

    def __init__(
        self,
        client: redis.Redis,
        memory_days: int = DEFAULT_DAYS,
        publish: Publish | None = None,
        replicas: Replicas = NO_REPLICAS,
    ) -> None:
        """`publish` sends the task for each item recorded; without it, the sweeper does;
        `replicas` confirm each `enqueue` (the web's: bridge/delivery/replicas.py)."""
        self.redis = client
        self.replicas = replicas
        self.memory = Memory(client, memory_days)
        self._send = publish
        self._enqueue = client.register_script(ledger_scripts.ENQUEUE)
        self._claim = client.register_script(ledger_scripts.CLAIM)
        self._sweep = client.register_script(ledger_scripts.SWEEP)
        self._finish_script = client.register_script(ledger_scripts.FINISH)
        self._replay = client.register_script(ledger_scripts.REPLAY)
        self._purge = client.register_script(ledger_scripts.PURGE)
        self._drop = client.register_script(ledger_scripts.DROP)
        self._retry_now = client.register_script(ledger_scripts.RETRY_NOW)

    def enqueue(
        self,
        item: str,
        seen: str,
        fields: Mapping[str, str | int | float],
        stats: tuple[str, str] = ("", ""),
        remember: Writes = NOTHING,
        told: Told | None = None,
    ) -> bool:
        """Record a new item and publish its task; False when `seen` or it exists.

        `stats` names the counters to add one to when it is recorded / a duplicate; `remember`
        the memory entries it leaves (bridge/delivery/memory.py), written even for a duplicate;
        `told` what it adds to its story (bridge/delivery/story.py).
        """
        keys, argv = self._enqueue_call(item, seen, fields, stats, remember, told)
        if self.replicas.count:
            answer = self.replicas.run(self.redis, self._enqueue, keys, argv)
        else:
            answer = self._enqueue(keys=keys, args=argv)
        if answer == PUBLISH:
            self.publish([item])
        return bool(answer)

    def enqueue_many(
        self,
        entries: Sequence[Entry],
        stats: tuple[str, str],
        counts: Mapping[str, int],
    ) -> list[bool]:
        """`enqueue` each Entry, and add `counts` to their counters: one pipeline for them all
        (catch-up records a page of events at a time), then a task for each BATCH of the items
        recorded."""
        pipe = self.redis.pipeline(transaction=False)
        for item, seen, fields, remember, told in entries:
            keys, argv = self._enqueue_call(item, seen, fields, stats, remember, told)
            self._enqueue(keys=keys, args=argv, client=pipe)
        for counter, amount in counts.items():
            pipe.hincrby(STATS, counter, amount)
        answers = pipe.execute()[: len(entries)]
        self.publish(
            [entry[0] for entry, answer in zip(entries, answers, strict=True) if answer == PUBLISH]
        )
        return [bool(answer) for answer in answers]

    def _enqueue_call(
        self,
        item: str,
        seen: str,
        fields: Mapping[str, str | int | float],
        stats: tuple[str, str],
        remember: Writes,
        told: Told | None,
    ) -> tuple[list[str], list[Any]]:
        """The keys and arguments of lua/enqueue.lua for one item."""
        grace = PUBLISH_GRACE if self._send is not None else 0
        argv: list[Any] = ["", SEEN_TTL, *stats, grace, BACKLOG]
        argv += [*(told or NOT_TOLD).args(), *remember.args()]
        for name, value in fields.items():
            argv += [name, value]
        keys = [item_key(item), DUE, seen, STATS, UNDELIVERED, QUEUE]
        return keys + (told or NOT_TOLD).keys(item), argv

    def publish(self, ids: Sequence[str]) -> int:
        """Publish tasks for `ids`, BATCH to a task; how many. A failure is logged: the sweeper
        publishes them once their grace runs out (lua/sweep.lua), so what was recorded is never
        lost."""
        if self._send is None:
            return 0
        batches = [ids[start : start + BATCH] for start in range(0, len(ids), BATCH)]
        for batch in batches:
            try:
                self._send(batch)
            except Exception as exc:  # noqa: BLE001 — recorded already: the sweeper takes over
                log.warning("publish_failed", items=len(batch), error=type(exc).__name__)
        return len(batches)

    def claim(self, ids: Sequence[str], lease: float) -> Claimed:
        """Claim the items `ids` for an attempt each, leased for `lease` seconds.

        An item whose previous attempt never finished is claimed only alone (a task naming it
        only) and one at a time in the system (see lua/claim.lua).
        """
        # The times are Redis's (lua/redis_now.lua): "" stands where the script puts its clock.
        argv: list[Any] = ["", lease, new_token(), MAX_DEATHS, *_DEATH_STATS]
        argv += [item_key(i) for i in ids]
        keys = [DUE, RETRY, SUSPECT, DLQ, STATS, UNDELIVERED, SUSPECTS_WAITING, REFUNDS_WAITING]
        flat = self._claim(keys=keys, args=argv)
        claimed = Claimed([], [])
        for key, token, fields, died_in, word in zip(*(flat[i::5] for i in range(5)), strict=True):
            claim = Claim(item_id(text(key)), text(token), pairs(fields), text(died_in))
            if claim.token:
                claimed.claims.append(claim)
                continue
            claimed.words[claim.item_id] = text(word)
            if claim.item:
                claimed.dead.append(claim)
        return claimed

    def sweep(self, limit: int) -> tuple[list[str], list[str]]:
        """Mark up to `limit` due items that no task has taken as published (lua/sweep.lua),
        as many as keep the queue within MAX_QUEUED tasks: the ids of fresh items, and of
        suspects (each to be published alone)."""
        argv: list[Any] = ["", PUBLISH_GRACE, limit, BATCH, MAX_QUEUED]
        fresh, suspects = self._sweep(keys=[DUE, QUEUE], args=argv)
        return [item_id(text(k)) for k in fresh], [item_id(text(k)) for k in suspects]

    def mark_delivered(
        self,
        claim: Claim,
        fields: Mapping[str, str | int | float],
        latency: float,
        attempt: str = "",
    ) -> bool:
        """RefCampaign accepted the postback: keep the item KEEP_DONE seconds for duplicates.

        Counts the delivery, its webhook-to-postback `latency` and the time of the last one,
        all in the same round trip. Applies even under a stale claim: the postback happened.
        """
        latest = {"last_delivered_at": time.time()}
        delivered = stat("postbacks", outcome="delivered")
        return self._finish(claim, "done", KEEP_DONE, delivered, fields, latency, latest, attempt)

    def mark_done(
        self,
        claim: Claim,
        fields: Mapping[str, str | int | float],
        counter: str = "",
        attempt: str = "",
    ) -> bool:
        """Finished (an IPN verified, rejected or ignored; a refund sent): kept KEEP_DONE.
        `attempt` is the story entry of the attempt that finished it, if any."""
        return self._finish(claim, "done", KEEP_DONE, counter, fields, attempt=attempt)

    def schedule_retry(
        self,
        claim: Claim,
        delay: float,
        counter: str,
        fields: Mapping[str, str | int | float],
        error: str,
        attempt: str = "",
    ) -> bool:
        """Due again `delay` seconds from now by Redis's clock; False when `claim` no longer
        holds the item."""
        latest: dict[str, str | float] = {"last_error": error, "last_error_at": time.time()}
        return self._finish(claim, "retry", delay, counter, fields, None, latest, attempt)

    def dead_letter(
        self,
        claim: Claim,
        counter: str,
        fields: Mapping[str, str | int | float],
        error: str,
        attempt: str = "",
    ) -> bool:
        """Into the dead-letter queue (fields say why); False when `claim` no longer holds it."""
        latest: dict[str, str | float] = {"last_error": error, "last_error_at": time.time()}
        return self._finish(claim, "dead", 0, counter, fields, None, latest, attempt)

    def _finish(
        self,
        claim: Claim,
        outcome: str,
        when: float,
        counter: str,
        fields: Mapping[str, str | int | float],
        latency: float | None = None,
        latest: Mapping[str, str | float] | None = None,
        attempt: str = "",
    ) -> bool:
        """Apply an attempt's outcome ('retry' | 'done' | 'dead') and its stats in one script.

        One round trip: redis-py's pipelines ask Redis whether their scripts exist (SCRIPT
        EXISTS) before every execute, a second round trip per attempt.
        """
        argv: list[Any] = [claim.token, "", outcome, when, counter, attempt, ATTEMPTS_KEPT]
        argv += [STORY_TTL, len(latest or {})]
        for name, stat_value in (latest or {}).items():
            argv += [name, stat_value]
        if latency is None:
            argv += ["", "", "", ""]
        else:
            bucket, total, count = latency_fields(latency)
            argv += [latency, bucket, total, count]
        for name, value in fields.items():
            argv += [name, value]
        keys = [item_key(claim.item_id), DUE, DLQ, STATS, RETRY, UNDELIVERED, SUSPECT]
        keys += [SUSPECTS_WAITING, waiting_refunds_key(claim.item_id), REFUNDS_WAITING, DELIVERED]
        keys.append(attempts_key(claim.item_id))
        return bool(self._finish_script(keys=keys, args=argv))

    def discard(self, claim: Claim, seen: str, counter: str = "") -> bool:
        """Delete a pending item, keeping only its `seen` marker for KEEP_INVALID seconds."""
        keys = [item_key(claim.item_id), DUE, UNDELIVERED, STATS, seen, SUSPECT, SUSPECTS_WAITING]
        return bool(self._drop(keys=keys, args=[counter, KEEP_INVALID]))

    def replay(self, ids: Iterable[str]) -> list[str]:
        """Put dead-lettered items back to work, due now; the ids that were dead-lettered."""
        keys = (DUE, DLQ, UNDELIVERED)
        return [i for i in ids if self._replay(keys=[item_key(i), *keys], args=[""])]

    def retry_now(self, ids: Iterable[str]) -> dict[str, str]:
        """Make the scheduled retries among `ids` due now: the sweeper publishes them.

        Returns a word per id: 'now' (it was a scheduled retry), 'missing', 'running' (an
        attempt holds it: left alone, it must not run twice at once), 'due' (already due),
        or the status of an item that has no work left ('delivered', 'dead', ...).
        """
        words: dict[str, str] = {}
        unique = list(dict.fromkeys(ids))
        for start in range(0, len(unique), RETRY_NOW_CHUNK):
            chunk = unique[start : start + RETRY_NOW_CHUNK]
            keys = [item_key(i) for i in chunk]
            answer = self._retry_now(keys=[DUE, RETRY], args=["", *keys])
            words.update(zip(chunk, (text(w) for w in answer), strict=True))
        return words

    def scheduled_retry_ids(self) -> list[str]:
        """Ids of the items waiting for a scheduled retry, read in small steps (ZSCAN)."""
        found = self.redis.zscan_iter(RETRY, count=RETRY_NOW_CHUNK)
        return list(dict.fromkeys(item_id(text(key)) for key, _ in found))

    def purge(self, ids: Iterable[str]) -> list[str]:
        """Delete dead-lettered items (and end the refunds waiting for them as not sent);
        the ids that were deleted."""
        keep = [KEEP_DONE, self.memory.days * 86400]
        return [i for i in ids if self._purge(keys=purge_keys(i), args=keep)]

    def count(self, *stats: str) -> None:
        """Add one to each counter named (see bridge.delivery.stats.stat)."""
        pipe = self.redis.pipeline(transaction=False)
        for counter in stats:
            pipe.hincrby(STATS, counter, 1)
        pipe.execute()

    def record_rejected(self, entry: str) -> None:
        """Keep a bounded list of recent rejections (JSON lines) for `refbridge status`."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.lpush(REJECTED, entry)
        pipe.ltrim(REJECTED, 0, REJECTED_KEEP - 1)
        pipe.execute()

    def get(self, item: str) -> dict[str, str] | None:
        """All fields of one item."""
        raw: dict[bytes, bytes] = self.redis.hgetall(item_key(item))  # type: ignore[assignment]
        return {text(k): text(v) for k, v in raw.items()} if raw else None

    def dead_letter_ids(self) -> list[str]:
        """Ids in the dead-letter queue, oldest first."""
        keys: list[bytes] = self.redis.zrange(DLQ, 0, -1)  # type: ignore[assignment]
        return [item_id(text(k)) for k in keys]
