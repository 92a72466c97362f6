"""jsontext: JSON from outside, bounded in size and nesting before the parser sees it."""

from __future__ import annotations

import json

import pytest

from microcontainer_tool import jsontext


@pytest.mark.parametrize(("text", "depth"), [
    (b"1", 0), (b"[]", 1), (b'{"a": [[1], {}]}', 3),
    (b'{"a": "[[[[{{{{"}', 1),                  # brackets inside strings do not count
    (b'["\\"[[[", ["\\\\"], "]]]"]', 2),        # nor after escaped quotes and backslashes
    (b"[" * 300 + b"]" * 300, 300),
])
def test_nesting_depth(text: bytes, depth: int) -> None:
    assert jsontext.nesting_depth(text) == depth


def test_deep_json_is_refused_before_parsing() -> None:
    with pytest.raises(RecursionError):
        json.loads(b"[" * 200_000 + b"]" * 200_000)  # what the bound prevents
    with pytest.raises(jsontext.JsonLimitError, match="nested deeper than 256 levels"):
        jsontext.loads(b"[" * 200_000 + b"]" * 200_000)
    assert jsontext.loads(b"[" * 256 + b"]" * 256) is not None


def test_size_limit_and_plain_values() -> None:
    with pytest.raises(jsontext.JsonLimitError, match="larger than 10 bytes"):
        jsontext.loads(b'{"a": "0123456789"}', limit=10)
    assert jsontext.loads('{"a": ["é"]}') == {"a": ["é"]}
    with pytest.raises(ValueError):
        jsontext.loads(b"{nope")
