"""A small threaded HTTP/1.1 server base for the stand-ins (keep-alive, no Nagle delay)."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Without this, keep-alive + Nagle caps a stand-in near 25 requests/s (bench/NOTES.md).
    disable_nagle_algorithm = True
    server: StandInServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 — stdlib signature
        pass

    def read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def record(self, body: bytes) -> dict[str, Any]:
        """What the stand-in keeps of a request, for the tests to inspect."""
        return {
            "method": self.command,
            "path": self.path,
            "headers": dict(self.headers),
            "body": body,
            "at": time.time(),
        }

    def do_GET(self) -> None:  # noqa: N802 — http.server's naming
        """What a login page behind a redirect would do: answer 200. Recorded, so that a test
        sees any request that should never have been sent."""
        with self.server.lock:
            self.server.requests.append(self.record(b""))
        self.reply(200, b"<html>Please log in</html>", {"Content-Type": "text/html"})

    def reply(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class StandInServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # A real API's listen backlog, not socketserver's 5: a worker opens up to 16 connections at
    # once per pool process, and a dropped connection attempt waits for TCP's retransmission
    # (hundreds of ms) where the service itself would have answered at once.
    request_queue_size = 128

    def __init__(self, handler: type[Handler]) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self.lock = threading.Lock()
        self.requests: list[dict[str, Any]] = []
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def start(self) -> StandInServer:
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
