"""refbridge: Stripe and PayPal payments to RefCampaign conversions."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Flask


def create_app(*args: Any, **kwargs: Any) -> Flask:
    """The web app factory (gunicorn: `bridge:create_app()`)."""
    from bridge.web.app import create_app as factory

    return factory(*args, **kwargs)
