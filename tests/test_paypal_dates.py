"""PayPal's `payment_date` (`HH:MM:SS Mon DD, YYYY PST|PDT`) to aware UTC datetimes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.providers.paypal.dates import parse_payment_date
from bridge.providers.paypal.ipn import parse_ipn
from tests.fixtures import paypal_fixture

MONTHS = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()
OFFSETS = {"PST": -8, "PDT": -7}


def utc(year: int, month: int, day: int, hour: int, minute: int, second: int) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def test_a_winter_pst_date_is_eight_hours_behind_utc() -> None:
    assert parse_payment_date("23:04:06 Feb 02, 2009 PST") == utc(2009, 2, 3, 7, 4, 6)


def test_a_summer_pdt_date_is_seven_hours_behind_utc() -> None:
    assert parse_payment_date("03:06:57 Jun 27, 2014 PDT") == utc(2014, 6, 27, 10, 6, 57)


def test_the_suffix_is_trusted_even_out_of_season() -> None:
    # The IPN simulator fixture says PDT in February: the stated offset wins over the calendar.
    assert parse_payment_date("23:04:06 Feb 02, 2009 PDT") == utc(2009, 2, 3, 6, 4, 6)


def test_the_same_wall_clock_in_pst_is_one_hour_later_than_in_pdt() -> None:
    pst = parse_payment_date("12:00:00 Nov 01, 2020 PST")
    pdt = parse_payment_date("12:00:00 Nov 01, 2020 PDT")
    assert pst - pdt == timedelta(hours=1)


def test_boxbilling_refund_in_pdt_follows_its_payment_in_pst() -> None:
    payment = parse_ipn(paypal_fixture("boxbilling__subscr_payment_completed.txt"))
    refund = parse_ipn(paypal_fixture("boxbilling__refunded_subscr_payment.txt"))
    assert payment["payment_date"] == "11:24:34 Mar 08, 2012 PST"
    assert refund["payment_date"] == "17:42:05 Mar 13, 2012 PDT"  # after DST began on Mar 11
    assert parse_payment_date(payment["payment_date"]) == utc(2012, 3, 8, 19, 24, 34)
    assert parse_payment_date(refund["payment_date"]) == utc(2012, 3, 14, 0, 42, 5)


def test_the_result_is_aware_and_in_utc() -> None:
    moment = parse_payment_date("08:26:14 Mar 01, 2012 PST")
    assert moment.tzinfo is UTC
    assert moment == utc(2012, 3, 1, 16, 26, 14)


def test_crossing_into_a_new_year_in_utc() -> None:
    assert parse_payment_date("23:59:59 Dec 31, 2023 PST") == utc(2024, 1, 1, 7, 59, 59)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "08:26:14 Mar 01, 2012",
        "08:26:14 Mar 01, 2012 UTC",
        "08:26:14 Mar 01, 2012 EST",
        "08:26:14 Mar 01 2012 PST",
        "08:26 Mar 01, 2012 PST",
        "2012-03-01T08:26:14Z",
        "08:26:14 Foo 01, 2012 PST",
        "08:26:14 Feb 30, 2012 PST",
        "25:00:00 Mar 01, 2012 PST",
        "08:61:00 Mar 01, 2012 PST",
        "08:26:14 Mar 01, 0000 PST",
        "23:00:00 Dec 31, 9999 PST",  # is in year 10000 in UTC
        "08:26:14 Mar 01, 2012 PST extra",
        "０８:26:14 Mar 01, 2012 PST",
    ],
)
def test_anything_else_is_a_value_error(value: str) -> None:
    with pytest.raises(ValueError):
        parse_payment_date(value)


def format_payment_date(moment: datetime, zone: str) -> str:
    """`moment` written the way PayPal writes it, in the given zone."""
    local = moment.astimezone(timezone(timedelta(hours=OFFSETS[zone])))
    return (
        f"{local.hour:02d}:{local.minute:02d}:{local.second:02d}"
        f" {MONTHS[local.month - 1]} {local.day:02d}, {local.year:04d} {zone}"
    )


@given(
    st.datetimes(
        min_value=datetime(1000, 1, 1),
        max_value=datetime(9999, 12, 31, 7),
        timezones=st.just(UTC),
    ).map(lambda moment: moment.replace(microsecond=0)),
    st.sampled_from(["PST", "PDT"]),
)
def test_round_trip_through_paypals_format(moment: datetime, zone: str) -> None:
    assert parse_payment_date(format_payment_date(moment, zone)) == moment


@given(st.text(max_size=60))
def test_parse_payment_date_raises_only_value_error(value: str) -> None:
    try:
        parse_payment_date(value)
    except ValueError:
        pass
