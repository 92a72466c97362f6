"""Entries added to a spec file in place, the user's comments, key order and formatting kept.

``microcontainer trace --write`` appends what a traced program needs to the
spec's ``paths:`` and ``libs:`` lists. The file is edited with ruamel.yaml's
round-trip mode, so comments, key order, quoting and the other keys' layout
stay as the user wrote them; only the lists that grow change:

- an entry already in the list (same text) is not added again: a second run
  that proposes the same paths changes nothing;
- a block list (``- item`` lines) grows at its end, before the comment lines
  that follow it, with the indentation of the file's first block list (a file
  whose block lists are indented differently gets them all indented alike);
- a flow list (``paths: [a, b]``) becomes a block list, one entry a line (a
  reviewable diff); its comment, if any, stays;
- a missing key is appended at the end of the spec.

The result is parsed as a spec again before it replaces the file (atomically).
"""

from __future__ import annotations

import copy
import io
import os
import re
from collections.abc import Mapping, Sequence

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError

from microcontainer_tool.errors import OutputError, SpecError
from microcontainer_tool.hostfs.atomic import write_atomic
from microcontainer_tool.spec.imagespec import parse_spec

_KEY_LINE_RE = re.compile(r"^( *)[^\s#-][^:#]*:\s*(#.*)?$")
_ITEM_LINE_RE = re.compile(r"^( *)- ")


def _block_indent(text: str) -> tuple[int, int]:
    """``(sequence, offset)`` for ruamel: how the file indents its block lists (default ``- `` two in)."""
    lines = text.splitlines()
    for number, line in enumerate(lines[:-1]):
        key = _KEY_LINE_RE.match(line)
        item = _ITEM_LINE_RE.match(lines[number + 1])
        if key and item:
            offset = len(item.group(1)) - len(key.group(1))
            if offset >= 0:
                return offset + 2, offset
    return 4, 2


def _yaml(text: str) -> YAML:
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = 4096  # never re-wrap a long line
    sequence, offset = _block_indent(text)
    yaml.indent(mapping=2, sequence=sequence, offset=offset)
    return yaml


def _move_trailing_comment(seq: CommentedSeq, last: int) -> None:
    """Keep comment lines that followed the list's old last item after its new last item.

    ruamel.yaml attaches the comment lines (and blank lines) after a list to its
    last item, with the item's own end-of-line comment: the end-of-line comment
    stays, the lines below move down.
    """
    slot = seq.ca.items.get(last)
    if last < 0 or not slot or slot[0] is None:
        return
    token = slot[0]
    value: str = token.value
    if value.startswith("\n"):  # no end-of-line comment: all of it moves
        below, token.value = value, "\n"
    else:
        end = value.find("\n")
        if end < 0 or not value[end + 1:]:
            return
        below, token.value = "\n" + value[end + 1:], value[:end + 1]
    moved = copy.copy(token)
    moved.value = below
    seq.ca.items[len(seq) - 1] = [moved, None, None, None]


def add_entries(text: str, additions: Mapping[str, Sequence[str]], source: str = "<spec>") -> tuple[str, int]:
    """``text`` with ``additions`` (key -> entries) appended to its lists.

    Returns:
        The new text and how many entries were added (0: ``text`` unchanged).

    Raises:
        SpecError: the spec is not a YAML mapping, or a key to extend is not a list.
    """
    yaml = _yaml(text)
    try:
        data = yaml.load(text)
    except YAMLError as error:
        raise SpecError(f"{source}: invalid YAML: {error}") from None
    if not isinstance(data, CommentedMap):
        raise SpecError(f"{source}: the spec must be a mapping of keys")
    added = 0
    for key, entries in additions.items():
        current = data.get(key)
        if current is None:
            current = CommentedSeq()
            current.fa.set_block_style()
        elif not isinstance(current, list):
            raise SpecError(f"{source}: {key!r} is not a list; cannot add entries to it")
        new = [entry for entry in dict.fromkeys(entries) if entry not in current]
        if not new:
            continue
        if isinstance(current, CommentedSeq) and current.fa.flow_style():
            current.fa.set_block_style()
        last = len(current) - 1
        current.extend(new)
        if isinstance(current, CommentedSeq):
            _move_trailing_comment(current, last)
        if key not in data:
            data[key] = current
        added += len(new)
    if not added:
        return text, 0
    out = io.StringIO()
    yaml.dump(data, out)
    return out.getvalue(), added


def add_to_spec_file(path: str, additions: Mapping[str, Sequence[str]]) -> int:
    """Add ``additions`` to the spec file at ``path`` (see the module docstring); write it atomically.

    Returns:
        How many entries were added (0: the file is left alone).

    Raises:
        SpecError: the file cannot be read, is not a spec, or would not be one any more.
        OutputError: it cannot be replaced.
    """
    path = os.path.realpath(path)  # a symlinked spec: edit its target
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as error:
        raise SpecError(f"{path}: cannot read: {error}") from None
    new, added = add_entries(text, additions, path)
    if not added:
        return 0
    parse_spec(new, path, os.path.dirname(os.path.abspath(path)))
    mode = os.stat(path).st_mode & 0o7777
    try:
        write_atomic(path, new.encode("utf-8"), mode)
    except OSError as error:
        raise OutputError(f"{path}: cannot write: {error.strerror or error}") from None
    return added
