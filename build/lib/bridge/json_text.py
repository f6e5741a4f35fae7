"""Compact JSON text for payloads and log lines: orjson, with the stdlib for what orjson refuses."""

from __future__ import annotations

import json
from typing import Any

import orjson

_OPTIONS = orjson.OPT_NON_STR_KEYS


def dumps(value: Any, *, ascii_only: bool = False) -> str:
    """`value` as compact JSON; objects JSON has no type for are written as their str().

    `ascii_only`: non-ASCII text escaped (\u00e9), for lines written to a stream whose
    encoding may not be UTF-8 (standard output under a latin-1 or C locale).
    """
    try:
        # A quarter of json.dumps' cost: a payload and a log line per webhook (bench/NOTES.md).
        text = orjson.dumps(value, default=str, option=_OPTIONS).decode("utf-8")
    except TypeError:
        # orjson refuses integers beyond 64 bits (a hostile amount, say) and lone surrogates.
        text = None
    if text is None or (ascii_only and not text.isascii()):
        return json.dumps(value, default=str, separators=(",", ":"))
    return text
