"""JSON text from outside the tool, bounded in size and nesting before it is parsed.

Python's ``json`` parser recurses once per nested array or object: a document
of 200,000 ``[`` raises :class:`RecursionError` (a traceback, not a message).
Every reader of JSON the tool did not just write itself (image indexes,
manifests and configs, registry replies, provenance records, lock files,
credential helpers' output, cache records) goes through :func:`loads`, which
refuses text larger than a limit or nested deeper than :data:`MAX_DEPTH`
*before* parsing, with a :class:`ValueError` like the parser's own: callers
keep their one ``except ValueError`` and their one-line message.
"""

from __future__ import annotations

import json
import re
from itertools import accumulate, count
from operator import sub
from typing import Any

MAX_DEPTH = 256
"""The deepest nesting of arrays and objects accepted (real manifests nest fewer than 10 levels)."""

MAX_SIZE = 64 << 20
"""The largest JSON text accepted unless the caller sets a smaller limit."""

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_OTHER = bytes(b for b in range(256) if b not in b"[]{}")
# An opening bracket becomes 2, a closing one 0: after k brackets the running
# sum is 2 * opened, so the depth there is that sum minus k.
_WEIGHTS = bytes.maketrans(b"[{]}", b"\x02\x02\x00\x00")


class JsonLimitError(ValueError):
    """JSON text that is too large or nested too deeply to be parsed safely."""


def nesting_depth(data: bytes) -> int:
    """The deepest nesting of arrays and objects in ``data``, brackets inside strings not counted.

    The scan runs at C speed (a regular expression drops the strings, the rest
    are byte translations and iterator sums); unbalanced or malformed text gets
    some number, and the parser rejects it afterwards.
    """
    brackets = _STRING.sub(b"", data).translate(_WEIGHTS, _OTHER)
    if not brackets:
        return 0
    return max(map(sub, accumulate(brackets), count(1)))


def loads(data: bytes | str, limit: int = MAX_SIZE, max_depth: int = MAX_DEPTH) -> Any:
    """Parse JSON text after checking its size and nesting depth.

    Args:
        data: the JSON text (bytes in any encoding ``json`` detects, or a string).
        limit: the largest size in bytes accepted.
        max_depth: the deepest nesting of arrays and objects accepted.

    Returns:
        The parsed value.

    Raises:
        JsonLimitError: (a ``ValueError``) larger than ``limit`` or nested deeper than ``max_depth``.
        ValueError: not valid JSON (``json.JSONDecodeError``, ``UnicodeDecodeError``).
    """
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if len(raw) > limit:
        raise JsonLimitError(f"larger than {limit} bytes")
    if nesting_depth(raw) > max_depth:
        raise JsonLimitError(f"nested deeper than {max_depth} levels")
    return json.loads(data)


def load_file(path: str, limit: int = MAX_SIZE, max_depth: int = MAX_DEPTH) -> Any:
    """Read and parse the JSON file at ``path`` with :func:`loads`' bounds.

    Raises:
        OSError: the file cannot be read.
        ValueError: see :func:`loads`.
    """
    with open(path, "rb") as handle:
        data = handle.read(limit + 1)
    return loads(data, limit, max_depth)
