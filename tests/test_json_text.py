"""bridge.json_text writes what json.dumps would read back, whatever orjson refuses."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from bridge.json_text import dumps

values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@given(values)
def test_it_reads_back_as_the_same_value(value: object) -> None:
    assert json.loads(dumps(value)) == value


def test_what_orjson_refuses_still_gets_written() -> None:
    assert dumps({"amount": 10**25}) == '{"amount":10000000000000000000000000}'
    assert json.loads(dumps({"s": "\ud800"})) == {"s": "\ud800"}


def test_compact_with_str_for_other_types() -> None:
    assert dumps({"a": [1, "é"], 2: Path("/tmp/x")}) == '{"a":[1,"é"],"2":"/tmp/x"}'


def test_ascii_only_escapes_what_orjson_writes_raw() -> None:
    assert dumps({"a": "é"}, ascii_only=True) == '{"a":"\\u00e9"}'
    assert dumps({"a": "e"}, ascii_only=True) == '{"a":"e"}'
