"""An existing (fat) image's merged layers as a sysroot, without unpacking the image.

:meth:`ImageRoot.open` reads anything
:func:`~microcontainer_tool.oci.imageview.open_image` reads (an OCI layout
``DIR[:TAG]``, an oci-archive, a smith ``.tar.gz``, a docker-archive); its
layers' indexes come from the shared
:class:`~microcontainer_tool.sources.image.layertars.LayerCache`.

The layers' indexes are merged in order with the OCI whiteout rules
(``.wh.NAME`` removes ``NAME`` and its subtree from the layers below;
``.wh..wh..opq`` hides every lower-layer child of its directory). Hardlinks to
paths present neither earlier in the layer nor below it, and members under a
path that is not a directory (a file, or a symlink: it is never followed while
merging) are refused with one-line errors naming the layer digest and the
member. Device nodes and fifos stay in the view as what they are (``lstat``
says ``S_IFCHR``...), so assembly refuses them if a selection takes them.

Only what assembly reads is copied out of the layers:
:meth:`ImageRoot.host_path` of a regular file materializes it lazily into
``files/<diff_id hex>/<path>`` (a hardlink shares its target's copy), which
later builds reuse. The cache keeps no decompressed layer: a layer decompressed
to index it stays as a scratch tar (unlinked, held open) until :meth:`close`;
a file of a layer indexed by an earlier build and not taken out yet makes the
image be opened again and that layer decompressed (verified against its digest
and ``diff_id``) into a scratch tar once per object. Memory grows with the
number of paths in the image, never with its bytes: contents are only ever
streamed in 1 MiB chunks (or copied by the kernel).
"""

from __future__ import annotations

import os
import posixpath
import stat
from typing import Any

from microcontainer_tool.errors import LayoutError, SourceError
from microcontainer_tool.hostfs.atomic import temp_file, unlink_quietly
from microcontainer_tool.oci.imageview import open_image
from microcontainer_tool.oci.layer import CHUNK_SIZE, LayerLimits
from microcontainer_tool.sources.image.layertars import LayerCache, LayerEntry
from microcontainer_tool.sources.sysroot import SysRoot

FILES = "files"
EMPTY_DIR = "empty"

#: ``st_dev`` of every entry: a constant that no host file system uses, so an
#: entry's ``(st_dev, st_ino)`` never collides with a host file's.
IMAGE_DEV = 0x6D637400

_IFMT = {"f": stat.S_IFREG, "d": stat.S_IFDIR, "l": stat.S_IFLNK,
         "c": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}
_NO_COPY_RANGE = False

class _Node:
    """One path of the merged view (a tree node)."""

    __slots__ = ("kind", "mode", "size", "data", "link", "ino", "children")

    def __init__(self, kind: str, mode: int, size: int = 0, data: tuple[int, str, int] | None = None,
                 link: str = "", ino: int = 0) -> None:
        self.kind = kind
        self.mode = mode
        self.size = size
        self.data = data
        self.link = link
        self.ino = ino
        self.children: dict[str, _Node] | None = {} if kind == "d" else None


class ImageRoot(SysRoot):
    """The merged file system of an image's layers, as a confined sysroot.

    Build one with :meth:`open`. Paths resolve as in :class:`SysRoot` (an
    absolute symlink target means the image's root); file contents are copied
    out of the cached layer tars only when :meth:`host_path` asks for them.

    Attributes:
        root: the image reference (used in messages; no host directory).
        label: ``image:REFERENCE``, the provenance source of its files.
        manifest_digest: the image's manifest digest.
        config_digest: its config's digest (the image ID: the same whatever
            the transport or layer compression; set by :meth:`open`).
        layers: the layers, bottom first, as prepared in the cache.
        specials: image paths of device nodes and fifos, sorted.
        files_materialized: files copied out of layer tars by this object.
        bytes_materialized: their total size.
        layers_decompressed: layers this object decompressed (to index them,
            or to take out a file an earlier build did not).
    """

    def __init__(self, image: str, cache_dir: str, config: dict[str, Any], manifest_digest: str,
                 layers: list[LayerEntry]) -> None:
        """Merge prepared layers (use :meth:`open` to prepare them).

        Raises:
            LayoutError: a hardlink to a path absent from its layer and those
                below, or a member whose parent is not a directory.
        """
        self.root = image
        self.label = f"image:{image}"
        self._cache = {}
        self.cache_dir = os.path.abspath(cache_dir)
        self.manifest_digest = manifest_digest
        self.config_digest = ""
        self.layers = layers
        self._config = config
        self._files = os.path.join(self.cache_dir, FILES)
        self._empty = os.path.join(self.cache_dir, EMPTY_DIR)
        try:
            os.makedirs(self._empty, exist_ok=True)
        except OSError as error:
            raise SourceError(f"{cache_dir}: cannot create the cache: {error.strerror or error}") from None
        self._next_ino = 1
        self._tree = self._new("d", 0o755)
        self._not_utf8: dict[str, str] = {}  # image path -> "IMAGE: layer DIGEST" of a member named so
        for number, layer in enumerate(layers):
            self._apply(number, layer, f"{image}: layer {layer.digest}")
        self._entries: dict[str, _Node] = {}
        self._nlink: dict[int, int] = {}
        self.specials: list[str] = []
        self._flatten()
        self._fds: dict[int, int] = {}
        self._materialized: dict[tuple[int, str, int], str] = {}
        self.files_materialized = 0
        self.bytes_materialized = 0
        self.layers_decompressed = 0
        self._source: tuple[str, str | None, str | None] | None = None
        self._layer_cache: LayerCache | None = None

    @classmethod
    def open(cls, image: str, cache_dir: str, tag: str | None = None, name: str | None = None,
             limits: LayerLimits | None = None, platform: str | None = None) -> ImageRoot:
        """Open an image as a sysroot, preparing its layers in ``cache_dir`` once.

        Args:
            image: anything :func:`~.image.open_image` reads (``DIR[:TAG]``, an
                oci-archive, a smith ``.tar.gz``, a docker-archive).
            cache_dir: the cache (shared by images and processes; safe to delete).
            tag: the image to pick when the index holds several.
            name: how messages and provenance name the image (default: ``image``).
            limits: how far a layer may expand (see :class:`.layertars.LayerCache`).
            platform: ``[OS/]ARCH[/VARIANT]``: the image to pick from a
                multi-platform index (default: this machine's); a
                single-platform image must be of it.

        Returns:
            The merged view.

        Raises:
            LayoutError: the image is malformed, or a layer is refused.
            DigestMismatchError: a blob, or an uncompressed layer, fails its digest.
            PathEscapeError: a member name climbs above the root.
            SourceError: the cache cannot be written.
        """
        cache = LayerCache(cache_dir, limits)
        layers: list[LayerEntry] = []
        scratch: dict[int, int] = {}
        try:
            with open_image(image, tag, platform) as view:
                for number in range(len(view.layers)):
                    entry, fd = cache.layer(view, number)
                    layers.append(entry)
                    if fd is not None:
                        scratch[number] = fd
                root = cls(name or image, cache.cache_dir, view.config, view.manifest_digest, layers)
                root.config_digest = str((view.manifest.get("config") or {}).get("digest", ""))
        except BaseException:
            for fd in scratch.values():
                os.close(fd)
            raise
        root._fds.update(scratch)
        root._source = (image, tag, platform)
        root._layer_cache = cache
        root.layers_decompressed = cache.decompressed
        return root

    def close(self) -> None:
        """Close (and so delete) the scratch layer tars.

        The object stays usable: a file not taken out yet decompresses its layer again.
        """
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def __enter__(self) -> ImageRoot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def path_count(self) -> int:
        """Number of paths in the merged view (the root included)."""
        return len(self._entries)

    @property
    def config(self) -> dict[str, Any]:
        """The image configuration (``config.Env``, ``WorkingDir``... to inherit)."""
        return self._config

    # -- merging ---------------------------------------------------------------

    def _new(self, kind: str, mode: int, size: int = 0, data: tuple[int, str, int] | None = None,
             link: str = "") -> _Node:
        node = _Node(kind, mode, size, data, link, self._next_ino)
        self._next_ino += 1
        return node

    def _find(self, path: str) -> _Node | None:
        node: _Node | None = self._tree
        for part in path.split("/") if path else ():
            if node is None or node.children is None:
                return None
            node = node.children.get(part)
        return node

    def _parent(self, path: str, where: str) -> _Node:
        node = self._tree
        parts = path.split("/")[:-1]
        for depth, part in enumerate(parts):
            assert node.children is not None
            child = node.children.get(part)
            if child is None:
                child = node.children[part] = self._new("d", 0o755)
            elif child.kind != "d":
                raise LayoutError(f"{where}: member {path!r}: {'/'.join(parts[:depth + 1])!r}"
                                  " is not a directory in this or lower layers")
            node = child
        return node

    def _apply(self, number: int, layer: LayerEntry, where: str) -> None:
        """Lay one layer over the view: its whiteouts first (they hide lower layers only)."""
        seen: dict[str, int] = {}
        for member in layer.members:
            kind = member[1]
            if kind == "w":
                parent = self._find(posixpath.dirname(member[0]))
                if parent is not None and parent.children is not None:
                    parent.children.pop(posixpath.basename(member[0]), None)
            elif kind == "o":
                directory = self._find(member[0])
                if directory is not None and directory.children is not None:
                    directory.children.clear()
            else:
                seen[member[0]] = seen.get(member[0], 0) + 1
        for path, kind, mode, size, offset, link in layer.members:
            if kind in ("w", "o"):
                continue
            if not path.isascii() and not _is_utf8(path):
                self._not_utf8["/" + path] = where
            parent = self._parent(path, where)
            assert parent.children is not None
            name = posixpath.basename(path)
            if kind == "d":
                existing = parent.children.get(name)
                if existing is not None and existing.kind == "d":
                    existing.mode = mode
                else:
                    parent.children[name] = self._new("d", mode)
            elif kind == "h":
                target = self._find(link)
                if target is None or target.kind == "d":
                    raise LayoutError(f"{where}: hardlink {path!r} -> {link!r}: target not present"
                                      " in this or lower layers")
                node = _Node(target.kind, target.mode, target.size, target.data, target.link, target.ino)
                parent.children[name] = node
            else:
                data = (number, path if seen[path] == 1 else "", offset) if kind == "f" else None
                parent.children[name] = self._new(kind, mode, size, data, link)

    def _flatten(self) -> None:
        stack = [("/", self._tree)]
        while stack:
            path, node = stack.pop()
            self._entries[path] = node
            if node.children is not None:
                prefix = path if path == "/" else path + "/"
                stack.extend((prefix + name, child) for name, child in node.children.items())
            else:
                self._nlink[node.ino] = self._nlink.get(node.ino, 0) + 1
                if node.kind in ("c", "b", "p"):
                    self.specials.append(path)
        self.specials.sort()

    # -- the SysRoot interface ----------------------------------------------------

    def _node(self, image_path: str) -> _Node | None:
        if len(image_path) > 1 and image_path.endswith("/"):
            image_path = image_path.rstrip("/") or "/"
        return self._entries.get(image_path)

    def lstat(self, image_path: str) -> os.stat_result | None:
        """An ``lstat``-like result built from the index, or ``None`` if absent.

        Mode is the type and the member's permission bits; each entry has its
        own ``st_ino`` (hardlinks share their target's, with ``st_nlink`` the
        number of paths); uid, gid and every time are 0.
        """
        if not image_path.isascii() and not _is_utf8(image_path):
            self._refuse_name(image_path)
        node = self._node(image_path)
        if node is None:
            return None
        nlink = 2 if node.kind == "d" else self._nlink.get(node.ino, 1)
        return os.stat_result((_IFMT[node.kind] | node.mode, node.ino, IMAGE_DEV, nlink, 0, 0,
                               node.size, 0, 0, 0))

    def _refuse_name(self, image_path: str) -> None:
        """Refuse a selected path whose name is not UTF-8: OCI JSON (provenance) cannot carry it.

        Raises:
            SourceError: always; naming the layer and the member (its bytes escaped).
        """
        path = image_path.rstrip("/") or "/"
        while path != "/" and path not in self._not_utf8 and not _is_utf8(posixpath.dirname(path)):
            path = posixpath.dirname(path)
        where = self._not_utf8.get(path, self.root)
        shown = ascii(path.encode("utf-8", "surrogateescape"))[1:]
        raise SourceError(f"{where}: member {shown} has a name that is not UTF-8; "
                          "an image cannot record it: leave it out of paths")

    def readlink(self, image_path: str) -> str:
        """The stored target of the symlink at ``image_path``.

        Raises:
            SourceError: no symlink there.
        """
        node = self._node(image_path)
        if node is None or node.kind != "l":
            raise SourceError(f"{image_path}: not a symbolic link in {self.root}")
        return node.link

    def listdir(self, image_path: str) -> list[str]:
        """Names in a directory of the merged view, sorted.

        Raises:
            SourceError: no directory there.
        """
        node = self._node(image_path)
        if node is None or node.children is None:
            reason = "No such file or directory" if node is None else "Not a directory"
            raise SourceError(f"cannot list {image_path} in {self.root}: {reason}")
        return sorted(node.children)

    def host_path(self, image_path: str) -> str:
        """A host path holding the object's content, for reading only.

        A regular file (or hardlink) is copied out of its layer tar into the
        cache on first use; a directory is an empty cache directory; anything
        else (and an absent path) gives a path that does not exist — never a
        path of the build machine's own file system.

        Raises:
            SourceError: the file cannot be copied into the cache.
            LayoutError: the cached layer tar is shorter than its index says.
        """
        node = self._node(image_path)
        if node is not None and node.kind == "d":
            return self._empty
        if node is None or node.data is None:
            return os.path.join(self.cache_dir, "absent", image_path.lstrip("/"))
        return self._materialize(node)

    # -- materializing -----------------------------------------------------------

    def _materialize(self, node: _Node) -> str:
        assert node.data is not None
        found = self._materialized.get(node.data)
        if found is not None:
            return found
        number, path, offset = node.data
        hex_ = self.layers[number].diff_id.split(":", 1)[1]
        if path:
            final = os.path.join(self._files, hex_, path)
        else:  # the path occurs more than once in the layer: name the copy by its offset
            final = os.path.join(self._files, hex_ + ".dup", str(offset))
        try:
            st = os.stat(final)
            done = stat.S_ISREG(st.st_mode) and st.st_size == node.size
        except OSError:
            done = False
        if not done:
            self._copy_out(node, number, offset, final)
            self.files_materialized += 1
            self.bytes_materialized += node.size
        self._materialized[node.data] = final
        return final

    def _copy_out(self, node: _Node, number: int, offset: int, final: str) -> None:
        layer = self.layers[number]
        parent = os.path.dirname(final)
        tmp = ""
        try:
            os.makedirs(parent, exist_ok=True)
            fd, tmp = temp_file(parent, "." + os.path.basename(final)[:200], 0o600)
            try:
                copied = _copy_range(self._tar_fd(number), fd, offset, node.size)
                if copied != node.size:
                    raise LayoutError(f"{self.root}: layer {layer.digest} is shorter than its cached index"
                                      " says (delete the cache entry)")
                os.fchmod(fd, (node.mode & 0o777) | 0o400)
            finally:
                os.close(fd)
            os.rename(tmp, final)
            tmp = ""
        except OSError as error:
            raise SourceError(f"{final}: cannot materialize a file of {self.root}:"
                              f" {error.strerror or error}") from None
        finally:
            if tmp:
                unlink_quietly(tmp)

    def _tar_fd(self, number: int) -> int:
        fd = self._fds.get(number)
        if fd is None:
            fd = self._fds[number] = self._unpack(number)
        return fd

    def _unpack(self, number: int) -> int:
        """Decompress layer ``number`` again (from the image it was opened from) into a scratch tar.

        Raises:
            SourceError: the object was not made by :meth:`open`, or the image
                no longer holds the layer.
            DigestMismatchError: the blob or its tar no longer matches its digests.
        """
        layer = self.layers[number]
        if self._source is None or self._layer_cache is None:
            raise SourceError(f"{self.root}: layer {layer.digest} is not at hand (open the image with"
                              " ImageRoot.open)")
        with open_image(*self._source) as view:
            for found, desc in enumerate(view.layers):
                if desc.digest == layer.digest and view.diff_ids[found] == layer.diff_id:
                    fd = self._layer_cache.unpack(view, found)
                    self.layers_decompressed += 1
                    return fd
        raise SourceError(f"{self.root}: layer {layer.digest} is no longer in the image"
                          " (it changed during the build); build again")

    def __del__(self) -> None:
        for fd in getattr(self, "_fds", {}).values():
            try:
                os.close(fd)
            except OSError:
                pass


def _is_utf8(name: str) -> bool:
    """Whether ``name`` (decoded with ``surrogateescape``) was valid UTF-8."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _copy_range(src: int, dst: int, offset: int, size: int, kernel: bool = True) -> int:
    """Copy ``size`` bytes at ``offset`` of ``src`` to ``dst``'s position, 1 MiB at a time.

    Args:
        src: file descriptor read with explicit offsets (its position is unused).
        dst: file descriptor written at its position.
        offset: where the bytes start in ``src``.
        size: how many bytes to copy.
        kernel: try ``copy_file_range`` (no copy through user space) before
            ``pread``/``write``; a file system that refuses it turns it off for
            the rest of the process.

    Returns:
        The number of bytes copied (less than ``size`` only if ``src`` is short).
    """
    global _NO_COPY_RANGE
    copied = 0
    while copied < size:
        count = min(CHUNK_SIZE, size - copied)
        done = -1
        if kernel and not _NO_COPY_RANGE:
            try:
                done = os.copy_file_range(src, dst, count, offset + copied)
            except OSError:
                _NO_COPY_RANGE = True
        if done < 0:
            data = os.pread(src, count, offset + copied)
            view = memoryview(data)
            while view:
                view = view[os.write(dst, view):]
            done = len(data)
        if done == 0:
            break
        copied += done
    return copied
