"""Path patterns of ``paths`` and ``excludes``: shell globs with ``**``.

``*``, ``?`` and ``[...]`` match within one path component; ``**`` as a whole
component matches zero or more components. Matching is done against image
paths, and expansion walks a :class:`~microcontainer_tool.sources.sysroot.SysRoot`
from the pattern's literal prefix only, never following symlinked directories
during a ``**`` walk (so link loops cannot hang it).
"""

from __future__ import annotations

import fnmatch
import re
import stat
from collections.abc import Iterator
from functools import lru_cache

from microcontainer_tool.sources.sysroot import SysRoot

_MAGIC = re.compile(r"[*?\[]")


def has_magic(pattern: str) -> bool:
    """Whether ``pattern`` contains glob characters."""
    return bool(_MAGIC.search(pattern))


@lru_cache(maxsize=1024)
def _component_regex(component: str) -> re.Pattern[str]:
    return re.compile(fnmatch.translate(component))


def matches(pattern: str, path: str) -> bool:
    """Whether image ``path`` matches ``pattern`` exactly (no prefix match)."""
    return _match(tuple(_split(pattern)), tuple(_split(path)))


def covers(pattern: str, path: str) -> bool:
    """Whether ``path`` matches ``pattern`` or lies below a path that does."""
    parts = _split(path)
    return any(_match(tuple(_split(pattern)), tuple(parts[:n])) for n in range(1, len(parts) + 1))


def _split(path: str) -> list[str]:
    return [p for p in path.split("/") if p not in ("", ".")]


@lru_cache(maxsize=65536)
def _match(pat: tuple[str, ...], parts: tuple[str, ...]) -> bool:
    if not pat:
        return not parts
    head, rest = pat[0], pat[1:]
    if head == "**":
        return any(_match(rest, parts[i:]) for i in range(len(parts) + 1))
    if not parts:
        return False
    if has_magic(head):
        if not _component_regex(head).match(parts[0]):
            return False
    elif head != parts[0]:
        return False
    return _match(rest, parts[1:])


def expand(root: SysRoot, pattern: str) -> list[str]:
    """Expand a pattern against a sysroot.

    Args:
        root: the sysroot.
        pattern: an absolute image path pattern.

    Returns:
        Sorted image paths (as named, symlinks not resolved) that exist and
        match. A pattern without glob characters yields itself if it exists.
    """
    if not has_magic(pattern):
        return [pattern] if root.resolve(pattern, follow_last=False) is not None else []
    return sorted(set(_walk(root, "/", tuple(_split(pattern)))))


def _walk(root: SysRoot, base: str, pat: tuple[str, ...]) -> Iterator[str]:
    if not pat:
        yield base
        return
    head, rest = pat[0], pat[1:]
    if head == "**":
        yield from _walk(root, base, rest)
        for _name, path, is_dir, is_link in _children(root, base):
            if is_dir and not is_link:
                yield from _walk(root, path, pat)
        return
    if not has_magic(head):
        path = _join(base, head)
        if root.resolve(path, follow_last=False) is not None:
            yield from _walk(root, path, rest)
        return
    regex = _component_regex(head)
    for name, path, _is_dir, _is_link in _children(root, base):
        if regex.match(name) and not (name.startswith(".") and not head.startswith(".")):
            yield from _walk(root, path, rest)


def _children(root: SysRoot, base: str) -> Iterator[tuple[str, str, bool, bool]]:
    resolved = root.resolve(base)
    if resolved is None or not stat.S_ISDIR(resolved.st.st_mode):
        return
    for name in root.listdir(resolved.path):
        path = _join(base, name)
        st = root.lstat(_join(resolved.path, name))
        if st is None:
            continue
        is_link = stat.S_ISLNK(st.st_mode)
        is_dir = stat.S_ISDIR(st.st_mode)
        yield name, path, is_dir, is_link


def _join(base: str, name: str) -> str:
    return base.rstrip("/") + "/" + name
