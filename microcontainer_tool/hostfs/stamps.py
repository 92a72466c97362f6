"""Signatures of files kept beside them, valid while the file is the very one they were computed for.

A build system asks on every run whether each large output changed; reading
and hashing them all makes a no-op run cost as much as the outputs weigh. A
stamp keeps a file's signature with its ``(inode, size, mtime in ns)``; while
the file still has exactly those, the signature is reused. Outputs written by
a rename (a new inode) or copied always get a new stamp key; a file modified
in place within one nanosecond tick at the same size is the one case a stamp
cannot see, and the tool's outputs are never modified in place.
"""

from __future__ import annotations

import json
import os

from microcontainer_tool.hostfs.atomic import write_atomic


def _key(path: str) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_ino, st.st_size, st.st_mtime_ns]


def kept_signature(stamp: str, path: str) -> str | None:
    """The signature kept in ``stamp`` for ``path``, if ``path`` is still the file it was kept for."""
    key = _key(path)
    if key is None:
        return None
    try:
        with open(stamp, "rb") as handle:
            data = json.loads(handle.read())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("stat") != key or not isinstance(data.get("signature"), str):
        return None
    return str(data["signature"])


def keep_signature(stamp: str, path: str, signature: str) -> None:
    """Keep ``signature`` for ``path`` as it is now in ``stamp`` (quietly nothing if it cannot be written)."""
    key = _key(path)
    if key is None:
        return
    try:
        os.makedirs(os.path.dirname(stamp), exist_ok=True)
        write_atomic(stamp, json.dumps({"stat": key, "signature": signature}).encode())
    except OSError:
        pass  # only a lost shortcut: the next run computes the signature again
