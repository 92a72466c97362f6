"""Who a container's program runs as: ``USER[:GROUP]`` resolved against the image's own files.

The image's ``/etc/passwd`` and ``/etc/group`` are read from its unpacked root
filesystem, never through a symlink.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from microcontainer_tool.errors import RunError

_MAX_DB_SIZE = 4 << 20


def _read_image_file(rootfs: str, path: str) -> str | None:
    """A small regular file of the image, never through a symlink; None if absent."""
    parts = path.strip("/").split("/")
    fd = os.open(rootfs, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts[:-1]:
            try:
                child = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except OSError:
                return None
            os.close(fd)
            fd = child
        try:
            file_fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK,
                              dir_fd=fd)
        except OSError:
            return None
        with os.fdopen(file_fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                return None
            data = handle.read(_MAX_DB_SIZE + 1)
    finally:
        os.close(fd)
    return data[:_MAX_DB_SIZE].decode("utf-8", "replace")


def _db(rootfs: str, path: str) -> list[list[str]]:
    text = _read_image_file(rootfs, path) or ""
    return [line.split(":") for line in text.splitlines() if line and not line.startswith("#")]


@dataclass(frozen=True)
class ProcessUser:
    """Who the program runs as (container ids)."""

    uid: int
    gid: int
    additional_gids: tuple[int, ...]
    home: str


def resolve_user(rootfs: str, spec: str) -> ProcessUser:
    """Resolve ``USER[:GROUP]`` (names or ids) against the image's ``/etc/passwd`` and ``/etc/group``.

    An empty spec means root. A numeric uid absent from ``/etc/passwd`` gets gid 0
    unless a group is given. Supplementary groups are the ``/etc/group`` entries
    listing the user's name.

    Raises:
        RunError: a name is not in the image's databases, or an id is out of range.
    """
    user_part, _, group_part = spec.partition(":")
    passwd = [entry for entry in _db(rootfs, "etc/passwd") if len(entry) >= 7]
    groups = [entry for entry in _db(rootfs, "etc/group") if len(entry) >= 4]
    entry: list[str] | None = None
    if user_part == "" or user_part.isdigit():
        uid = int(user_part or "0")
        entry = next((e for e in passwd if e[2] == str(uid)), None)
    else:
        entry = next((e for e in passwd if e[0] == user_part), None)
        if entry is None or not entry[2].isdigit():
            raise RunError(f"user {user_part!r} is not in the image's /etc/passwd")
        uid = int(entry[2])
    if group_part.isdigit():
        gid = int(group_part)
    elif group_part:
        found = next((g for g in groups if g[0] == group_part and g[2].isdigit()), None)
        if found is None:
            raise RunError(f"group {group_part!r} is not in the image's /etc/group")
        gid = int(found[2])
    elif entry is not None and entry[3].isdigit():
        gid = int(entry[3])
    else:
        gid = 0
    extra: list[int] = []
    if entry is not None:
        for group in groups:
            members = [m.strip() for m in group[3].split(",")]
            if entry[0] in members and group[2].isdigit() and int(group[2]) not in (gid, *extra):
                extra.append(int(group[2]))
    home = entry[5] if entry is not None and entry[5].startswith("/") else "/"
    return ProcessUser(uid, gid, tuple(extra), home)
