"""Pinned, reproducible compression codecs for layers and archives.

The bytes a codec produces are part of an image's identity (they are what the
layer digest names), so every codec here is pinned to one exact mode whose
output depends only on the input bytes:

* ``gzip``: ISA-L (the ``isal`` wheel, which bundles its own ISA-L, so the host's
  zlib or zlib-ng plays no part) at level 2, in the pigz scheme: the input is cut
  into fixed 1 MiB blocks, each block is deflated on its own with the previous
  block's last 32 KiB as preset dictionary and ends in a sync flush (the last
  one in a final block), and the pieces are concatenated into one raw deflate
  stream inside a gzip member we write ourselves: no file name, mtime 0, XFL 0,
  OS byte 255 ("unknown"). Each block's output depends only on its bytes and
  its predecessor's, so blocks are compressed on worker threads (ISA-L releases
  the GIL) and the result is the same for any number of threads. We write this
  rather than use ``isal.igzip`` because a single stream cannot be split across
  cores, and layer compression is most of a build's time. ISA-L picks SSE, AVX,
  AVX2 or AVX-512 code for the CPU it runs on: level 3 makes different bytes on
  SSE4, AVX2 and AVX-512 CPUs (the layer digest would depend on the build
  machine), levels 1 and 2 the same bytes on all (tested under QEMU CPU models). Level 2 compresses
  better than 1 (4 MiB of libraries and text: 0.345 vs 0.349 of the input;
  level 3 gave 0.337) at the same speed. Not covered: x86-64 CPUs without
  SSE4.2 (before 2008), where ISA-L's generic code gives other bytes at every
  level, and other machines (aarch64 has its own ISA-L code, not tested).
* ``zstd`` (opt-in): ``zstandard`` level 3, single-threaded (``threads=0``),
  one frame, content checksum on, no content size (streaming), fed in the same
  fixed 1 MiB blocks and finished by one ``flush()``.
* ``none``: the bytes as they are.

Whatever sizes callers pass to :meth:`CompressorWriter.write`, the output is
identical.
"""

from __future__ import annotations

import collections
import io
import os
import struct
from concurrent.futures import Future, ThreadPoolExecutor
from typing import BinaryIO, Protocol

import zstandard
from isal import isal_zlib

from microcontainer_tool.errors import LayoutError

COMPRESSIONS = ("gzip", "zstd", "none")
"""The codec names accepted by :func:`open_compressor`."""

BLOCK_SIZE = 1 << 20
"""Input block size fed to the codecs; changing it changes output bytes."""

GZIP_LEVEL = 2
"""ISA-L level: 2 gives the same bytes on SSE4.2, AVX, AVX2 and AVX-512 CPUs; 3 does not.
Changing it changes every layer digest: bump ``FORMAT_VERSION`` (layer cache keys, build signatures)."""
DICT_SIZE = 32 * 1024
#: Worker threads for gzip blocks (output does not depend on it).
GZIP_THREADS = max(1, min(4, os.cpu_count() or 1))
ZSTD_LEVEL = 3
_GZIP_OS_UNKNOWN = 255
_GZIP_HEADER = b"\x1f\x8b\x08\x00" + struct.pack("<I", 0) + bytes([0, _GZIP_OS_UNKNOWN])

_SUFFIXES = {"gzip": "+gzip", "zstd": "+zstd", "none": ""}


def media_type_suffix(kind: str) -> str:
    """Return the media-type suffix of a codec (``"+gzip"``, ``"+zstd"``, ``""``).

    Raises:
        LayoutError: ``kind`` is not a known codec.
    """
    try:
        return _SUFFIXES[kind]
    except KeyError:
        raise LayoutError(f"unknown compression {kind!r} (choose from {', '.join(COMPRESSIONS)})") from None


class _Engine(Protocol):
    def compress(self, data: bytes) -> bytes: ...

    def finish(self) -> bytes: ...


def _deflate_block(block: bytes, zdict: bytes, final: bool) -> bytes:
    if zdict:
        deflate = isal_zlib.compressobj(GZIP_LEVEL, isal_zlib.DEFLATED, -15, 9, 0, zdict)
    else:
        deflate = isal_zlib.compressobj(GZIP_LEVEL, isal_zlib.DEFLATED, -15)
    return deflate.compress(block) + deflate.flush(isal_zlib.Z_FINISH if final else isal_zlib.Z_SYNC_FLUSH)


class _GzipEngine:
    """pigz-style gzip: independent, dictionary-chained blocks on worker threads."""

    def __init__(self) -> None:
        self._crc = 0
        self._size = 0
        self._zdict = b""
        self._pool: ThreadPoolExecutor | None = None
        self._pending: collections.deque[Future[bytes]] = collections.deque()
        self._header_pending = True

    def _header(self) -> bytes:
        if self._header_pending:
            self._header_pending = False
            return _GZIP_HEADER
        return b""

    def _ready(self, wait_for: int) -> bytes:
        out = [self._header()]
        while self._pending and (len(self._pending) > wait_for or self._pending[0].done()):
            out.append(self._pending.popleft().result())
        return b"".join(out)

    def compress(self, data: bytes) -> bytes:
        self._crc = isal_zlib.crc32(data, self._crc)
        self._size += len(data)
        zdict, self._zdict = self._zdict, data[-DICT_SIZE:]
        if GZIP_THREADS == 1:
            return self._header() + _deflate_block(data, zdict, False)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(GZIP_THREADS, thread_name_prefix="mct-gzip")
        self._pending.append(self._pool.submit(_deflate_block, data, zdict, False))
        return self._ready(wait_for=2 * GZIP_THREADS)

    def finish(self) -> bytes:
        try:
            body = self._ready(wait_for=0) + _deflate_block(b"", self._zdict, True)
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
                self._pool = None
        trailer = struct.pack("<II", self._crc & 0xFFFFFFFF, self._size & 0xFFFFFFFF)
        return self._header() + body + trailer


class _ZstdEngine:
    def __init__(self) -> None:
        compressor = zstandard.ZstdCompressor(
            level=ZSTD_LEVEL, threads=0, write_checksum=True, write_content_size=False
        )
        self._obj = compressor.compressobj()

    def compress(self, data: bytes) -> bytes:
        return self._obj.compress(data)

    def finish(self) -> bytes:
        return self._obj.flush(zstandard.COMPRESSOBJ_FLUSH_FINISH)


class CompressorWriter:
    """A write-only file-like object that compresses into ``sink``.

    Input is buffered and handed to the codec in fixed :data:`BLOCK_SIZE`
    blocks, so the output never depends on how writes were chunked.
    :meth:`close` finishes the stream but leaves ``sink`` open.

    Attributes:
        kind: the codec name.
        bytes_in: uncompressed bytes written so far.
    """

    def __init__(self, kind: str, sink: BinaryIO) -> None:
        media_type_suffix(kind)
        self.kind = kind
        self.bytes_in = 0
        self._sink = sink
        self._engine: _Engine | None = (
            _GzipEngine() if kind == "gzip" else _ZstdEngine() if kind == "zstd" else None
        )
        self._buffer = bytearray()
        self._closed = False

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def writable(self) -> bool:
        """File-like protocol: always true."""
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Compress ``data`` (buffered); return its length."""
        if self._closed:
            raise ValueError("write to a closed CompressorWriter")
        size = len(data)
        self.bytes_in += size
        if self._engine is None:
            self._sink.write(data)
            return size
        buffer = self._buffer
        if not buffer and size >= BLOCK_SIZE:
            # Fast path: compress full blocks straight from the caller's data.
            view = memoryview(data)
            full = size - size % BLOCK_SIZE
            for start in range(0, full, BLOCK_SIZE):
                self._emit(self._engine.compress(bytes(view[start:start + BLOCK_SIZE])))
            buffer += view[full:]
            return size
        buffer += data
        if len(buffer) >= BLOCK_SIZE:
            full = len(buffer) - len(buffer) % BLOCK_SIZE
            view = memoryview(buffer)
            for start in range(0, full, BLOCK_SIZE):
                self._emit(self._engine.compress(bytes(view[start:start + BLOCK_SIZE])))
            view.release()
            del buffer[:full]
        return size

    def _emit(self, chunk: bytes) -> None:
        if chunk:
            self._sink.write(chunk)

    def flush(self) -> None:
        """File-like protocol: a no-op (flushing would change output bytes)."""

    def close(self) -> None:
        """Compress what is buffered and finish the stream; ``sink`` stays open."""
        if self._closed:
            return
        self._closed = True
        if self._engine is not None:
            self._emit(self._engine.compress(bytes(self._buffer)) if self._buffer else b"")
            self._buffer.clear()
            self._emit(self._engine.finish())

    def __enter__(self) -> CompressorWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.close()
        else:
            self._closed = True


def open_compressor(kind: str, sink: BinaryIO) -> CompressorWriter:
    """Return a writer compressing with codec ``kind`` into ``sink``.

    Args:
        kind: ``"gzip"``, ``"zstd"`` or ``"none"``.
        sink: a binary file-like object with ``write()``.

    Raises:
        LayoutError: ``kind`` is unknown.
    """
    return CompressorWriter(kind, sink)


def compress_bytes(kind: str, data: bytes) -> bytes:
    """Compress ``data`` in one call (same bytes as streaming it)."""
    out = io.BytesIO()
    with open_compressor(kind, out) as writer:
        writer.write(data)
    return out.getvalue()
