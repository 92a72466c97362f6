"""The cpio archive inside an RPM payload, and its safe extraction below a destination directory.

Both cpio flavours rpm writes are parsed: ``newc`` (``070701``) and the
header-driven "stripped" format (``07070X``, used when a file is 4 GiB or
larger: each member is only a file index into the header, and sizes come from
the header). Members are written below a destination directory through
directory file descriptors, never following a symlink at the final component,
and resolving symlinked parent directories (``/lib64 -> usr/lib64``) *inside*
the destination only (absolute link targets mean the destination's root, as
they would in the image; climbing above it is refused).

The header is authoritative, as in rpm itself: the payload provides content and
the mapping of members to header entries; types, modes and link targets come
from the header's file table, and no member may carry more bytes than the
header gives its file, so what is written is at most the header's file sizes (a
decompression bomb is refused at its first oversized member; ghosts that old
rpm put in payloads are skipped, never written). Errors are
:class:`~microcontainer_tool.errors.RpmError` (or ``DigestMismatchError`` for an
``expected`` checksum), always one line.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Self

from microcontainer_tool.errors import DigestMismatchError, RpmError
from microcontainer_tool.sources.rpm.header import (
    FileInfo,
    FileTable,
    describe_error,
    open_package,
    read_headers,
    read_metadata,
)
from microcontainer_tool.sources.rpm.package import Checksum
from microcontainer_tool.sources.rpm.payload import (
    CHUNK,
    DECODE_ERRORS,
    BufferedInput,
    HashingReader,
    Stream,
    open_decompressor,
)

_NEWC = (b"070701", b"070702")
_STRIPPED = b"07070X"
_TRAILER = b"TRAILER!!!"
_MAX_NAME = 4096  # as rpm's cpio reader
_MAX_SYMLINK_HOPS = 40


# --------------------------------------------------------------------------- public API


@dataclass(frozen=True)
class ExtractedEntry:
    """One member of a package as extracted (or reported) by :func:`extract_rpm`.

    Attributes:
        path: absolute image path, e.g. ``/usr/bin/curl``.
        kind: ``file``, ``dir``, ``symlink``, ``hardlink`` (a further name of a
            file extracted earlier: ``linkname``), ``ghost`` (``%ghost``: in the
            header only, not created) or ``special`` (device, fifo, socket: not
            created).
        mode: the full original ``st_mode`` from the header, type and
            setuid/setgid/sticky bits included (on disk only ``mode & 0o777``
            for files, ``0o755`` for directories).
        size: size from the header (symlinks: length of the target).
        linkname: symlink target, or the image path a hardlink points to.
        digest: the file digest from the header (hex, algorithm of the
            package's ``FILEDIGESTALGO``), ``""`` if none.
        user, group: owner names from the header (not applied on disk).
    """

    path: str
    kind: str
    mode: int
    size: int
    linkname: str = ""
    digest: str = ""
    user: str = "root"
    group: str = "root"


def safe_member_path(name: str) -> str:
    """Turn a payload member name into an absolute image path, or refuse it.

    ``./usr/bin/x`` and ``usr/bin/x`` become ``/usr/bin/x``; empty and ``.``
    components are dropped; ``./`` (the root, which ``filesystem`` owns) is ``/``.

    Raises:
        RpmError: the name is absolute, contains ``..`` or a NUL, or is empty.
    """
    if "\0" in name:
        raise RpmError(f"payload member name {name!r} contains a NUL byte")
    if len(name) > _MAX_NAME:
        raise RpmError(f"payload member name {name[:60]!r}... is longer than {_MAX_NAME} bytes")
    text = name.removeprefix("./")
    if text.startswith("/"):
        raise RpmError(f"payload member {name!r} has an absolute name")
    parts = [p for p in text.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise RpmError(f"payload member {name!r} climbs out with '..'")
    if not name:
        raise RpmError(f"payload member {name!r} names no file")
    return "/" + "/".join(parts)


def extract_rpm(path: str, dest: str, expected: Checksum | None = None, *,
                verify_file_digests: bool | None = None) -> list[ExtractedEntry]:
    """Extract a package's payload below ``dest``, without running anything.

    Files get ``mode & 0o777`` (setuid/setgid/sticky and file capabilities are
    never set), directories ``0o755``; symlinks are created as symlinks and
    hardlink sets as real hardlinks; ``%ghost`` entries and device nodes, fifos
    and sockets are reported but not created; owners and mtimes are not applied.
    Existing non-directories at a member's path are replaced (packages
    extracted into one tree overwrite each other, as rpm does).

    Args:
        path: the ``.rpm`` file.
        dest: destination directory (created if missing); may already hold
            other packages' files.
        expected: if given, the whole file must have this checksum; it is
            verified before anything is written.
        verify_file_digests: also check every file against its header digest;
            ``None`` (default): only when the package has no payload digest.

    Returns:
        Every header entry (files, dirs, symlinks, hardlinks, ghosts,
        specials), sorted by path.

    Raises:
        DigestMismatchError: ``expected`` does not match the file.
        RpmError: corrupt, truncated or digest-failing package, an unsupported
            payload, a member that would land outside ``dest``, or a write
            failure. After an error the content of ``dest`` is undefined.
    """
    if expected is not None:
        _check_expected(path, expected)
    with open_package(path) as handle:
        pkg = read_headers(handle, path)
        meta = read_metadata(pkg, path)
        table = FileTable(pkg, meta, path)
        reader = HashingReader(handle, path, pkg, [])
        verify = (pkg.payload_digest is None) if verify_file_digests is None else verify_file_digests
        stream = open_decompressor(reader, path)
        try:
            with _Dest(dest, path) as out:
                entries = _Extractor(stream, table, out, path, verify).run()
        except DECODE_ERRORS as exc:
            raise RpmError(f"{path}: corrupt payload: {describe_error(exc)}") from None
        except OSError as exc:  # read errors are RpmError already: this is a decoder's
            raise RpmError(f"{path}: corrupt payload: {describe_error(exc)}") from None
        reader.drain()
    reader.verify()
    return entries


# --------------------------------------------------------------------------- destination


_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_O_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class _Dest:
    """Writes below one directory through directory fds; never follows a final symlink.

    Directory fds are cached (LRU, keyed by the unresolved image path parts) so
    a member costs about one syscall to locate its parent. The cache is dropped
    whenever a symlink is replaced, since cached paths may resolve through it.
    """

    _CACHE_SIZE = 128

    def __init__(self, dest: str, path: str) -> None:
        self._path = path
        try:
            os.makedirs(dest, exist_ok=True)
            self._root = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise RpmError(f"{path}: cannot use destination {dest}: {describe_error(exc)}") from None
        self._cache: OrderedDict[tuple[str, ...], int] = OrderedDict()
        self._umask = _current_umask()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self._forget()
        os.close(self._root)

    def _forget(self) -> None:
        for fd in self._cache.values():
            os.close(fd)
        self._cache.clear()

    def _fail(self, image_path: str, exc: BaseException | str) -> RpmError:
        reason = exc if isinstance(exc, str) else describe_error(exc)
        return RpmError(f"{self._path}: cannot extract {image_path}: {reason}")

    def _new_dir(self, parent: int, name: str) -> None:
        """Create ``name`` 0755 (tolerating a race with an existing one)."""
        try:
            os.mkdir(name, 0o755, dir_fd=parent)
        except FileExistsError:
            return
        if self._umask & 0o755:
            os.chmod(name, 0o755, dir_fd=parent)

    def walk(self, parts: tuple[str, ...], image_path: str, create: bool = True) -> int:
        """Open the directory ``parts`` from the root (creating missing ones 0755); a new fd.

        Symlinks met on the way are resolved inside the destination: an absolute
        target restarts at the destination's root; ``..`` above it is refused.
        """
        stack: list[int] = []
        todo = list(reversed(parts))
        hops = 0
        try:
            while todo:
                name = todo.pop()
                if name in ("", "."):
                    continue
                cur = stack[-1] if stack else self._root
                if name == "..":
                    if not stack:
                        raise self._fail(image_path, "a symlink on its path leads outside the destination")
                    os.close(stack.pop())
                    continue
                try:
                    fd = os.open(name, _O_DIR, dir_fd=cur)
                except FileNotFoundError:
                    if not create:
                        raise
                    self._new_dir(cur, name)
                    fd = os.open(name, _O_DIR, dir_fd=cur)
                except OSError as exc:
                    if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                        raise
                    try:
                        target = os.readlink(name, dir_fd=cur)
                    except OSError:
                        raise self._fail(image_path, f"{name!r} on its path is not a directory") from None
                    hops += 1
                    if hops > _MAX_SYMLINK_HOPS:
                        raise self._fail(image_path, "too many levels of symbolic links") from None
                    if target.startswith("/"):
                        while stack:
                            os.close(stack.pop())
                    todo.extend(reversed(target.split("/")))
                    continue
                stack.append(fd)
        except RpmError:
            for fd in stack:
                os.close(fd)
            raise
        except OSError as exc:
            for fd in stack:
                os.close(fd)
            raise self._fail(image_path, exc) from None
        result = stack.pop() if stack else os.dup(self._root)
        for fd in stack:
            os.close(fd)
        return result

    def dir_fd(self, parts: tuple[str, ...], image_path: str) -> int:
        """The cached fd of directory ``parts`` (created if missing); valid until the next call."""
        cache = self._cache
        known = len(parts)
        while known and parts[:known] not in cache:
            known -= 1
        fd = self._root
        if known:
            fd = cache[parts[:known]]
            cache.move_to_end(parts[:known])
        for depth in range(known, len(parts)):
            name = parts[depth]
            try:
                try:
                    fd = os.open(name, _O_DIR, dir_fd=fd)
                except FileNotFoundError:
                    self._new_dir(fd, name)
                    fd = os.open(name, _O_DIR, dir_fd=fd)
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise self._fail(image_path, exc) from None
                fd = self.walk(parts[:depth + 1], image_path)  # a symlink: resolve from the root
            cache[parts[:depth + 1]] = fd
            if len(cache) > self._CACHE_SIZE:  # the newest entry (fd) is never the one evicted
                os.close(cache.popitem(last=False)[1])
        return fd

    def _clear(self, parent: int, name: str, image_path: str) -> None:
        """Remove a non-directory in the way of a new member."""
        st = os.stat(name, dir_fd=parent, follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            raise self._fail(image_path, "a directory is in the way")
        os.unlink(name, dir_fd=parent)
        if stat.S_ISLNK(st.st_mode):
            self._forget()  # cached directories may have been reached through it

    def make_dir(self, parts: tuple[str, ...], image_path: str) -> None:
        if not parts:
            return
        parent = self.dir_fd(parts[:-1], image_path)
        name = parts[-1]
        try:
            os.mkdir(name, 0o755, dir_fd=parent)
        except FileExistsError:
            # an existing directory, or a symlink to one (``/lib64`` from another package)
            self.dir_fd(parts, image_path)
            return
        except OSError as exc:
            raise self._fail(image_path, exc) from None
        if self._umask & 0o755:
            os.chmod(name, 0o755, dir_fd=parent)

    def write_file(self, parts: tuple[str, ...], image_path: str, perm: int,
                   fill: Callable[[Callable[[memoryview], None]], None]) -> None:
        parent = self.dir_fd(parts[:-1], image_path)
        name = parts[-1]
        perm &= 0o777
        try:
            try:
                fd = os.open(name, _O_NEW, perm, dir_fd=parent)
            except FileExistsError:
                self._clear(parent, name, image_path)
                parent = self.dir_fd(parts[:-1], image_path)
                fd = os.open(name, _O_NEW, perm, dir_fd=parent)
        except OSError as exc:
            raise self._fail(image_path, exc) from None

        def sink(data: memoryview) -> None:
            try:
                while data:
                    data = data[os.write(fd, data):]
            except OSError as exc:
                raise self._fail(image_path, exc) from None

        try:
            fill(sink)
            if self._umask & perm:
                os.fchmod(fd, perm)
        finally:
            os.close(fd)

    def symlink(self, parts: tuple[str, ...], image_path: str, target: str) -> None:
        parent = self.dir_fd(parts[:-1], image_path)
        name = parts[-1]
        try:
            try:
                os.symlink(target, name, dir_fd=parent)
            except FileExistsError:
                self._clear(parent, name, image_path)
                parent = self.dir_fd(parts[:-1], image_path)
                os.symlink(target, name, dir_fd=parent)
        except OSError as exc:
            raise self._fail(image_path, exc) from None

    def link(self, parts: tuple[str, ...], image_path: str, source: tuple[str, ...]) -> None:
        try:
            src_parent = os.dup(self.dir_fd(source[:-1], image_path))
        except OSError as exc:
            raise self._fail(image_path, exc) from None
        try:
            parent = self.dir_fd(parts[:-1], image_path)
            name = parts[-1]
            try:
                os.link(source[-1], name, src_dir_fd=src_parent, dst_dir_fd=parent,
                        follow_symlinks=False)
            except FileExistsError:
                self._clear(parent, name, image_path)
                parent = self.dir_fd(parts[:-1], image_path)
                os.link(source[-1], name, src_dir_fd=src_parent, dst_dir_fd=parent,
                        follow_symlinks=False)
        except OSError as exc:
            raise self._fail(image_path, exc) from None
        finally:
            os.close(src_parent)


def _current_umask() -> int:
    """The process umask, read without changing it (Linux); 0o777 if unknown (always chmod)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o777


# --------------------------------------------------------------------------- cpio


class _Extractor:
    """Walks the cpio archive and writes what the header says each member is."""

    def __init__(self, stream: Stream, table: FileTable, out: _Dest, path: str,
                 verify: bool) -> None:
        self.inp = BufferedInput(stream)
        self.table = table
        self.out = out
        self.path = path
        self.verify = verify
        self.results: dict[int, ExtractedEntry] = {}
        # hardlink sets: key -> carrier path parts, and members waiting for the data
        self.carriers: dict[object, tuple[tuple[str, ...], str]] = {}
        self.pending: dict[object, list[tuple[FileInfo, tuple[str, ...]]]] = {}

    def run(self) -> list[ExtractedEntry]:
        inp = self.inp
        while True:
            magic = inp.read_exact(6)
            if magic in _NEWC:
                fields = inp.read_exact(104)
                try:
                    (ino, _mode, _uid, _gid, nlink, _mtime, filesize, dev_major, dev_minor,
                     _rmaj, _rmin, namesize, _check) = [int(fields[i:i + 8], 16)
                                                       for i in range(0, 104, 8)]
                except ValueError:
                    raise RpmError(f"{self.path}: corrupt cpio header in the payload") from None
                if not 0 < namesize <= _MAX_NAME:
                    raise RpmError(f"{self.path}: corrupt cpio header in the payload (name size)")
                raw_name = inp.read_exact(namesize)
                inp.copy((-(110 + namesize)) % 4, None)
                if raw_name[-1:] != b"\0":
                    raise RpmError(f"{self.path}: corrupt cpio member name in the payload")
                raw_name = raw_name[:-1]
                if raw_name == _TRAILER:
                    break
                name = raw_name.decode("utf-8", "surrogateescape")
                image_path = safe_member_path(name)
                info = self.table.by_path.get(image_path)
                if info is None:
                    raise RpmError(f"{self.path}: payload member {image_path} is not in the header")
                key = ("cpio", dev_major, dev_minor, ino) if nlink > 1 else info.link_key
                self.member(info, image_path, filesize, key)
            elif magic == _STRIPPED:
                try:
                    index = int(inp.read_exact(8), 16)
                except ValueError:
                    raise RpmError(f"{self.path}: corrupt cpio header in the payload") from None
                inp.copy(2, None)
                if index == 0xFFFFFFFF:
                    break
                if index >= len(self.table.files):
                    raise RpmError(f"{self.path}: payload member #{index} is not in the header")
                info = self.table.files[index]
                image_path = safe_member_path("." + info.path)
                # rpm's rpmfiArchiveReadHeader: symlinks carry their target, regular
                # files their data, except non-last members of a hardlink set and ghosts.
                carries = not info.ghost and (stat.S_ISLNK(info.mode) or (
                    stat.S_ISREG(info.mode) and (info.link_key is None or info.last_link)))
                size = info.size if carries else 0
                self.member(info, image_path, size, info.link_key)
            else:
                raise RpmError(f"{self.path}: corrupt payload (bad cpio magic {magic!r})")
        return self.finish()

    def member(self, info: FileInfo, image_path: str, size: int, key: object) -> None:
        inp, out = self.inp, self.out
        if info.index in self.results:
            raise RpmError(f"{self.path}: payload member {image_path} appears twice")
        if size > info.size and not info.ghost:  # the payload writes at most the header's file sizes
            raise RpmError(f"{self.path}: {image_path}: payload has {size} bytes,"
                           f" the header says {info.size}")
        parts = tuple(image_path[1:].split("/")) if image_path != "/" else ()
        mode = info.mode
        if not parts and not stat.S_ISDIR(mode):
            raise RpmError(f"{self.path}: payload member / is not a directory")
        entry: ExtractedEntry | None = None
        if info.ghost:  # rpm < 4.11 sometimes put ghosts in the payload: rpm skips them
            inp.copy(size, None)
        elif stat.S_ISDIR(mode):
            inp.copy(size, None)
            out.make_dir(parts, image_path)
            entry = self.entry(info, image_path, "dir")
        elif stat.S_ISLNK(mode):
            inp.copy(size, None)
            if not info.linkto:
                raise RpmError(f"{self.path}: symlink {image_path} has no target in the header")
            out.symlink(parts, image_path, info.linkto)
            entry = self.entry(info, image_path, "symlink", linkname=info.linkto)
        elif stat.S_ISREG(mode):
            entry = self.regular(info, image_path, parts, size, key)
        else:
            inp.copy(size, None)
            entry = self.entry(info, image_path, "special")
        inp.copy((-size) % 4, None)
        if entry is not None:
            self.results[info.index] = entry

    def regular(self, info: FileInfo, image_path: str, parts: tuple[str, ...], size: int,
                key: object) -> ExtractedEntry | None:
        if key is not None and key in self.carriers:
            self.inp.copy(size, None)
            source, source_path = self.carriers[key]
            self.out.link(parts, image_path, source)
            return self.entry(info, image_path, "hardlink", linkname=source_path)
        if key is not None and size == 0 and info.size > 0:
            self.pending.setdefault(key, []).append((info, parts))
            self.results[info.index] = self.entry(info, image_path, "hardlink")  # placeholder
            return None
        if size != info.size:
            raise RpmError(f"{self.path}: {image_path}: payload has {size} bytes, "
                           f"the header says {info.size}")
        self.write(info, image_path, parts, size)
        if key is not None:
            self.carriers[key] = (parts, image_path)
            for member, member_parts in self.pending.pop(key, []):
                member_path = "/" + "/".join(member_parts)
                self.out.link(member_parts, member_path, parts)
                self.results[member.index] = self.entry(member, member_path, "hardlink",
                                                        linkname=image_path)
        return self.entry(info, image_path, "file")

    def write(self, info: FileInfo, image_path: str, parts: tuple[str, ...], size: int) -> None:
        inp = self.inp
        if not (self.verify and info.digest):
            self.out.write_file(parts, image_path, info.mode, lambda sink: inp.copy(size, sink))
            return
        hasher = hashlib.new(self.table.digest_algo)

        def fill(sink: Callable[[memoryview], None]) -> None:
            def both(data: memoryview) -> None:
                hasher.update(data)
                sink(data)
            inp.copy(size, both)

        self.out.write_file(parts, image_path, info.mode, fill)
        if hasher.hexdigest() != info.digest:
            raise RpmError(f"{self.path}: {image_path}: file {self.table.digest_algo} digest "
                           "mismatch (corrupt payload)")

    def entry(self, info: FileInfo, image_path: str, kind: str, linkname: str = "") -> ExtractedEntry:
        return ExtractedEntry(
            path=image_path, kind=kind, mode=info.mode,
            size=0 if kind in ("dir", "special") else info.size,
            linkname=linkname, digest=info.digest, user=info.user, group=info.group)

    def finish(self) -> list[ExtractedEntry]:
        for members in self.pending.values():
            names = ", ".join("/" + "/".join(parts) for _, parts in members)
            raise RpmError(f"{self.path}: hardlink set without data in the payload: {names}")
        missing = []
        for info in self.table.files:
            if info.index in self.results:
                continue
            if info.ghost:
                self.results[info.index] = self.entry(info, info.path, "ghost")
            else:
                missing.append(info.path)
        if missing:
            raise RpmError(f"{self.path}: {len(missing)} header entries missing from the payload, "
                           f"first {missing[0]}")
        return sorted(self.results.values(), key=lambda e: e.path)


def _check_expected(path: str, expected: Checksum) -> None:
    kind = {"sha": "sha1"}.get(expected.kind.lower(), expected.kind.lower())
    try:
        hasher = hashlib.new(kind)
    except ValueError:
        raise RpmError(f"{path}: unsupported checksum type {expected.kind!r}") from None
    with open_package(path) as handle:
        try:
            while chunk := handle.read(CHUNK):
                hasher.update(chunk)
        except OSError as exc:
            raise RpmError(f"cannot read {path}: {describe_error(exc)}") from None
    if hasher.hexdigest() != expected.value.lower():
        raise DigestMismatchError(
            f"{path}: {expected.kind} is {hasher.hexdigest()}, expected {expected.value}")
