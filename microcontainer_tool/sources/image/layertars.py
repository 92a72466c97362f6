"""Layers of existing images, indexed once into a shared cache, read from their blobs.

:class:`LayerCache` prepares each layer of an image (anything
:func:`~microcontainer_tool.oci.imageview.open_image` reads) once, in a cache
shared by every image. What it keeps is small:

* ``layertars/<diff_id hex>.json``: the index of the layer's members (path,
  type, mode, size, data offset in the uncompressed tar, symlink or hardlink
  target) and the tar's size, written only after both the blob digest and the
  ``diff_id`` matched.

The decompressed tar itself is not kept. :meth:`LayerCache.layer` (on a miss)
and :meth:`LayerCache.unpack` (when a build needs a file of an indexed layer
that was not taken out yet) decompress the blob (gzip, zstd or none, told by
magic), streamed in 1 MiB chunks, into a *scratch* tar: a file created in
``layertars/`` and unlinked at once, so it lives exactly as long as the open
descriptor the caller holds (a crash leaves nothing behind but, at worst, one
temporary file). Every such read checks the blob digest and the ``diff_id``
again, so the offsets of the cached index always point into the verified
bytes; a layer expanding past the :class:`~microcontainer_tool.oci.layer.LayerLimits`
(uncompressed size, ratio) stops there and nothing of it stays.

Entries are named by the ``diff_id`` only — never by the image's path, tag or
user — so two images sharing a layer share its cache entry, and an image
rebuilt at the same path never sees the previous image's files.

The index is read from the tar's headers alone (:func:`index_layer_tar`):
absolute member names, ``..`` climbing above the root and sparse members are
refused with one-line errors naming the layer digest and the member; whiteouts
(``.wh.NAME``, ``.wh..wh..opq``) are recorded as such for the merge.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from microcontainer_tool import jsontext
from microcontainer_tool.errors import DigestMismatchError, LayoutError, PathEscapeError, SourceError
from microcontainer_tool.hostfs.atomic import atomic_file, temp_file, unlink_quietly
from microcontainer_tool.oci.imageview import HashingReader, ImageView
from microcontainer_tool.oci.layer import CHUNK_SIZE, DECODE_ERRORS, LayerLimits, open_layer_stream

INDEX_VERSION = 2
"""Format of the cached per-layer index; another value is rebuilt.

Version 1 kept the decompressed tar beside the index (``<diff_id hex>.tar``);
such a tar is deleted when its entry is rebuilt."""

LAYER_TARS = "layertars"

_TYPE_FLAGS = {
    b"0": "f", b"\0": "f", b"7": "f", b"5": "d", b"2": "l", b"1": "h",
    b"3": "c", b"4": "b", b"6": "p",
}
_WHITEOUT = ".wh."
_OPAQUE = ".wh..wh..opq"
_PIPELINE_DEPTH = 4


@dataclass(frozen=True)
class LayerEntry:
    """One layer as prepared in the cache.

    Attributes:
        digest: the layer blob's digest (named in error messages).
        diff_id: the digest of its uncompressed tar (names the cache entries).
        tar_size: the size of its uncompressed tar.
        members: the index: ``[path, kind, mode, size, offset, link]`` per member,
            in tar order; kind is ``f d l h c b p`` (file, dir, symlink, hardlink,
            char, block, fifo), ``w`` (whiteout of ``path``) or ``o`` (``path``
            is opaque).
        reused: whether the index came from the cache (no decompression).
    """

    digest: str
    diff_id: str
    tar_size: int
    members: list[list[Any]]
    reused: bool


class _TarWriter:
    """Hashes and writes chunks on its own thread (hashlib and file writes release the GIL)."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._sha = hashlib.sha256()
        self._queue: queue.Queue[bytes | None] = queue.Queue(_PIPELINE_DEPTH)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="mct-layertar", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (chunk := self._queue.get()) is not None:
            if self._error is None:  # after a failure keep draining, so put() never blocks
                try:
                    self._sha.update(chunk)
                    self._out.write(chunk)
                except BaseException as error:  # noqa: BLE001 - handed to the producer
                    self._error = error

    def put(self, chunk: bytes) -> bool:
        """Queue a chunk; ``False`` once writing has failed (stop producing)."""
        self._queue.put(chunk)
        return self._error is None

    def _stop(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def finish(self) -> str:
        """Wait for every chunk, close the file; the tar's ``sha256:`` digest.

        Raises:
            OSError: a write failed.
        """
        self._stop()
        self._out.close()
        if self._error is not None:
            raise self._error
        return "sha256:" + self._sha.hexdigest()

    def abort(self) -> None:
        """Stop the thread and close the file, ignoring errors."""
        self._stop()
        try:
            self._out.close()
        except OSError:
            pass


def _clean(name: str, where: str, what: str) -> str:
    """A member name as a relative image path (``usr/bin/cat``; ``""`` is the root).

    Raises:
        LayoutError: the name is absolute.
        PathEscapeError: a ``..`` climbs above the root.
    """
    if name.startswith("/"):
        raise LayoutError(f"{where}: {what} {name!r} is an absolute path")
    parts: list[str] = []
    for part in name.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                raise PathEscapeError(f"{where}: {what} {name!r} climbs above the root")
            parts.pop()
        else:
            parts.append(part)
    return "/".join(parts)


def index_layer_tar(tar_path: str, where: str) -> list[list[Any]]:
    """Index an uncompressed layer tar: its members, in order, with data offsets.

    Headers are read with ``pread`` (contents are never read). The format rules
    are those of Python's ``tarfile`` and Go's ``archive/tar``, which runtimes
    use: ustar (with ``prefix``), GNU long names (``L``/``K``), PAX extended
    (``x``) and global (``g``) headers for ``path``, ``linkpath`` and ``size``;
    an old-style regular file whose name ends in ``/`` is a directory; only
    regular files have data blocks; the first zero block ends the archive.

    Args:
        tar_path: the tar file.
        where: ``IMAGE: layer DIGEST``, the start of error messages.

    Returns:
        ``[path, kind, mode, size, offset, link]`` per member (see :class:`LayerEntry`).

    Raises:
        LayoutError: not a tar (bad checksum, truncated), an unsupported member
            type (sparse, volume...), an absolute name, or a malformed whiteout.
        PathEscapeError: a name or hardlink target climbs above the root.
    """
    fd = os.open(tar_path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return index_layer_fd(fd, where)
    finally:
        os.close(fd)


def index_layer_fd(fd: int, where: str) -> list[list[Any]]:
    """:func:`index_layer_tar` of an open tar (read with ``pread``; its position is unused)."""
    members: list[list[Any]] = []
    for name, kind, mode, size, offset, link in _scan_tar(fd, os.fstat(fd).st_size, where):
        members.extend(_index_member(name, kind, mode, size, offset, link, where))
    return members


_BLOCK = 512
_ZERO_BLOCK = bytes(_BLOCK)
_MAX_META = 1 << 20
"""Largest PAX or GNU long-name header accepted (bytes)."""
_HEADER_ONLY = frozenset(b"123456")  # hardlink, symlink, char, block, dir, fifo: no data blocks
_SPARSE_KEYS = ("GNU.sparse.",)


def _number(field: bytes, where: str, offset: int) -> int:
    if field and field[0] & 0x80:  # base-256 (GNU), big-endian two's complement
        value = int.from_bytes(field[1:], "big")
        return value - (1 << (8 * len(field) - 1)) if field[0] & 0x40 else value
    text = field.split(b"\0", 1)[0].strip(b" \0")
    try:
        return int(text, 8) if text else 0
    except ValueError:
        raise LayoutError(f"{where}: malformed tar header at offset {offset}") from None


def _text(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _pax_records(data: bytes, where: str, offset: int) -> dict[str, str]:
    records: dict[str, str] = {}
    pos = 0
    while pos < len(data) and data[pos] != 0:
        space = data.find(b" ", pos)
        try:
            length = int(data[pos:space])
        except ValueError:
            raise LayoutError(f"{where}: malformed PAX header at offset {offset}") from None
        record = data[space + 1: pos + length]
        if length <= 0 or space < 0 or not record.endswith(b"\n") or b"=" not in record:
            raise LayoutError(f"{where}: malformed PAX header at offset {offset}")
        key, _, value = record[:-1].partition(b"=")
        records[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return records


def _scan_tar(fd: int, total: int, where: str) -> Iterator[tuple[str, str, int, int, int, str]]:
    """Yield ``(name, kind, mode, size, data offset, linkname)`` per member of a tar."""
    offset = 0
    pax: dict[str, str] = {}
    global_pax: dict[str, str] = {}
    long_name: str | None = None
    long_link: str | None = None
    while offset + _BLOCK <= total:
        block = os.pread(fd, _BLOCK, offset)
        if block == _ZERO_BLOCK:
            return
        stored = _number(block[148:156], where, offset)
        unsigned = sum(block) - sum(block[148:156]) + 256
        if stored != unsigned:  # some old tars summed signed chars
            high = sum(1 for b in block[:148] + block[156:] if b & 0x80)
            if stored != unsigned - 256 * high:
                raise LayoutError(f"{where}: not a tar (bad header checksum at offset {offset})")
        flag = block[156:157]
        size = _number(block[124:136], where, offset)
        data = offset + _BLOCK
        if flag in (b"x", b"g", b"L", b"K"):
            if not 0 <= size <= _MAX_META or data + size > total:
                raise LayoutError(f"{where}: oversized or truncated extended header at offset {offset}")
            meta = os.pread(fd, size, data)
            if flag == b"x":
                pax = _pax_records(meta, where, offset)
            elif flag == b"g":
                global_pax.update(_pax_records(meta, where, offset))
            elif flag == b"L":
                long_name = _text(meta)
            else:
                long_link = _text(meta)
            offset = data + -(-size // _BLOCK) * _BLOCK
            continue
        name = _text(block[0:100])
        if block[257:265] == b"ustar\x0000":  # POSIX ustar or PAX (not GNU): name prefix
            prefix = _text(block[345:500])
            if prefix:
                name = prefix + "/" + name
        link = _text(block[157:257])
        fields = {**global_pax, **pax} if global_pax else pax
        if long_name is not None:
            name = long_name
        if long_link is not None:
            link = long_link
        name = fields.get("path", name)
        link = fields.get("linkpath", link)
        if "size" in fields:
            try:
                size = int(fields["size"])
            except ValueError:
                raise LayoutError(f"{where}: malformed PAX size at offset {offset}") from None
        if any(key.startswith(_SPARSE_KEYS) for key in fields) or flag == b"S":
            raise LayoutError(f"{where}: member {name!r} is a sparse file (not supported)")
        if flag == b"\0" and name.endswith("/"):
            flag = b"5"
        kind = _TYPE_FLAGS.get(flag)
        if kind is None:
            raise LayoutError(f"{where}: member {name!r} has an unsupported type {flag!r}")
        if flag[0] in _HEADER_ONLY or size < 0:
            size = 0
        if data + size > total:
            raise LayoutError(f"{where}: member {name!r} is truncated")
        yield name, kind, _number(block[100:108], where, offset) & 0o7777, size, data, link
        offset = data + -(-size // _BLOCK) * _BLOCK
        pax, long_name, long_link = {}, None, None


def _index_member(name: str, kind: str, mode: int, size: int, offset: int, link: str,
                  where: str) -> list[list[Any]]:
    path = _clean(name, where, "member")
    if not path:
        if kind != "d":
            raise LayoutError(f"{where}: member {name!r} names the root but is not a directory")
        return []
    base = posixpath.basename(path)
    if base.startswith(_WHITEOUT):
        parent = path[: -len(base)]
        if base == _OPAQUE:
            return [[parent.rstrip("/"), "o", 0, 0, 0, ""]]
        if base.startswith(_WHITEOUT + _WHITEOUT):
            return []  # aufs bookkeeping (.wh..wh.plnk ...), not part of the file system
        hidden = base[len(_WHITEOUT):]
        if hidden in ("", ".", ".."):
            raise LayoutError(f"{where}: member {name!r} is a malformed whiteout")
        return [[parent + hidden, "w", 0, 0, 0, ""]]
    if kind == "h":
        link = _clean(link, where, f"hardlink {name!r} target")
        if not link:
            raise LayoutError(f"{where}: hardlink {name!r} points to the root directory")
    elif kind != "l":
        link = ""
    if kind != "f":
        size = offset = 0
    return [[path, kind, mode, size, offset, link]]


class LayerCache:
    """The per-layer part of the cache: each layer's index, by ``diff_id``; tars only as scratch."""

    def __init__(self, cache_dir: str, limits: LayerLimits | None = None) -> None:
        """Use (and create) ``cache_dir``.

        Args:
            cache_dir: the cache directory.
            limits: how far a layer may expand while it is decompressed (default:
                :class:`~microcontainer_tool.oci.layer.LayerLimits`); past them it
                is refused and nothing of it stays in the cache.

        Raises:
            SourceError: the cache directory cannot be created.
        """
        self.cache_dir = os.path.abspath(cache_dir)
        self.limits = limits or LayerLimits()
        self.tars = os.path.join(self.cache_dir, LAYER_TARS)
        self.decompressed = 0
        """Layers this object decompressed (counted: a warm build that needs no new file does none)."""
        try:
            os.makedirs(self.tars, exist_ok=True)
        except OSError as error:
            raise SourceError(f"{cache_dir}: cannot create the cache: {error.strerror or error}") from None

    def _cache_error(self, error: OSError) -> SourceError:
        return SourceError(f"{self.cache_dir}: cannot write the cache: {error.strerror or error}")

    def index_path(self, diff_id: str) -> str:
        """The index path of a layer."""
        return os.path.join(self.tars, diff_id.split(":", 1)[1] + ".json")

    def layer(self, view: ImageView, number: int) -> tuple[LayerEntry, int | None]:
        """Layer ``number`` of ``view``: its index from the cache, or made now.

        Returns:
            The entry, and (when the layer was decompressed to index it) the
            descriptor of its scratch tar, which the caller closes; ``None``
            when the index came from the cache.

        Raises:
            DigestMismatchError: the blob or its uncompressed tar is not what
                the manifest and config say.
            LayoutError: a corrupt blob, or a layer :func:`index_layer_tar` refuses.
            LayerLimitError: the layer expands past the cache's limits.
        """
        digest, diff_id = view.layers[number].digest, view.diff_ids[number]
        index_path = self.index_path(diff_id)
        cached = self._cached(diff_id, index_path)
        if cached is not None:
            return LayerEntry(digest, diff_id, cached[0], cached[1], True), None
        where = f"{view.path}: layer {digest}"
        fd = self.unpack(view, number)
        try:
            members = index_layer_fd(fd, where)
            size = os.fstat(fd).st_size
            unlink_quietly(index_path[: -len(".json")] + ".tar")  # a version-1 entry's tar
            self._write_index(index_path, {"version": INDEX_VERSION, "diff_id": diff_id, "tar_size": size,
                                           "members": members})
        except OSError as error:
            os.close(fd)
            raise self._cache_error(error) from None
        except BaseException:
            os.close(fd)
            raise
        return LayerEntry(digest, diff_id, size, members, False), fd

    @staticmethod
    def _cached(diff_id: str, index_path: str) -> tuple[int, list[list[Any]]] | None:
        try:
            index = jsontext.load_file(index_path)
        except (OSError, ValueError):
            return None
        if (not isinstance(index, dict) or index.get("version") != INDEX_VERSION
                or index.get("diff_id") != diff_id or not isinstance(index.get("tar_size"), int)
                or not isinstance(index.get("members"), list)):
            return None
        members: list[list[Any]] = index["members"]
        return index["tar_size"], members

    def unpack(self, view: ImageView, number: int) -> int:
        """Decompress layer ``number`` into a scratch tar, checking digest and diff_id.

        The tar is created in the cache directory and unlinked before this
        returns: it is gone once the returned descriptor is closed.

        Returns:
            A read-only descriptor of the verified uncompressed tar (the caller closes it).

        Raises:
            DigestMismatchError: the blob or its uncompressed tar is not what
                the manifest and config say.
            LayoutError: a corrupt blob.
            LayerLimitError: the layer expands past the cache's limits.
            SourceError: the scratch tar cannot be written.
        """
        where = f"{view.path}: layer {view.layers[number].digest}"
        tmp = self._decompress(view, number, where)
        try:
            fd = os.open(tmp, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as error:
            raise self._cache_error(error) from None
        finally:
            unlink_quietly(tmp)
        self.decompressed += 1
        return fd
    def _decompress(self, view: ImageView, number: int, where: str) -> str:
        """Decompress a layer blob into a temporary tar, checking digest and diff_id.

        Two stages run at once: this thread reads, hashes and decompresses the
        blob; a writer thread hashes the tar and writes it. At most
        ``_PIPELINE_DEPTH`` chunks of 1 MiB are in flight.
        """
        desc, diff_id = view.layers[number], view.diff_ids[number]
        fd, tmp = temp_file(self.tars, "." + diff_id.split(":", 1)[1], 0o600)
        writer = _TarWriter(os.fdopen(fd, "wb"))
        try:
            with view.open_layer_blob(number) as blob:
                reader = HashingReader(blob)
                try:
                    stream = open_layer_stream(reader, self.limits, where)  # type: ignore[arg-type]
                    while (chunk := stream.read(CHUNK_SIZE)) and writer.put(chunk):
                        pass
                    while reader.read(CHUNK_SIZE):
                        pass
                except DECODE_ERRORS as error:
                    if isinstance(error, OSError) and error.errno is not None:
                        raise
                    raise LayoutError(f"{where}: corrupt layer blob: {error}") from None
            actual = writer.finish()
            if "sha256:" + reader.sha.hexdigest() != desc.digest or reader.size != desc.size:
                raise DigestMismatchError(f"{where}: blob does not match its digest")
            if actual != diff_id:
                raise DigestMismatchError(f"{where}: unpacks to {actual}, config says {diff_id}")
        except OSError as error:
            writer.abort()
            unlink_quietly(tmp)
            raise self._cache_error(error) from None
        except BaseException:
            writer.abort()
            unlink_quietly(tmp)
            raise
        return tmp

    def _write_index(self, path: str, index: dict[str, Any]) -> None:
        try:
            with atomic_file(path, 0o600, fsync=False) as out:
                out.write(json.dumps(index, separators=(",", ":")).encode("ascii"))
        except OSError as error:
            raise self._cache_error(error) from None
