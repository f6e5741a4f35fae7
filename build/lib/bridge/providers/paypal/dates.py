"""PayPal's `payment_date` format (`HH:MM:SS Mon DD, YYYY PST|PDT`) to aware UTC datetimes."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

_MONTHS = {
    name: number
    for number, name in enumerate(
        "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split(), start=1
    )
}
# PayPal states the offset in the suffix; trusting it (rather than recomputing US DST from
# the date) keeps messages such as the IPN simulator's "Feb 02, 2009 PDT" at their stated instant.
_ZONES = {
    "PST": timezone(timedelta(hours=-8), "PST"),
    "PDT": timezone(timedelta(hours=-7), "PDT"),
}
_PAYMENT_DATE = re.compile(
    r"(?P<hour>[0-9]{1,2}):(?P<minute>[0-9]{2}):(?P<second>[0-9]{2})"
    r" (?P<month>[A-Za-z]{3}) (?P<day>[0-9]{1,2}), (?P<year>[0-9]{4}) (?P<zone>PST|PDT)"
)


def parse_payment_date(value: str) -> datetime:
    """PayPal's `payment_date` as an aware UTC datetime; ValueError when it is not one."""
    match = _PAYMENT_DATE.fullmatch(value.strip())
    if match is None:
        raise ValueError(f"not a PayPal payment_date: {value[:40]!r}")
    month = _MONTHS.get(match["month"].title())
    if month is None:
        raise ValueError(f"unknown month in payment_date: {match['month']!r}")
    try:
        local = datetime(
            int(match["year"]),
            month,
            int(match["day"]),
            int(match["hour"]),
            int(match["minute"]),
            int(match["second"]),
            tzinfo=_ZONES[match["zone"]],
        )
        return local.astimezone(UTC)
    except OverflowError as error:  # late on Dec 31, 9999: UTC is in year 10000
        raise ValueError(f"payment_date out of range: {value[:40]!r}") from error
