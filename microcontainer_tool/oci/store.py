"""The content-addressed OCI image layout store: ``oci-layout``, ``index.json`` and ``blobs/sha256``.

:class:`LayoutStore` writes blobs atomically and idempotently, reads JSON
blobs verified against their descriptors, and rewrites ``index.json``
atomically. The output formats built on it are in
:mod:`microcontainer_tool.oci.layout`; the referrers kept in it in
:mod:`microcontainer_tool.oci.referrers`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from typing import Any, BinaryIO

from microcontainer_tool.errors import DigestMismatchError, LayoutError
from microcontainer_tool.hostfs.atomic import fsync_dir, temp_file, unlink_quietly, write_atomic
from microcontainer_tool.oci import model as oci
from microcontainer_tool.oci.blobs import MAX_JSON_BLOB, read_json_blob
from microcontainer_tool.oci.layer import CHUNK_SIZE
from microcontainer_tool.oci.model import Descriptor, canonical_json

OCI_LAYOUT_FILE = "oci-layout"
OCI_LAYOUT = {"imageLayoutVersion": "1.0.0"}
INDEX_FILE = "index.json"
BLOBS_DIR = "blobs/sha256"
OCTET_STREAM = "application/octet-stream"


def _hex(digest: str) -> str:
    return oci.check_digest(digest)[len("sha256:"):]


class LayoutStore:
    """A content-addressed OCI image layout directory.

    Blobs are written atomically (hashed while copied into a temporary file in
    the blob directory, fsynced, renamed to ``blobs/sha256/<hex>``) and
    idempotently (an existing blob is kept).
    """

    def __init__(self, root: str) -> None:
        """Open or create the layout at ``root`` (writes ``oci-layout``).

        Raises:
            LayoutError: ``root`` cannot be created or written.
        """
        self.root = root
        self._blobs = os.path.join(root, BLOBS_DIR)
        try:
            os.makedirs(self._blobs, exist_ok=True)
            layout = os.path.join(root, OCI_LAYOUT_FILE)
            if not os.path.exists(layout):
                write_atomic(layout, canonical_json(OCI_LAYOUT))
        except OSError as error:
            raise LayoutError(f"{root}: cannot write OCI layout: {error.strerror or error}") from None

    def blob_path(self, digest: str) -> str:
        """Return the file path of the blob named ``digest``."""
        return os.path.join(self._blobs, _hex(digest))

    def has_blob(self, digest: str) -> bool:
        """Whether the blob named ``digest`` is present."""
        return os.path.exists(self.blob_path(digest))

    def put_blob(self, data: bytes | BinaryIO, media_type: str = OCTET_STREAM,
                 expected_digest: str | None = None) -> Descriptor:
        """Store bytes or a stream's content as a blob.

        Args:
            data: the content, or a binary stream read to its end in chunks.
            media_type: media type put in the returned descriptor.
            expected_digest: if given, the content must have this digest.

        Returns:
            The blob's descriptor.

        Raises:
            DigestMismatchError: the content does not match ``expected_digest``.
            LayoutError: the blob cannot be written.
        """
        sha = hashlib.sha256()
        size = 0
        fd, tmp = -1, ""
        try:
            fd, tmp = temp_file(self._blobs, ".blob")
            with os.fdopen(fd, "wb") as out:
                if isinstance(data, (bytes, bytearray, memoryview)):
                    sha.update(data)
                    out.write(data)
                    size = len(data)
                else:
                    while chunk := data.read(CHUNK_SIZE):
                        sha.update(chunk)
                        out.write(chunk)
                        size += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            digest = "sha256:" + sha.hexdigest()
            if expected_digest is not None and digest != expected_digest:
                raise DigestMismatchError(f"blob content is {digest}, expected {expected_digest}")
            final = os.path.join(self._blobs, digest[len("sha256:"):])
            if os.path.exists(final):
                os.unlink(tmp)
            else:
                os.rename(tmp, final)
            tmp = ""
        except OSError as error:
            raise LayoutError(f"{self.root}: cannot write blob: {error.strerror or error}") from None
        finally:
            if tmp:
                unlink_quietly(tmp)
        return Descriptor(media_type, digest, size)

    def adopt_file(self, path: str, desc: Descriptor) -> Descriptor:
        """Move a file whose digest the caller computed while writing it into the store.

        If the blob is already there it is left untouched (its mtime too) and
        ``path`` is removed, so an unchanged layer is never rewritten.

        Raises:
            LayoutError: the file cannot be moved.
        """
        final = self.blob_path(desc.digest)
        try:
            if os.path.exists(final):
                os.unlink(path)
            else:
                with open(path, "rb+") as handle:
                    os.fsync(handle.fileno())
                os.rename(path, final)
        except OSError as error:
            raise LayoutError(f"{self.root}: cannot store blob: {error.strerror or error}") from None
        return desc

    def collect_garbage(self, keep: Sequence[str]) -> None:
        """Remove every blob whose digest is not in ``keep`` (and stray temp files)."""
        wanted = {d.split(":", 1)[1] for d in keep}
        try:
            names = os.listdir(self._blobs)
        except OSError:
            return
        for name in names:
            if name not in wanted:
                unlink_quietly(os.path.join(self._blobs, name))

    def put_file(self, path: str, media_type: str = OCTET_STREAM,
                 expected_digest: str | None = None) -> Descriptor:
        """Store the content of the file at ``path`` as a blob (streamed)."""
        try:
            with open(path, "rb") as handle:
                return self.put_blob(handle, media_type, expected_digest)
        except OSError as error:
            raise LayoutError(f"{path}: cannot read blob: {error.strerror or error}") from None

    def read_json(self, desc: Descriptor, label: str, limit: int = MAX_JSON_BLOB) -> dict[str, Any]:
        """Read the JSON-object blob ``desc``, verified.

        See :func:`~microcontainer_tool.oci.blobs.read_json_blob`.

        Raises:
            DigestMismatchError: the blob does not match ``desc``.
            LayoutError: missing, unreadable, too large, not JSON or not an object.
        """
        try:
            with open(self.blob_path(desc.digest), "rb") as handle:
                return read_json_blob(handle, desc, label, limit)
        except OSError as error:
            raise LayoutError(f"{label}: cannot read blob {desc.digest}: {error.strerror or error}") from None

    def put_json(self, obj: Any, media_type: str) -> Descriptor:
        """Store ``obj`` serialized with :func:`~microcontainer_tool.oci.model.canonical_json`."""
        return self.put_blob(canonical_json(obj), media_type)

    def write_index(self, descs: Sequence[Descriptor]) -> dict[str, Any]:
        """Atomically write ``index.json`` listing ``descs``; return the index."""
        index = oci.index(descs)
        try:
            write_atomic(os.path.join(self.root, INDEX_FILE), canonical_json(index))
        except OSError as error:
            raise LayoutError(f"{self.root}: cannot write index.json: {error.strerror or error}") from None
        return index

    def sync(self) -> None:
        """fsync the layout's directories (after all writes)."""
        fsync_dir(self._blobs)
        fsync_dir(os.path.dirname(self._blobs))
        fsync_dir(self.root)
