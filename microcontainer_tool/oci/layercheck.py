"""Checking a layer blob made elsewhere against the tree it claims to hold.

A layer fetched from a shared cache is named by a key derived from our own
:class:`~microcontainer_tool.model.tree.FileTree` (its :meth:`digest`), the
codec, the epoch and the owner. :func:`check_layer` proves, without reading a
single host file again, that the blob's uncompressed tar is **byte for byte**
the tar :func:`~microcontainer_tool.oci.layer.write_layer` would write for that
tree: every header is compared with the one we would write, every padding and
the end-of-archive record must be zeros, and the member contents are hashed
into the tree digest, which must be the tree's. Only the compressed encoding
is taken on trust: it was checked against the blob digest by the caller, and
it must decompress to exactly that tar (whose ``diff_id`` is returned).
"""

from __future__ import annotations

import hashlib
import tarfile
from typing import BinaryIO

from microcontainer_tool.errors import LayerMismatchError, MicrocontainerError
from microcontainer_tool.model.tree import EntryKind, FileTree, HostFile, InlineContent
from microcontainer_tool.oci.layer import (
    CHUNK_SIZE,
    DECODE_ERRORS,
    LayerLimits,
    normalized_info,
    open_layer_stream,
)

_BLOCK = tarfile.BLOCKSIZE
_RECORD = tarfile.RECORDSIZE


class _Reader:
    """Reads exact byte counts from the uncompressed stream, hashing all of it."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self.sha = hashlib.sha256()
        self.offset = 0

    def read(self, size: int) -> bytes:
        parts = []
        left = size
        while left:
            data = self._stream.read(min(left, CHUNK_SIZE))
            if not data:
                raise LayerMismatchError(f"the tar ends at byte {self.offset}, before the tree does")
            parts.append(data)
            left -= len(data)
            self.offset += len(data)
            self.sha.update(data)
        return b"".join(parts)

    def at_end(self) -> bool:
        """Whether the stream has no more bytes."""
        return not self._stream.read(1)

    def expect(self, data: bytes, what: str) -> None:
        at = self.offset
        if self.read(len(data)) != data:
            raise LayerMismatchError(f"{what} differs (at byte {at} of the tar)")

    def expect_zeros(self, size: int, what: str) -> None:
        self.expect(bytes(size), what)

    def content(self, size: int) -> str:
        """The SHA-256 (hex) of the next ``size`` bytes, read in chunks."""
        sha = hashlib.sha256()
        left = size
        while left:
            data = self.read(min(left, CHUNK_SIZE))
            sha.update(data)
            left -= len(data)
        return sha.hexdigest()


def _header(info: tarfile.TarInfo) -> bytes:
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _pad(size: int) -> int:
    rest = size % _BLOCK
    return _BLOCK - rest if rest else 0


def check_layer(blob: BinaryIO, tree: FileTree, tree_digest: str, mtime: int, uid: int = 0, gid: int = 0,
                limits: LayerLimits | None = None) -> str:
    """Check that ``blob`` decompresses to the tar of ``tree``; return its ``diff_id``.

    Args:
        blob: the (compressed) layer blob, read from its start.
        tree: the tree the blob must hold.
        tree_digest: ``tree.digest()``, computed once by the caller (the key came from it).
        mtime: the epoch stamped on every member.
        uid: the owner of every member.
        gid: the group of every member.
        limits: how far the blob may expand.

    Returns:
        The ``sha256:`` digest of the uncompressed tar (the layer's ``diff_id``).

    Raises:
        LayerMismatchError: any byte differs from what :func:`write_layer` writes for
            ``tree``, or the blob cannot be decoded.
    """
    try:
        reader = _Reader(open_layer_stream(blob, limits, "cached layer"))
        return _check(reader, tree, tree_digest, mtime, uid, gid)
    except LayerMismatchError:
        raise
    except DECODE_ERRORS as error:
        raise LayerMismatchError(f"not a readable layer: {error}") from None
    except MicrocontainerError as error:  # a layer limit
        raise LayerMismatchError(str(error)) from None


def _check(reader: _Reader, tree: FileTree, tree_digest: str, mtime: int, uid: int, gid: int) -> str:
    digest = hashlib.sha256()
    first_link: dict[tuple[int, int], str] = {}
    for entry in tree:
        name = entry.path.lstrip("/")
        where = f"the header of {entry.path}"
        digest.update(f"{entry.path}\0{entry.kind.value}\0{entry.mode:o}\0{entry.linkname}\0".encode())
        if entry.kind is EntryKind.DIR:
            reader.expect(_header(normalized_info(name, tarfile.DIRTYPE, entry.mode, mtime,
                                                  uid=uid, gid=gid)), where)
        elif entry.kind is EntryKind.SYMLINK:
            reader.expect(_header(normalized_info(name, tarfile.SYMTYPE, entry.mode, mtime,
                                                  linkname=entry.linkname, uid=uid, gid=gid)), where)
        else:
            content = entry.content
            identity = content.identity if isinstance(content, HostFile) else None
            if identity is not None and identity in first_link:
                target = first_link[identity]
                reader.expect(_header(normalized_info(name, tarfile.LNKTYPE, entry.mode, mtime,
                                                      linkname=target, uid=uid, gid=gid)), where)
                digest.update(f"hardlink\0/{target}".encode())
                digest.update(b"\n")
                continue
            if identity is not None:
                first_link[identity] = name
            size = content.size if isinstance(content, (HostFile, InlineContent)) else 0
            reader.expect(_header(normalized_info(name, tarfile.REGTYPE, entry.mode, mtime, size=size,
                                                  uid=uid, gid=gid)), where)
            got = reader.content(size)
            if content is not None:
                digest.update(got.encode())
            reader.expect_zeros(_pad(size), f"the padding after {entry.path}")
        digest.update(b"\n")
    end = 2 * _BLOCK
    rest = (reader.offset + end) % _RECORD
    reader.expect_zeros(end + (_RECORD - rest if rest else 0), "the end-of-archive record")
    if not reader.at_end():
        raise LayerMismatchError(f"the tar goes on after the end of the tree (byte {reader.offset})")
    if "sha256:" + digest.hexdigest() != tree_digest:
        raise LayerMismatchError("its files' contents are not the tree's")
    return "sha256:" + reader.sha.hexdigest()
