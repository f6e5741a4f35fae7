"""Figure 6's second baseline: the docs' inline handler written lean.

The same work as `bench/inline_app.py` (verify, then post inline), as a careful merchant would
write it: Stripe's `WebhookSignature.verify_header` and `json.loads` instead of building a
`StripeObject` with `construct_event`, and one pooled `requests.Session` instead of a new
connection per postback.
"""

from __future__ import annotations

import json
import os

import requests
import stripe
from flask import Flask, request

REFCAMPAIGN_KEY = os.environ["REFCAMPAIGN_API_KEY"]
REFCAMPAIGN_URL = os.environ["REFCAMPAIGN_API_URL"] + "/api/v1/conversions/postback"
SECRET = os.environ["STRIPE_WEBHOOK_SECRET"].split(",")[0]

app = Flask("inline_lean")
session = requests.Session()
session.headers.update({"Authorization": f"Bearer {REFCAMPAIGN_KEY}"})


@app.post("/webhooks/stripe")
def inline_webhook() -> tuple[str, int]:
    body = request.get_data()
    stripe.WebhookSignature.verify_header(
        body.decode("utf-8"), request.headers["Stripe-Signature"], SECRET
    )
    event = json.loads(body)
    checkout = event["data"]["object"]
    if event["type"] == "checkout.session.completed":
        session.post(
            REFCAMPAIGN_URL,
            json={
                "externalId": checkout["id"],
                "conversionType": "SALE",
                "amount": checkout["amount_total"],
                "currency": checkout["currency"].upper(),
                "sessionId": checkout["metadata"]["rcsid"],
            },
            timeout=10,
        )
    return '{"received": true}', 200


@app.get("/healthz")
def healthz() -> tuple[str, int]:
    return "ok", 200
