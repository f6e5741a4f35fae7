"""The web's gunicorn settings without the access log, to measure what that log costs:
`ack_throughput --gunicorn-args "-c python:bench.gunicorn_no_access"` (the last -c wins)."""

from bridge.web.gunicorn_conf import *  # noqa: F403 — the same settings, one changed

accesslog = None
