"""Lua scripts that move a ledger item between states atomically inside Redis.

An item is a hash `rb:item:{id}`; `rb:due` (sorted set, score = unix time) holds every item
that still has work to do, scored by when it is next due. A worker claims due items (CLAIM)
and pushes their score to the end of a lease, so an item whose worker died becomes due again
by itself: no broker visibility timeout is involved. The `token` field names the current
claim; the outcome of an attempt whose claim was since taken over (RETRY, DEAD) does nothing.

Celery messages are nudges (`refbridge.process_due`, no arguments): "there is due work".
`rb:nudges` counts the nudges queued and not yet taken, so that a burst of webhooks queues a
few nudges rather than one per webhook; each nudged task claims a batch. The scripts that
queue nudges hold the message template (bridge.delivery.nudges) and fill in ids passed as arguments.
"""

from importlib.resources import files

from bridge.delivery.nudges import TEMPLATE

_FOLDER = files("bridge.delivery") / "lua"


def _load(name: str) -> str:
    """The text of `lua/<name>.lua`, with the functions it uses (nudge_message, remember)."""
    body = (_FOLDER / f"{name}.lua").read_text(encoding="utf-8")
    if "nudge_message(" in body:
        body = _NUDGE_MESSAGE + body
    if "\nremember(" in body:
        body = _REMEMBER + body
    if "redis_now()" in body:
        body = _REDIS_NOW + body
    if "free_slot(" in body:
        body = _FREE_SLOT + body
    return body


_NUDGE_MESSAGE = (
    (_FOLDER / "nudge_message.lua")
    .read_text(encoding="utf-8")
    .replace("@NUDGE_TEMPLATE@", TEMPLATE)
)
_REMEMBER = (_FOLDER / "remember.lua").read_text(encoding="utf-8")
_REDIS_NOW = (_FOLDER / "redis_now.lua").read_text(encoding="utf-8")
_FREE_SLOT = (_FOLDER / "free_slot.lua").read_text(encoding="utf-8")
ENQUEUE = _load("enqueue")
CLAIM = _load("claim")
NUDGE = _load("nudge")
FINISH = _load("finish")
DROP = _load("drop")
REPLAY = _load("replay")
PURGE = _load("purge")
RETRY_NOW = _load("retry_now")
REMEMBER_ONLY = _load("remember_only")
RECALL = _load("recall")
TRIM = _load("trim")
