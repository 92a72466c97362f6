"""The host files an image takes, remembered across runs of a build system.

A build system (the SCons scanner) asks, for every image on every run, which
sysroot files it takes: the selected paths and their ELF closure. Resolving
that means assembling the image's tree, which costs tens of milliseconds per
image. The answer is kept in a small JSON record together with the ``lstat``
of every file in it, of every directory above them, and of the loader's
configuration and default directories in the sysroot; while all of those are
unchanged (and the caller's key: the spec and the project files' state) the
answer is reused without assembling anything. A file added to or removed from
any of those directories, or any change to an input or to ``ld.so.cache``,
changes a recorded ``lstat`` and the image is resolved again.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable

from microcontainer_tool.hostfs.atomic import write_atomic

SCHEMA = "microcontainer-inputs/1"
#: Paths in a sysroot whose change can change a closure without changing any of its files.
LOADER_PATHS = ("etc/ld.so.cache", "etc/ld.so.conf", "etc/ld.so.conf.d", "lib", "lib64", "usr/lib",
                "usr/lib64", "lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu",
                "lib/aarch64-linux-gnu", "usr/lib/aarch64-linux-gnu")


def remembered_inputs(record: str | None, key: str, compute: Callable[[], list[str]],
                      sysroot: Callable[[], str | None]) -> list[str]:
    """``compute()``'s answer, reused from ``record`` while nothing it depends on changed.

    Args:
        record: the JSON file keeping the answer (``None``: nothing is kept).
        key: what the answer depends on besides the files (spec, project files' state).
        compute: the host paths the image takes (run when the record does not hold).
        sysroot: the sysroot directory, whose loader files are watched too (asked only
            when ``compute`` runs; ``None``: none).

    Returns:
        The host paths.
    """
    if record is not None:
        kept = _load(record, key)
        if kept is not None:
            return kept
    paths = compute()
    if record is not None:
        root = sysroot()
        watched = _watched(paths, [os.path.join(root, p) for p in LOADER_PATHS] if root else [], root)
        data = {"schema": SCHEMA, "key": key, "paths": paths, "stats": {p: _stat(p) for p in watched}}
        try:
            os.makedirs(os.path.dirname(record), exist_ok=True)
            write_atomic(record, json.dumps(data, sort_keys=True).encode())
        except OSError:
            pass  # only a lost shortcut: the next run resolves again
    return paths


def _load(record: str, key: str) -> list[str] | None:
    """The kept answer, if the record is for ``key`` and every watched path is as recorded."""
    try:
        with open(record, "rb") as handle:
            data = json.loads(handle.read())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA or data.get("key") != key:
        return None
    stats, paths = data.get("stats"), data.get("paths")
    if not isinstance(stats, dict) or not isinstance(paths, list):
        return None
    for path, recorded in stats.items():
        if _stat(path) != recorded:
            return None
    return [str(p) for p in paths]


def _watched(paths: Iterable[str], extra: Iterable[str], root: str | None) -> list[str]:
    """The inputs, every directory above them up to ``root`` (inclusive; the file system's
    root when ``None``), and ``extra``."""
    top = os.path.realpath(root) if root else "/"
    watched = set(extra)
    for path in paths:
        watched.add(path)
        parent = os.path.dirname(path)
        while parent not in watched:
            watched.add(parent)
            if parent == top or parent == os.path.dirname(parent):
                break
            parent = os.path.dirname(parent)
    return sorted(watched)


def _stat(path: str) -> list[int] | None:
    """What identifies a path's state: ``[mtime_ns, size, inode, mode]``, or ``None`` when absent."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return [st.st_mtime_ns, st.st_size, st.st_ino, st.st_mode]
