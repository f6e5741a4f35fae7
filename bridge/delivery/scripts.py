"""Lua scripts that move a ledger item between states atomically inside Redis.

An item is a hash `rb:item:{id}`; `rb:due` (sorted set, score = unix time) holds every item
that still has work to do, scored by when it is next due. A worker claims due items (CLAIM)
and pushes their score to the end of a lease, so an item whose worker died becomes due again
by itself: no broker visibility timeout is involved. The `token` field names the current
claim; the outcome of an attempt whose claim was since taken over (RETRY, DEAD) does nothing.

Celery tasks (`refbridge.deliver`, bridge/delivery/publish.py) name the items they attempt;
an item published and not yet claimed has `queued` set and is due when its publish grace runs
out, so the sweeper (SWEEP) publishes again what a lost message would have left undone.
"""

from importlib.resources import files

_FOLDER = files("bridge.delivery") / "lua"


def _load(name: str) -> str:
    """The text of `lua/<name>.lua`, with the functions it uses (remember, redis_now...)."""
    body = (_FOLDER / f"{name}.lua").read_text(encoding="utf-8")
    if "\nremember(" in body:
        body = _REMEMBER + body
    if "redis_now()" in body:
        body = _REDIS_NOW + body
    if "free_slot(" in body:
        body = _FREE_SLOT + body
    return body


_REMEMBER = (_FOLDER / "remember.lua").read_text(encoding="utf-8")
_REDIS_NOW = (_FOLDER / "redis_now.lua").read_text(encoding="utf-8")
_FREE_SLOT = (_FOLDER / "free_slot.lua").read_text(encoding="utf-8")
ENQUEUE = _load("enqueue")
CLAIM = _load("claim")
SWEEP = _load("sweep")
FINISH = _load("finish")
DROP = _load("drop")
REPLAY = _load("replay")
PURGE = _load("purge")
RETRY_NOW = _load("retry_now")
REMEMBER_ONLY = _load("remember_only")
REMEMBER_UNSENT = _load("remember_unsent")
RECALL = _load("recall")
TRIM = _load("trim")
REFUND_GATE = _load("refund_gate")
