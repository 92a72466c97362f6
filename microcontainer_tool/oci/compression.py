"""Pinned, reproducible compression codecs for layers and archives.

The bytes a codec produces are part of an image's identity (they are what the
layer digest names), so every codec here is pinned to one exact mode whose
output depends only on the input bytes:

* ``gzip``: libdeflate (the ``deflate`` wheel, which bundles its own
  libdeflate, so the host's zlib or zlib-ng plays no part) at level 6, as a
  multi-member gzip stream (RFC 1952 section 2.2): the input is cut into fixed
  1 MiB blocks, and each block becomes its own gzip member, a header we write
  ourselves (no file name, mtime 0, XFL 0, OS byte 255, "unknown"), the block
  deflated on its own by libdeflate, and its CRC-32 and size. The members are
  concatenated; empty input is one member holding an empty block. libdeflate's
  compressor has no CPU-specific code that affects the bitstream (its SIMD is
  in checksums and table set-up), so the bytes depend only on the input, the
  level and the pinned wheel: the same on x86-64 CPUs with or without SSE4.2,
  AVX2 or AVX-512 (tested under QEMU CPU models), and by the same token on
  other architectures (their SIMD is likewise checksums only). It is
  one-shot and has no preset dictionary, hence independent members rather
  than one chained stream (on 4 MiB of libraries and Python sources that
  costs 0.1% in size against one libdeflate call on the whole input).
  Blocks are compressed on worker threads (the wheel releases the GIL) and the
  output is the same for any number of threads. Every gzip reader we know of
  (Go's compress/gzip in containerd, skopeo, umoci and podman; Python's gzip
  and ``isal.igzip``; gzip and pigz) reads all members. Level 6 is gzip -6
  class: the same 4 MiB shrinks to 0.293 of its size, against 0.299 with
  zlib level 6 and 0.342 with ISA-L level 2 (0.334 at 3). ISA-L, the former
  codec, picks SSE/AVX2/AVX-512 or generic code at run time and no level of
  it gives the same bytes on all CPUs; it is only used to decompress now.
* ``gzip-fast`` (opt-in, for edit loops): the same stream at libdeflate level 1
  (:data:`GZIP_FAST_LEVEL`): on 19.1 MB of curl's closure 0.455 of the input
  against 0.416 at level 6 (9 % larger), about twice as fast; as CPU-independent
  as ``gzip``, and read as ``gzip`` (the same media type).
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
import queue
import struct
import threading
import weakref
import zlib
from typing import BinaryIO, Protocol

import deflate

from microcontainer_tool.errors import LayoutError
from microcontainer_tool.oci.formats import COMPRESSIONS

BLOCK_SIZE = 1 << 20
"""Input block size fed to the codecs; changing it changes output bytes."""

GZIP_LEVEL = 6
"""libdeflate level (1-12). Changing it changes every layer digest: bump ``FORMAT_VERSION``
(layer cache keys, build signatures)."""
GZIP_FAST_LEVEL = 1
"""libdeflate level of ``gzip-fast`` (the same rule as :data:`GZIP_LEVEL`)."""
_GZIP_LEVELS = {"gzip": GZIP_LEVEL, "gzip-fast": GZIP_FAST_LEVEL}
#: Worker threads for gzip blocks (output does not depend on it).
GZIP_THREADS = max(1, min(4, os.cpu_count() or 1))
ZSTD_LEVEL = 3
_GZIP_OS_UNKNOWN = 255
_GZIP_HEADER = b"\x1f\x8b\x08\x00" + struct.pack("<I", 0) + bytes([0, _GZIP_OS_UNKNOWN])

_SUFFIXES = {"gzip": "+gzip", "gzip-fast": "+gzip", "zstd": "+zstd", "none": ""}


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


def _gzip_member(block: bytes, level: int = GZIP_LEVEL) -> bytes:
    """Return ``block`` as one gzip member: our fixed header, libdeflate's raw deflate, CRC-32 and size."""
    body = deflate.deflate_compress(block, level)
    trailer = struct.pack("<II", zlib.crc32(block) & 0xFFFFFFFF, len(block) & 0xFFFFFFFF)
    return b"".join((_GZIP_HEADER, body, trailer))


class _Member:
    """One block's gzip member, compressed by a worker; :meth:`result` waits for it."""

    __slots__ = ("block", "level", "done", "value", "error")

    def __init__(self, block: bytes, level: int) -> None:
        self.block = block
        self.level = level
        self.done = threading.Event()
        self.value = b""
        self.error: BaseException | None = None

    def result(self) -> bytes:
        """The member's bytes (re-raises what the worker raised)."""
        self.done.wait()
        if self.error is not None:
            raise self.error
        return self.value


def _work(jobs: queue.SimpleQueue[_Member | None]) -> None:
    """A worker thread: compress the blocks it is handed until it gets ``None``."""
    while (member := jobs.get()) is not None:
        try:
            member.value = _gzip_member(member.block, member.level)
        except BaseException as error:  # handed to the writer's thread
            member.error = error
        member.block = b""
        member.done.set()


def _stop_workers(jobs: queue.SimpleQueue[_Member | None], count: int) -> None:
    for _ in range(count):
        jobs.put(None)


class _GzipEngine:
    """Multi-member gzip: one independent member per block, compressed on worker threads.

    The workers are plain daemon threads fed through a queue (``concurrent.futures``
    would cost a build its import, with ``logging``'s).
    """

    def __init__(self, level: int = GZIP_LEVEL) -> None:
        self._level = level
        self._members = 0
        self._jobs: queue.SimpleQueue[_Member | None] | None = None
        self._pending: collections.deque[_Member] = collections.deque()
        self._finalizer: weakref.finalize | None = None

    def _ready(self, wait_for: int) -> bytes:
        out = []
        while self._pending and (len(self._pending) > wait_for or self._pending[0].done.is_set()):
            out.append(self._pending.popleft().result())
        return b"".join(out)

    def compress(self, data: bytes) -> bytes:
        self._members += 1
        if GZIP_THREADS == 1:
            return _gzip_member(data, self._level)
        if self._jobs is None:
            jobs: queue.SimpleQueue[_Member | None] = queue.SimpleQueue()
            self._jobs = jobs
            for number in range(GZIP_THREADS):
                threading.Thread(target=_work, args=(jobs,), name=f"mct-gzip-{number}", daemon=True).start()
            # a writer dropped unfinished (an error while the tar is written) ends its workers too
            self._finalizer = weakref.finalize(self, _stop_workers, jobs, GZIP_THREADS)
        member = _Member(data, self._level)
        self._jobs.put(member)
        self._pending.append(member)
        return self._ready(wait_for=2 * GZIP_THREADS)

    def stop(self) -> None:
        """Let the workers end (after the blocks already handed to them)."""
        if self._finalizer is not None:
            self._finalizer()  # runs once: a finalizer is dead after its first call
            self._finalizer = None
        self._jobs = None

    def finish(self) -> bytes:
        try:
            body = self._ready(wait_for=0)
        finally:
            self.stop()
        # A gzip stream holds at least one member: empty input is an empty one.
        return body if self._members else _gzip_member(b"", self._level)


class _ZstdEngine:
    def __init__(self) -> None:
        import zstandard  # opt-in codec: imported when used

        self._finish = zstandard.COMPRESSOBJ_FLUSH_FINISH
        compressor = zstandard.ZstdCompressor(
            level=ZSTD_LEVEL, threads=0, write_checksum=True, write_content_size=False
        )
        self._obj = compressor.compressobj()

    def compress(self, data: bytes) -> bytes:
        return self._obj.compress(data)

    def finish(self) -> bytes:
        return self._obj.flush(self._finish)


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
        self._engine: _Engine | None = None
        if kind in _GZIP_LEVELS:
            self._engine = _GzipEngine(_GZIP_LEVELS[kind])
        elif kind == "zstd":
            self._engine = _ZstdEngine()
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
            if isinstance(self._engine, _GzipEngine):
                self._engine.stop()


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
