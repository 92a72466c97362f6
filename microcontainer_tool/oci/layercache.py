"""A content-addressed cache of compressed layers, keyed by the tree's digest.

A change that touches only the image config (cmd, env, labels) gives the same
file tree, hence the same key: the layer is neither re-tarred nor
re-compressed, and the blob already stored is reused byte for byte.

Layout of the cache directory::

    layers/<key>.blob   the compressed layer
    layers/<key>.json   its LayerInfo (diff_id, digest, size, media type)

Entries are written to temporary files and renamed into place, so concurrent
builds (``scons -j``) sharing a cache never see half-written entries. Nothing
is ever pruned: deleting the directory (or old entries) is always safe.

A :class:`RemoteLayers` store (the team's registry,
:mod:`microcontainer_tool.registry.sharedcache`) extends the cache beyond this
machine: a local miss asks it first, and a layer fetched from it is used only
after :func:`~microcontainer_tool.oci.layercheck.check_layer` proved it is the
tree's tar byte for byte; a layer built here is offered to it.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Protocol

from microcontainer_tool import FORMAT_VERSION, jsontext
from microcontainer_tool.errors import LayerMismatchError, LayoutError, OutputError
from microcontainer_tool.hostfs.atomic import atomic_file, temp_file, unlink_quietly
from microcontainer_tool.model.tree import FileTree
from microcontainer_tool.oci.compression import media_type_suffix
from microcontainer_tool.oci.layer import LayerInfo, write_layer
from microcontainer_tool.oci.model import MEDIA_TYPE_LAYER

#: Entries are readable by everyone who shares the cache (whatever the umask).
SHARED_MODE = 0o644


class RemoteLayers(Protocol):
    """A store of layers shared beyond this machine, by cache key (untrusted: every entry is checked)."""

    def fetch_layer(self, key: str, dest: str) -> LayerInfo | None:
        """Write the blob stored for ``key`` to ``dest`` (checked against its digest) and return
        what the entry claims, or ``None`` on a miss or a failure (then warned about)."""

    def store_layer(self, key: str, blob: str, info: LayerInfo) -> None:
        """Offer the layer built here for ``key`` (failures are warnings; a read-only store does nothing)."""

    def refuse(self, key: str, reason: str) -> None:
        """Report an entry for ``key`` that was refused, and why."""


@dataclass
class LayerCacheStats:
    """What a :class:`LayerCache` did, counted.

    Attributes:
        built: layers tarred and compressed here.
        local_hits: layers found in the local directory.
        remote_hits: layers fetched from the remote store and used.
        remote_refused: remote entries that failed the check (then built here).
    """

    built: int = 0
    local_hits: int = 0
    remote_hits: int = 0
    remote_refused: int = 0


class LayerCache:
    """Compressed layers on disk, by tree digest, codec and epoch."""

    def __init__(self, root: str, remote: RemoteLayers | None = None) -> None:
        """Use (and create on first write) the cache directory ``root``.

        Args:
            root: the cache directory.
            remote: a store shared beyond this machine, asked on a local miss and
                given the layers built here.
        """
        self.root = os.path.abspath(root)
        self._dir = os.path.join(self.root, "layers")
        self.remote = remote
        self.stats = LayerCacheStats()

    @staticmethod
    def key(tree: FileTree, compression: str, epoch: int, uid: int = 0, gid: int = 0) -> str:
        """The cache key of a layer: everything its bytes depend on."""
        return LayerCache.key_of_digest(tree.digest(), compression, epoch, uid, gid)

    @staticmethod
    def key_of_digest(tree_digest: str, compression: str, epoch: int, uid: int = 0, gid: int = 0) -> str:
        """:meth:`key` from a tree digest computed already."""
        text = f"{FORMAT_VERSION}\0{compression}\0{epoch}\0{uid}\0{gid}\0{tree_digest}"
        return hashlib.sha256(text.encode()).hexdigest()

    def layer(self, tree: FileTree, compression: str, epoch: int) -> tuple[str, LayerInfo, bool]:
        """Return the cached layer of ``tree``, writing it first on a miss.

        Returns:
            ``(blob path, layer info, hit)``.

        Raises:
            LayoutError: the cache directory cannot be written.
            SourceError: a file of the tree changed while it was written.
        """
        tree_digest = tree.digest()
        key = self.key_of_digest(tree_digest, compression, epoch)
        blob = os.path.join(self._dir, f"{key}.blob")
        meta = os.path.join(self._dir, f"{key}.json")
        info = self._read(blob, meta)
        if info is not None:
            self.stats.local_hits += 1
            return blob, info, True
        try:
            os.makedirs(self._dir, exist_ok=True)
            if self.remote is not None:
                info = self._from_remote(key, tree, tree_digest, compression, epoch, blob)
                if info is not None:
                    self._write_meta(meta, info)
                    self.stats.remote_hits += 1
                    return blob, info, True
            with atomic_file(blob, SHARED_MODE, fsync=False) as sink:
                os.fchmod(sink.fileno(), SHARED_MODE)
                info = write_layer(tree, sink, compression, epoch)
            self.stats.built += 1
            self._write_meta(meta, info)
        except OSError as error:
            raise LayoutError(f"{self.root}: cannot write the layer cache: {error.strerror}") from None
        except OutputError as error:
            raise LayoutError(f"{self.root}: cannot write the layer cache: {error}") from None
        if self.remote is not None:
            self.remote.store_layer(key, blob, info)
        return blob, info, False

    @staticmethod
    def _write_meta(meta: str, info: LayerInfo) -> None:
        with atomic_file(meta, SHARED_MODE, fsync=False) as handle:
            os.fchmod(handle.fileno(), SHARED_MODE)
            handle.write(json.dumps(info.__dict__, sort_keys=True).encode())

    def _from_remote(self, key: str, tree: FileTree, tree_digest: str, compression: str, epoch: int,
                     blob: str) -> LayerInfo | None:
        """The remote entry of ``key`` moved to ``blob`` once it proved to be the tree's layer, else None."""
        from microcontainer_tool.oci.layercheck import check_layer

        assert self.remote is not None
        fd, tmp = temp_file(self._dir, f".{key}.remote")
        os.close(fd)
        try:
            claimed = self.remote.fetch_layer(key, tmp)
            if claimed is None:
                return None
            want_type = MEDIA_TYPE_LAYER + media_type_suffix(compression)
            try:
                if claimed.media_type != want_type:
                    raise LayerMismatchError(f"its media type is {claimed.media_type!r}, not {want_type!r}")
                with open(tmp, "rb") as handle:
                    diff_id = check_layer(handle, tree, tree_digest, epoch)
                if diff_id != claimed.diff_id:
                    raise LayerMismatchError(
                        f"it decompresses to {diff_id}, the entry claims {claimed.diff_id}")
            except LayerMismatchError as error:
                self.stats.remote_refused += 1
                self.remote.refuse(key, str(error))
                return None
            os.chmod(tmp, SHARED_MODE)
            os.replace(tmp, blob)
            return claimed
        finally:
            unlink_quietly(tmp)

    @staticmethod
    def _read(blob: str, meta: str) -> LayerInfo | None:
        try:
            data = jsontext.load_file(meta)
            info = LayerInfo(**data)
            if os.path.getsize(blob) != info.size:
                return None
            return info
        except (OSError, ValueError, TypeError):
            return None
