"""The web process's gunicorn worker: gevent, with a deadline on receiving each request.

A webhook route faces the internet. With gunicorn's sync workers, a client that sends its
headers or body a byte a second holds a whole worker process: six such clients stopped the web.
Here every connection is a greenlet (thousands fit in one process), and a request must arrive
whole within `REQUEST_WITHIN` seconds of the server starting to wait for it: slow headers are
dropped, a slow body is answered 408, and the connection is closed. The body is read into memory
(at most `BUFFER_LIMIT` bytes) before the app runs, so the app never waits on a client and the
deadline never interrupts work on Redis. Each connection carries one request.
"""

from __future__ import annotations

import io
import time
from typing import Any

import gevent
from gevent.local import local
from gunicorn import util
from gunicorn.http.body import Body
from gunicorn.workers.ggevent import GeventWorker

# A complete request (headers and body) within this many seconds, or the connection goes.
REQUEST_WITHIN = 10.0
# The largest body any route accepts (Stripe's 1 MiB) plus one byte, so the route can tell
# "exactly the limit" from "more" and answer 413 itself.
BUFFER_LIMIT = 1024 * 1024 + 1
TIMED_OUT = (
    b"HTTP/1.1 408 Request Timeout\r\n"
    b"Connection: close\r\n"
    b"Content-Type: application/json\r\n"
    b"Content-Length: 45\r\n"
    b"\r\n"
    b'{"error":"request not received within 10 s"}\n'
)


class _Received:
    """A body already read off the socket, served to the app as gunicorn's Body reads it."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def read(self, size: int) -> bytes:
        return self._data.read(size)


def _content_length(req: Any) -> int:
    """The request's Content-Length (gunicorn checked it is a number), or 0 without one."""
    for name, value in req.headers:
        if name == "CONTENT-LENGTH":
            return int(value)
    return 0


class DeadlineWorker(GeventWorker):  # type: ignore[misc]
    """gunicorn's gevent worker; each request must arrive whole within REQUEST_WITHIN s."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._clock = local()

    def timeout_ctx(self) -> gevent.Timeout:
        # gunicorn reads each request's headers under this; False: a timeout closes quietly.
        self._clock.started = time.monotonic()
        return gevent.Timeout(REQUEST_WITHIN, False)

    def handle_request(self, listener_name: Any, req: Any, sock: Any, addr: Any) -> Any:
        self._clock.unread = False
        try:
            if not self._receive_body(req, sock):
                raise StopIteration  # gunicorn's way to end the connection after a request
            return super().handle_request(listener_name, req, sock, addr)
        finally:
            if self._clock.unread:
                # A body left unread (a 413, or a 408): closed at once, the kernel would
                # answer the rest with a reset, which can destroy the answer before the client
                # reads it. Half-close, drain a little (at most 2 s, 64 KiB), then close.
                util.close_graceful(sock)

    def _receive_body(self, req: Any, sock: Any) -> bool:
        """Read the body within what is left of the deadline; False after answering 408."""
        if _content_length(req) >= BUFFER_LIMIT:
            # The route answers 413 without reading it; the rest is never read either.
            req.must_close = True
            self._clock.unread = True
            return True
        if req._expected_100_continue:
            sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            req._expected_100_continue = False
        left = REQUEST_WITHIN - (time.monotonic() - getattr(self._clock, "started", 0.0))
        try:
            with gevent.Timeout(max(left, 0.001)):
                data = req.body.read(BUFFER_LIMIT)
        except gevent.Timeout:
            self.log.info("request_timeout: body not received within %s s", REQUEST_WITHIN)
            sock.sendall(TIMED_OUT)
            self._clock.unread = True
            return False
        req.body = Body(_Received(data))
        self._clock.unread = len(data) >= BUFFER_LIMIT  # a longer chunked body
        # One request per connection, as gunicorn's sync workers did. Measured with keep-alive
        # (bench/NOTES.md): 16 kept-alive connections gave both the bridge and a bare Flask app
        # a p99 of 150-235 ms on 2 cores; closed, 16-54 ms. Webhook senders gain little from
        # keep-alive, and no idle connection then waits on a greenlet.
        req.must_close = True
        return True
