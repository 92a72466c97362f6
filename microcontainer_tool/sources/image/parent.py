"""``parent:``: a base image whose layers go under ours, unchanged.

The parent's layer blobs are copied byte for byte (so their digests, and a
registry's deduplication, are kept); only their media types are written in
the OCI spelling (a Docker ``tar.gzip`` layer is the same bytes as an OCI
``tar+gzip`` one). Our config lists the parent's ``diff_ids`` and history
first. Files our layer would hold that the parent already has at the same
path with the same bytes and mode (or the same symlink target) are left out
of our layer, so a program's libraries that the parent provides are shared
rather than copied.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from typing import Any

from microcontainer_tool.errors import SpecError
from microcontainer_tool.model.tree import EntryKind, FileTree, HostFile, InlineContent, content_hash
from microcontainer_tool.oci import model as oci
from microcontainer_tool.oci.imageview import open_image
from microcontainer_tool.oci.layer import LayerLimits
from microcontainer_tool.oci.layout import BaseLayer
from microcontainer_tool.oci.model import Descriptor
from microcontainer_tool.oci.store import LayoutStore
from microcontainer_tool.sources.image.root import ImageRoot

#: Cache subdirectory holding verified copies of parent layer blobs.
BLOBS_DIR = "parent-blobs"
_OCI_MEDIA_TYPES = {
    oci.DOCKER_LAYER: oci.MEDIA_TYPE_LAYER,
    oci.DOCKER_LAYER_GZIP: oci.MEDIA_TYPE_LAYER_GZIP,
}
_LAYER_TYPES = (oci.MEDIA_TYPE_LAYER, oci.MEDIA_TYPE_LAYER_GZIP, oci.MEDIA_TYPE_LAYER_ZSTD)


@dataclass
class ParentImage:
    """A parent image, ready to be put under a build's layer.

    Attributes:
        name: how provenance names it (``REF@DIGEST`` or the local path).
        manifest_digest: the parent's manifest digest.
        config_digest: its config's digest (the image ID).
        config: the parent's image config.
        layers: its layers, bottom first, with verified local copies.
        root: its merged file system (for deduplication and inheritance).
    """

    name: str
    manifest_digest: str
    config_digest: str
    config: dict[str, Any]
    layers: list[BaseLayer] = field(default_factory=list)
    root: ImageRoot | None = None

    @property
    def diff_ids(self) -> list[str]:
        """The parent's uncompressed layer digests, bottom first."""
        return list(self.config["rootfs"]["diff_ids"])

    @property
    def history(self) -> list[dict[str, Any]]:
        """The parent's history entries (copied into ours as they are)."""
        history = self.config.get("history")
        return [h for h in history if isinstance(h, dict)] if isinstance(history, list) else []

    @property
    def platform(self) -> tuple[str, str | None]:
        """``(architecture, variant)`` of the parent."""
        return str(self.config.get("architecture", "")), self.config.get("variant") or None


def open_parent(path: str, name: str, cache_dir: str, limits: LayerLimits | None = None) -> ParentImage:
    """Open the parent image at ``path`` and keep verified copies of its layer blobs.

    Args:
        path: what :func:`~.image.open_image` reads (a pulled registry image is a layout).
        name: the parent's name for provenance and messages.
        cache_dir: the build cache (blobs are kept in ``parent-blobs/``, by digest).
        limits: how far a layer may expand when decompressed (see :class:`.layertars.LayerCache`).

    Raises:
        LayoutError: the image is malformed or a blob cannot be stored.
        DigestMismatchError: a layer blob does not match its digest.
        SpecError: a layer type that cannot be put under ours.
    """
    store = LayoutStore(os.path.join(cache_dir, BLOBS_DIR))
    layers = []
    with open_image(path) as view:
        for number, desc in enumerate(view.layers):
            media_type = _OCI_MEDIA_TYPES.get(desc.media_type, desc.media_type)
            if media_type not in _LAYER_TYPES:
                raise SpecError(f"parent {name}: layer {desc.digest} has media type {desc.media_type!r},"
                                " which cannot be copied (not a distributable tar layer)")
            if not store.has_blob(desc.digest):
                with view.open_layer_blob(number) as blob:
                    stored = store.put_blob(blob, media_type, expected_digest=desc.digest)
                if stored.size != desc.size:
                    os.unlink(store.blob_path(desc.digest))
                    raise SpecError(f"parent {name}: layer {desc.digest} is {stored.size} bytes,"
                                    f" the manifest says {desc.size}")
            copy = store.blob_path(desc.digest)
            layers.append(BaseLayer(Descriptor(media_type, desc.digest, desc.size), copy))
        config, manifest_digest = view.config, view.manifest_digest
        config_digest = str((view.manifest.get("config") or {}).get("digest", ""))
    root = ImageRoot.open(path, cache_dir, limits=limits)
    return ParentImage(name, manifest_digest, config_digest, config, layers, root)


def check_platform(parent: ParentImage, platform: tuple[str, str | None], where: str) -> None:
    """Refuse a parent built for another architecture than the build.

    Raises:
        SpecError: the architectures differ.
    """
    arch, variant = parent.platform
    if arch and arch != platform[0]:
        raise SpecError(f"{where}: parent {parent.name} is for {arch}, this image is for {platform[0]}")
    if variant and platform[1] and variant != platform[1]:
        raise SpecError(f"{where}: parent {parent.name} is for {arch}/{variant},"
                        f" this image is for {platform[0]}/{platform[1]}")


def drop_inherited(tree: FileTree, parent: ParentImage) -> list[str]:
    """Remove from ``tree`` what the parent already has, identically.

    A regular file goes when the parent has a regular file at that path with
    the same permission bits and the same bytes (compared by size, then
    SHA-256); a symlink when the parent's has the same target; a directory
    when the parent has a directory there with the same permission bits and
    nothing of ours is left inside it. Files that are hardlinked in our tree
    stay (the link must be whole in one layer).

    Returns:
        The paths removed, sorted.
    """
    root = parent.root
    assert root is not None
    removed: list[str] = []
    entries = sorted(tree, key=lambda e: e.path.count("/"), reverse=True)
    kept_children: set[str] = set()
    for entry in entries:
        st = root.lstat(entry.path)
        same = False
        if st is not None and entry.kind is EntryKind.FILE and stat.S_ISREG(st.st_mode):
            content = entry.content
            linked = isinstance(content, HostFile) and content.identity is not None
            same = (not linked and stat.S_IMODE(st.st_mode) == entry.mode and st.st_size == entry.size
                    and _same_bytes(content, root.host_path(entry.path)))
        elif st is not None and entry.kind is EntryKind.SYMLINK and stat.S_ISLNK(st.st_mode):
            same = root.readlink(entry.path) == entry.linkname
        elif st is not None and entry.kind is EntryKind.DIR and stat.S_ISDIR(st.st_mode):
            same = stat.S_IMODE(st.st_mode) == entry.mode and entry.path not in kept_children
        if same:
            tree.discard(entry.path)
            removed.append(entry.path)
        else:
            kept_children.add(os.path.dirname(entry.path))
    return sorted(removed)  # deepest first: a kept entry has already kept its parent


def _same_bytes(content: object, path: str) -> bool:
    """Whether an entry's content and a file hold the same bytes (an unreadable file never does)."""
    assert isinstance(content, (HostFile, InlineContent))
    try:
        return content_hash(content) == content_hash(HostFile(path, 0))
    except OSError:
        return False  # the layer writer reports an unreadable file of ours
