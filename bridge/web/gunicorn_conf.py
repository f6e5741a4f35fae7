"""gunicorn settings for the web process (`gunicorn -c python:bridge.web.gunicorn_conf ...`)."""

from __future__ import annotations

from typing import Any

from gunicorn.glogging import Logger

from bridge.logs import json_formatter


class JsonLogger(Logger):
    """gunicorn's error and access logs as JSON lines, like every other refbridge log."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for log in (self.error_log, self.access_log):
            for handler in log.handlers:
                handler.setFormatter(json_formatter())


logger_class = JsonLogger
# gevent, with a deadline on each request: a slow client holds a greenlet, never a process.
worker_class = "bridge.web.server.DeadlineWorker"
# Off: each webhook logs a line of its own, and the access line cost ~5-10 % of the web's CPU
# per webhook (bench/NOTES.md). `--access-logfile -` turns it on (README).
accesslog = None
# Webhook requests do local work only; a request still running after this is stuck.
timeout = 30
graceful_timeout = 10
# Also the async worker's switch for its header deadline: with keepalive 0, gunicorn reads a
# request's headers with no time limit at all. Keep it above 0 (bridge/web/server.py closes
# each connection after its one request anyway).
keepalive = 5
# gunicorn 27's control socket lives in ~/.gunicorn, shared by every gunicorn of the user.
control_socket_disable = True


def on_starting(server: Any) -> None:
    """Check the configuration once in the master: a bad value stops gunicorn with one line."""
    from bridge.web.settings import web_settings_or_exit

    web_settings_or_exit()
