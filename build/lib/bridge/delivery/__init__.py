"""Delivery: recording what arrived, the ledger in Redis, attempts and their outcomes."""
