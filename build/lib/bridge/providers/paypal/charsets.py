"""The character sets an IPN may declare, as PayPal documents them, and their Python codecs.

Only these names are honoured: CPython knows codecs that cost far more than the bytes they read
(its punycode decoder is quadratic) and codecs that are no text encoding at all (base64, rot13),
and an unverified message must not pick one. Every codec below decodes in time linear in its
input, with `errors="replace"` (tests/test_paypal_charsets.py measures it).
"""

from __future__ import annotations

DEFAULT_CODEC = "cp1252"  # PayPal's default charset, windows-1252

_WINDOWS = {f"windows-{page}": f"cp{page}" for page in range(1250, 1259)}
# There is no ISO-8859-12.
_ISO_8859 = {f"iso-8859-{part}": f"iso8859_{part}" for part in (*range(1, 12), 13, 14, 15)}
_UNICODE = {
    "utf-7": "utf_7",
    "utf-8": "utf_8",
    # PayPal's "platform" and "opposite" endian are PayPal's own platform's, which it does not
    # name: these use the byte order mark when there is one, else little-endian.
    "utf-16": "utf_16",
    "utf-16be": "utf_16_be",
    "utf-16le": "utf_16_le",
    "utf16_platformendian": "utf_16",
    "utf16_oppositeendian": "utf_16",
    "utf-32": "utf_32",
    "utf-32be": "utf_32_be",
    "utf-32le": "utf_32_le",
    "utf32_platformendian": "utf_32",
    "utf32_oppositeendian": "utf_32",
}
_OTHERS = {
    "us-ascii": "ascii",
    "big5": "big5",
    "euc-jp": "euc_jp",
    "euc-kr": "euc_kr",
    "gb2312": "gb2312",
    "gbk": "gbk",
    "hz-gb-2312": "hz",
    "ibm-862": "cp862",
    "iso-2022-jp": "iso2022_jp",
    "iso-2022-kr": "iso2022_kr",
    "koi8-r": "koi8_r",
    "shift_jis": "shift_jis",
    # EUC-TW and ISO-2022-CN are documented too, but Python has no codec for them: they are
    # read as windows-1252, which keeps the ASCII that ids, amounts and dates are written in.
}
CODECS: dict[str, str] = {**_WINDOWS, **_ISO_8859, **_UNICODE, **_OTHERS}


def ipn_codec(charset: str) -> str:
    """The Python codec for an IPN's `charset`: PayPal's documented names only, else cp1252."""
    return CODECS.get(charset.strip().lower(), DEFAULT_CODEC)
