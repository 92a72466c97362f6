"""The payload of an RPM package: the compressed stream after the headers, and its digests.

The payload is streamed here rather than by ``rpm_rs`` (which holds whole files
in memory and cannot read bzip2 payloads): :class:`HashingReader` reads the raw
bytes and hashes them for the payload digest (``PAYLOADDIGEST``), the legacy
MD5 and the sizes the signature header records; :func:`open_decompressor`
picks the decompressor by magic bytes (zstd, xz or legacy lzma, gzip, bzip2,
or none); :class:`BufferedInput` gives the cpio reader exact reads over the
decompressed stream. :func:`read_rpm` reads and verifies a whole package file.

Errors are :class:`~microcontainer_tool.errors.RpmError`, always one line.
"""

from __future__ import annotations

import bz2
import hashlib
import lzma
import struct
import zlib
from collections.abc import Callable
from typing import BinaryIO, Protocol

import isal.igzip
import isal.isal_zlib
import zstandard

from microcontainer_tool.errors import RpmError
from microcontainer_tool.sources.rpm.header import (
    PackageHeaders,
    build_package_info,
    describe_error,
    open_package,
    read_headers,
    read_metadata,
)
from microcontainer_tool.sources.rpm.package import Checksum, PackageInfo

CHUNK = 1 << 20
"""Read/write granularity of payload streaming (bounded memory)."""

# What decoders and the cpio parser raise on a corrupt payload (OSError aside).
_ISAL_ERROR: type[BaseException] = isal.isal_zlib.error  # type: ignore[assignment]
DECODE_ERRORS: tuple[type[BaseException], ...] = (
    lzma.LZMAError, zlib.error, _ISAL_ERROR, zstandard.ZstdError, EOFError, ValueError,
    struct.error)


def read_rpm(path: str) -> PackageInfo:
    """Read and verify a package file; return its identity, metadata, deps and files.

    The whole file is read once: its sha256 becomes ``checksum``; the header
    digests, the payload digest (``PAYLOADDIGEST``) and the sizes recorded in
    the signature header are verified.

    Args:
        path: a local ``.rpm`` file.

    Returns:
        The :class:`PackageInfo` (``repo="@local"``, ``location=path``).
        ``rpmlib(...)`` requirements (rpm's own features) are left out, as
        repository metadata does; a rich dependency keeps its whole string as
        ``name``; ``pre`` marks ``Requires(pre|post|pretrans|posttrans)``.

    Raises:
        RpmError: unreadable, not an rpm, a source rpm, corrupt or truncated.
    """
    with open_package(path) as handle:
        pkg = read_headers(handle, path)
        whole = hashlib.sha256(pkg.prefix)
        reader = HashingReader(handle, path, pkg, [whole])
        reader.drain()
    reader.verify()
    meta = read_metadata(pkg, path)
    return build_package_info(path, pkg, meta, Checksum("sha256", whole.hexdigest()),
                         reader.total + len(pkg.prefix))


# --------------------------------------------------------------------------- payload input


class HashingReader:
    """The raw payload bytes of an open package file, hashed as they are read."""

    def __init__(self, handle: BinaryIO, path: str, pkg: PackageHeaders, extra: list) -> None:
        self._handle = handle
        self._path = path
        self._pkg = pkg
        self._hashers = list(extra)
        self._payload_hash = hashlib.new(pkg.payload_algo) if pkg.payload_digest else None
        self._md5 = hashlib.md5(pkg.prefix[pkg.header_offset:]) if pkg.md5 is not None else None
        for hasher in (self._payload_hash, self._md5):
            if hasher is not None:
                self._hashers.append(hasher)
        self._updates = [h.update for h in self._hashers]
        self.total = 0
        self._head = b""

    def peek(self, size: int) -> bytes:
        """The first ``size`` payload bytes (call before any read)."""
        if not self._head:
            self._head = self._raw_read(CHUNK)
        return self._head[:size]

    def _raw_read(self, size: int) -> bytes:
        try:
            data = self._handle.read(size)
        except OSError as exc:
            raise RpmError(f"{self._path}: cannot read: {describe_error(exc)}") from None
        for update in self._updates:
            update(data)
        self.total += len(data)
        return data

    def read(self, size: int = -1) -> bytes:
        if self._head:
            if size < 0 or size >= len(self._head):
                data, self._head = self._head, b""
                if size < 0:
                    return data + self._raw_read(-1)
                return data
            data, self._head = self._head[:size], self._head[size:]
            return data
        return self._raw_read(size if size >= 0 else -1)

    def readinto(self, buffer: bytearray | memoryview) -> int:  # for io.BufferedReader users
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def drain(self) -> None:
        """Read (and hash) the rest of the file."""
        self._head = b""
        while self._raw_read(CHUNK):
            pass

    def payload_digest_matches(self) -> bool | None:
        """Whether the bytes read so far match the header's ``PAYLOADDIGEST`` (``None``: it has none)."""
        if self._payload_hash is None:
            return None
        return self._payload_hash.hexdigest() == self._pkg.payload_digest

    def verify(self) -> None:
        """Check sizes and payload digests once everything was read."""
        pkg, path = self._pkg, self._path
        actual = len(pkg.prefix) - pkg.header_offset + self.total
        if pkg.signed_size is not None and actual != pkg.signed_size:
            if actual < pkg.signed_size:
                raise RpmError(f"{path}: truncated ({pkg.signed_size - actual} bytes missing)")
            raise RpmError(f"{path}: {actual - pkg.signed_size} unexpected bytes after the payload")
        if self.payload_digest_matches() is False:
            raise RpmError(f"{path}: payload {pkg.payload_algo} digest mismatch (corrupt payload)")
        if self._md5 is not None and self._md5.digest() != pkg.md5:
            raise RpmError(f"{path}: md5 digest mismatch (corrupt package)")


class Stream(Protocol):
    """A readable byte stream (a decompressor, or the raw payload)."""

    def read(self, size: int = ..., /) -> bytes: ...


def open_decompressor(raw: HashingReader, path: str) -> Stream:
    """Pick the payload decompressor by magic bytes (the header tag may be absent).

    Raises:
        RpmError: the payload starts with none of the known magics.
    """
    head = raw.peek(6)
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        return zstandard.ZstdDecompressor().stream_reader(
            raw, read_size=CHUNK, read_across_frames=True, closefd=False)  # type: ignore[arg-type]
    if head.startswith((b"\xfd7zXZ\x00", b"\x5d\x00\x00")):
        return lzma.LZMAFile(raw)  # type: ignore[arg-type]
    if head.startswith(b"\x1f\x8b"):
        return isal.igzip.IGzipFile(fileobj=raw, mode="rb")  # type: ignore[arg-type]
    if head.startswith(b"BZh"):
        return bz2.BZ2File(raw)  # type: ignore[call-overload]
    if head.startswith(b"0707"):
        return raw
    raise RpmError(f"{path}: unsupported or corrupt payload (starts with {head.hex() or 'nothing'})")


class BufferedInput:
    """Buffered exact reads over a decompressed stream."""

    def __init__(self, stream: Stream) -> None:
        self._read = stream.read
        self._buf = b""
        self._pos = 0

    def read_exact(self, size: int) -> bytes:
        buf, pos = self._buf, self._pos
        end = pos + size
        if end <= len(buf):
            self._pos = end
            return buf[pos:end]
        parts = [buf[pos:]]
        have = len(buf) - pos
        while have < size:
            chunk = self._read(max(CHUNK, size - have))
            if not chunk:
                raise EOFError("payload ends early")
            parts.append(chunk)
            have += len(chunk)
        data = b"".join(parts)
        self._buf, self._pos = data, size
        return data[:size]

    def copy(self, size: int, sink: Callable[[memoryview], None] | None) -> None:
        """Pass the next ``size`` bytes to ``sink`` in chunks (``None``: skip them)."""
        avail = len(self._buf) - self._pos
        if avail:
            take = min(avail, size)
            if sink is not None:
                sink(memoryview(self._buf)[self._pos:self._pos + take])
            self._pos += take
            size -= take
        while size:
            chunk = self._read(min(CHUNK, size))
            if not chunk:
                raise EOFError("payload ends early")
            if len(chunk) > size:  # defensive: a stream returned more than asked
                self._buf, self._pos = chunk, size
                chunk = chunk[:size]
            if sink is not None:
                sink(memoryview(chunk))
            size -= len(chunk)
