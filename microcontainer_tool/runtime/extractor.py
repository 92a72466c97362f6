"""Safe extraction of an image's layers into a root filesystem.

:func:`extract_image` applies whiteouts and refuses ``..``, absolute names, hard
links out of the tree, symlinks climbing out of the root, paths through
symlinks and device nodes; setuid/setgid bits and ownership are dropped. Every
file system call is an ``*at`` call relative to a directory fd opened without
following symlinks, so a hostile layer cannot write outside the root.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tarfile
from collections.abc import Sequence

from microcontainer_tool.errors import RunError
from microcontainer_tool.oci.imageview import ImageView
from microcontainer_tool.oci.layer import CHUNK_SIZE


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
