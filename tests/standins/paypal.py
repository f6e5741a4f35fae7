"""A PayPal IPN verifier stand-in: VERIFIED only for a byte-exact echo of a message it sent.

PayPal documents that the listener must post back `cmd=_notify-validate&` followed by the
complete, unaltered message; anything else (re-encoded, reordered, another charset) is INVALID.
"""

from __future__ import annotations

from tests.standins.http import Handler, StandInServer

PREFIX = b"cmd=_notify-validate&"


class PayPalHandler(Handler):
    server: PayPalVerifier

    def do_POST(self) -> None:  # noqa: N802 — http.server's naming
        body = self.read_body()
        server = self.server
        with server.lock:
            server.requests.append(self.record(body))
            failure = server.failures.pop(0) if server.failures else None
        if failure is not None and 300 <= failure < 400:
            moved = {"Location": server.location} if server.location else {}
            return self.reply(failure, b"<html>Moved</html>", moved)
        if failure is not None:
            return self.reply(failure, b"<html>Service Unavailable</html>")
        ctype = self.headers.get("Content-Type") or ""
        sent = body.startswith(PREFIX) and body[len(PREFIX) :] in server.sent
        if ctype.startswith("application/x-www-form-urlencoded") and sent:
            return self.reply(200, b"VERIFIED", {"Content-Type": "text/html; charset=UTF-8"})
        self.reply(200, b"INVALID", {"Content-Type": "text/html; charset=UTF-8"})


class PayPalVerifier(StandInServer):
    def __init__(self) -> None:
        super().__init__(PayPalHandler)
        self.sent: set[bytes] = set()
        self.failures: list[int] = []  # a 3xx among them answers with `location`
        self.location = "/cgi-bin/webscr-moved"

    @property
    def verify_url(self) -> str:
        return f"{self.url}/cgi-bin/webscr"

    def send(self, raw: bytes) -> bytes:
        """Remember `raw` as a message PayPal really sent; returns it."""
        with self.lock:
            self.sent.add(raw)
        return raw

    def fail_next(self, *statuses: int) -> None:
        with self.lock:
            self.failures.extend(statuses)

    def reset(self) -> None:
        with self.lock:
            self.sent.clear()
            self.failures.clear()
            self.requests.clear()
            self.location = "/cgi-bin/webscr-moved"
