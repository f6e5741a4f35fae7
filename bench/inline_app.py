"""Figure 3's baseline: the inline handler RefCampaign's docs show (verify, then post inline)."""

from __future__ import annotations

import os

import requests
import stripe
from flask import Flask, request

REFCAMPAIGN_KEY = os.environ["REFCAMPAIGN_API_KEY"]
REFCAMPAIGN_URL = os.environ["REFCAMPAIGN_API_URL"] + "/api/v1/conversions/postback"
SECRET = os.environ["STRIPE_WEBHOOK_SECRET"].split(",")[0]

app = Flask("inline")


@app.post("/webhooks/stripe")
def inline_webhook() -> tuple[str, int]:
    event = stripe.Webhook.construct_event(
        request.get_data(), request.headers["Stripe-Signature"], SECRET
    )
    session = event.data.object
    if event.type == "checkout.session.completed":
        requests.post(
            REFCAMPAIGN_URL,
            headers={
                "Authorization": f"Bearer {REFCAMPAIGN_KEY}",
                "Content-Type": "application/json",
            },
            json={
                "externalId": session.id,
                "conversionType": "SALE",
                "amount": session.amount_total,
                "currency": session.currency.upper(),
                "sessionId": session.metadata["rcsid"],
            },
            timeout=10,
        )
    return '{"received": true}', 200


@app.get("/healthz")
def healthz() -> tuple[str, int]:
    return "ok", 200
