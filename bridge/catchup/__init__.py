"""Catch-up: read a provider's own event history and record what never arrived as a webhook.

Events go through the webhook path's mapping and the same ledger intake, so an event already
recorded (by its webhook or an earlier run) is a duplicate and nothing is delivered twice.
"""
