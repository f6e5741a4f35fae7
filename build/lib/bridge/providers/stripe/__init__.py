"""Stripe: webhook signatures and the event -> conversion mapping."""
