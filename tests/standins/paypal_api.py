"""A PayPal REST API stand-in: OAuth2 client-credentials tokens, verify-webhook-signature and
the webhook event history.

As PayPal documents them: `POST /v1/oauth2/token` takes HTTP basic auth (client id and secret)
and the form `grant_type=client_credentials`, and answers an access token with its `expires_in`;
`POST /v1/notifications/verify-webhook-signature` takes that token as a Bearer, a JSON body with
the five transmission fields, the `webhook_id` and the `webhook_event`, and answers
`{"verification_status": "SUCCESS" | "FAILURE"}`. SUCCESS here only for an event this stand-in
itself "sent", spliced in with exactly its bytes, with exactly its headers and the webhook id.
`GET /v1/notifications/webhooks-events` takes the Bearer token and `start_time` / `end_time`
(RFC 3339, both inclusive) and `page_size`, and answers `{"events": [...], "count": n, "links":
[...]}` newest first, with a `rel: next` link (PayPal's `move_to=next&index_id=…` shape) while
more remain.
"""

from __future__ import annotations

import base64
import copy
import json
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlencode

from tests.fixtures import paypal_webhook_fixture
from tests.standins.http import Handler, StandInServer

TOKEN_PATH = "/v1/oauth2/token"
VERIFY_PATH = "/v1/notifications/verify-webhook-signature"
CLIENT_ID = "AQkquBDf1zctJOWGKWUEtKXm6qVhueUEMvXO_-MCI4DQQ4-LWvkDLIN2fGsd"
CLIENT_SECRET = "EL1tVxAjhT7cJimnz5-Nsx9k2reTKSVfErNQF-CmrwJgxRtylkGTKlU4RvrX"
WEBHOOK_ID = "1JE4291016473214C"
ORDERS_PATH = "/v2/checkout/orders"
EVENTS_PATH = "/v1/notifications/webhooks-events"
JSON = {"Content-Type": "application/json"}
INVALID_TOKEN = b'{"error":"invalid_token","error_description":"Token not found in cache"}'
VERIFY_FIELDS = {
    "auth_algo": "PAYPAL-AUTH-ALGO",
    "cert_url": "PAYPAL-CERT-URL",
    "transmission_id": "PAYPAL-TRANSMISSION-ID",
    "transmission_sig": "PAYPAL-TRANSMISSION-SIG",
    "transmission_time": "PAYPAL-TRANSMISSION-TIME",
}


@dataclass
class Scripted:
    """One scripted answer to the next call of `path`: a status (with headers), or a hang."""

    status: int = 503
    headers: dict[str, str] = field(default_factory=dict)
    hang: float = 0.0


def transmission(event_id: str) -> dict[str, str]:
    """The PAYPAL-* headers PayPal sends with an event (shapes from PayPal's docs)."""
    return {
        "PAYPAL-TRANSMISSION-ID": f"{secrets.token_hex(4)}-6b3f-11f0-{secrets.token_hex(2)}-"
        + secrets.token_hex(6),
        "PAYPAL-TRANSMISSION-TIME": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "PAYPAL-TRANSMISSION-SIG": base64.b64encode(secrets.token_bytes(256)).decode(),
        "PAYPAL-CERT-URL": "https://api.paypal.com/v1/notifications/certs/CERT-360caa42-fca2a594-"
        + event_id[-8:].lower(),
        "PAYPAL-AUTH-ALGO": "SHA256withRSA",
    }


class PayPalApiHandler(Handler):
    server: PayPalApi

    def do_GET(self) -> None:  # noqa: N802 — http.server's naming
        """`GET /v2/checkout/orders/{id}`: an order this stand-in knows, to a valid token."""
        server = self.server
        path = self.path.partition("?")[0]
        if path == EVENTS_PATH:
            return self.list_events()
        with server.lock:
            server.requests.append(self.record(b""))
            queue = server.scripted.get(ORDERS_PATH, [])
            scripted = queue.pop(0) if queue and path.startswith(ORDERS_PATH) else None
        if scripted is not None:
            return self.reply(
                scripted.status, b'{"name":"INTERNAL_SERVICE_ERROR"}', scripted.headers
            )
        if not path.startswith(ORDERS_PATH + "/"):
            return self.reply(404, b'{"name":"RESOURCE_NOT_FOUND"}', JSON)
        if not self.authorized():
            return self.reply(401, INVALID_TOKEN, JSON)
        with server.lock:
            order = server.orders.get(path.removeprefix(ORDERS_PATH + "/"))
        if order is None:
            return self.reply(404, b'{"name":"RESOURCE_NOT_FOUND"}', JSON)
        self.reply(200, json.dumps(order).encode(), JSON)

    def list_events(self) -> None:
        """`GET /v1/notifications/webhooks-events`: a page of the events in the window."""
        server = self.server
        with server.lock:
            server.requests.append(self.record(b""))
            queue = server.scripted.get(EVENTS_PATH, [])
            scripted = queue.pop(0) if queue else None
        if scripted is not None:
            return self.reply(
                scripted.status, b'{"name":"INTERNAL_SERVICE_ERROR"}', scripted.headers
            )
        if not self.authorized():
            return self.reply(401, INVALID_TOKEN, JSON)
        query = {k: v[-1] for k, v in parse_qs(self.path.partition("?")[2]).items()}
        try:
            start, end = _moment(query.get("start_time")), _moment(query.get("end_time"))
            size = int(query.get("page_size", "10"))
            offset = int(query.get("index_id", "0"))
        except ValueError:
            return self.reply(400, b'{"name":"VALIDATION_ERROR"}', JSON)
        if not 1 <= size <= 300 or offset < 0:
            return self.reply(400, b'{"name":"VALIDATION_ERROR"}', JSON)
        low = start if start is not None else float("-inf")
        high = end if end is not None else float("inf")
        with server.lock:
            events = [e for e in server.events if low <= _created(e) <= high]
            next_base = server.next_base or server.url
        events.sort(key=lambda e: (_created(e), e["id"]), reverse=True)
        page = events[offset : offset + size]
        links = []
        if offset + size < len(events):
            kept = {k: v for k, v in query.items() if k in ("start_time", "end_time", "page_size")}
            more = urlencode({**kept, "move_to": "next", "index_id": offset + size})
            links.append(
                {"href": f"{next_base}{EVENTS_PATH}?{more}", "rel": "next", "method": "GET"}
            )
        answer = {"events": page, "count": len(page), "links": links}
        self.reply(200, json.dumps(answer).encode(), JSON)

    def authorized(self) -> bool:
        """True when the request carries a token this stand-in issued and has not expired."""
        bearer = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
        with self.server.lock:
            valid_until = self.server.tokens.get(bearer)
        return valid_until is not None and time.monotonic() < valid_until

    def do_POST(self) -> None:  # noqa: N802 — http.server's naming
        body = self.read_body()
        server = self.server
        path = self.path.partition("?")[0]
        with server.lock:
            server.requests.append(self.record(body))
            queue = server.scripted.get(path, [])
            scripted = queue.pop(0) if queue else None
        if scripted is not None:
            if scripted.hang:
                time.sleep(scripted.hang)
                try:
                    return self.reply(504, b"")
                except OSError:
                    return None  # the client gave up waiting, as it should
            return self.reply(
                scripted.status, b'{"name":"INTERNAL_SERVICE_ERROR"}', scripted.headers
            )
        if path == TOKEN_PATH:
            return self.token(body)
        if path == VERIFY_PATH:
            return self.verify(body)
        self.reply(404, b'{"name":"RESOURCE_NOT_FOUND"}', JSON)

    def token(self, body: bytes) -> None:
        server = self.server
        expected = base64.b64encode(f"{server.client_id}:{server.client_secret}".encode()).decode()
        if self.headers.get("Authorization") != f"Basic {expected}":
            error = b'{"error":"invalid_client","error_description":"Client Authentication failed"}'
            return self.reply(401, error, JSON)
        ctype = self.headers.get("Content-Type") or ""
        if not ctype.startswith("application/x-www-form-urlencoded") or body != (
            b"grant_type=client_credentials"
        ):
            error = b'{"error":"unsupported_grant_type","error_description":"Grant Type is NULL"}'
            return self.reply(400, error, JSON)
        token = "A21AA" + secrets.token_urlsafe(48)
        with server.lock:
            server.tokens[token] = time.monotonic() + server.expires_in
            server.tokens_issued += 1
        answer = {
            "scope": "https://uri.paypal.com/services/applications/webhooks",
            "access_token": token,
            "token_type": "Bearer",
            "app_id": "APP-80W284485P519543T",
            "expires_in": server.expires_in,
            "nonce": "2026-12-03T11:00:00ZaBcD",
        }
        self.reply(200, json.dumps(answer).encode(), JSON)

    def verify(self, body: bytes) -> None:
        server = self.server
        if not self.authorized():
            return self.reply(401, INVALID_TOKEN, JSON)
        if not (self.headers.get("Content-Type") or "").startswith("application/json"):
            return self.reply(415, b'{"name":"UNSUPPORTED_MEDIA_TYPE"}', JSON)
        request = _verification_request(body)
        if request is None:
            return self.reply(400, b'{"name":"VALIDATION_ERROR"}', JSON)
        fields, event = request
        with server.lock:
            headers = server.sent.get(event)
        genuine = (
            headers is not None
            and fields["webhook_id"] == server.webhook_id
            and all(fields[name] == headers[header] for name, header in VERIFY_FIELDS.items())
        )
        verdict = "SUCCESS" if genuine else "FAILURE"
        with server.lock:
            server.verdicts.append(verdict)
        self.reply(200, json.dumps({"verification_status": verdict}).encode(), JSON)


def _created(event: dict[str, Any]) -> float:
    return _moment(event["create_time"]) or 0.0


def _moment(text: str | None) -> float | None:
    """Unix time of an RFC 3339 time; ValueError when it is not one."""
    if text is None:
        return None
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(text)
    return moment.timestamp()


def history_event(
    kind: str = "capture",
    *,
    resource_id: str | None = None,
    created: float | None = None,
    custom: str = "rcs_pp_catchup",
    value: str = "42.00",
) -> dict[str, Any]:
    """An event as PayPal's history lists it, from a real sample: `capture` (PAYMENT.CAPTURE.
    COMPLETED), `sale` (PAYMENT.SALE.COMPLETED) or `approved` (CHECKOUT.ORDER.APPROVED), with
    its own event id, resource id and create_time."""
    names = {
        "capture": "rootcompany__payment_capture_completed.json",
        "sale": "paypal_node_sdk__payment_sale_completed_custom.json",
        "approved": "rootcompany__checkout_order_approved.json",
    }
    event: dict[str, Any] = copy.deepcopy(json.loads(paypal_webhook_fixture(names[kind])))
    when = datetime.fromtimestamp(created if created is not None else time.time(), UTC)
    event["id"] = f"WH-{secrets.token_hex(8).upper()}-{secrets.token_hex(8).upper()}"
    event["create_time"] = when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"
    resource = event["resource"]
    resource["id"] = resource_id or secrets.token_hex(8).upper()
    resource["create_time"] = when.strftime("%Y-%m-%dT%H:%M:%SZ")
    if kind == "capture":
        resource["custom_id"] = custom
        resource["amount"] = {"currency_code": "USD", "value": value}
    elif kind == "sale":
        resource["custom"] = custom
        resource["amount"] = {"total": value, "currency": "USD"}
    return event


def _verification_request(body: bytes) -> tuple[dict[str, str], bytes] | None:
    """The string fields and the exact `webhook_event` bytes of a request; None if malformed."""
    try:
        fields = json.loads(body)
    except ValueError:
        return None
    names = [*VERIFY_FIELDS, "webhook_id"]
    if not isinstance(fields, dict) or not all(isinstance(fields.get(n), str) for n in names):
        return None
    if not isinstance(fields.get("webhook_event"), dict):
        return None
    # The event's own bytes, as the request carries them: PayPal checks the signature over them.
    key = body.find(b'"webhook_event"')
    start = body.index(b":", key) + 1
    while body[start : start + 1].isspace():
        start += 1
    text = body.decode("utf-8")
    offset = len(body[:start].decode("utf-8"))
    _, end = json.JSONDecoder().raw_decode(text, offset)
    return fields, text[offset:end].encode("utf-8")


class PayPalApi(StandInServer):
    def __init__(self) -> None:
        super().__init__(PayPalApiHandler)
        self.client_id = CLIENT_ID
        self.client_secret = CLIENT_SECRET
        self.webhook_id = WEBHOOK_ID
        self.expires_in = 32400
        self.tokens: dict[str, float] = {}
        self.tokens_issued = 0
        self.sent: dict[bytes, dict[str, str]] = {}
        self.scripted: dict[str, list[Scripted]] = {}
        self.verdicts: list[str] = []
        self.orders: dict[str, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.next_base: str | None = None  # the origin of `next` links, when not this server

    def add_events(self, events: list[dict[str, Any]]) -> None:
        """Events the history lists from now on."""
        with self.lock:
            self.events.extend(events)

    def add_order(self, order_id: str, email: str) -> None:
        """An order `GET /v2/checkout/orders/{id}` answers, its payer with `email`."""
        with self.lock:
            self.orders[order_id] = {
                "id": order_id,
                "intent": "CAPTURE",
                "status": "COMPLETED",
                "payer": {
                    "name": {"given_name": "John", "surname": "Doe"},
                    "email_address": email,
                    "payer_id": "QYR5Z8XDVJNXQ",
                },
            }

    def send(self, raw: bytes) -> dict[str, str]:
        """Remember event `raw` as one PayPal sent; the transmission headers it went with."""
        event_id = json.loads(raw)["id"]
        headers = transmission(event_id)
        with self.lock:
            self.sent[raw] = headers
        return headers

    def script(self, path: str, *answers: Scripted) -> None:
        """Answer the next calls of `path` with `answers`, in order, then normally again."""
        with self.lock:
            self.scripted.setdefault(path, []).extend(answers)

    def revoke_tokens(self) -> None:
        """Every token issued so far is refused from now on (401), as when one expires."""
        with self.lock:
            self.tokens.clear()

    def calls(self, path: str) -> list[dict[str, Any]]:
        with self.lock:
            return [r for r in self.requests if r["path"].partition("?")[0] == path]

    def reset(self, keep_tokens: bool = False) -> None:
        """Forget every request, event and script; `keep_tokens` for a worker shared by tests."""
        with self.lock:
            self.requests.clear()
            if not keep_tokens:
                self.tokens.clear()
            self.tokens_issued = 0
            self.sent.clear()
            self.scripted.clear()
            self.verdicts.clear()
            self.orders.clear()
            self.events.clear()
            self.next_base = None
            self.expires_in = 32400
            self.client_secret = CLIENT_SECRET
