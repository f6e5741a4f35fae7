"""Send refbridge a test ``checkout.session.completed`` event, signed the way Stripe signs it.

Run it from the checkout with the project's virtualenv, while ``refbridge run`` is running:

    .venv/bin/python examples/send_stripe_event.py        # evt_walkthrough_1, cs_test_walkthrough_1
    .venv/bin/python examples/send_stripe_event.py --n 2  # evt_walkthrough_2, cs_test_walkthrough_2
    .venv/bin/python examples/send_stripe_event.py --refund 1000  # a refund of sale 1: 10.00 EUR

The signature comes from the ``stripe`` SDK with the walkthrough's made-up secret, the
``STRIPE_WEBHOOK_SECRET`` of ``examples/walkthrough.env`` (``--secret`` to change). It prints
refbridge's answer: ``200 {"received":true}``.
"""

import argparse
import json
import time
from typing import Any

import requests
import stripe

WALKTHROUGH_SECRET = "whsec_walkthrough_not_a_real_secret"
DEFAULT_URL = "http://127.0.0.1:8000/webhooks/stripe"


def checkout_event(n: int) -> dict[str, Any]:
    """A paid Checkout Session event; ``n`` numbers the event and session ids."""
    session = {
        "id": f"cs_test_walkthrough_{n}",
        "object": "checkout.session",
        "mode": "payment",
        "payment_intent": f"pi_walkthrough_{n}",
        "payment_status": "paid",
        "amount_total": 4990,
        "currency": "eur",
        "customer": "cus_walkthrough",
        "customer_details": {"email": "Buyer@Example.com"},
        # What RefCampaign's server SDK getStripeMetadata() gives, beside the merchant's own.
        "metadata": {
            "refcampaign_session": "rcs_walkthrough_session",
            "plan": "pro",
            "s1": "spring",
        },
    }
    return _event(f"evt_walkthrough_{n}", "checkout.session.completed", session)


def refund_event(n: int, refunded: int) -> dict[str, Any]:
    """A ``charge.refunded`` event of sale ``n``'s charge, ``refunded`` cents refunded so far."""
    charge = {
        "id": f"ch_walkthrough_{n}",
        "object": "charge",
        "amount": 4990,
        "amount_refunded": refunded,
        "refunded": refunded == 4990,
        "currency": "eur",
        "payment_intent": f"pi_walkthrough_{n}",
    }
    return _event(f"evt_walkthrough_refund_{n}_{refunded}", "charge.refunded", charge)


def _event(event_id: str, event_type: str, obj: dict[str, Any]) -> dict[str, Any]:
    """A test-mode Stripe event of `obj`, created now."""
    return {
        "id": event_id,
        "object": "event",
        "type": event_type,
        "created": int(time.time()),
        "livemode": False,
        "data": {"object": obj},
    }


def main() -> None:
    """Sign one event, post it and print the answer."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1, help="number in the event and session ids")
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--secret", default=WALKTHROUGH_SECRET)
    parser.add_argument(
        "--refund", type=int, metavar="CENTS", help="send sale N's refund (total cents refunded)"
    )
    args = parser.parse_args()
    event = checkout_event(args.n) if args.refund is None else refund_event(args.n, args.refund)
    body = json.dumps(event)
    signature = stripe.WebhookSignature.generate_signature_header(body, args.secret)
    response = requests.post(
        args.url,
        data=body.encode(),
        headers={"Stripe-Signature": signature, "Content-Type": "application/json"},
        timeout=10,
    )
    print(response.status_code, response.text.strip())


if __name__ == "__main__":
    main()
