"""Running microcontainers: read-only root, no capabilities, a user namespace.

The manifesto's operations half. An image is unpacked *by us* (never by umoci)
into a cached, read-only root filesystem, and run with an OCI runtime (``runc``)
from a generated ``config.json``:

* :func:`make_bundle` extracts the image's layers with a safe tar extractor
  (whiteouts applied; ``..``, absolute names, hard links out of the tree,
  symlinks climbing out of the root and device nodes refused; setuid/setgid bits
  and ownership dropped) into ``CACHE/bundles/<manifest digest>/rootfs``, built
  in a temporary directory and renamed into place, so concurrent runs share it.
* :func:`runtime_config` writes the runtime spec: ``root.readonly``, every
  capability dropped, ``noNewPrivileges``, tmpfs ``/run`` ``/tmp`` ``/dev``,
  ``/write`` (rw) and ``/read`` (ro) volumes, own pid/ipc/uts/mount/network
  namespaces and, when the kernel allows it, a user namespace mapping container
  ids 0-65535 to an unprivileged host range (``/etc/subuid``'s ``root`` entry,
  else 100000).
* :func:`run`, :func:`ps`, :func:`stop`, :func:`rm` manage containers whose
  state lives in ``STATE/containers/<name>/`` (``runc --root STATE/runc``).

User namespaces and paths: runc 1.1 mounts the root filesystem and the volumes
*inside* the new user namespace, as the mapped root (host uid 100000), which
cannot search a ``0700`` directory such as ``/root`` (the default cache). So with
a user namespace every bind source (root filesystem, ``--write``, ``--read``,
toolbox) is first *staged*: cloned with ``open_tree(2)``, made an **idmapped
mount** (``mount_setattr(2)``, same mapping as the container) and attached under
the container's state directory, which must be searchable by others (the
default ``/run/microcontainer`` is). Through the idmapped mount a container
uid ``N`` reads and writes host files as uid ``N``, exactly as without a user
namespace (the image's ``0:0`` files appear owned by root; a ``--write``
directory must be writable by the container's user, e.g. mode ``0777`` or
owned by uid 10). If the file system cannot be idmapped the stage is a plain
bind: files then appear as ``nobody`` and a ``--write`` directory must be
writable by the host uid ``100000 + N``. Without user namespaces (disabled, or
the kernel refuses them) ids map 1:1 and nothing is staged; the container still
has no capabilities, ``noNewPrivileges`` and a read-only root.
"""

from __future__ import annotations

import ctypes
import datetime
import errno
import functools
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import tarfile
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from microcontainer_tool.errors import RunError
from microcontainer_tool.oci.imageview import ImageView, open_image
from microcontainer_tool.oci.layer import CHUNK_SIZE

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
"""``PATH`` given to a program whose image sets none."""

CONTAINER_IDS = 65536
"""How many uids/gids (0..65535) the user namespace maps."""

DEFAULT_HOST_ID = 100000
"""First host id of the mapping when ``/etc/subuid`` has no ``root`` entry."""

CRASHCART = "/dev/crashcart"
"""Where a debug toolbox appears inside a container."""

_CAPABILITY_SETS = ("bounding", "effective", "inheritable", "permitted", "ambient")
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_ENV_NAME_RE = re.compile(r"[^=\0]+")
_MAX_DB_SIZE = 4 << 20
_RECORD = "container.json"
_ALIVE = ("created", "running", "paused", "creating")

_MASKED_PATHS = [
    "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
]
_READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]


# --------------------------------------------------------------------------- defaults


def default_state_dir() -> str:
    """``/run/microcontainer`` for root, else ``$XDG_RUNTIME_DIR/microcontainer``."""
    if os.geteuid() != 0 and os.environ.get("XDG_RUNTIME_DIR"):
        return os.path.join(os.environ["XDG_RUNTIME_DIR"], "microcontainer")
    return "/run/microcontainer"


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


# --------------------------------------------------------------------------- safe extraction


def _split(name: str, label: str) -> list[str]:
    """A member name's components; refuses absolute names and ``..``."""
    if name.startswith("/"):
        raise RunError(f"{label}: absolute member name {name!r} refused")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise RunError(f"{label}: member name {name!r} climbs out with '..'")
    if any("\0" in part for part in parts):
        raise RunError(f"{label}: member name {name!r} holds a NUL byte")
    return parts


def _symlink_escapes(parts: list[str], target: str) -> bool:
    if target.startswith("/"):
        return False  # resolved against the container's root by the kernel
    depth = len(parts) - 1
    for part in target.split("/"):
        if part == "..":
            depth -= 1
            if depth < 0:
                return True
        elif part not in ("", "."):
            depth += 1
    return False


class _Extractor:
    """Lays layers onto a directory using only ``*at`` calls that never follow symlinks."""

    _DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

    def __init__(self, root: str, label: str) -> None:
        self.label = label
        self.root_fd = os.open(root, self._DIR_FLAGS)
        self.dir_times: dict[tuple[str, ...], int] = {}

    def close(self) -> None:
        os.close(self.root_fd)

    def _dir(self, parts: Sequence[str], create: bool) -> int | None:
        """An fd of directory ``parts`` (created with 0755 if ``create``), or None if missing."""
        fd = os.dup(self.root_fd)
        try:
            for index, part in enumerate(parts):
                try:
                    child = os.open(part, self._DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        os.close(fd)
                        return None
                    os.mkdir(part, 0o755, dir_fd=fd)
                    child = os.open(part, self._DIR_FLAGS, dir_fd=fd)
                except OSError as error:
                    if error.errno in (errno.ELOOP, errno.ENOTDIR):
                        where = "/" + "/".join(parts[: index + 1])
                        raise RunError(f"{self.label}: {where} is a symlink or file, but a member"
                                       " is stored beneath it") from None
                    raise
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _remove(self, dir_fd: int, name: str) -> None:
        try:
            info = os.lstat(name, dir_fd=dir_fd)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(info.st_mode):
            shutil.rmtree(name, dir_fd=dir_fd)
        else:
            os.unlink(name, dir_fd=dir_fd)

    def layer(self, tar: tarfile.TarFile) -> None:
        created: set[tuple[str, ...]] = set()
        for member in tar:
            self._member(tar, member, created)

    def _member(self, tar: tarfile.TarFile, member: tarfile.TarInfo,
                created: set[tuple[str, ...]]) -> None:
        parts = _split(member.name, self.label)
        if not parts:
            return  # the root directory itself
        base = parts[-1]
        if base.startswith(".wh."):
            self._whiteout(parts[:-1], base[4:], created)
            return
        path = "/" + "/".join(parts)
        if member.ischr() or member.isblk():
            raise RunError(f"{self.label}: device node {path} refused")
        if not (member.isreg() or member.isdir() or member.issym() or member.islnk() or member.isfifo()):
            raise RunError(f"{self.label}: {path} has unsupported tar type {member.type!r}")
        created.add(tuple(parts))
        mode = member.mode & 0o1777  # setuid and setgid dropped
        dir_fd = self._dir(parts[:-1], create=True)
        assert dir_fd is not None
        try:
            if member.isdir():
                try:
                    existing = os.lstat(base, dir_fd=dir_fd)
                except FileNotFoundError:
                    existing = None
                if existing is None or not stat.S_ISDIR(existing.st_mode):
                    self._remove(dir_fd, base)
                    os.mkdir(base, 0o700, dir_fd=dir_fd)
                os.chmod(base, mode, dir_fd=dir_fd, follow_symlinks=False)
                self.dir_times[tuple(parts)] = int(member.mtime)
                return
            if member.islnk():
                self._hardlink(dir_fd, base, path, member.linkname)
                return
            self._remove(dir_fd, base)
            if member.issym():
                if _symlink_escapes(parts, member.linkname):
                    raise RunError(f"{self.label}: symlink {path} -> {member.linkname} climbs out of"
                                   " the root")
                os.symlink(member.linkname, base, dir_fd=dir_fd)
            elif member.isfifo():
                os.mkfifo(base, mode, dir_fd=dir_fd)
            else:
                self._file(tar, member, dir_fd, base, mode)
            os.utime(base, (member.mtime, member.mtime), dir_fd=dir_fd, follow_symlinks=False)
        finally:
            os.close(dir_fd)

    def _file(self, tar: tarfile.TarFile, member: tarfile.TarInfo, dir_fd: int, base: str,
              mode: int) -> None:
        source = tar.extractfile(member)
        fd = os.open(base, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600, dir_fd=dir_fd)
        with os.fdopen(fd, "wb") as sink:
            if source is not None:
                shutil.copyfileobj(source, sink, CHUNK_SIZE)
            os.fchmod(sink.fileno(), mode)

    def _hardlink(self, dir_fd: int, base: str, path: str, linkname: str) -> None:
        target = _split(linkname, self.label)
        if not target:
            raise RunError(f"{self.label}: hard link {path} has an empty target")
        target_dir = self._dir(target[:-1], create=False)
        if target_dir is None:
            raise RunError(f"{self.label}: hard link {path} -> {linkname}: target missing")
        try:
            try:
                info = os.lstat(target[-1], dir_fd=target_dir)
            except FileNotFoundError:
                raise RunError(f"{self.label}: hard link {path} -> {linkname}: target missing") from None
            if not (stat.S_ISREG(info.st_mode) or stat.S_ISLNK(info.st_mode)):
                raise RunError(f"{self.label}: hard link {path} -> {linkname}: target is not a file")
            try:
                if os.lstat(base, dir_fd=dir_fd).st_ino == info.st_ino:
                    return
            except FileNotFoundError:
                pass
            self._remove(dir_fd, base)
            os.link(target[-1], base, src_dir_fd=target_dir, dst_dir_fd=dir_fd, follow_symlinks=False)
        finally:
            os.close(target_dir)

    def _whiteout(self, parent: list[str], name: str, created: set[tuple[str, ...]]) -> None:
        if name in ("", ".", ".."):
            raise RunError(f"{self.label}: malformed whiteout in /{'/'.join(parent)}")
        dir_fd = self._dir(parent, create=False)
        if dir_fd is None:
            return
        try:
            if name == ".wh..opq":  # opaque directory: hide everything lower layers put there
                for entry in os.listdir(dir_fd):
                    if tuple(parent) + (entry,) not in created:
                        self._remove(dir_fd, entry)
            elif tuple(parent) + (name,) not in created:
                self._remove(dir_fd, name)
        finally:
            os.close(dir_fd)

    def finish(self) -> None:
        """Restore directory mtimes (children changed them), deepest first."""
        for parts in sorted(self.dir_times, key=len, reverse=True):
            if not self.dir_times[parts]:
                continue
            dir_fd = self._dir(parts[:-1], create=False)
            if dir_fd is None:
                continue
            try:
                when = self.dir_times[parts]
                os.utime(parts[-1], (when, when), dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                pass
            finally:
                os.close(dir_fd)


def extract_image(view: ImageView, dest: str) -> None:
    """Unpack every layer of ``view`` onto the existing directory ``dest``, bottom first.

    Each blob is hashed while it is read and checked against its digest and
    ``diff_id``; the caller must discard ``dest`` when this raises. Whiteouts
    (``.wh.NAME``, ``.wh..wh..opq``) remove what lower layers put there. Files are
    created owned by the caller (root: ``0:0``) with the member's permission bits
    minus setuid/setgid; xattrs (file capabilities) are not restored.

    Raises:
        RunError: a member is unsafe (absolute, ``..``, a device, a hard link to
            nothing, a symlink climbing out of the root, a path through a symlink).
        LayoutError: a layer is corrupt.
        DigestMismatchError: a layer does not match its digest or ``diff_id``.
    """
    extractor = _Extractor(dest, view.path)
    try:
        for number in range(len(view.layers)):
            with view.layer_tar(number) as tar:
                extractor.layer(tar)
        extractor.finish()
    finally:
        extractor.close()


# --------------------------------------------------------------------------- bundles


@dataclass(frozen=True)
class Bundle:
    """An unpacked image, shared by every container of it.

    Attributes:
        image: the image reference as given.
        digest: its manifest digest.
        rootfs: the cached root filesystem (``CACHE/bundles/<digest>/rootfs``).
        image_config: the image's OCI configuration (with ``config``, ``rootfs``...).
    """

    image: str
    digest: str
    rootfs: str
    image_config: dict[str, Any]


def make_bundle(image: str, cache_dir: str, tag: str | None = None) -> Bundle:
    """Unpack ``image`` into the cache (once per manifest digest) and return it.

    Args:
        image: an OCI layout ``DIR[:TAG]``, an oci-archive, a smith ``.tar.gz`` or a
            docker-archive.
        cache_dir: the tool's cache; root filesystems go in ``cache_dir/bundles/``.
        tag: the image to pick when the layout holds several.

    Raises:
        LayoutError: the image cannot be read or a blob does not match its digest.
        RunError: a layer holds an unsafe member, or the cache is not writable.
    """
    with open_image(image, tag) as view:
        digest = view.manifest_digest
        bundles = os.path.join(os.path.abspath(cache_dir), "bundles")
        final = os.path.join(bundles, digest)
        rootfs = os.path.join(final, "rootfs")
        if not os.path.isdir(rootfs):
            try:
                os.makedirs(bundles, exist_ok=True)
                temp = tempfile.mkdtemp(prefix=".tmp-", dir=bundles)
            except OSError as error:
                raise RunError(f"{bundles}: cannot create: {error.strerror or error}") from None
            try:
                os.chmod(temp, 0o755)
                os.mkdir(os.path.join(temp, "rootfs"), 0o755)
                extract_image(view, os.path.join(temp, "rootfs"))
                with open(os.path.join(temp, "config.json"), "w", encoding="utf-8") as handle:
                    json.dump(view.config, handle, sort_keys=True)
                try:
                    os.rename(temp, final)
                except OSError as error:
                    if error.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                        raise
            except OSError as error:
                raise RunError(f"{image}: cannot unpack into {bundles}: {error.strerror or error}") from None
            finally:
                if os.path.exists(temp):
                    shutil.rmtree(temp, ignore_errors=True)
            if not os.path.isdir(rootfs):
                raise RunError(f"{final}: exists but holds no rootfs; remove it")
        return Bundle(image, digest, rootfs, view.config)


# --------------------------------------------------------------------------- config.json


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
            file_fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=fd)
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


def _merge_env(base: Iterable[str], extra: Iterable[str]) -> list[str]:
    merged: dict[str, str] = {}
    for item in base:
        name, _, value = item.partition("=")
        merged[name] = value
    for item in extra:
        name, sep, value = item.partition("=")
        if not _ENV_NAME_RE.fullmatch(name) or "\0" in value:
            raise RunError(f"bad environment entry {item!r}: expected NAME=VALUE")
        if sep:
            merged[name] = value
        elif name in os.environ:  # docker's `-e NAME`: take it from our environment
            merged[name] = os.environ[name]
    return [f"{name}={value}" for name, value in merged.items()]


def _bind(source: str, destination: str, readonly: bool) -> dict[str, Any]:
    options = ["rbind", "nosuid", "nodev", "ro" if readonly else "rw"]
    return {"destination": destination, "type": "bind", "source": source, "options": options}


def _volume(path: str | None, option: str) -> str | None:
    if path is None:
        return None
    if not os.path.isdir(path):
        raise RunError(f"{option} {path}: not a directory")
    return os.path.realpath(path)


def runtime_config(image_config: dict[str, Any], bundle: Bundle, *, args: Sequence[str] | None = None,
                   env: Iterable[str] = (), user: str | None = None, write_dir: str | None = None,
                   read_dir: str | None = None, net: str = "none", userns: bool = True,
                   extra_mounts: Iterable[dict[str, Any]] = ()) -> dict[str, Any]:
    """The OCI runtime spec (``config.json``) that runs ``bundle`` as a microcontainer.

    Args:
        image_config: the image's OCI configuration (its ``config`` member is read:
            ``Entrypoint``, ``Cmd``, ``Env``, ``User``, ``WorkingDir``).
        bundle: the unpacked image (its root filesystem is the root, read-only;
            user and group names are resolved against its ``/etc`` files).
        args: replace the image's ``Cmd`` (the ``Entrypoint`` stays).
        env: ``NAME=VALUE`` entries added to (or replacing) the image's ``Env``;
            a bare ``NAME`` is copied from this process's environment.
        user: ``USER[:GROUP]`` replacing the image's ``User``.
        write_dir: host directory bind-mounted read-write at ``/write``.
        read_dir: host directory bind-mounted read-only at ``/read``.
        net: ``"none"`` (own network namespace with only loopback) or ``"host"``.
        userns: use a user namespace mapping ids 0-65535 to :func:`host_id_map`,
            if the kernel allows it (:func:`userns_supported`); else ids map 1:1.
        extra_mounts: more OCI mount objects, appended last.

    Raises:
        RunError: no command, a bad option, or a user/group the image does not know.
    """
    inner = image_config.get("config") if isinstance(image_config.get("config"), dict) else {}
    assert isinstance(inner, dict)
    entrypoint = list(inner.get("Entrypoint") or [])
    command = list(args) if args is not None else list(inner.get("Cmd") or [])
    process_args = entrypoint + command
    if not process_args:
        raise RunError(f"{bundle.image}: the image has no Entrypoint or Cmd; give the command to run")
    if net not in ("none", "host"):
        raise RunError(f"network mode {net!r}: expected 'none' or 'host'")
    spec = user if user is not None else str(inner.get("User") or "")
    who = resolve_user(bundle.rootfs, spec)
    use_userns = userns and userns_supported()
    idmap = host_id_map() if use_userns else None
    limit = idmap.size if idmap is not None else 2**32 - 1
    for number in (who.uid, who.gid, *who.additional_gids):
        if number >= limit:
            raise RunError(f"user {spec!r}: id {number} is outside the container's id range 0-{limit - 1}")
    environment = _merge_env(inner.get("Env") or [], env)
    names = {item.partition("=")[0] for item in environment}
    if "PATH" not in names:
        environment.insert(0, f"PATH={DEFAULT_PATH}")
    if "HOME" not in names:
        environment.append(f"HOME={who.home}")
    cwd = str(inner.get("WorkingDir") or "/")
    if not cwd.startswith("/"):
        raise RunError(f"{bundle.image}: WorkingDir {cwd!r} is not absolute")
    process_user: dict[str, Any] = {"uid": who.uid, "gid": who.gid}
    if who.additional_gids:
        process_user["additionalGids"] = list(who.additional_gids)

    sys_mount: dict[str, Any] = {"destination": "/sys", "type": "sysfs", "source": "sysfs",
                                 "options": ["nosuid", "noexec", "nodev", "ro"]}
    if idmap is not None and net == "host":  # sysfs of a netns we do not own cannot be mounted
        sys_mount = {"destination": "/sys", "type": "bind", "source": "/sys",
                     "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]}
    mounts: list[dict[str, Any]] = [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": ["nosuid", "noexec", "nodev"]},
        sys_mount,
        {"destination": "/run", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "nodev", "mode=1777"]},
    ]
    write = _volume(write_dir, "--write")
    if write is not None:
        mounts.append(_bind(write, "/write", readonly=False))
    read = _volume(read_dir, "--read")
    if read is not None:
        mounts.append(_bind(read, "/read", readonly=True))
    mounts.extend(dict(mount) for mount in extra_mounts)

    namespaces = [{"type": kind} for kind in ("pid", "ipc", "uts", "mount")]
    if net == "none":
        namespaces.append({"type": "network"})
    linux: dict[str, Any] = {
        "namespaces": namespaces,
        "maskedPaths": list(_MASKED_PATHS),
        "readonlyPaths": list(_READONLY_PATHS),
        "resources": {"devices": [{"allow": False, "access": "rwm"}]},
    }
    if idmap is not None:
        namespaces.append({"type": "user"})
        linux["uidMappings"] = [{"containerID": 0, "hostID": idmap.uid, "size": idmap.size}]
        linux["gidMappings"] = [{"containerID": 0, "hostID": idmap.gid, "size": idmap.size}]
    return {
        "ociVersion": "1.0.2",
        "root": {"path": bundle.rootfs, "readonly": True},
        "hostname": "microcontainer",
        "process": {
            "terminal": False,
            "user": process_user,
            "args": process_args,
            "env": environment,
            "cwd": cwd,
            "capabilities": {name: [] for name in _CAPABILITY_SETS},
            "noNewPrivileges": True,
        },
        "mounts": mounts,
        "linux": linux,
    }


# --------------------------------------------------------------------------- containers


@dataclass(frozen=True)
class ContainerInfo:
    """One container of a state directory.

    Attributes:
        name: its name (the runtime's container id).
        image: the image it was started from.
        digest: the image's manifest digest.
        pid: the program's host pid while it runs, else None.
        status: the runtime's ``created``/``running``/``paused``/``stopped``,
            or ``unknown`` when the runtime no longer knows it.
        created: when it was started (UTC, ISO 8601).
    """

    name: str
    image: str
    digest: str
    pid: int | None
    status: str
    created: str


def _containers_dir(state_dir: str) -> str:
    return os.path.join(os.path.abspath(state_dir), "containers")


def _runtime_root(state_dir: str) -> str:
    return os.path.join(os.path.abspath(state_dir), "runc")


def _container_dir(state_dir: str, name: str) -> str:
    if not _NAME_RE.fullmatch(name):
        raise RunError(f"bad container name {name!r}: use letters, digits, '_', '.', '-' (at most 64)")
    return os.path.join(_containers_dir(state_dir), name)


def load_record(name: str, state_dir: str) -> dict[str, Any]:
    """The state record of container ``name`` (``container.json``).

    Raises:
        RunError: there is no such container.
    """
    path = os.path.join(_container_dir(state_dir, name), _RECORD)
    try:
        with open(path, encoding="utf-8") as handle:
            record = json.load(handle)
    except FileNotFoundError:
        raise RunError(f"no container named {name!r} in {state_dir}") from None
    except (OSError, ValueError) as error:
        raise RunError(f"{path}: unreadable container record: {error}") from None
    if not isinstance(record, dict):
        raise RunError(f"{path}: malformed container record")
    return record


def _write_record(directory: str, record: dict[str, Any]) -> None:
    temp = os.path.join(directory, _RECORD + ".tmp")
    with open(temp, "w", encoding="utf-8") as handle:
        json.dump(record, handle, indent=2, sort_keys=True)
    os.replace(temp, os.path.join(directory, _RECORD))


def _runtime_command(runtime: str, state_dir: str, *args: str) -> list[str]:
    return [runtime, "--root", _runtime_root(state_dir), *args]


def runtime_state(name: str, state_dir: str, runtime: str = "runc") -> dict[str, Any] | None:
    """``runc state NAME`` as a dict, or None if the runtime does not know the container."""
    proc = subprocess.run(_runtime_command(runtime, state_dir, "state", name), capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, check=False)
    if proc.returncode != 0:
        return None
    try:
        state = json.loads(proc.stdout)
    except ValueError:
        return None
    return state if isinstance(state, dict) else None


def _last_runtime_error(log_path: str) -> str:
    message = ""
    try:
        with open(log_path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if isinstance(entry, dict) and entry.get("level") in ("error", "fatal"):
                    message = str(entry.get("msg", ""))
    except OSError:
        pass
    message = re.sub(r"^\S+ (run|create|start) failed: ", "", " ".join(message.split()))
    return message or "the runtime failed (no message)"


def _searchable_by_others(path: str) -> str | None:
    """The first directory on ``path``'s way that others cannot search, or None."""
    current = "/"
    for part in os.path.realpath(path).strip("/").split("/"):
        info = os.stat(current)
        if not info.st_mode & stat.S_IXOTH:
            return current
        current = os.path.join(current, part)
    return None if os.stat(current).st_mode & stat.S_IXOTH else current


def _stage(config: dict[str, Any], directory: str, idmap: IdMap, staged: list[dict[str, Any]]) -> None:
    """Stage the root and every bind source under ``directory`` (see the module docstring).

    Each stage is appended to ``staged`` as soon as it is mounted, so a failure
    half-way leaves a list the caller can unmount.
    """
    root = config["root"]
    target = os.path.join(directory, "rootfs")
    idmapped = stage_mount(root["path"], target, idmap, readonly=True)
    staged.append({"source": root["path"], "target": target, "idmapped": idmapped})
    root["path"] = target
    for number, mount in enumerate(config["mounts"]):
        if mount.get("type") != "bind" or not str(mount.get("source", "")).startswith("/") \
                or mount.get("source") == "/sys":
            continue
        target = os.path.join(directory, "mnt", str(number))
        readonly = "ro" in mount.get("options", [])
        idmapped = stage_mount(mount["source"], target, idmap, readonly=readonly)
        staged.append({"source": mount["source"], "target": target, "idmapped": idmapped})
        mount["source"] = target


def _unstage(record: dict[str, Any]) -> None:
    for entry in reversed(record.get("staged") or []):
        try:
            detach_mount(entry["target"])
        except OSError:
            pass


def _cleanup(name: str, state_dir: str, record: dict[str, Any]) -> None:
    subprocess.run(_runtime_command(record.get("runtime", "runc"), state_dir, "delete", "--force", name),
                   capture_output=True, stdin=subprocess.DEVNULL, check=False)
    _unstage(record)
    shutil.rmtree(_container_dir(state_dir, name), ignore_errors=True)


def _generated_name() -> str:
    return "mc-" + uuid.uuid4().hex[:12]


def run(image: str, *, name: str | None = None, detach: bool = False, runtime: str = "runc",
        state_dir: str, cache_dir: str, tag: str | None = None, debug: bool = False,
        toolbox: str | None = None, **config_kw: Any) -> int:
    """Run ``image`` as a microcontainer.

    Args:
        image: an image reference for :func:`make_bundle`.
        name: the container's name (default: generated, ``mc-<hex>``).
        detach: start it in the background (stdout/stderr go to ``stdout.log`` and
            ``stderr.log`` in its state directory) and return 0.
        runtime: the OCI runtime binary (``runc``).
        state_dir: where container state lives (:func:`default_state_dir`).
        cache_dir: the tool's cache (root filesystems, toolboxes).
        tag: the image to pick when the layout holds several.
        debug: mount a toolbox read-only at ``/dev/crashcart`` from the start.
        toolbox: the toolbox for ``debug`` (see :func:`microcontainer_tool.runtime.debug.toolbox_dir`).
        **config_kw: keyword arguments of :func:`runtime_config` (``args``, ``env``,
            ``user``, ``write_dir``, ``read_dir``, ``net``, ``userns``, ``extra_mounts``).

    Returns:
        The program's exit code (128 + N if killed by signal N), or 0 when detached.

    Raises:
        RunError: not root, no runtime, a name in use, or the container could not start.
        LayoutError: the image cannot be read.
    """
    if os.geteuid() != 0:
        raise RunError("running containers needs root (the runtime runs as root)")
    runtime_path = shutil.which(runtime)
    if runtime_path is None:
        raise RunError(f"OCI runtime {runtime!r} not found; install runc")
    bundle = make_bundle(image, cache_dir, tag)
    extra = list(config_kw.pop("extra_mounts", ()))
    if debug:
        from microcontainer_tool.runtime.debug import toolbox_dir

        extra.append(_bind(toolbox_dir(toolbox, cache_dir), CRASHCART, readonly=True))
    config = runtime_config(bundle.image_config, bundle, extra_mounts=extra, **config_kw)
    name = name or _generated_name()
    directory = _container_dir(state_dir, name)
    config["hostname"] = name
    containers = _containers_dir(state_dir)
    try:
        os.makedirs(containers, mode=0o711, exist_ok=True)
        os.mkdir(directory, 0o711)
    except FileExistsError:
        raise RunError(f"a container named {name!r} exists; remove it with rm") from None
    except OSError as error:
        raise RunError(f"{containers}: cannot create: {error.strerror or error}") from None
    userns = any(ns["type"] == "user" for ns in config["linux"]["namespaces"])
    record: dict[str, Any] = {
        "name": name, "image": os.path.abspath(image) if os.path.exists(image) else image,
        "digest": bundle.digest, "runtime": runtime_path, "detach": detach, "debug": debug,
        "userns": userns, "staged": [],
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    try:
        if userns:
            blocked = _searchable_by_others(directory)
            if blocked is not None:
                raise RunError(f"{blocked}: not searchable by the container's mapped root, so runc"
                               f" cannot reach the bundle; use a state dir like /run/microcontainer")
            try:
                _stage(config, directory, host_id_map(), record["staged"])
            except OSError as error:
                raise RunError(f"cannot prepare the bundle's mounts: {error}") from None
        _write_record(directory, record)
        with open(os.path.join(directory, "config.json"), "w", encoding="utf-8") as handle:
            json.dump(config, handle, indent=2)
    except BaseException:
        _cleanup(name, state_dir, record)
        raise
    if detach:
        return _start_detached(name, state_dir, directory, record)
    return _run_foreground(name, state_dir, directory, record)


def _run_args(record: dict[str, Any], state_dir: str, directory: str, *extra: str) -> list[str]:
    return _runtime_command(record["runtime"], state_dir, "--log", os.path.join(directory, "runtime.log"),
                            "--log-format", "json", "run", "--bundle", directory,
                            "--pid-file", os.path.join(directory, "pid"), *extra, record["name"])


def _run_foreground(name: str, state_dir: str, directory: str, record: dict[str, Any]) -> int:
    proc = subprocess.Popen(_run_args(record, state_dir, directory))
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        def forward(signum: int, _frame: object) -> None:
            proc.send_signal(signum)  # runc passes it on to the program

        # Ctrl-C reaches runc (same process group) and runc forwards it: do not die first.
        previous[signal.SIGINT] = signal.signal(signal.SIGINT, signal.SIG_IGN)
        for signum in (signal.SIGTERM, signal.SIGHUP):
            previous[signum] = signal.signal(signum, forward)
    try:
        code = proc.wait()
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        started = os.path.exists(os.path.join(directory, "pid"))
        message = _last_runtime_error(os.path.join(directory, "runtime.log"))
        _cleanup(name, state_dir, record)
    if code != 0 and not started:
        raise RunError(f"{record['image']}: cannot start: {message}")
    return code if code >= 0 else 128 - code


def _start_detached(name: str, state_dir: str, directory: str, record: dict[str, Any]) -> int:
    with open(os.path.join(directory, "stdout.log"), "ab") as out, \
            open(os.path.join(directory, "stderr.log"), "ab") as err:
        proc = subprocess.run(_run_args(record, state_dir, directory, "--detach"),
                              stdin=subprocess.DEVNULL, stdout=out, stderr=err, check=False)
    if proc.returncode != 0:
        message = _last_runtime_error(os.path.join(directory, "runtime.log"))
        _cleanup(name, state_dir, record)
        raise RunError(f"{record['image']}: cannot start: {message}")
    return 0


def _names(state_dir: str) -> Iterator[str]:
    try:
        entries = sorted(os.listdir(_containers_dir(state_dir)))
    except FileNotFoundError:
        return
    for entry in entries:
        if _NAME_RE.fullmatch(entry) and os.path.isfile(os.path.join(_containers_dir(state_dir), entry, _RECORD)):
            yield entry


def _info(name: str, state_dir: str) -> ContainerInfo:
    record = load_record(name, state_dir)
    state = runtime_state(name, state_dir, record.get("runtime", "runc"))
    status = str(state.get("status", "unknown")) if state else "unknown"
    pid = state.get("pid") if state and status in _ALIVE else None
    return ContainerInfo(name, str(record.get("image", "")), str(record.get("digest", "")),
                         pid if isinstance(pid, int) and pid > 0 else None, status,
                         str(record.get("created", "")))


def ps(state_dir: str) -> list[ContainerInfo]:
    """Every container recorded in ``state_dir``, by name, with the runtime's status."""
    return [_info(name, state_dir) for name in _names(state_dir)]


def inspect_container(name: str, state_dir: str) -> ContainerInfo:
    """One container's :class:`ContainerInfo`.

    Raises:
        RunError: there is no such container.
    """
    return _info(name, state_dir)


def stop(name: str, state_dir: str, timeout: float = 10) -> None:
    """Stop a container: SIGTERM, then SIGKILL after ``timeout`` seconds.

    A program that is its namespace's pid 1 ignores SIGTERM unless it handles it,
    so a plain ``sleep`` needs the SIGKILL. Stopping a stopped container does nothing.

    Raises:
        RunError: there is no such container, or it would not die.
    """
    record = load_record(name, state_dir)
    runtime = record.get("runtime", "runc")

    def alive() -> bool:
        state = runtime_state(name, state_dir, runtime)
        return state is not None and state.get("status") in ("running", "paused", "created")

    for signame, wait in (("TERM", timeout), ("KILL", 10.0)):
        if not alive():
            return
        subprocess.run(_runtime_command(runtime, state_dir, "kill", name, signame), capture_output=True,
                       stdin=subprocess.DEVNULL, check=False)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not alive():
                return
            time.sleep(0.05)
    if alive():
        raise RunError(f"container {name!r} did not stop")


def rm(name: str, state_dir: str, force: bool = False) -> None:
    """Remove a container: the runtime's state, staged mounts and its state directory.

    Args:
        name: the container.
        state_dir: the state directory.
        force: kill it first if it still runs.

    Raises:
        RunError: no such container, or it runs and ``force`` is false.
    """
    record = load_record(name, state_dir)
    runtime = record.get("runtime", "runc")
    state = runtime_state(name, state_dir, runtime)
    if state is not None and state.get("status") in ("running", "paused") and not force:
        raise RunError(f"container {name!r} is running; stop it first or use --force")
    if state is not None:
        proc = subprocess.run(_runtime_command(runtime, state_dir, "delete", *(["--force"] if force else []),
                                               name), capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, check=False)
        if proc.returncode != 0 and runtime_state(name, state_dir, runtime) is not None:
            detail = " ".join(proc.stderr.split()) or f"exit {proc.returncode}"
            raise RunError(f"container {name!r}: {runtime} delete failed: {detail}")
    _unstage(record)
    shutil.rmtree(_container_dir(state_dir, name), ignore_errors=True)
