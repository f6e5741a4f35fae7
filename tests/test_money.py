"""Exact decimal strings to minor units, with Stripe's exponent per currency."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.money import (
    BadCurrency,
    InexactAmount,
    MalformedAmount,
    currency_exponent,
    minor_units,
)

ZERO_DECIMAL = "BIF CLP DJF GNF JPY KMF KRW MGA PYG RWF UGX VND VUV XAF XOF XPF".split()
THREE_DECIMAL = "BHD JOD KWD OMR TND".split()


@pytest.mark.parametrize("currency", ZERO_DECIMAL)
def test_zero_decimal_currencies_have_exponent_0(currency: str) -> None:
    assert currency_exponent(currency) == 0


@pytest.mark.parametrize("currency", THREE_DECIMAL)
def test_three_decimal_currencies_have_exponent_3(currency: str) -> None:
    assert currency_exponent(currency) == 3


@pytest.mark.parametrize("currency", ["USD", "EUR", "CAD", "GBP", "usd", "CHF", "XXX"])
def test_other_currencies_have_exponent_2(currency: str) -> None:
    assert currency_exponent(currency) == 2


def test_currency_case_does_not_matter() -> None:
    assert currency_exponent("jpy") == 0
    assert currency_exponent("Kwd") == 3


@pytest.mark.parametrize("currency", ["", "US", "USDD", "US1", "U D", "ÜSD", "１２３", "$$$"])
def test_a_currency_that_is_not_three_ascii_letters_is_bad(currency: str) -> None:
    with pytest.raises(BadCurrency):
        currency_exponent(currency)
    with pytest.raises(BadCurrency):
        minor_units("1.00", currency)


@pytest.mark.parametrize(
    ("amount", "currency", "expected"),
    [
        ("5.95", "USD", 595),
        ("500.00", "CAD", 50000),
        ("10", "USD", 1000),
        ("0.1", "EUR", 10),
        ("0.00", "USD", 0),
        ("-5.95", "USD", -595),
        ("-0.00", "USD", 0),
        ("+3.00", "EUR", 300),
        ("007.50", "USD", 750),
        (" 5.95\n", "USD", 595),
        ("500", "JPY", 500),
        ("500.00", "JPY", 500),
        ("1.234", "KWD", 1234),
        ("1.2", "KWD", 1200),
        ("1.230", "BHD", 1230),
        ("12345678901234567890123456789.99", "USD", 1234567890123456789012345678999),
    ],
)
def test_minor_units_is_exact(amount: str, currency: str, expected: int) -> None:
    assert minor_units(amount, currency) == expected


@pytest.mark.parametrize(
    ("amount", "currency"),
    [("1.005", "USD"), ("5.5", "JPY"), ("0.001", "EUR"), ("1.2345", "KWD"), ("-0.015", "USD")],
)
def test_a_value_finer_than_the_minor_unit_is_inexact(amount: str, currency: str) -> None:
    with pytest.raises(InexactAmount):
        minor_units(amount, currency)


@pytest.mark.parametrize(
    "amount",
    [
        "",
        "   ",
        "NaN",
        "nan",
        "sNaN",
        "Infinity",
        "-Infinity",
        "inf",
        "1e3",
        "1E+3",
        "5.95e0",
        "1,000.00",
        "1 000.00",
        "5,95",
        "$5.95",
        "5.95 USD",
        "0x10",
        "5.",
        ".5",
        "--5",
        "١٢٣",  # Arabic-Indic digits, which Decimal() itself would accept
        "1_000",
        "9" * 41,
    ],
)
def test_anything_but_a_plain_decimal_is_malformed(amount: str) -> None:
    with pytest.raises(MalformedAmount):
        minor_units(amount, "USD")
    assert issubclass(MalformedAmount, InexactAmount)
    assert issubclass(InexactAmount, ValueError)
    assert issubclass(BadCurrency, ValueError)


currencies = st.sampled_from(["USD", "EUR", *ZERO_DECIMAL, *THREE_DECIMAL])


@given(st.integers(min_value=-(10**20), max_value=10**20), currencies, st.data())
def test_any_decimal_within_the_exponent_converts_exactly(
    units: int, currency: str, data: st.DataObject
) -> None:
    exponent = currency_exponent(currency)
    places = data.draw(st.integers(min_value=0, max_value=exponent))
    value = Decimal(units).scaleb(-places)
    text = format(value, "f")
    result = minor_units(text, currency)
    assert isinstance(result, int)
    assert result == value.scaleb(exponent)
    assert Decimal(result) == value * 10**exponent


@given(st.integers(min_value=-(10**20), max_value=10**20), currencies, st.data())
def test_any_decimal_with_more_places_is_inexact(
    units: int, currency: str, data: st.DataObject
) -> None:
    exponent = currency_exponent(currency)
    extra = data.draw(st.integers(min_value=1, max_value=6))
    # A last digit 1-9 makes the value truly finer than the minor unit (not trailing zeros).
    last = data.draw(st.integers(min_value=1, max_value=9))
    value = Decimal(units * 10 + (last if units >= 0 else -last)).scaleb(-(exponent + extra))
    with pytest.raises(InexactAmount):
        minor_units(format(value, "f"), currency)


@given(st.integers(min_value=0, max_value=10**12), st.integers(min_value=1, max_value=4))
def test_trailing_zeros_never_make_a_value_inexact(units: int, zeros: int) -> None:
    assert minor_units(f"{units}.00" + "0" * zeros, "USD") == units * 100


@given(st.text(max_size=50), st.text(max_size=5))
def test_minor_units_raises_only_value_errors(amount: str, currency: str) -> None:
    try:
        result = minor_units(amount, currency)
    except (InexactAmount, BadCurrency):
        return
    assert isinstance(result, int)
