"""The ``--write`` directory: made writable by the container's user, or refused with what to do.

A container's user (``10:10`` by default) writes to ``/write`` as a host id:
the same id through an idmapped mount or without a user namespace, the
mapped one (``100000 + N``) through a plain bind in a user namespace. A fresh
directory made by the invoking user (``mkdir out``, owned by root under
``sudo``) is not writable by that id. :func:`prepare_write_dir` then does what
podman's ``:U`` volume option does: an **empty** directory owned by the invoking
user (root, or ``$SUDO_UID``) is given to the container's host ids. Any other
directory is left as it is and, when its mode bits deny the container's user,
refused before the container starts, with the ``chown`` that fixes it.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping

from microcontainer_tool.errors import RunError

_ACL_XATTR = "system.posix_acl_access"


def invoking_uids(environ: Mapping[str, str]) -> set[int]:
    """The host uids that count as the invoking user: ours and ``$SUDO_UID``'s."""
    uids = {os.geteuid()}
    sudo = environ.get("SUDO_UID", "")
    if sudo.isdigit():
        uids.add(int(sudo))
    return uids


def _writable_by(info: os.stat_result, uid: int, gid: int) -> bool:
    """Whether the mode bits let ``uid:gid`` create entries in a directory (``-wx``)."""
    # the container has no capabilities (not even its root): only the mode bits count
    if info.st_uid == uid:
        return info.st_mode & 0o300 == 0o300
    if info.st_gid == gid:
        return info.st_mode & 0o030 == 0o030
    return info.st_mode & 0o003 == 0o003


def _has_acl(path: str) -> bool:
    try:
        return bool(os.getxattr(path, _ACL_XATTR))
    except OSError:
        return False


def prepare_write_dir(path: str, host_uid: int, host_gid: int, owners: set[int]) -> str | None:
    """Make ``path`` writable by the container's user, whose files are ``host_uid:host_gid`` on the host.

    Args:
        path: the ``--write`` directory (resolved, an existing directory).
        host_uid: the host uid the container's user writes as.
        host_gid: the host gid its primary group writes as.
        owners: uids whose empty directories may be given away (:func:`invoking_uids`).

    Returns:
        A note for the user when the directory was given to ``host_uid:host_gid``, else None.

    Raises:
        RunError: the directory cannot be given away and its mode bits do not
            let the container's user write to it (the message says what to run).
    """
    try:
        info = os.stat(path)
        empty = not os.listdir(path)
    except OSError as error:
        raise RunError(f"--write {path}: cannot read: {error.strerror or error}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise RunError(f"--write {path}: not a directory")
    if _writable_by(info, host_uid, host_gid) or _has_acl(path):
        return None
    if empty and info.st_uid in owners:
        try:
            os.chown(path, host_uid, host_gid)
        except OSError as error:
            raise RunError(f"--write {path}: cannot give it to the container's user"
                           f" ({host_uid}:{host_gid}): {error.strerror or error}") from None
        return f"--write {path}: empty, given to the container's user (host ids {host_uid}:{host_gid})"
    what = "not empty" if not empty else f"owned by uid {info.st_uid}"
    raise RunError(f"--write {path}: the container's user (host ids {host_uid}:{host_gid}) cannot write to it"
                   f" and it is {what}, so it is not given away; run `chown {host_uid}:{host_gid} {path}`"
                   f" (or `chmod 1777 {path}`), or pass an empty directory")
