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
"""

from __future__ import annotations

import hashlib
import json
import os

from microcontainer_tool import FORMAT_VERSION, jsontext
from microcontainer_tool.errors import LayoutError, OutputError
from microcontainer_tool.hostfs.atomic import atomic_file
from microcontainer_tool.model.tree import FileTree
from microcontainer_tool.oci.layer import LayerInfo, write_layer

#: Entries are readable by everyone who shares the cache (whatever the umask).
SHARED_MODE = 0o644


class LayerCache:
    """Compressed layers on disk, by tree digest, codec and epoch."""

    def __init__(self, root: str) -> None:
        """Use (and create on first write) the cache directory ``root``."""
        self.root = os.path.abspath(root)
        self._dir = os.path.join(self.root, "layers")

    @staticmethod
    def key(tree: FileTree, compression: str, epoch: int, uid: int = 0, gid: int = 0) -> str:
        """The cache key of a layer: everything its bytes depend on."""
        text = f"{FORMAT_VERSION}\0{compression}\0{epoch}\0{uid}\0{gid}\0{tree.digest()}"
        return hashlib.sha256(text.encode()).hexdigest()

    def layer(self, tree: FileTree, compression: str, epoch: int) -> tuple[str, LayerInfo, bool]:
        """Return the cached layer of ``tree``, writing it first on a miss.

        Returns:
            ``(blob path, layer info, hit)``.

        Raises:
            LayoutError: the cache directory cannot be written.
            SourceError: a file of the tree changed while it was written.
        """
        key = self.key(tree, compression, epoch)
        blob = os.path.join(self._dir, f"{key}.blob")
        meta = os.path.join(self._dir, f"{key}.json")
        info = self._read(blob, meta)
        if info is not None:
            return blob, info, True
        try:
            os.makedirs(self._dir, exist_ok=True)
            with atomic_file(blob, SHARED_MODE, fsync=False) as sink:
                os.fchmod(sink.fileno(), SHARED_MODE)
                info = write_layer(tree, sink, compression, epoch)
            with atomic_file(meta, SHARED_MODE, fsync=False) as handle:
                os.fchmod(handle.fileno(), SHARED_MODE)
                handle.write(json.dumps(info.__dict__, sort_keys=True).encode())
        except OSError as error:
            raise LayoutError(f"{self.root}: cannot write the layer cache: {error.strerror}") from None
        except OutputError as error:
            raise LayoutError(f"{self.root}: cannot write the layer cache: {error}") from None
        return blob, info, False

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
