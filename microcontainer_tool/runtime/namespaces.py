"""Linux namespaces and detached mounts, for preparing and entering containers.

The raw calls the standard library lacks (``setns``, ``open_tree``,
``move_mount``, ``mount_setattr``, ``umount2``) through ``ctypes``; running a
function in a forked child (:func:`fork_call`) and joining a process's
namespaces there (:func:`enter_namespaces`); the user namespace mapping
(:class:`IdMap`: container ids 0-65535 to ``/etc/subuid``'s ``root`` range, else
100000) and **idmapped mounts** with that mapping (:func:`clone_for_container`,
:func:`stage_mount`).
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from microcontainer_tool.errors import RunError

CONTAINER_IDS = 65536
"""How many uids/gids (0..65535) the user namespace maps."""

DEFAULT_HOST_ID = 100000
"""First host id of the mapping when ``/etc/subuid`` has no ``root`` entry."""


# --------------------------------------------------------------------------- linux calls

_CLONE_NEWNS = 0x00020000
_CLONE_NEWUTS = 0x04000000
_CLONE_NEWIPC = 0x08000000
_CLONE_NEWUSER = 0x10000000
_CLONE_NEWPID = 0x20000000
_CLONE_NEWNET = 0x40000000
_SYS_OPEN_TREE = 428  # the same number on every architecture but alpha (syscalls >= 424)
_SYS_MOVE_MOUNT = 429
_SYS_MOUNT_SETATTR = 442
_AT_FDCWD = -100
_AT_EMPTY_PATH = 0x1000
_AT_RECURSIVE = 0x8000
_OPEN_TREE_CLONE = 1
_MOVE_MOUNT_F_EMPTY_PATH = 0x4
_MOUNT_ATTR_RDONLY = 0x1
_MOUNT_ATTR_NOSUID = 0x2
_MOUNT_ATTR_NODEV = 0x4
_MOUNT_ATTR_IDMAP = 0x100000
_MNT_DETACH = 0x2

NAMESPACES = {"user": _CLONE_NEWUSER, "mnt": _CLONE_NEWNS, "uts": _CLONE_NEWUTS,
              "ipc": _CLONE_NEWIPC, "net": _CLONE_NEWNET, "pid": _CLONE_NEWPID}
"""``/proc/PID/ns`` names and their ``CLONE_NEW*`` flags, user namespace first."""


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


@functools.cache
def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc


def _check(result: int, what: str) -> int:
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")
    return result


def setns(fd: int, nstype: int) -> None:
    """``setns(2)``: join the namespace open as ``fd`` (single-threaded callers only)."""
    _check(_libc().setns(fd, nstype), "setns")


def clone_tree(path: str, *, readonly: bool = False, userns_fd: int | None = None) -> int:
    """Clone the mount tree at ``path`` into a detached mount (``open_tree(2)``).

    Args:
        path: a host directory.
        readonly: make the clone read-only (and nosuid, nodev).
        userns_fd: a user namespace whose mapping the clone is idmapped with.

    Returns:
        The detached mount's file descriptor (close-on-exec).

    Raises:
        OSError: the kernel refused (``EINVAL`` for a file system that cannot be idmapped).
    """
    libc = _libc()
    fd = _check(libc.syscall(_SYS_OPEN_TREE, _AT_FDCWD, os.fsencode(path),
                             _OPEN_TREE_CLONE | os.O_CLOEXEC | _AT_RECURSIVE), f"open_tree {path}")
    attrs = _MOUNT_ATTR_NOSUID | _MOUNT_ATTR_NODEV | (_MOUNT_ATTR_RDONLY if readonly else 0)
    try:
        if userns_fd is not None:
            attr = _MountAttr(_MOUNT_ATTR_IDMAP, 0, 0, userns_fd)
            _check(libc.syscall(_SYS_MOUNT_SETATTR, fd, b"", _AT_EMPTY_PATH, ctypes.byref(attr),
                                ctypes.sizeof(attr)), f"idmap {path}")
        attr = _MountAttr(attrs, 0, 0, 0)
        _check(libc.syscall(_SYS_MOUNT_SETATTR, fd, b"", _AT_EMPTY_PATH | _AT_RECURSIVE,
                            ctypes.byref(attr), ctypes.sizeof(attr)), f"mount_setattr {path}")
    except BaseException:
        os.close(fd)
        raise
    return fd


def attach_tree(fd: int, target: str) -> None:
    """Attach a detached mount (from :func:`clone_tree`) at ``target`` (``move_mount(2)``)."""
    _check(_libc().syscall(_SYS_MOVE_MOUNT, fd, b"", _AT_FDCWD, os.fsencode(target),
                           _MOVE_MOUNT_F_EMPTY_PATH), f"move_mount {target}")


def detach_mount(target: str) -> bool:
    """Lazily unmount ``target``; ``False`` if nothing is mounted there."""
    if _libc().umount2(os.fsencode(target), _MNT_DETACH) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOENT):
        return False
    raise OSError(code, f"umount {target}: {os.strerror(code)}")


def fork_call(function: Callable[[], int | None], label: str) -> int:
    """Run ``function`` in a forked child; return its exit code, or raise its error as RunError."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            os.close(read_end)
            result = function()
            code = 0 if result is None else result
        except BaseException as error:  # noqa: BLE001 - reported to the parent
            try:
                os.write(write_end, str(error).encode("utf-8", "replace")[:4000])
            except OSError:
                pass
            code = 125
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as reader:
        message = reader.read().decode("utf-8", "replace")
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if message:
        raise RunError(f"{label}: {message}")
    return code


def _same_namespace(pid: int, kind: str) -> bool:
    return os.stat(f"/proc/{pid}/ns/{kind}").st_ino == os.stat(f"/proc/self/ns/{kind}").st_ino


def enter_namespaces(pid: int, kinds: Iterable[str]) -> None:
    """Join ``pid``'s namespaces of ``kinds`` (skipping ones we share) and its root and cwd.

    Meant for a forked, single-threaded child. The user namespace is joined first
    (as ``nsenter`` does), then uid/gid become 0 in it: a host root process keeps
    full capabilities inside the container's namespaces and nothing outside them.
    ``pid`` namespace membership applies to children forked afterwards.
    """
    wanted = [kind for kind in NAMESPACES if kind in set(kinds) and not _same_namespace(pid, kind)]
    fds = {kind: os.open(f"/proc/{pid}/ns/{kind}", os.O_RDONLY | os.O_CLOEXEC) for kind in wanted}
    root = os.open(f"/proc/{pid}/root", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    cwd = os.open(f"/proc/{pid}/cwd", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    for kind in wanted:
        setns(fds[kind], NAMESPACES[kind])
        os.close(fds[kind])
        if kind == "user":
            os.setgroups([])
            os.setresgid(0, 0, 0)
            os.setresuid(0, 0, 0)
    os.fchdir(root)
    os.chroot(".")
    os.close(root)
    os.fchdir(cwd)
    os.close(cwd)


# --------------------------------------------------------------------------- user namespaces


@dataclass(frozen=True)
class IdMap:
    """The user namespace mapping: container ids ``0..size-1`` -> host ``uid..``/``gid..``."""

    uid: int
    gid: int
    size: int


def _subid(path: str, user: str = "root") -> tuple[int, int] | None:
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                fields = line.strip().split(":")
                if len(fields) == 3 and fields[0] in (user, "0") and fields[1].isdigit() \
                        and fields[2].isdigit() and int(fields[1]) > 0 and int(fields[2]) > 0:
                    return int(fields[1]), int(fields[2])
    except OSError:
        pass
    return None


def host_id_map() -> IdMap:
    """The host range the container's ids map to: ``/etc/subuid``/``subgid`` ``root``, else 100000."""
    uids = _subid("/etc/subuid") or (DEFAULT_HOST_ID, CONTAINER_IDS)
    gids = _subid("/etc/subgid") or (DEFAULT_HOST_ID, CONTAINER_IDS)
    return IdMap(uids[0], gids[0], min(CONTAINER_IDS, uids[1], gids[1]))


@functools.cache
def userns_supported() -> bool:
    """Whether this process may create user namespaces (a trial ``unshare`` in a child)."""
    try:
        with open("/proc/sys/user/max_user_namespaces", encoding="ascii") as handle:
            if int(handle.read().strip() or "0") <= 0:
                return False
    except (OSError, ValueError):
        return False

    def trial() -> int:
        return 0 if _libc().unshare(_CLONE_NEWUSER) == 0 else 1

    try:
        return fork_call(trial, "user namespace trial") == 0
    except (OSError, RunError):
        return False


def _helper_userns(idmap: IdMap) -> int:
    """An fd of a fresh user namespace with ``idmap`` (for idmapped mounts)."""
    go_read, go_write = os.pipe()
    ready_read, ready_write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            os.close(go_write)
            os.close(ready_read)
            ok = _libc().unshare(_CLONE_NEWUSER) == 0
            os.write(ready_write, b"1" if ok else b"0")
            os.read(go_read, 1)
        finally:
            os._exit(0)
    os.close(go_read)
    os.close(ready_write)
    try:
        if os.read(ready_read, 1) != b"1":
            raise OSError(errno.EPERM, "cannot create a user namespace")
        with open(f"/proc/{pid}/uid_map", "w", encoding="ascii") as handle:
            handle.write(f"0 {idmap.uid} {idmap.size}\n")
        with open(f"/proc/{pid}/gid_map", "w", encoding="ascii") as handle:
            handle.write(f"0 {idmap.gid} {idmap.size}\n")
        return os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(go_write)
        os.close(ready_read)
        os.waitpid(pid, 0)


def clone_for_container(source: str, idmap: IdMap | None, *, readonly: bool) -> tuple[int, bool]:
    """A detached clone of ``source`` (nosuid, nodev), idmapped with ``idmap`` when possible.

    Returns:
        The detached mount's fd (the caller closes it) and whether it is idmapped
        (``False``: a plain bind, when ``idmap`` is None or the file system refuses).

    Raises:
        OSError: the clone itself failed.
    """
    if idmap is not None:
        userns = _helper_userns(idmap)
        try:
            return clone_tree(source, readonly=readonly, userns_fd=userns), True
        except OSError:
            pass
        finally:
            os.close(userns)
    return clone_tree(source, readonly=readonly), False


def stage_mount(source: str, target: str, idmap: IdMap | None, *, readonly: bool) -> bool:
    """Bind ``source`` at ``target`` (created), idmapped with ``idmap`` when possible.

    Returns:
        Whether the mount is idmapped (``False``: a plain bind).

    Raises:
        OSError: the bind itself failed.
    """
    os.makedirs(target, mode=0o755, exist_ok=True)
    fd, idmapped = clone_for_container(source, idmap, readonly=readonly)
    try:
        attach_tree(fd, target)
    finally:
        os.close(fd)
    return idmapped
