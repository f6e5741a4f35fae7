"""A Stripe API stand-in serving `GET /v1/events` the way Stripe's API reference documents it.

Bearer auth (401 with Stripe's JSON error otherwise), newest first, cursor pagination
(`starting_after`, `ending_before`, `has_more`, `limit` 1-100), `created[gte|gt|lte|lt]` (or a
plain `created`), `type`, `types[]` (the SDK sends `types[0]`, `types[1]`…), `delivery_success`.
Tests script answers for the next requests (429, 5xx, a 3xx, a slow answer) with `script()`, and
read every request with its arrival and end time (to check the rate limit and overlap).
"""

from __future__ import annotations

import copy
import json
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from tests.fixtures import stripe_fixture
from tests.standins.http import Handler, StandInServer

MAX_LIMIT = 100
_CREATED = re.compile(r"created(?:\[(gte|gt|lte|lt)\])?")
_TYPES = re.compile(r"types\[\d*\]")


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
        if parts.path != "/v1/events":
            return _error(404, f"Unrecognized request URL (GET: {parts.path}).")
        try:
            page = self.server.page(parse_qsl(parts.query, keep_blank_values=True))
        except ValueError as exc:
            return _error(400, str(exc))
        return 200, json.dumps(page).encode(), {"Request-Id": "req_standin"}


def _error(status: int, message: str) -> tuple[int, bytes, dict[str, str]]:
    body = {"error": {"type": "invalid_request_error", "message": message}}
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

    def start(self) -> StripeAPI:
        super().start()
        return self

    def reset(self) -> None:
        with self.lock:
            self.events, self.delivered, self.scripted = [], set(), []
            self.delay = 0.0
            self.requests.clear()
            self.max_in_flight = 0

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
