"""A forward HTTP proxy stand-in: relays plain-http requests and records which ones it saw."""

from __future__ import annotations

import http.client
from urllib.parse import urlsplit

from tests.standins.http import Handler, StandInServer

HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "proxy-authorization", "te"}


class ProxyHandler(Handler):
    server: ForwardProxy

    def do_POST(self) -> None:  # noqa: N802 — http.server's naming
        self.relay(self.read_body())

    def do_GET(self) -> None:  # noqa: N802
        self.relay(b"")

    def relay(self, body: bytes) -> None:
        # A client talking to a proxy sends the absolute URL as the request target.
        with self.server.lock:
            self.server.requests.append(self.record(body))
        target = urlsplit(self.path)
        if target.scheme != "http" or not target.hostname:
            return self.reply(400, b"absolute http:// URL expected")
        upstream = http.client.HTTPConnection(target.hostname, target.port or 80, timeout=10)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        path = target.path + (f"?{target.query}" if target.query else "")
        try:
            upstream.request(self.command, path or "/", body=body, headers=headers)
            answer = upstream.getresponse()
            data = answer.read()
            kept = {k: v for k, v in answer.getheaders() if k.lower() not in HOP_BY_HOP}
        finally:
            upstream.close()
        for own in ("Content-Length", "Server", "Date"):  # reply() writes its own
            kept.pop(own, None)
        self.reply(answer.status, data, kept)


class ForwardProxy(StandInServer):
    def __init__(self) -> None:
        super().__init__(ProxyHandler)

    def seen(self) -> list[str]:
        """The absolute URLs of every request relayed, in order."""
        with self.lock:
            return [str(r["path"]) for r in self.requests]
