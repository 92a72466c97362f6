"""Writing a :class:`~microcontainer_tool.model.tree.FileTree` as one reproducible layer.

The layer is a POSIX (PAX) tar streamed through a pinned codec
(:mod:`microcontainer_tool.oci.compression`). Every member is normalized: entries
in tree order (parents before children), names relative without a leading
``/`` (directories end in ``/``), uid/gid 0, empty uname/gname, mtime the
build epoch, the entry's mode; no extended attributes. PAX extended headers
appear only where tar needs them (non-ASCII or long names, huge sizes).
Host files are streamed from disk in 1 MiB chunks; entries sharing a host
inode become hardlinks to the first of them in tree order.

The uncompressed stream is hashed (``diff_id``) and so is the compressed one
(``digest``) while writing: a layer is written exactly once.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO, cast

from microcontainer_tool.errors import LayerLimitError, LayoutError, SourceError
from microcontainer_tool.model.tree import EntryKind, FileTree, HostFile, InlineContent
from microcontainer_tool.oci.compression import media_type_suffix, open_compressor
from microcontainer_tool.oci.model import MEDIA_TYPE_LAYER

CHUNK_SIZE = 1 << 20
DEFAULT_MAX_LAYER_SIZE = 16 << 30
"""Most uncompressed bytes of one layer read from an image (``--max-layer-size``)."""
DEFAULT_MAX_LAYER_RATIO = 1000
"""Most uncompressed bytes per compressed byte of a layer (``--max-layer-ratio``): gzip
cannot exceed ~1030 (a blob of zeros), so only zstd bombs and layers of nearly only
zeros reach it."""
RATIO_FLOOR = 64 << 20
"""Uncompressed bytes every layer may expand to, whatever its ratio."""
_BLOCK = tarfile.BLOCKSIZE
_RECORD = tarfile.RECORDSIZE
_ZEROS = bytes(_RECORD)

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


@dataclass(frozen=True)
class LayerInfo:
    """What names a written layer.

    Attributes:
        diff_id: ``sha256:`` digest of the uncompressed tar.
        digest: ``sha256:`` digest of the blob as written (compressed).
        size: size of the blob in bytes.
        media_type: the OCI layer media type (``...tar+gzip`` etc.).
    """

    diff_id: str
    digest: str
    size: int
    media_type: str


class HashingWriter:
    """A file-like sink that hashes and counts what passes to ``sink``."""

    def __init__(self, sink: BinaryIO) -> None:
        self._sink = sink
        self._sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Hash, count and forward ``data``."""
        self._sha.update(data)
        self.size += len(data)
        self._sink.write(data)
        return len(data)

    def flush(self) -> None:
        """Flush the underlying sink if it can."""
        flush = getattr(self._sink, "flush", None)
        if flush is not None:
            flush()

    @property
    def digest(self) -> str:
        """``sha256:<hex>`` of everything written so far."""
        return "sha256:" + self._sha.hexdigest()


class TarStreamWriter:
    """Writes normalized tar members to a binary sink, streaming contents.

    Used for layers and for the archive output formats.
    """

    def __init__(self, sink: BinaryIO) -> None:
        self._sink = sink
        self.offset = 0

    def _write(self, data: bytes | bytearray | memoryview) -> None:
        self._sink.write(data)
        self.offset += len(data)

    def add(self, info: tarfile.TarInfo, data: bytes = b"") -> None:
        """Write a member header and, for regular files, ``data`` (its size)."""
        self._write(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))
        if data:
            self._write(data)
            self._pad(len(data))

    def add_member(self, header: bytes, data: bytes = b"") -> None:
        """Write a ready header (:func:`member_header`) and, for regular files, ``data``."""
        self._write(header)
        if data:
            self._write(data)
            self._pad(len(data))

    def add_stream(self, info: tarfile.TarInfo, stream: BinaryIO, label: str) -> None:
        """Write a member whose ``info.size`` bytes are read from ``stream``.

        Raises:
            SourceError: ``stream`` holds fewer or more than ``info.size`` bytes.
        """
        self._write(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))
        remaining = info.size
        while remaining:
            chunk = stream.read(min(remaining, CHUNK_SIZE))
            if not chunk:
                raise SourceError(
                    f"{label}: file shrank while being read ({info.size - remaining} of {info.size} bytes)"
                )
            self._write(chunk)
            remaining -= len(chunk)
        if stream.read(1):
            raise SourceError(f"{label}: file grew while being read (expected {info.size} bytes)")
        self._pad(info.size)

    def _pad(self, size: int) -> None:
        rest = size % _BLOCK
        if rest:
            self._write(_ZEROS[: _BLOCK - rest])

    def finish(self) -> None:
        """Write the end-of-archive marker and pad to a full record."""
        self._write(_ZEROS[: 2 * _BLOCK])
        rest = self.offset % _RECORD
        if rest:
            self._write(_ZEROS[: _RECORD - rest])


def normalized_info(name: str, kind: bytes, mode: int, mtime: int, size: int = 0,
                    linkname: str = "", uid: int = 0, gid: int = 0) -> tarfile.TarInfo:
    """Return a :class:`tarfile.TarInfo` with every field normalized."""
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.uid = uid
    info.gid = gid
    info.uname = ""
    info.gname = ""
    info.mtime = mtime
    info.size = size
    info.linkname = linkname
    return info


_USTAR_TAIL = b"ustar\x0000" + bytes(32 + 32 + 8 + 8 + 155 + 12)
"""magic and version, empty uname and gname, no device numbers, no prefix, padding to 512 bytes."""
_OCTAL_LIMIT = 8 ** 7
_SIZE_LIMIT = 8 ** 11


def member_header(name: str, kind: bytes, mode: int, mtime: int, size: int = 0, linkname: str = "",
                  uid: int = 0, gid: int = 0) -> bytes:
    """The header block(s) of a normalized member: the bytes ``normalized_info(...).tobuf(PAX)`` gives.

    Members whose names, link targets and numbers fit a plain ustar header (ASCII
    names of at most 100 characters: nearly all of them) are formatted here directly,
    about twenty times faster than :mod:`tarfile`; the rest (PAX extended headers)
    are left to :mod:`tarfile`. ``tests/test_perf_layer.py`` compares the two.
    """
    full = name + "/" if kind == tarfile.DIRTYPE and not name.endswith("/") else name
    if (len(full) <= 100 and len(linkname) <= 100 and full.isascii() and linkname.isascii()
            and 0 <= uid < _OCTAL_LIMIT and 0 <= gid < _OCTAL_LIMIT and 0 <= size < _SIZE_LIMIT
            and 0 <= mtime < _SIZE_LIMIT):
        head = b"".join((full.encode("ascii").ljust(100, b"\0"), b"%07o\0" % (mode & 0o7777),
                         b"%07o\0" % uid, b"%07o\0" % gid, b"%011o\0" % size, b"%011o\0" % mtime,
                         b"        ", kind, linkname.encode("ascii").ljust(100, b"\0"), _USTAR_TAIL))
        return b"%s%06o\0%s" % (head[:148], sum(head), head[155:])
    info = normalized_info(name, kind, mode, mtime, size=size, linkname=linkname, uid=uid, gid=gid)
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


class _DiffWriter:
    """Hash the uncompressed stream, then pass it to the compressor."""

    def __init__(self, sink: BinaryIO) -> None:
        self._sink = sink
        self.sha = hashlib.sha256()

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self.sha.update(data)
        return self._sink.write(data)


def write_layer(tree: FileTree, sink: BinaryIO, compression: str, mtime: int,
                uid: int = 0, gid: int = 0) -> LayerInfo:
    """Stream ``tree`` as a normalized tar layer into ``sink``.

    Args:
        tree: the image content; iterated in canonical order.
        sink: where the (compressed) blob goes; left open.
        compression: ``"gzip"``, ``"zstd"`` or ``"none"``.
        mtime: the build epoch (``SOURCE_DATE_EPOCH``) stamped on every member.
        uid: owner of every member.
        gid: group of every member.

    Returns:
        The layer's digests, size and media type.

    Raises:
        SourceError: a host file is unreadable or changed size while read.
        LayoutError: ``compression`` or ``mtime`` is invalid.
    """
    if mtime < 0:
        raise LayoutError(f"invalid layer mtime {mtime}")
    media_type = MEDIA_TYPE_LAYER + media_type_suffix(compression)
    blob = HashingWriter(sink)
    compressor = open_compressor(compression, blob)  # type: ignore[arg-type]
    diff = _DiffWriter(compressor)  # type: ignore[arg-type]
    tar = TarStreamWriter(diff)  # type: ignore[arg-type]
    first_link: dict[tuple[int, int], str] = {}
    for entry in tree:
        name = entry.path.lstrip("/")
        content = entry.content
        if entry.kind is EntryKind.DIR:
            tar.add_member(member_header(name, tarfile.DIRTYPE, entry.mode, mtime, uid=uid, gid=gid))
        elif entry.kind is EntryKind.SYMLINK:
            tar.add_member(member_header(name, tarfile.SYMTYPE, entry.mode, mtime, linkname=entry.linkname,
                                         uid=uid, gid=gid))
        elif isinstance(content, HostFile):
            identity = content.identity
            if identity is not None:
                target = first_link.get(identity)
                if target is not None:
                    tar.add_member(member_header(name, tarfile.LNKTYPE, entry.mode, mtime, linkname=target,
                                                 uid=uid, gid=gid))
                    continue
                first_link[identity] = name
            if content.data is not None:  # read whole when it was selected: not opened again
                tar.add_member(member_header(name, tarfile.REGTYPE, entry.mode, mtime, size=len(content.data),
                                             uid=uid, gid=gid), content.data)
            else:
                _add_host_file(tar, name, entry.mode, mtime, content, uid, gid)
        else:
            data = content.data if isinstance(content, InlineContent) else b""
            tar.add_member(member_header(name, tarfile.REGTYPE, entry.mode, mtime, size=len(data),
                                         uid=uid, gid=gid), data)
    tar.finish()
    compressor.close()
    return LayerInfo(
        diff_id="sha256:" + diff.sha.hexdigest(), digest=blob.digest, size=blob.size, media_type=media_type
    )


def _add_host_file(tar: TarStreamWriter, name: str, mode: int, mtime: int, content: HostFile,
                   uid: int, gid: int) -> None:
    try:
        handle = open(content.path, "rb", buffering=0)
    except OSError as error:
        raise SourceError(f"{content.path}: cannot read: {error.strerror or error}") from None
    with handle:
        try:
            actual = os.fstat(handle.fileno()).st_size
            if actual != content.size:
                raise SourceError(f"{content.path}: size changed from {content.size} to {actual} bytes"
                                  " since it was selected")
            info = normalized_info(name, tarfile.REGTYPE, mode, mtime, size=content.size, uid=uid, gid=gid)
            tar.add_stream(info, handle, content.path)
        except OSError as error:
            raise SourceError(f"{content.path}: cannot read: {error.strerror or error}") from None


class _PrefixedReader(io.RawIOBase):
    """A reader that returns ``prefix`` and then the rest of ``stream``."""

    def __init__(self, prefix: bytes, stream: BinaryIO) -> None:
        super().__init__()
        self._prefix = prefix
        self._stream = stream
        self.consumed = len(prefix)
        """Compressed bytes read so far (the prefix included)."""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        if self._prefix:
            count = min(len(view), len(self._prefix))
            view[:count] = self._prefix[:count]
            self._prefix = self._prefix[count:]
            return count
        data = self._stream.read(len(view))
        view[: len(data)] = data
        self.consumed += len(data)
        return len(data)


def detect_compression(head: bytes) -> str:
    """Return ``"gzip"``, ``"zstd"`` or ``"none"`` from a blob's first bytes."""
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    return "none"


@dataclass(frozen=True)
class LayerLimits:
    """How far a layer blob may expand when decompressed (a decompression bomb stops there).

    Attributes:
        max_size: most uncompressed bytes of one layer.
        max_ratio: most uncompressed bytes per compressed byte read so far,
            enforced once a layer has expanded past :data:`RATIO_FLOOR`.
    """

    max_size: int = DEFAULT_MAX_LAYER_SIZE
    max_ratio: int = DEFAULT_MAX_LAYER_RATIO


def layer_limits(max_size: int | None = None, max_ratio: int | None = None) -> LayerLimits:
    """:class:`LayerLimits` with the defaults for what is ``None``."""
    return LayerLimits(DEFAULT_MAX_LAYER_SIZE if max_size is None else max_size,
                       DEFAULT_MAX_LAYER_RATIO if max_ratio is None else max_ratio)


class _BoundedReader(io.RawIOBase):
    """The uncompressed stream of a layer, refusing to expand past :class:`LayerLimits`."""

    def __init__(self, stream: BinaryIO, source: _PrefixedReader, limits: LayerLimits, where: str) -> None:
        super().__init__()
        self._stream = stream
        self._source = source
        self._limits = limits
        self._where = where
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        # never more than one byte past the limit is decoded, and none is returned
        data = self._stream.read(min(len(view), self._limits.max_size - self.size + 1))
        size = self.size + len(data)
        if size > self._limits.max_size:
            raise LayerLimitError(f"{self._where}: expands past the limit of {_human(self._limits.max_size)}"
                                  f" uncompressed (see --max-layer-size, MCT_MAX_LAYER_SIZE)")
        if size > RATIO_FLOOR and size > self._limits.max_ratio * self._source.consumed:
            raise LayerLimitError(f"{self._where}: expands more than {self._limits.max_ratio} times its"
                                  f" compressed size (see --max-layer-ratio, MCT_MAX_LAYER_RATIO)")
        view[: len(data)] = data
        self.size = size
        return len(data)

    def close(self) -> None:
        try:
            self._stream.close()
        finally:
            super().close()


_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """A positive size: bytes, or a number with ``K``, ``M``, ``G`` or ``T`` (binary: ``16G`` = 16 GiB).

    Raises:
        ValueError: not a positive whole number of bytes (``KiB``/``KB`` suffixes are accepted too).
    """
    value = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = value[-1:] if value[-1:] in _UNITS and value[-1:] else ""
    number = value[: len(value) - len(unit)].strip()
    if not number.isdigit() or int(number) * _UNITS[unit] <= 0:
        raise ValueError(f"{text!r} is not a size (bytes, or a number with K, M, G or T)")
    return int(number) * _UNITS[unit]


def _human(size: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if size >= 1 << shift and size % (1 << shift) == 0:
            return f"{size >> shift} {unit}"
    return f"{size} bytes"


def open_layer_stream(fileobj: BinaryIO, limits: LayerLimits | None = None, where: str = "layer") -> BinaryIO:
    """Return a reader of the uncompressed tar in a layer blob (codec by magic).

    Args:
        fileobj: the blob.
        limits: how far it may expand (default: :class:`LayerLimits`'s defaults).
        where: the start of the limit errors (``IMAGE: layer DIGEST``).

    The reader raises :class:`~microcontainer_tool.errors.LayerLimitError`
    before returning a byte past ``limits``.
    """
    head = fileobj.read(4)
    kind = detect_compression(head)
    source = _PrefixedReader(head, fileobj)
    raw = io.BufferedReader(source, CHUNK_SIZE)
    stream: BinaryIO
    if kind == "gzip":
        from isal import igzip

        stream = cast(BinaryIO, igzip.IGzipFile(fileobj=raw, mode="rb"))  # type: ignore[no-untyped-call]
    elif kind == "zstd":
        import zstandard

        stream = cast(BinaryIO, zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True))
    else:
        stream = cast(BinaryIO, raw)
    bounded = _BoundedReader(stream, source, limits or LayerLimits(), where)
    return cast(BinaryIO, io.BufferedReader(bounded, CHUNK_SIZE))


def decode_errors() -> tuple[type[BaseException], ...]:
    """Exceptions a corrupt blob can raise while decoding (OSError covers BadGzipFile).

    Also ``DECODE_ERRORS``; the decoders are imported when first asked for (a build only writes).
    """
    import zstandard
    from isal import isal_zlib

    return (tarfile.TarError, OSError, EOFError, ValueError, zstandard.ZstdError,
            cast(type[Exception], isal_zlib.error))


if TYPE_CHECKING:
    DECODE_ERRORS: tuple[type[BaseException], ...]
    """:func:`decode_errors`, as a module attribute."""
else:
    def __getattr__(name: str) -> object:
        """``DECODE_ERRORS``: :func:`decode_errors`, imported lazily (PEP 562)."""
        if name == "DECODE_ERRORS":
            value = decode_errors()
            globals()["DECODE_ERRORS"] = value
            return value
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def read_layer_members(fileobj: BinaryIO) -> Iterator[tarfile.TarInfo]:
    """Yield the members of a layer blob without extracting anything.

    Args:
        fileobj: the blob (gzip, zstd or plain tar, told by magic).

    Raises:
        LayoutError: the blob is not a readable (compressed) tar.
    """
    try:
        stream = open_layer_stream(fileobj)
        with tarfile.open(fileobj=stream, mode="r|", encoding="utf-8", errors="surrogateescape") as tar:
            yield from tar
    except LayoutError:
        raise
    except decode_errors() as error:
        raise LayoutError(f"corrupt layer: {error}") from None
