"""The IPN charsets honoured: PayPal's documented names only, each decoded in linear time."""

from __future__ import annotations

import codecs
import random
import time
from collections.abc import Callable

import pytest

from bridge.providers.paypal.charsets import CODECS, DEFAULT_CODEC, ipn_codec

# PayPal's list, spelled as PayPal spells it.
DOCUMENTED = {
    "windows-1250": "cp1250",
    "windows-1251": "cp1251",
    "windows-1252": "cp1252",
    "windows-1253": "cp1253",
    "windows-1254": "cp1254",
    "windows-1255": "cp1255",
    "windows-1256": "cp1256",
    "windows-1257": "cp1257",
    "windows-1258": "cp1258",
    "ISO-8859-1": "latin_1",
    "ISO-8859-2": "iso8859_2",
    "ISO-8859-5": "iso8859_5",
    "ISO-8859-9": "iso8859_9",
    "ISO-8859-13": "iso8859_13",
    "ISO-8859-15": "iso8859_15",
    "UTF-7": "utf_7",
    "UTF-8": "utf_8",
    "UTF-16": "utf_16",
    "UTF-16BE": "utf_16_be",
    "UTF-16LE": "utf_16_le",
    "UTF16_PlatformEndian": "utf_16",
    "UTF16_OppositeEndian": "utf_16",
    "UTF-32": "utf_32",
    "UTF-32BE": "utf_32_be",
    "UTF-32LE": "utf_32_le",
    "UTF32_PlatformEndian": "utf_32",
    "US-ASCII": "ascii",
    "Big5": "big5",
    "EUC-JP": "euc_jp",
    "EUC-KR": "euc_kr",
    "GB2312": "gb2312",
    "gbk": "gbk",
    "HZ-GB-2312": "hz",
    "ibm-862": "cp862",
    "ISO-2022-JP": "iso2022_jp",
    "ISO-2022-KR": "iso2022_kr",
    "KOI8-R": "koi8_r",
    "Shift_JIS": "shift_jis",
}


@pytest.mark.parametrize(("charset", "codec"), DOCUMENTED.items())
def test_documented_charsets_map_to_their_codec(charset: str, codec: str) -> None:
    assert codecs.lookup(ipn_codec(charset)).name == codecs.lookup(codec).name


@pytest.mark.parametrize(
    ("charset", "codec", "text"),
    [
        ("utf-8", "utf_8", "Zürich €"),
        (" UTF-8 ", "utf_8", "Zürich €"),
        ("\tKoi8-r\n", "koi8_r", "Москва"),
        ("shift_jis", "shift_jis", "東京"),
        ("WINDOWS-1250", "cp1250", "Łódź"),
        ("iso-8859-15", "iso8859_15", "€ œ"),
    ],
)
def test_names_are_read_without_regard_to_case_or_surrounding_blanks(
    charset: str, codec: str, text: str
) -> None:
    assert codecs.lookup(ipn_codec(charset)).name == codecs.lookup(codec).name
    # Read as windows-1252 (or any other codec), these bytes come out as other text.
    assert text.encode(codec).decode(ipn_codec(charset), "replace") == text


@pytest.mark.parametrize(
    "charset",
    [
        "punycode",  # quadratic in CPython
        "idna",
        "base64",
        "rot13",
        "unicode_escape",
        "raw_unicode_escape",
        "zlib",
        "utf8",  # an alias Python knows, not a name PayPal uses
        "latin1",
        "EUC-TW",  # documented, but Python has no codec for these two
        "ISO-2022-CN",
        "ISO-8859-12",  # there is none
        "",
        "x" * 300,
    ],
)
def test_any_other_name_is_windows_1252(charset: str) -> None:
    assert ipn_codec(charset) == DEFAULT_CODEC == "cp1252"


def test_every_codec_exists() -> None:
    for codec in {*CODECS.values(), DEFAULT_CODEC}:
        codecs.lookup(codec)


# Linear time: what an attacker can make a codec do with a whole body's worth of bytes.

SMALL, BIG = 8 * 1024, 64 * 1024
# 8 times the bytes: linear is about 8 times the time, quadratic about 64.
LINEAR_BOUND = 24


def adversarial(size: int) -> dict[str, bytes]:
    """Inputs that make decoders take their slow paths: errors, escapes, shifts, long runs."""
    rng = random.Random(size)
    patterns = {
        "random": rng.randbytes(size),
        "0xff": b"\xff",
        "0x80 0x00": b"\x80\x00",
        "lead bytes": b"\x8e",
        "utf-7 shifts": b"+",
        "utf-7 open shift": b"+" + b"A" * (size - 1),
        "utf-7 short shifts": b"+AAA-",
        "utf-7 surrogate": b"+2AA-",
        "iso-2022 escapes": b"\x1b$B",
        "iso-2022-kr shifts": b"\x1b$)C\x0e",
        "hz shifts": b"~{",
        "hz open/close": b"~{~}",
        "punycode digits": b"-" + b"9" * (size - 1),
        "utf-16 surrogates": b"\x00\xd8",
        "utf-32 high": b"\xff\xff\xff\x7f",
    }
    return {name: (p * (size // len(p) + 1))[:size] for name, p in patterns.items()}


def seconds(call: Callable[[], object], repeat: int = 2) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - started)
    return best


def growth(codec: str, small: bytes, big: bytes, tries: int = 3) -> tuple[float, float]:
    """(time for BIG bytes, how much longer than for SMALL) for one input of one codec.

    A ratio that looks superlinear is measured again (up to `tries` times) and the lowest
    kept: other processes on a loaded machine inflate one measurement, never all of them.
    """
    best = (float("inf"), float("inf"))
    for _ in range(tries):
        t_small = seconds(lambda: small.decode(codec, "replace"))
        t_big = seconds(lambda: big.decode(codec, "replace"))
        # Below a tenth of a millisecond a ratio is mostly timer noise.
        best = min(best, (t_big / max(t_small, 1e-4), t_big))
        if best[0] < LINEAR_BOUND:
            break
    return best[1], best[0]


def worst_growth(codec: str) -> tuple[float, float, str]:
    small, big = adversarial(SMALL), adversarial(BIG)
    results = [(*growth(codec, small[name], big[name]), name) for name in big]
    return max(results, key=lambda r: r[1])


@pytest.mark.alone  # timed: run with nothing else running (the `alone` marker)
@pytest.mark.parametrize("codec", sorted({*CODECS.values(), DEFAULT_CODEC}))
def test_every_honoured_codec_is_linear_on_adversarial_input(codec: str) -> None:
    t_big, ratio, name = worst_growth(codec)
    assert ratio < LINEAR_BOUND, f"{codec} on {name!r}: {ratio:.1f}x for 8x the bytes"
    # Measured: 40 ms at most (UTF-7 on undecodable bytes); generous for a loaded machine.
    assert t_big < 1.0, f"{codec} on {name!r}: {t_big:.2f}s for 64 KiB"


@pytest.mark.alone
def test_the_measure_tells_a_quadratic_codec() -> None:
    """The check above can fail: punycode, which is refused, fails it."""
    small, big = adversarial(SMALL)["punycode digits"], adversarial(BIG)["punycode digits"]
    _, ratio = growth("punycode", small, big)
    assert ratio > LINEAR_BOUND
