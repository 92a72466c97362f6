"""An existing (fat) image's merged layers as a sysroot, without unpacking the image.

:meth:`ImageRoot.open` reads anything :func:`~.image.open_image` reads (an OCI
layout ``DIR[:TAG]``, an oci-archive, a smith ``.tar.gz``, a docker-archive)
and prepares each layer once, in a cache shared by every image:

* ``layertars/<diff_id hex>.tar``: the layer decompressed (gzip, zstd or none,
  told by magic), streamed in 1 MiB chunks into a temporary file and renamed
  into place only after both the blob digest and the ``diff_id`` matched;
* ``layertars/<diff_id hex>.json``: the index of its members (path, type,
  mode, size, data offset in the tar, symlink or hardlink target), written
  after the tar and so the mark of a complete entry.

Both are named by the ``diff_id`` only — never by the image's path, tag or
user — so two images sharing a layer share its cache entry, and an image
rebuilt at the same path never sees the previous image's files.

The layers' indexes are merged in order with the OCI whiteout rules
(``.wh.NAME`` removes ``NAME`` and its subtree from the layers below;
``.wh..wh..opq`` hides every lower-layer child of its directory). Absolute
member names, ``..`` climbing above the root, hardlinks to paths present
neither earlier in the layer nor below it, and members under a path that is
not a directory (a file, or a symlink: it is never followed while merging)
are refused with one-line errors naming the layer digest and the member.
Device nodes and fifos stay in the
view as what they are (``lstat`` says ``S_IFCHR``...), so assembly refuses them
if a selection takes them.

Only what assembly reads is copied out of the layer tars:
:meth:`ImageRoot.host_path` of a regular file materializes it lazily into
``files/<diff_id hex>/<path>`` (a hardlink shares its target's copy). Memory
grows with the number of paths in the image, never with its bytes: contents
are only ever streamed in 1 MiB chunks (or copied by the kernel).
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import queue
import stat
import threading
from dataclasses import dataclass
from typing import Any, BinaryIO, Iterator

from microcontainer_tool.errors import DigestMismatchError, LayoutError, PathEscapeError, SourceError
from microcontainer_tool.oci.imageview import HashingReader, ImageView, open_image
from microcontainer_tool.oci.layer import CHUNK_SIZE, DECODE_ERRORS, open_layer_stream
from microcontainer_tool.hostfs.atomic import temp_file, unlink_quietly
from microcontainer_tool.sources.sysroot import SysRoot

INDEX_VERSION = 1
"""Format of the cached per-layer index; another value is rebuilt."""

LAYER_TARS = "layertars"
FILES = "files"
EMPTY_DIR = "empty"

#: ``st_dev`` of every entry: a constant that no host file system uses, so an
#: entry's ``(st_dev, st_ino)`` never collides with a host file's.
IMAGE_DEV = 0x6D637400

_TYPE_FLAGS = {
    b"0": "f", b"\0": "f", b"7": "f", b"5": "d", b"2": "l", b"1": "h",
    b"3": "c", b"4": "b", b"6": "p",
}
_IFMT = {"f": stat.S_IFREG, "d": stat.S_IFDIR, "l": stat.S_IFLNK,
         "c": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}
_WHITEOUT = ".wh."
_OPAQUE = ".wh..wh..opq"
_NO_COPY_RANGE = False
_PIPELINE_DEPTH = 4


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


@dataclass(frozen=True)
class LayerEntry:
    """One layer as prepared in the cache.

    Attributes:
        digest: the layer blob's digest (named in error messages).
        diff_id: the digest of its uncompressed tar (names the cache entries).
        tar_path: the uncompressed tar in the cache.
        members: the index: ``[path, kind, mode, size, offset, link]`` per member,
            in tar order; kind is ``f d l h c b p`` (file, dir, symlink, hardlink,
            char, block, fifo), ``w`` (whiteout of ``path``) or ``o`` (``path``
            is opaque).
        reused: whether tar and index came from the cache.
    """

    digest: str
    diff_id: str
    tar_path: str
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
    members: list[list[Any]] = []
    fd = os.open(tar_path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        for name, kind, mode, size, offset, link in _scan_tar(fd, os.fstat(fd).st_size, where):
            members.extend(_index_member(name, kind, mode, size, offset, link, where))
    finally:
        os.close(fd)
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
    """The per-layer part of the cache: decompressed tars and their indexes, by ``diff_id``."""

    def __init__(self, cache_dir: str) -> None:
        """Use (and create) ``cache_dir``.

        Raises:
            SourceError: the cache directory cannot be created.
        """
        self.cache_dir = os.path.abspath(cache_dir)
        self.tars = os.path.join(self.cache_dir, LAYER_TARS)
        try:
            os.makedirs(self.tars, exist_ok=True)
        except OSError as error:
            raise SourceError(f"{cache_dir}: cannot create the cache: {error.strerror or error}") from None

    def _cache_error(self, error: OSError) -> SourceError:
        return SourceError(f"{self.cache_dir}: cannot write the cache: {error.strerror or error}")

    def paths(self, diff_id: str) -> tuple[str, str]:
        """The tar and index paths of a layer."""
        hex_ = diff_id.split(":", 1)[1]
        return os.path.join(self.tars, hex_ + ".tar"), os.path.join(self.tars, hex_ + ".json")

    def layer(self, view: ImageView, number: int) -> LayerEntry:
        """Layer ``number`` of ``view`` from the cache, preparing it first if needed.

        Raises:
            DigestMismatchError: the blob or its uncompressed tar is not what
                the manifest and config say.
            LayoutError: a corrupt blob, or a layer :func:`index_layer_tar` refuses.
        """
        digest, diff_id = view.layers[number].digest, view.diff_ids[number]
        tar_path, index_path = self.paths(diff_id)
        members = self._cached(diff_id, tar_path, index_path)
        if members is not None:
            return LayerEntry(digest, diff_id, tar_path, members, True)
        where = f"{view.path}: layer {digest}"
        tmp = self._decompress(view, number, where)
        try:
            members = index_layer_tar(tmp, where)
            size = os.path.getsize(tmp)
            os.rename(tmp, tar_path)
        except OSError as error:
            raise self._cache_error(error) from None
        finally:
            unlink_quietly(tmp)
        self._write_index(index_path, {"version": INDEX_VERSION, "diff_id": diff_id, "tar_size": size,
                                       "members": members})
        return LayerEntry(digest, diff_id, tar_path, members, False)

    @staticmethod
    def _cached(diff_id: str, tar_path: str, index_path: str) -> list[list[Any]] | None:
        try:
            with open(index_path, "rb") as handle:
                index = json.loads(handle.read())
            size = os.path.getsize(tar_path)
        except (OSError, ValueError):
            return None
        if (not isinstance(index, dict) or index.get("version") != INDEX_VERSION
                or index.get("diff_id") != diff_id or index.get("tar_size") != size
                or not isinstance(index.get("members"), list)):
            return None
        members: list[list[Any]] = index["members"]
        return members

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
                    stream = open_layer_stream(reader)  # type: ignore[arg-type]
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
        fd, tmp = temp_file(self.tars, "." + os.path.basename(path)[:200], 0o600)
        try:
            with os.fdopen(fd, "w", encoding="ascii") as out:
                json.dump(index, out, separators=(",", ":"))
            os.rename(tmp, path)
        except OSError as error:
            unlink_quietly(tmp)
            raise self._cache_error(error) from None


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

    @classmethod
    def open(cls, image: str, cache_dir: str, tag: str | None = None, name: str | None = None) -> ImageRoot:
        """Open an image as a sysroot, preparing its layers in ``cache_dir`` once.

        Args:
            image: anything :func:`~.image.open_image` reads (``DIR[:TAG]``, an
                oci-archive, a smith ``.tar.gz``, a docker-archive).
            cache_dir: the cache (shared by images and processes; safe to delete).
            tag: the image to pick when the index holds several.
            name: how messages and provenance name the image (default: ``image``).

        Returns:
            The merged view.

        Raises:
            LayoutError: the image is malformed, or a layer is refused.
            DigestMismatchError: a blob, or an uncompressed layer, fails its digest.
            PathEscapeError: a member name climbs above the root.
            SourceError: the cache cannot be written.
        """
        cache = LayerCache(cache_dir)
        with open_image(image, tag) as view:
            layers = [cache.layer(view, number) for number in range(len(view.layers))]
            root = cls(name or image, cache.cache_dir, view.config, view.manifest_digest, layers)
            root.config_digest = str((view.manifest.get("config") or {}).get("digest", ""))
            return root

    def close(self) -> None:
        """Close the layer tars (the object stays usable for lookups)."""
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
        node = self._node(image_path)
        if node is None:
            return None
        nlink = 2 if node.kind == "d" else self._nlink.get(node.ino, 1)
        return os.stat_result((_IFMT[node.kind] | node.mode, node.ino, IMAGE_DEV, nlink, 0, 0,
                               node.size, 0, 0, 0))

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
                    raise LayoutError(f"{layer.tar_path}: cached layer tar of {layer.digest} is truncated"
                                      " (delete the cache entry)")
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
            fd = self._fds[number] = os.open(self.layers[number].tar_path, os.O_RDONLY | os.O_CLOEXEC)
        return fd

    def __del__(self) -> None:
        for fd in getattr(self, "_fds", {}).values():
            try:
                os.close(fd)
            except OSError:
                pass


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

