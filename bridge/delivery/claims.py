"""What a claim on ledger items gives an attempt (bridge/delivery/lua/claim.lua)."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field


def new_token() -> str:
    """A fresh claim token."""
    return secrets.token_hex(8)


@dataclass(frozen=True)
class Claim:
    """An item claimed for one attempt: its id, the claim's token and the item's fields.

    `died_in` is "" when the item's previous attempt finished, else how that attempt was claimed
    when its worker died under it: "batch" (beside others) or "alone" (as a suspect).
    """

    item_id: str
    token: str
    item: dict[str, str]
    died_in: str = ""
    at: float = field(default_factory=time.time)  # when the claim came back, by this host


@dataclass(frozen=True)
class Claimed:
    """What one claim did: the items taken for an attempt, those dead-lettered instead (reason
    `worker_died`: their worker died under them MAX_DEATHS times), and a word for each item
    not taken (see lua/claim.lua)."""

    claims: list[Claim]
    dead: list[Claim]
    words: dict[str, str] = field(default_factory=dict)
