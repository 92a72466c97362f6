"""Reading images back (``inspect``, tests): layouts, archives, docker-archives.

:func:`open_image` accepts an OCI layout directory (optionally ``DIR:TAG``),
an oci-archive (``.tar``), a smith ``.tar.gz`` and a docker-archive (docker
25+ OCI-style or the legacy ``manifest.json``-only form). Every blob read is
verified against its digest, and every layer against its ``diff_id``; files
are listed from the layers without extracting anything to disk. Malformed
input raises :class:`~microcontainer_tool.errors.LayoutError` with a one-line message.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform as _platform
import posixpath
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from typing import Any, BinaryIO, NamedTuple, Protocol

from microcontainer_tool import jsontext
from microcontainer_tool.errors import DigestMismatchError, LayoutError, MicrocontainerError
from microcontainer_tool.oci import model as oci
from microcontainer_tool.oci.blobs import MAX_JSON_BLOB, parse_json_object, read_json_blob
from microcontainer_tool.oci.layer import (
    CHUNK_SIZE,
    DECODE_ERRORS,
    LayerLimits,
    detect_compression,
    open_layer_stream,
)
from microcontainer_tool.oci.model import Descriptor

_TYPES = {
    tarfile.REGTYPE: "file", tarfile.AREGTYPE: "file", tarfile.CONTTYPE: "file",
    tarfile.DIRTYPE: "dir", tarfile.SYMTYPE: "symlink", tarfile.LNKTYPE: "hardlink",
    tarfile.CHRTYPE: "char", tarfile.BLKTYPE: "block", tarfile.FIFOTYPE: "fifo",
}
_HOST_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386",
              "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}


class FileInfo(NamedTuple):
    """One member of an image's layers.

    Attributes:
        path: absolute image path (``/usr/bin/cat``; directories without ``/``).
        type: ``file``, ``dir``, ``symlink``, ``hardlink``, ``char``, ``block``, ``fifo``.
        mode: permission bits.
        size: content size (0 for non-files).
        linkname: symlink target as stored, or a hardlink's absolute target path.
    """

    path: str
    type: str
    mode: int
    size: int
    linkname: str


class _Source(Protocol):
    def exists(self, name: str) -> bool: ...

    def open(self, name: str) -> BinaryIO: ...

    def close(self) -> None: ...


class _DirSource:
    def __init__(self, root: str) -> None:
        self.root = root

    def exists(self, name: str) -> bool:
        return os.path.isfile(os.path.join(self.root, name))

    def open(self, name: str) -> BinaryIO:
        try:
            return open(os.path.join(self.root, name), "rb")
        except OSError as error:
            raise LayoutError(f"{self.root}: cannot read {name}: {error.strerror or error}") from None

    def close(self) -> None:
        pass


def _member_name(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name.lstrip("/")


class _TarSource:
    def __init__(self, label: str, fileobj: BinaryIO) -> None:
        self.label = label
        self._fileobj = fileobj
        try:
            self._tar = tarfile.open(fileobj=fileobj, mode="r:")
            self._members = {_member_name(m.name): m for m in self._tar.getmembers()}
        except DECODE_ERRORS as error:
            fileobj.close()
            raise LayoutError(f"{label}: not a readable tar archive: {error}") from None

    def exists(self, name: str) -> bool:
        member = self._members.get(name)
        return member is not None and (member.isfile() or member.islnk() or member.issym())

    def open(self, name: str) -> BinaryIO:
        member = self._members.get(name)
        if member is None:
            raise LayoutError(f"{self.label}: archive has no {name}")
        try:
            handle = self._tar.extractfile(member)
        except (tarfile.TarError, KeyError) as error:
            raise LayoutError(f"{self.label}: cannot read {name}: {error}") from None
        if handle is None:
            raise LayoutError(f"{self.label}: {name} is not a file")
        return handle  # type: ignore[return-value]

    def close(self) -> None:
        self._tar.close()
        self._fileobj.close()


def _open_archive(path: str) -> _TarSource:
    try:
        handle: BinaryIO = open(path, "rb")
    except OSError as error:
        raise LayoutError(f"{path}: cannot read: {error.strerror or error}") from None
    head = handle.read(4)
    handle.seek(0)
    if detect_compression(head) == "none":
        return _TarSource(path, handle)
    spool = tempfile.TemporaryFile()
    try:
        with handle:
            stream = open_layer_stream(handle, where=path)
            shutil.copyfileobj(stream, spool, CHUNK_SIZE)
        spool.seek(0)
    except MicrocontainerError:
        spool.close()
        raise
    except DECODE_ERRORS as error:
        spool.close()
        raise LayoutError(f"{path}: corrupt compressed archive: {error}") from None
    return _TarSource(path, spool)


class HashingReader:
    """Reads a stream, hashing and counting what passes."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self.sha = hashlib.sha256()
        self.size = 0

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self.sha.update(data)
        self.size += len(data)
        return data

    def drain(self) -> None:
        while self.read(CHUNK_SIZE):
            pass

    @property
    def digest(self) -> str:
        return "sha256:" + self.sha.hexdigest()


def _blob_name(digest: str) -> str:
    return "blobs/sha256/" + oci.check_digest(digest)[len("sha256:"):]


class ImageView:
    """A read-only view of one image in a layout or archive.

    Attributes:
        path: what was opened.
        index: the (top-level) image index.
        manifest: the image manifest.
        manifest_digest: its digest.
        config: the image configuration.
        layers: the manifest's layer descriptors.
        limits: how far :meth:`layer_tar` lets a layer expand (settable; default
            :class:`~microcontainer_tool.oci.layer.LayerLimits`).
    """

    def __init__(self, path: str, source: _Source, index: dict[str, Any], manifest: dict[str, Any],
                 manifest_digest: str, config: dict[str, Any], layer_names: list[str],
                 config_name: str | None = None) -> None:
        self.path = path
        self._source = source
        self.index = index
        self.manifest = manifest
        self.manifest_digest = manifest_digest
        self.config = config
        try:
            self.layers = [Descriptor.from_dict(d) for d in manifest.get("layers", [])]
        except AttributeError:
            raise LayoutError(f"{path}: malformed manifest layers") from None
        self._layer_names = layer_names
        self._config_name = config_name
        self.limits = LayerLimits()
        #: the multi-platform image index followed to the manifest, and its entries (else None)
        self.platform_index: tuple[Descriptor, list[Descriptor]] | None = None
        rootfs = config.get("rootfs")
        diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
        if not isinstance(diff_ids, list) or len(diff_ids) != len(self.layers):
            raise LayoutError(f"{path}: config rootfs.diff_ids does not match the manifest's layers")
        self.diff_ids: list[str] = [oci.check_digest(d) for d in diff_ids]

    def close(self) -> None:
        """Release open archives and temporary files."""
        self._source.close()

    def __enter__(self) -> ImageView:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def manifest_bytes(self) -> bytes:
        """The manifest's exact bytes (synthesized canonically for a legacy docker-archive).

        Raises:
            LayoutError: they do not match the manifest digest.
        """
        name = _blob_name(self.manifest_digest)
        if self._source.exists(name):
            with self._source.open(name) as handle:
                data: bytes = handle.read(MAX_JSON_BLOB + 1)
        else:
            data = oci.canonical_json(self.manifest)
        if oci.sha256_digest(data) != self.manifest_digest:
            raise LayoutError(f"{self.path}: manifest {self.manifest_digest} does not match its content")
        return data

    def index_bytes(self) -> bytes:
        """The exact bytes of the image index followed to this image (:attr:`platform_index`).

        Raises:
            LayoutError: the image was not reached through an index, or the bytes do not match.
        """
        if self.platform_index is None:
            raise LayoutError(f"{self.path}: the image is not a multi-platform index")
        desc = self.platform_index[0]
        with self._source.open(_blob_name(desc.digest)) as handle:
            data: bytes = handle.read(MAX_JSON_BLOB + 1)
        if oci.sha256_digest(data) != desc.digest:
            raise LayoutError(f"{self.path}: image index {desc.digest} does not match its content")
        return data

    def open_config_blob(self) -> BinaryIO:
        """Open the config blob as stored (its exact bytes), not verified."""
        if self._config_name is not None:
            return self._source.open(self._config_name)
        desc = Descriptor.from_dict(self.manifest.get("config") or {})
        return self._source.open(_blob_name(desc.digest))

    def open_layer_blob(self, number: int) -> BinaryIO:
        """Open layer ``number``'s blob (0 = bottom) as stored: compressed, not verified."""
        return self._source.open(self._layer_names[number])

    def verify_blob(self, desc: Descriptor, name: str | None = None) -> None:
        """Hash a (large) blob and check it against its descriptor.

        Raises:
            DigestMismatchError: content, or size, differs.
        """
        sha = hashlib.sha256()
        size = 0
        with self._source.open(name or _blob_name(desc.digest)) as handle:
            while chunk := handle.read(CHUNK_SIZE):
                sha.update(chunk)
                size += len(chunk)
        if "sha256:" + sha.hexdigest() != desc.digest or size != desc.size:
            raise DigestMismatchError(f"{self.path}: blob {desc.digest} does not match its content")

    @contextlib.contextmanager
    def layer_tar(self, number: int) -> Iterator[tarfile.TarFile]:
        """Stream layer ``number`` (0 = bottom) once, as a tar, verifying it on the way.

        The blob and its uncompressed bytes are hashed while the caller reads
        the members; when the block ends the rest is drained and both are
        checked against the manifest's digest and the config's ``diff_id``.
        A stream that cannot be decoded is reported as a digest mismatch when
        the blob is not what the manifest says, else as a corrupt layer.
        ``MicrocontainerError`` and ``OSError`` with an errno (a disk error of
        the caller's) pass through.

        Raises:
            DigestMismatchError: the blob or its uncompressed tar is wrong.
            LayoutError: the layer is not a readable tar.
        """
        desc = self.layers[number]
        with self.open_layer_blob(number) as handle:
            blob = HashingReader(handle)
            try:
                diff = HashingReader(open_layer_stream(blob, self.limits,  # type: ignore[arg-type]
                                                       f"{self.path}: layer {desc.digest}"))
                with tarfile.open(fileobj=diff, mode="r|", encoding="utf-8",  # type: ignore[call-overload]
                                  errors="surrogateescape") as tar:
                    yield tar
                diff.drain()
                blob.drain()
            except MicrocontainerError:
                raise
            except DECODE_ERRORS as error:
                if isinstance(error, OSError) and error.errno is not None:
                    raise
                try:
                    blob.drain()
                except DECODE_ERRORS:
                    pass
                if blob.digest != desc.digest:
                    raise DigestMismatchError(f"{self.path}: blob {desc.digest} does not match its content") \
                        from None
                raise LayoutError(f"{self.path}: corrupt layer {desc.digest}: {error}") from None
        if blob.digest != desc.digest or blob.size != desc.size:
            raise DigestMismatchError(f"{self.path}: blob {desc.digest} does not match its content")
        if diff.digest != self.diff_ids[number]:
            raise DigestMismatchError(f"{self.path}: layer {desc.digest} unpacks to {diff.digest},"
                                      f" config says {self.diff_ids[number]}")

    def iter_layer(self, number: int) -> Iterator[FileInfo]:
        """Yield the members of layer ``number`` (0 = bottom), verified (see :meth:`layer_tar`).

        Raises:
            DigestMismatchError: the blob or its uncompressed tar (``diff_id``) is wrong.
            LayoutError: the layer is not a readable tar.
        """
        with self.layer_tar(number) as tar:
            for member in tar:
                info = member_info(member)
                if info is not None:
                    yield info

    def iter_files(self) -> Iterator[FileInfo]:
        """Yield every member of every layer, bottom layer first (no whiteout processing)."""
        for number in range(len(self.layers)):
            yield from self.iter_layer(number)


def member_info(member: tarfile.TarInfo) -> FileInfo | None:
    """A layer tar member as a :class:`FileInfo` (``None`` for the root itself)."""
    name = _member_name(member.name).rstrip("/")
    if not name or name == ".":
        return None
    kind = _TYPES.get(member.type, "other")
    link = member.linkname
    if kind == "hardlink":
        link = "/" + _member_name(link).rstrip("/")
    return FileInfo("/" + name, kind, member.mode & 0o7777, member.size if kind == "file" else 0, link)


def _read_json(source: _Source, name: str, label: str) -> Any:
    """Parse a JSON file of the image that no digest names (``index.json``, ``manifest.json``)."""
    if not source.exists(name):
        raise LayoutError(f"{label}: {name} is missing")
    with source.open(name) as handle:
        data = handle.read(MAX_JSON_BLOB + 1)
    if len(data) > MAX_JSON_BLOB:
        raise LayoutError(f"{label}: {name} is too large")
    try:
        return jsontext.loads(data, MAX_JSON_BLOB)
    except ValueError as error:
        raise LayoutError(f"{label}: {name} is not valid JSON: {error}") from None


def _json_blob(source: _Source, desc: Descriptor, label: str) -> dict[str, Any]:
    """A JSON-object blob of the image, verified against ``desc``."""
    name = _blob_name(desc.digest)
    if not source.exists(name):
        raise LayoutError(f"{label}: {name} is missing")
    with source.open(name) as handle:
        return read_json_blob(handle, desc, label)


def _split_ref(path: str, tag: str | None) -> tuple[str, str | None]:
    if tag is None and not os.path.exists(path) and ":" in path:
        base, _, ref = path.rpartition(":")
        if base and os.path.exists(base):
            return base, ref
    return path, tag


def _matches(desc: Descriptor, tag: str) -> bool:
    annotations = desc.annotations or {}
    name = annotations.get(oci.ANNOTATION_CONTAINERD_NAME, "")
    return (annotations.get(oci.ANNOTATION_REF_NAME) == tag or name == tag
            or (bool(name) and name.endswith("/" + tag)))


def _descriptors(index: Any, label: str) -> list[Descriptor]:
    if (not isinstance(index, dict) or index.get("schemaVersion") != 2
            or not isinstance(index.get("manifests"), list)):
        raise LayoutError(f"{label}: malformed image index")
    return [Descriptor.from_dict(d) if isinstance(d, dict) else _bad(label) for d in index["manifests"]]


def _bad(label: str) -> Descriptor:
    raise LayoutError(f"{label}: malformed descriptor in image index")


def _choose(descs: list[Descriptor], tag: str | None, label: str) -> Descriptor:
    if tag is not None:
        found = [d for d in descs if _matches(d, tag)]
        if not found:
            tags = sorted({(d.annotations or {}).get(oci.ANNOTATION_REF_NAME, "?") for d in descs})
            raise LayoutError(f"{label}: no image tagged {tag!r} (tags: {', '.join(tags) or 'none'})")
        return found[0]
    if len(descs) == 1:
        return descs[0]
    if not descs:
        raise LayoutError(f"{label}: the image index lists no manifests")
    raise LayoutError(f"{label}: holds {len(descs)} images; name one as {label}:TAG")


def platform_text(plat: Any) -> str:
    """``os/architecture[/variant]`` of a descriptor's ``platform`` (``?`` for what it lacks)."""
    plat = plat if isinstance(plat, dict) else {}
    parts = [str(plat.get("os") or "?"), str(plat.get("architecture") or "?")]
    return "/".join(parts + ([str(plat["variant"])] if plat.get("variant") else []))


def _by_platform(descs: list[Descriptor], label: str, platform: str | None = None) -> Descriptor:
    if not descs:
        raise LayoutError(f"{label}: empty nested image index")
    if platform is not None:
        return _chosen_platform(descs, label, platform)
    arch = _HOST_ARCH.get(_platform.machine(), _platform.machine())
    for desc in descs:
        plat = desc.platform or {}
        if plat.get("os") == "linux" and plat.get("architecture") == arch:
            return desc
    return descs[0]


def _chosen_platform(descs: list[Descriptor], label: str, platform: str) -> Descriptor:
    """The entry for ``platform``: ``[OS/]ARCH[/VARIANT]`` (OS defaults to linux; no variant: any)."""
    parts = platform.split("/")
    if not 1 <= len(parts) <= 3 or not all(parts):
        raise LayoutError(f"invalid platform {platform!r} (expected [os/]arch[/variant], e.g. linux/arm64)")
    if len(parts) == 1:
        parts = ["linux", *parts]
    for desc in descs:
        plat = desc.platform or {}
        if plat.get("os") == parts[0] and plat.get("architecture") == parts[1] \
                and (len(parts) < 3 or plat.get("variant") == parts[2]):
            return desc
    have = ", ".join(platform_text(d.platform) for d in descs)
    raise LayoutError(f"{label}: no image for platform {platform} (available: {have})")


def _is_artifact(source: _Source, raw: Any, desc: Descriptor, label: str) -> bool:
    """An index entry that is an artifact or refers to another manifest (OCI 1.1), not an image."""
    if isinstance(raw, dict) and raw.get("artifactType"):
        return True
    if desc.media_type != oci.MEDIA_TYPE_MANIFEST or desc.size > MAX_JSON_BLOB:
        return False
    try:
        manifest = _json_blob(source, desc, label)
    except LayoutError:
        return False  # reported if it is chosen
    return "subject" in manifest or "artifactType" in manifest


def _open_oci(path: str, source: _Source, tag: str | None, platform: str | None = None) -> ImageView:
    index = _read_json(source, "index.json", path)
    descs = _descriptors(index, path)
    if len(descs) > 1:  # referrers (SBOMs, signatures) are listed beside their image, without a tag
        images = [d for raw, d in zip(index["manifests"], descs, strict=True)
                  if not _is_artifact(source, raw, d, path)]
        descs = images or descs
    desc = _choose(descs, tag, path)
    followed: tuple[Descriptor, list[Descriptor]] | None = None
    for _ in range(4):
        if desc.media_type not in oci.INDEX_TYPES:
            break
        nested = _descriptors(_json_blob(source, desc, path), path)
        followed = followed or (desc, nested)
        desc = _by_platform(nested, path, platform)
    if platform is not None and followed is None:
        _check_single_platform(source, desc, path, platform)
    if desc.media_type not in oci.MANIFEST_TYPES:
        raise LayoutError(f"{path}: {desc.digest} has unsupported media type {desc.media_type!r}")
    manifest = _json_blob(source, desc, path)
    config_desc = Descriptor.from_dict(manifest.get("config") or {})
    config = _json_blob(source, config_desc, path)
    if not isinstance(manifest.get("layers"), list):
        raise LayoutError(f"{path}: manifest {desc.digest} has no layers list")
    names = [_blob_name(Descriptor.from_dict(d).digest) for d in manifest["layers"]]
    for name in names:
        if not source.exists(name):
            raise LayoutError(f"{path}: layer blob {name} is missing")
    view = ImageView(path, source, index, manifest, desc.digest, config, names)
    view.platform_index = followed
    return view


def _check_single_platform(source: _Source, desc: Descriptor, label: str, platform: str) -> None:
    """``--platform`` on a single-platform image: it must be that platform's."""
    if desc.media_type not in oci.MANIFEST_TYPES:
        return
    manifest = _json_blob(source, desc, label)
    config = _json_blob(source, Descriptor.from_dict(manifest.get("config") or {}), label)
    _chosen_platform([desc.with_platform(oci.platform_of(config))], label, platform)


def _legacy_digest(name: str) -> str | None:
    base = posixpath.basename(name)
    if base.endswith(".json"):
        base = base[:-5]
    if name.startswith("blobs/sha256/") or name.endswith(".json"):
        try:
            return oci.check_digest("sha256:" + base)
        except LayoutError:
            return None
    return None


def _open_docker_legacy(path: str, source: _TarSource, tag: str | None) -> ImageView:
    entries = _read_json(source, "manifest.json", path)
    if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
        raise LayoutError(f"{path}: malformed manifest.json")
    entry = entries[0]
    if tag is not None:
        matching = [e for e in entries
                    if any(t == tag or t.endswith(":" + tag) for t in e.get("RepoTags") or [])]
        if not matching:
            raise LayoutError(f"{path}: no image tagged {tag!r}")
        entry = matching[0]
    elif len(entries) > 1:
        raise LayoutError(f"{path}: holds {len(entries)} images; name one as {path}:TAG")
    config_name, layer_names = entry.get("Config"), entry.get("Layers")
    if not isinstance(config_name, str) or not isinstance(layer_names, list):
        raise LayoutError(f"{path}: malformed manifest.json entry")
    with source.open(config_name) as handle:
        config_bytes = handle.read(MAX_JSON_BLOB + 1)
    config_digest = oci.sha256_digest(config_bytes)
    expected = _legacy_digest(config_name)
    if expected is not None and expected != config_digest:
        raise DigestMismatchError(f"{path}: {config_name} does not match its digest")
    config = parse_json_object(config_bytes, f"{path}: {config_name}")
    layers = []
    for name in layer_names:
        if not isinstance(name, str) or not source.exists(name):
            raise LayoutError(f"{path}: layer {name!r} is missing")
        sha, size = hashlib.sha256(), 0
        with source.open(name) as handle:
            head = handle.read(4)
            sha.update(head)
            size += len(head)
            while chunk := handle.read(CHUNK_SIZE):
                sha.update(chunk)
                size += len(chunk)
        media = oci.DOCKER_LAYER_GZIP if detect_compression(head) == "gzip" else oci.DOCKER_LAYER
        layers.append(Descriptor(media, "sha256:" + sha.hexdigest(), size))
    manifest = {
        "schemaVersion": 2,
        "mediaType": oci.DOCKER_MANIFEST,
        "config": Descriptor(oci.DOCKER_CONFIG, config_digest, len(config_bytes)).to_dict(),
        "layers": [d.to_dict() for d in layers],
    }
    manifest_bytes = oci.canonical_json(manifest)
    manifest_desc = Descriptor(oci.DOCKER_MANIFEST, oci.sha256_digest(manifest_bytes), len(manifest_bytes))
    return ImageView(path, source, oci.index([manifest_desc]), manifest, manifest_desc.digest, config,
                     [_member_name(n) for n in layer_names], _member_name(config_name))


def open_image(path: str, tag: str | None = None, platform: str | None = None) -> ImageView:
    """Open an image for reading.

    Args:
        path: an OCI layout directory (or ``DIR:TAG``), an oci-archive, a smith
            ``.tar.gz``, or a docker-archive.
        tag: the image to pick when the index holds several (``ref.name``).
        platform: ``[OS/]ARCH[/VARIANT]``: the manifest to pick from a
            multi-platform index (default: this machine's, else the first); a
            single-platform image must be of it.

    Returns:
        A verified view of the image's index, manifest and config.

    Raises:
        LayoutError: the path is missing, not an image, or malformed.
        DigestMismatchError: a blob does not match its digest.
    """
    path, tag = _split_ref(path, tag)
    if not os.path.exists(path):
        raise LayoutError(f"{path}: no such image")
    source: _Source
    if os.path.isdir(path):
        source = _DirSource(path)
        if not source.exists("oci-layout"):
            raise LayoutError(f"{path}: not an OCI image layout (no oci-layout file)")
        return _open_oci(path, source, tag, platform)
    source = _open_archive(path)
    try:
        if source.exists("index.json") and source.exists("oci-layout"):
            return _open_oci(path, source, tag, platform)
        if source.exists("manifest.json"):
            view = _open_docker_legacy(path, source, tag)
            if platform is not None:
                _chosen_platform([Descriptor(oci.DOCKER_MANIFEST, view.manifest_digest, 0, None,
                                             oci.platform_of(view.config))], path, platform)
            return view
        raise LayoutError(f"{path}: not an OCI or docker archive (no index.json or manifest.json)")
    except BaseException:
        source.close()
        raise


def image_files(path: str) -> list[str]:
    """The local files an image consists of, for dependency tracking (nothing is read or verified).

    Args:
        path: what :func:`open_image` accepts: an archive file, or an OCI
            layout directory (or ``DIR:TAG``).

    Returns:
        An archive: the file itself. A layout: its ``index.json``, then every
        file in ``blobs/sha256`` sorted by name (none if that is missing).
    """
    path, _tag = _split_ref(path, None)
    if os.path.isfile(path):
        return [path]
    blobs = os.path.join(path, "blobs", "sha256")
    names = sorted(os.listdir(blobs)) if os.path.isdir(blobs) else []
    return [os.path.join(path, "index.json")] + [os.path.join(blobs, name) for name in names]
