"""Send refbridge a test ``checkout.session.completed`` event, signed the way Stripe signs it.

Run it from the checkout with the project's virtualenv, while ``refbridge run`` is running:

    .venv/bin/python examples/send_stripe_event.py        # evt_walkthrough_1, cs_test_walkthrough_1
    .venv/bin/python examples/send_stripe_event.py --n 2  # evt_walkthrough_2, cs_test_walkthrough_2

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
    return {
        "id": f"evt_walkthrough_{n}",
        "object": "event",
        "type": "checkout.session.completed",
        "created": int(time.time()),
        "livemode": False,
        "data": {"object": session},
    }


def main() -> None:
    """Sign one event, post it and print the answer."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1, help="number in the event and session ids")
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--secret", default=WALKTHROUGH_SECRET)
    args = parser.parse_args()
    body = json.dumps(checkout_event(args.n))
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
