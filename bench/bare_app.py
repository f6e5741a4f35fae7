"""Figure 1's baseline: a bare Flask endpoint that reads the body and answers 200."""

from __future__ import annotations

from flask import Flask, request

app = Flask("bare")


@app.post("/webhooks/stripe")
def bare_webhook() -> tuple[str, int]:
    request.get_data()
    return "", 200


@app.get("/healthz")
def healthz() -> tuple[str, int]:
    return "ok", 200
