"""A RefCampaign stand-in that answers postbacks the way `refcampaign-postback.md` documents,
and refunds the way RefCampaign's API reference documents `POST /api/v1/conversions/refund`
(Conversions, "Refund a conversion and claw back its commission"; SDK 2.3.0 `refundConversion()`).

Postbacks: 401 without the right Bearer key; 422 for any payload the docs rule out; idempotent on
`externalId` ("Conversion already tracked"). Tests can script answers (503, 429 + Retry-After,
422, 409, slow or no answer) for the next requests with `script()`, and make one conversion kill
the worker that posts it with `kill_on()` (what a payload that runs it out of memory would do);
`per_conversion` scripts the answer to one conversion's postbacks.

Refunds: `{"externalId", "amount"?, "reason"?}`, errors in RefCampaign's envelope
`{"success": false, "error": {"code", "message", "details"}}`: 401 `UNAUTHORIZED`, 415
`UNSUPPORTED_MEDIA_TYPE`, 400 `INVALID_JSON`, 422 `VALIDATION_ERROR` (including a partial amount
over what is left unrefunded), 404 `NOT_FOUND` (no postback of that `externalId` was accepted).
A refund without `amount` refunds the whole conversion; partial amounts add up until they reach
the postback's `amount`. A refund of a refunded conversion changes nothing (`alreadyRefunded`).
`refunds` keeps the bodies applied, `refunded` the total per `externalId` (None: a full refund);
`script_refunds()` scripts answers for the next refund requests only. `script()` and `default`
apply to any request; `per_conversion` and `kill_on()` to postbacks only.
"""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.standins.http import Handler, StandInServer

PATH = "/api/v1/conversions/postback"
REFUND_PATH = "/api/v1/conversions/refund"
TYPES = {"SALE", "LEAD", "TRIAL", "CUSTOM"}
# RefCampaign's SDK 2.2.0: "the postback validation now accepts a request carrying any one of the
# three" (sessionId, customerEmailHash, affiliateCode); the postback guide lists the others.
ATTRIBUTION = (
    "sessionId",
    "rcsid",
    "clickId",
    "cid",
    "affiliateCode",
    "customerEmailHash",
    "customerEmail",
)
ISO = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


def payload_problems(body: Any) -> list[str]:
    """Why the docs would refuse `body` with 422 (empty when it is acceptable)."""
    if not isinstance(body, dict):
        return ["body is not a JSON object"]
    problems = []
    ext = body.get("externalId")
    if not isinstance(ext, str) or not 1 <= len(ext) <= 255:
        problems.append("externalId must be a string of 1-255 characters")
    if body.get("conversionType") not in TYPES:
        problems.append("conversionType must be one of SALE, LEAD, TRIAL, CUSTOM")
    amount = body.get("amount")
    if not isinstance(amount, int) or isinstance(amount, bool):
        problems.append("amount must be an integer in minor units")
    currency = body.get("currency")
    if not isinstance(currency, str) or not re.fullmatch(r"[A-Za-z]{3}", currency):
        problems.append("currency must be an ISO 4217 code")
    if not any(isinstance(body.get(k), str) and body.get(k) for k in ATTRIBUTION):
        problems.append("at least one attribution identifier is required")
    email_hash = body.get("customerEmailHash")
    if email_hash is not None and not re.fullmatch(r"[0-9a-f]{64}", str(email_hash)):
        problems.append("customerEmailHash must be SHA-256 hex")
    params = body.get("customParams")
    if params is not None and (
        not isinstance(params, dict)
        or len(params) > 5
        or not set(params) <= {"s1", "s2", "s3", "s4", "s5"}
        or not all(isinstance(v, str) for v in params.values())
    ):
        problems.append("customParams: up to five string params s1..s5")
    if "metadata" in body and not isinstance(body["metadata"], dict):
        problems.append("metadata must be an object")
    if "convertedAt" in body and not (
        isinstance(body["convertedAt"], str) and ISO.match(body["convertedAt"])
    ):
        problems.append("convertedAt must be ISO 8601")
    for key in ("customerId", "sessionId", "clickId", "affiliateCode"):
        if key in body and not isinstance(body[key], str):
            problems.append(f"{key} must be a string")
    return problems


def refund_problems(body: Any) -> list[str]:
    """Why the docs would refuse the refund `body` with 422 (empty when it is acceptable)."""
    if not isinstance(body, dict):
        return ["body is not a JSON object"]
    problems = []
    ext = body.get("externalId")
    if not isinstance(ext, str) or not 1 <= len(ext) <= 255:
        problems.append("externalId must be a string of 1-255 characters")
    if "amount" in body:
        amount = body["amount"]
        if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
            problems.append("amount must be a positive integer in minor units")
    if "reason" in body:
        reason = body["reason"]
        if not isinstance(reason, str) or not 1 <= len(reason) <= 500:
            problems.append("reason must be a string of 1-500 characters")
    return problems


def envelope(code: str, message: str, details: Any = None) -> bytes:
    """RefCampaign's error envelope."""
    error = {"code": code, "message": message, "details": details}
    return json.dumps({"success": False, "error": error}).encode()


@dataclass
class Scripted:
    """One scripted answer; `status=None` answers normally, after `delay`."""

    status: int | None = 503
    body: str = '{"error":"unavailable"}'
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    # Seconds between the answer's body bytes (status and headers at once): an answer that
    # dribbles in, each byte well inside a read timeout, the whole of it far outside.
    dribble: float = 0.0


class RefCampaignHandler(Handler):
    server: RefCampaign

    def do_POST(self) -> None:  # noqa: N802 — http.server's naming
        body = self.read_body()
        server = self.server
        postback = self.path == PATH
        with server.lock:
            server.requests.append(self.record(body))
            if self.path == REFUND_PATH and server.refund_scripted:
                scripted: Scripted | None = server.refund_scripted.pop(0)
            else:
                scripted = server.scripted.pop(0) if server.scripted else server.default
                if postback:
                    scripted = server.answer_for(body) or scripted
        if postback and server.kill_if_posting(body):
            return  # no answer: the worker that would read it is gone
        if scripted is not None:
            if scripted.delay:
                time.sleep(scripted.delay)
            if scripted.dribble:
                return self.dribble(scripted)
            if scripted.status is not None:
                self.reply(scripted.status, scripted.body.encode(), scripted.headers)
                return
        self.answer(body)

    def dribble(self, scripted: Scripted) -> None:
        """Answer `scripted` a body byte at a time; when the client hangs up, note the time."""
        body = scripted.body.encode()
        self.send_response(scripted.status or 200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            for byte in body:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(scripted.dribble)
        except OSError:
            pass  # the client hung up
        with self.server.lock:
            self.server.dribbles_ended.append(time.time())

    def answer(self, raw: bytes) -> None:
        server = self.server
        if self.path == REFUND_PATH:
            return self.answer_refund(raw)
        if self.path != PATH:
            return self.reply(404, b'{"error":"not found"}')
        if self.headers.get("Authorization") != f"Bearer {server.api_key}":
            return self.reply(401, b'{"error":"invalid API key"}')
        if not (self.headers.get("Content-Type") or "").startswith("application/json"):
            return self.reply(415, b'{"error":"expected application/json"}')
        try:
            payload = json.loads(raw)
        except ValueError:
            return self.reply(400, b'{"error":"invalid JSON"}')
        problems = payload_problems(payload)
        if problems:
            return self.reply(422, json.dumps({"error": problems}).encode())
        with server.lock:
            existing = server.conversions.get(payload["externalId"])
            if existing is None:
                conversion_id = f"conv_{len(server.conversions) + 1}"
                server.conversions[payload["externalId"]] = {
                    "id": conversion_id,
                    "payload": payload,
                }
                server.accepted.append(payload)
                # RefCampaign's envelope (its docs' home page shows a created conversion so).
                answer = {
                    "success": True,
                    "data": {
                        "success": True,
                        "conversionId": conversion_id,
                        "commissionId": f"cmm_{len(server.conversions)}",
                        "commissionAmount": payload["amount"] // 10,
                    },
                    "meta": {"timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
                }
            else:
                answer = {
                    "success": True,
                    "conversionId": existing["id"],
                    "message": "Conversion already tracked",
                }
            server.arrived.notify_all()
        self.reply(200, json.dumps(answer).encode(), {"Content-Type": "application/json"})

    def answer_refund(self, raw: bytes) -> None:
        """Answer `POST /api/v1/conversions/refund` as RefCampaign's API reference documents."""
        server = self.server
        json_type = {"Content-Type": "application/json"}
        if self.headers.get("Authorization") != f"Bearer {server.api_key}":
            return self.reply(401, envelope("UNAUTHORIZED", "invalid API key"), json_type)
        if not (self.headers.get("Content-Type") or "").startswith("application/json"):
            body = envelope("UNSUPPORTED_MEDIA_TYPE", "expected application/json")
            return self.reply(415, body, json_type)
        try:
            payload = json.loads(raw)
        except ValueError:
            return self.reply(400, envelope("INVALID_JSON", "invalid JSON"), json_type)
        problems = refund_problems(payload)
        if problems:
            body = envelope("VALIDATION_ERROR", "invalid request body", problems)
            return self.reply(422, body, json_type)
        with server.lock:
            status, answer = server.apply_refund(payload)
        self.reply(status, answer, json_type)


class RefCampaign(StandInServer):
    def __init__(self, api_key: str) -> None:
        super().__init__(RefCampaignHandler)
        self.api_key = api_key
        self.accepted: list[dict[str, Any]] = []  # first postback of each externalId
        self.conversions: dict[str, dict[str, Any]] = {}
        self.scripted: list[Scripted] = []
        self.dribbles_ended: list[float] = []
        self.default: Scripted | None = None
        self.arrived = threading.Condition(self.lock)
        self.killer: tuple[str, Callable[[], int | None]] | None = None
        self.kills = 0
        self.per_conversion: dict[str, Scripted] = {}  # answers to postbacks only
        self.refunds: list[dict[str, Any]] = []  # refund bodies applied, in order
        self.refunded: dict[str, int | None] = {}  # externalId -> total refunded (None: full)
        self.refund_scripted: list[Scripted] = []

    def apply_refund(self, payload: dict[str, Any]) -> tuple[int, bytes]:
        """Apply a valid refund body; the status and body to answer (lock held)."""
        external_id = payload["externalId"]
        conversion = self.conversions.get(external_id)
        if conversion is None:
            message = f"no conversion with externalId {external_id!r}"
            return 404, envelope("NOT_FOUND", message, {"externalId": external_id})
        if self.is_refunded(external_id):
            return 200, _refund_done(conversion["id"], already=True)
        amount = payload.get("amount")
        if amount is None:
            self.refunded[external_id] = None
        else:
            total = self.refunded.get(external_id) or 0
            left = conversion["payload"]["amount"] - total
            if amount > left:
                details = {"amount": amount, "unrefunded": left}
                message = "amount exceeds the unrefunded amount"
                return 422, envelope("VALIDATION_ERROR", message, details)
            self.refunded[external_id] = total + amount
        self.refunds.append(payload)
        self.arrived.notify_all()
        return 200, _refund_done(conversion["id"], already=False)

    def is_refunded(self, external_id: str) -> bool:
        """Whether the conversion was refunded in full, at once or in parts (lock held)."""
        if external_id not in self.refunded:
            return False
        total = self.refunded[external_id]
        return total is None or total >= self.conversions[external_id]["payload"]["amount"]

    def answer_for(self, body: bytes) -> Scripted | None:
        """The answer scripted for the conversion `body` posts, if any (lock held)."""
        if not self.per_conversion:
            return None
        try:
            return self.per_conversion.get(json.loads(body).get("externalId"))
        except (ValueError, AttributeError):
            return None

    def kill_on(self, external_id: str, group: Callable[[], int | None]) -> None:
        """SIGKILL the process group `group()` names whenever the postback of `external_id`
        arrives, before answering it."""
        with self.lock:
            self.killer = (external_id, group)

    def kill_if_posting(self, body: bytes) -> bool:
        """Kill the worker's process group if `body` is the fatal conversion; whether it did."""
        with self.lock:
            killer = self.killer
        try:
            external_id = json.loads(body).get("externalId")
        except (ValueError, AttributeError):
            return False
        if killer is None or external_id != killer[0] or (group := killer[1]()) is None:
            return False
        try:
            os.killpg(group, signal.SIGKILL)
        except ProcessLookupError:
            return False
        with self.lock:
            self.kills += 1
        return True

    def script(self, *answers: Scripted) -> None:
        """Answer the next requests with `answers`, in order, then normally again."""
        with self.lock:
            self.scripted.extend(answers)

    def script_refunds(self, *answers: Scripted) -> None:
        """Answer the next refund requests (only them) with `answers`, in order; a refund request
        takes from these before any `script()` answer."""
        with self.lock:
            self.refund_scripted.extend(answers)

    def postbacks(self) -> list[dict[str, Any]]:
        """Every postback body received (including refused ones), in order: every request body
        but the refund requests'."""
        with self.lock:
            return [
                json.loads(r["body"])
                for r in self.requests
                if r["body"] and r["path"] != REFUND_PATH
            ]

    def refund_requests(self) -> list[Any]:
        """Every JSON body posted to the refund path (including refused ones), in order; None for
        a body that is not JSON."""
        with self.lock:
            bodies = [r["body"] for r in self.requests if r["path"] == REFUND_PATH]
        return [_json_or_none(body) for body in bodies]

    def wait_for_refunds(self, count: int, timeout: float = 20.0) -> list[dict[str, Any]]:
        """Block until `count` refunds were applied; the refund bodies applied."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while len(self.refunds) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"{len(self.refunds)} of {count} refunds applied after {timeout}s "
                        f"({len(self._refund_records())} refund requests received)"
                    )
                self.arrived.wait(left)
            return list(self.refunds)

    def _refund_records(self) -> list[dict[str, Any]]:
        """The recorded requests to the refund path (lock held)."""
        return [r for r in self.requests if r["path"] == REFUND_PATH]

    def wait_for(self, count: int, timeout: float = 20.0) -> list[dict[str, Any]]:
        """Block until `count` distinct conversions were accepted; the accepted payloads."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while len(self.accepted) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{len(self.accepted)} of {count} conversions arrived")
                self.arrived.wait(left)
            return list(self.accepted)

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()
            self.accepted.clear()
            self.conversions.clear()
            self.scripted.clear()
            self.dribbles_ended.clear()
            self.default = None
            self.killer = None
            self.kills = 0
            self.per_conversion.clear()
            # Assigned, not cleared: bench/standin.py's subclass never sets them in __init__.
            self.refunds = []
            self.refunded = {}
            self.refund_scripted = []


def _refund_done(conversion_id: str, *, already: bool) -> bytes:
    """The refund endpoint's 200 body."""
    data = {"success": True, "conversionId": conversion_id, "alreadyRefunded": already}
    return json.dumps({"success": True, "data": data}).encode()


def _json_or_none(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None
