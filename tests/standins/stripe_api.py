"""A Stripe API stand-in serving `GET /v1/events` the way Stripe's API reference documents it.

Bearer auth (401 with Stripe's JSON error otherwise), newest first, cursor pagination
(`starting_after`, `ending_before`, `has_more`, `limit` 1-100), `created[gte|gt|lte|lt]` (or a
plain `created`), `type`, `types[]` (the SDK sends `types[0]`, `types[1]`…), `delivery_success`.
Tests script answers for the next requests (429, 5xx, a 3xx, a slow answer) with `script()`, and
read every request with its arrival and end time (to check the rate limit and overlap).

It also serves the look-ups that find the payment a refund undoes, over the objects a test
registers (`add_sessions()`, `add_invoices()`; `lookup_requests()` reads what was asked):
`GET /v1/checkout/sessions` with exactly one of `payment_intent` or `subscription` (and `limit`);
`GET /v1/invoice_payments` with `payment[type]=payment_intent` and `payment[payment_intent]`, or
`invoice` (the basil API, 2025-03-31 and later), built from the invoices' `payments.data[]` or,
failing that, their pre-basil top-level `payment_intent`; `GET /v1/invoices/<id>` (404
`resource_missing` for an unknown id). An unknown query parameter is Stripe's 400
`parameter_unknown`. Scripted answers apply to these requests as to the events'.
"""

from __future__ import annotations

import copy
import json
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from tests.fixtures import stripe_fixture
from tests.standins.http import Handler, StandInServer

MAX_LIMIT = 100
_CREATED = re.compile(r"created(?:\[(gte|gt|lte|lt)\])?")
_TYPES = re.compile(r"types\[\d*\]")
_EXPAND = re.compile(r"expand\[\d*\]")
EVENTS_PATH = "/v1/events"
SESSIONS_PATH = "/v1/checkout/sessions"
INVOICE_PAYMENTS_PATH = "/v1/invoice_payments"
INVOICES_PREFIX = "/v1/invoices/"


class ParamError(ValueError):
    """A query Stripe refuses with 400, naming the parameter and Stripe's error code."""

    def __init__(self, message: str, *, code: str | None, param: str) -> None:
        super().__init__(message)
        self.code = code
        self.param = param


class Missing(LookupError):
    """An object Stripe answers 404 `resource_missing` for."""

    def __init__(self, message: str, *, param: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass
class Scripted:
    """One scripted answer: a status, a JSON body, headers; `delay` seconds before answering."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


def rate_limited(retry_after: str | None = None) -> Scripted:
    """Stripe's 429: a `rate_limit` error (Stripe sends no Retry-After; a test may add one)."""
    body = {
        "error": {
            "type": "invalid_request_error",
            "code": "rate_limit",
            "message": "Too many requests hit the API too quickly.",
        }
    }
    return Scripted(429, body, {"Retry-After": retry_after} if retry_after else {})


def server_error(status: int = 500) -> Scripted:
    return Scripted(status, {"error": {"type": "api_error", "message": "Something went wrong."}})


def redirect(location: str) -> Scripted:
    return Scripted(302, None, {"Location": location})


def slow(seconds: float) -> Scripted:
    """A normal answer, after `seconds`."""
    return Scripted(delay=seconds)


def sample_events(
    count: int, *, start: int, step: int = 1, prefix: str = "cu"
) -> list[dict[str, Any]]:
    """`count` paid checkout sessions from the real sample, each with its own ids, `created`
    (start, start + step, …) and an rcsid in its metadata."""
    template = stripe_fixture("pay__checkout.session.completed.data.json")
    events = []
    for n in range(count):
        event = copy.deepcopy(template)
        event["id"] = f"evt_{prefix}_{n:06d}"
        event["created"] = start + n * step
        obj = event["data"]["object"]
        obj["id"] = f"cs_test_{prefix}_{n:06d}"
        obj["metadata"] = {"rcsid": f"rcs_{prefix}_{n}"}
        events.append(event)
    return events


class _StripeHandler(Handler):
    server: StripeAPI

    def do_GET(self) -> None:  # noqa: N802 — http.server's naming
        started = time.time()
        with self.server.lock:
            self.server.in_flight += 1
            self.server.max_in_flight = max(self.server.max_in_flight, self.server.in_flight)
            scripted = self.server.scripted.pop(0) if self.server.scripted else None
        try:
            status, body, headers = self._answer(scripted)
            delay = scripted.delay if scripted else self.server.delay
            if delay:
                time.sleep(delay)
            self.reply(status, body, {"Content-Type": "application/json", **headers})
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client was killed mid-request (a test's kill -9)
        finally:
            with self.server.lock:
                self.server.in_flight -= 1
                entry = self.record(b"")
                entry.update(at=started, ended=time.time(), status=status)
                self.server.requests.append(entry)

    def _answer(self, scripted: Scripted | None) -> tuple[int, bytes, dict[str, str]]:
        auth = self.headers.get("Authorization", "")
        if auth != f"Bearer {self.server.api_key}":
            # Stripe's message names a masked key; the stand-in names none.
            return _error(401, "Invalid API Key provided.")
        if scripted and scripted.status != 200:
            body = b"" if scripted.body is None else json.dumps(scripted.body).encode()
            return scripted.status, body, scripted.headers
        parts = urlsplit(self.path)
        query = parse_qsl(parts.query, keep_blank_values=True)
        if parts.path != EVENTS_PATH:
            return self._lookup(parts.path, query)
        try:
            page = self.server.page(query)
        except ValueError as exc:
            return _error(400, str(exc))
        return 200, json.dumps(page).encode(), {"Request-Id": "req_standin"}

    def _lookup(self, path: str, query: list[tuple[str, str]]) -> tuple[int, bytes, dict[str, str]]:
        """A checkout session, invoice payment or invoice look-up (a path other than events)."""
        server = self.server
        answer: dict[str, Any]
        try:
            if path == SESSIONS_PATH:
                answer = server.sessions_page(query)
            elif path == INVOICE_PAYMENTS_PATH:
                answer = server.invoice_payments_page(query)
            elif _invoice_id(path):
                answer = server.invoice(_invoice_id(path), query)
            else:
                return _error(404, f"Unrecognized request URL (GET: {path}).")
        except ParamError as exc:
            return _error(400, str(exc), code=exc.code, param=exc.param)
        except Missing as exc:
            return _error(404, str(exc), code="resource_missing", param=exc.param)
        return 200, json.dumps(answer).encode(), {"Request-Id": "req_standin"}


def _error(
    status: int, message: str, *, code: str | None = None, param: str | None = None
) -> tuple[int, bytes, dict[str, str]]:
    """Stripe's error body; `code` and `param` only when given (as Stripe leaves them out)."""
    error = {"type": "invalid_request_error", "code": code, "message": message, "param": param}
    body = {"error": {k: v for k, v in error.items() if v is not None}}
    return status, json.dumps(body).encode(), {}


class StripeAPI(StandInServer):
    """The stand-in: `events` (plain dicts) served newest first."""

    def __init__(self, api_key: str) -> None:
        super().__init__(_StripeHandler)
        self.api_key = api_key
        self.events: list[dict[str, Any]] = []
        self.delivered: set[str] = set()  # ids whose webhooks all succeeded
        self.scripted: list[Scripted] = []
        self.delay = 0.0  # seconds before every unscripted answer (a slow API)
        self.in_flight = 0
        self.max_in_flight = 0
        self.sessions: dict[str, dict[str, Any]] = {}  # checkout sessions by id
        self.invoices: dict[str, dict[str, Any]] = {}  # invoices by id

    def start(self) -> StripeAPI:
        super().start()
        return self

    def reset(self) -> None:
        with self.lock:
            self.events, self.delivered, self.scripted = [], set(), []
            self.delay = 0.0
            self.requests.clear()
            self.max_in_flight = 0
            self.sessions, self.invoices = {}, {}

    def add(self, events: Iterable[dict[str, Any]]) -> None:
        with self.lock:
            self.events.extend(events)
            self.events.sort(key=lambda e: (e["created"], e["id"]), reverse=True)

    def script(self, *answers: Scripted) -> None:
        with self.lock:
            self.scripted.extend(answers)

    def event_requests(self) -> list[dict[str, Any]]:
        with self.lock:
            return [r for r in self.requests if r["path"].startswith("/v1/events")]

    def add_sessions(self, sessions: Iterable[dict[str, Any]]) -> None:
        """Register checkout sessions (as Stripe sends them), by `id`."""
        with self.lock:
            self.sessions.update((s["id"], s) for s in sessions)

    def add_invoices(self, invoices: Iterable[dict[str, Any]]) -> None:
        """Register invoices (as Stripe sends them), by `id`."""
        with self.lock:
            self.invoices.update((i["id"], i) for i in invoices)

    def lookup_requests(self) -> list[dict[str, Any]]:
        """The recorded requests for anything but `/v1/events`."""
        with self.lock:
            return [r for r in self.requests if urlsplit(r["path"]).path != EVENTS_PATH]

    def sessions_page(self, query: list[tuple[str, str]]) -> dict[str, Any]:
        """`GET /v1/checkout/sessions?payment_intent=…` (or `subscription=…`): the registered
        sessions whose field holds that id; ParamError for a query Stripe would refuse."""
        limit, filters = 10, {}
        for key, value in query:
            if key == "limit":
                limit = _limit(value)
            elif key in ("payment_intent", "subscription"):
                filters[key] = _non_empty(key, value)
            else:
                raise _unknown(key)
        if len(filters) != 1:
            if filters:
                raise ParamError(
                    "You may only specify one of these parameters: payment_intent, subscription.",
                    code="parameters_exclusive",
                    param="subscription",
                )
            raise ParamError(
                "Missing required param: payment_intent or subscription (the stand-in lists "
                "sessions by one of them).",
                code="parameter_missing",
                param="payment_intent",
            )
        ((field_name, wanted),) = filters.items()
        with self.lock:
            chosen = [s for s in self.sessions.values() if _id_of(s.get(field_name)) == wanted]
        chosen.sort(key=lambda s: s.get("created") or 0, reverse=True)
        return _list(SESSIONS_PATH, chosen, limit)

    def invoice_payments_page(self, query: list[tuple[str, str]]) -> dict[str, Any]:
        """`GET /v1/invoice_payments?payment[type]=payment_intent&payment[payment_intent]=…`
        (or `invoice=…`): the invoice payments of the registered invoices that match."""
        limit, params = 10, {}
        for key, value in query:
            if key == "limit":
                limit = _limit(value)
            elif key in ("invoice", "payment[type]", "payment[payment_intent]"):
                params[key] = value
            else:
                raise _unknown(key)
        payment_type = params.get("payment[type]")
        intent = params.get("payment[payment_intent]")
        invoice = params.get("invoice")
        if invoice is not None:
            _non_empty("invoice", invoice)
        if payment_type is None and intent is not None:
            raise _missing("payment[type]")
        if payment_type is not None:
            if payment_type == "":
                raise ParamError(
                    "Invalid payment[type]: must be one of payment_intent or payment_record",
                    code="parameter_invalid_string_empty",
                    param="payment[type]",
                )
            if payment_type != "payment_intent":
                raise ParamError(
                    f"Invalid payment[type]: {payment_type!r}; the stand-in serves only "
                    "payment_intent (Stripe: one of payment_intent or payment_record)",
                    code="parameter_invalid_string",
                    param="payment[type]",
                )
            if intent is None:
                raise _missing("payment[payment_intent]")
        if intent is None and invoice is None:
            raise _missing("payment[payment_intent]")
        if intent is not None:
            _non_empty("payment[payment_intent]", intent)
        with self.lock:
            invoices = [self.invoices[invoice]] if invoice in self.invoices else []
            if invoice is None:
                invoices = list(self.invoices.values())
        chosen = [
            p
            for inv in invoices
            for p in _invoice_payments(inv)
            if intent is None or p["payment"]["payment_intent"] == intent
        ]
        return _list(INVOICE_PAYMENTS_PATH, chosen, limit)

    def invoice(self, invoice_id: str, query: list[tuple[str, str]]) -> dict[str, Any]:
        """`GET /v1/invoices/<id>`: the registered invoice, as registered (`expand[]` is
        accepted and changes nothing); Missing for an unknown id."""
        for key, _value in query:
            if not _EXPAND.fullmatch(key):
                raise _unknown(key)
        with self.lock:
            found = self.invoices.get(invoice_id)
        if found is None:
            raise Missing(f"No such invoice: '{invoice_id}'", param="id")
        return found

    def page(self, query: list[tuple[str, str]]) -> dict[str, Any]:
        """One page of the list, per the query; ValueError for a query Stripe would refuse."""
        limit, types, created = 10, set(), []
        cursor_after = cursor_before = success = event_type = None
        for key, value in query:
            if key == "limit":
                if not value.isdigit() or not 1 <= int(value) <= MAX_LIMIT:
                    raise ValueError("Invalid integer: limit must be between 1 and 100")
                limit = int(value)
            elif match := _CREATED.fullmatch(key):
                if not value.isdigit():
                    raise ValueError(f"Invalid integer: {key}")
                created.append((match.group(1) or "eq", int(value)))
            elif _TYPES.fullmatch(key):
                types.add(value)
            elif key == "type":
                event_type = value
            elif key == "starting_after":
                cursor_after = value
            elif key == "ending_before":
                cursor_before = value
            elif key == "delivery_success":
                if value not in ("true", "false"):
                    raise ValueError("Invalid boolean: delivery_success")
                success = value == "true"
            else:
                raise ValueError(f"Received unknown parameter: {key}")
        with self.lock:
            chosen = [
                e
                for e in self.events
                if _created_matches(e["created"], created)
                and (not types or e["type"] in types)
                and (event_type is None or e["type"] == event_type)
                and (success is None or (e["id"] in self.delivered) == success)
            ]
        ids = [e["id"] for e in chosen]
        if cursor_after is not None:
            start = _position(ids, cursor_after) + 1
            data, has_more = chosen[start : start + limit], len(chosen) > start + limit
        elif cursor_before is not None:
            end = _position(ids, cursor_before)
            data, has_more = chosen[max(0, end - limit) : end], end - limit > 0
        else:
            data, has_more = chosen[:limit], len(chosen) > limit
        return {"object": "list", "url": "/v1/events", "has_more": has_more, "data": data}


def _list(url: str, data: list[dict[str, Any]], limit: int) -> dict[str, Any]:
    """A Stripe list object of the first `limit` of `data`."""
    return {"object": "list", "url": url, "has_more": len(data) > limit, "data": data[:limit]}


def _limit(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= MAX_LIMIT:
        raise ParamError(
            "Invalid integer: limit must be between 1 and 100",
            code="parameter_invalid_integer",
            param="limit",
        )
    return int(value)


def _non_empty(key: str, value: str) -> str:
    """`value`, unless empty (Stripe reads an empty value as an attempt to unset `key`)."""
    if value == "":
        raise ParamError(
            f"You passed an empty string for '{key}'. We assume empty values are an attempt to "
            f"unset a parameter; however '{key}' cannot be unset. You should remove '{key}' "
            "from your request or supply a non-empty value.",
            code="parameter_invalid_empty",
            param=key,
        )
    return value


def _unknown(key: str) -> ParamError:
    return ParamError(f"Received unknown parameter: {key}", code="parameter_unknown", param=key)


def _missing(key: str) -> ParamError:
    return ParamError(f"Missing required param: {key}.", code="parameter_missing", param=key)


def _id_of(value: Any) -> Any:
    """The id a field holds, whether the id itself or the expanded object."""
    return value.get("id") if isinstance(value, dict) else value


def _invoice_payments(invoice: dict[str, Any]) -> list[dict[str, Any]]:
    """The `invoice_payment` objects of a registered invoice paid by payment intents: from its
    `payments.data[]` (basil), or else from its top-level `payment_intent` (before basil)."""
    invoice_id = invoice["id"]
    payments = invoice.get("payments")
    entries = payments.get("data") if isinstance(payments, dict) else None
    found = []
    for n, entry in enumerate(entries if isinstance(entries, list) else []):
        payment = entry.get("payment") if isinstance(entry, dict) else None
        intent = _id_of(payment.get("payment_intent")) if isinstance(payment, dict) else None
        if isinstance(intent, str):
            found.append(
                _invoice_payment(
                    entry.get("id") or f"inpay_{_stem(invoice_id)}_{n}",
                    invoice,
                    intent,
                    amount_paid=entry.get("amount_paid", invoice.get("amount_paid")),
                    currency=entry.get("currency", invoice.get("currency")),
                    status=entry.get("status", "paid"),
                )
            )
    intent = _id_of(invoice.get("payment_intent"))
    if not found and isinstance(intent, str):
        found.append(
            _invoice_payment(
                f"inpay_{_stem(invoice_id)}",
                invoice,
                intent,
                amount_paid=invoice.get("amount_paid"),
                currency=invoice.get("currency"),
                status="paid",
            )
        )
    return found


def _invoice_payment(
    payment_id: str,
    invoice: dict[str, Any],
    intent: str,
    *,
    amount_paid: Any,
    currency: Any,
    status: Any,
) -> dict[str, Any]:
    return {
        "id": payment_id,
        "object": "invoice_payment",
        "invoice": invoice["id"],
        "amount_paid": amount_paid,
        "currency": currency,
        "status": status,
        "payment": {"type": "payment_intent", "payment_intent": intent},
    }


def _invoice_id(path: str) -> str:
    """The id `/v1/invoices/<id>` names; "" for any other path."""
    rest = path.removeprefix(INVOICES_PREFIX) if path.startswith(INVOICES_PREFIX) else ""
    return "" if "/" in rest else unquote(rest)


def _stem(invoice_id: str) -> str:
    return invoice_id.removeprefix("in_")


def _position(ids: list[str], cursor: str) -> int:
    try:
        return ids.index(cursor)
    except ValueError:
        raise ValueError(f"No such event: '{cursor}'") from None


def _created_matches(created: int, bounds: list[tuple[str, int]]) -> bool:
    checks = {
        "eq": created.__eq__,
        "gte": created.__ge__,
        "gt": created.__gt__,
        "lte": created.__le__,
        "lt": created.__lt__,
    }
    return all(checks[op](value) for op, value in bounds)
