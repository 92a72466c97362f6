"""The output formats built on the OCI image layout store (:mod:`microcontainer_tool.oci.store`).

Formats (see :func:`format_for_path`):

* ``oci``: an OCI image layout directory.
* ``oci-archive``: an uncompressed tar of that layout (``OUT.tar``).
* ``smith``: the same tar through the pinned gzip codec (``OUT.tar.gz``/``.tgz``).
* ``docker-archive``: the layout plus ``manifest.json`` and ``repositories``, as
  ``docker save`` (25+) writes it; ``docker load`` and ``skopeo`` read it.

Every output is written to a temporary sibling of the target (same directory,
``.NAME.tmp-XXXX``) and renamed into place, so a failed build leaves the
previous output untouched and no debris. Archives are byte-reproducible:
members sorted parents-first, mtime 0, uid/gid 0, no owner names, modes
0644/0755.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tarfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO, cast

from microcontainer_tool import jsontext
from microcontainer_tool.errors import DigestMismatchError, LayoutError
from microcontainer_tool.hostfs.atomic import (
    atomic_file,
    fsync_dir,
    make_temp_dir,
    replace_dir,
    temp_file,
    unlink_quietly,
)
from microcontainer_tool.model.tree import FileTree
from microcontainer_tool.oci import model as oci
from microcontainer_tool.oci.compression import open_compressor
from microcontainer_tool.oci.formats import FORMATS
from microcontainer_tool.oci.layer import CHUNK_SIZE, LayerInfo, TarStreamWriter, normalized_info, write_layer
from microcontainer_tool.oci.layercache import LayerCache
from microcontainer_tool.oci.model import Descriptor, canonical_json
from microcontainer_tool.oci.referrers import (
    IndexEntry,
    link_referrers,
    split_index,
    surviving_referrers,
)
from microcontainer_tool.oci.store import BLOBS_DIR, INDEX_FILE, OCI_LAYOUT, OCI_LAYOUT_FILE, LayoutStore

_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_NAME_RE = re.compile(
    rf"^(?:(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
    rf"(?::[0-9]+)?)/)?{_COMPONENT}(?:/{_COMPONENT})*$"
)



@dataclass(frozen=True)
class ImageResult:
    """What :func:`write_image` wrote.

    Attributes:
        output: the output path.
        format: the output format.
        manifest_digest: digest of the image manifest.
        manifest_size: size of the manifest in bytes.
        config_digest: digest of the image config.
        layer: the layer that was stored.
    """

    output: str
    format: str
    manifest_digest: str
    manifest_size: int
    config_digest: str
    layer: LayerInfo


def format_for_path(out: str, explicit_fmt: str | None = None) -> str:
    """Choose the output format: ``explicit_fmt`` if given, else by ``out``'s suffix.

    ``.tar.gz``/``.tgz`` -> ``smith``; ``.tar`` -> ``oci-archive``; anything
    else -> ``oci`` (a layout directory). ``docker-archive`` is explicit only.

    Raises:
        LayoutError: ``explicit_fmt`` is not a known format.
    """
    if explicit_fmt:
        if explicit_fmt not in FORMATS:
            raise LayoutError(f"unknown output format {explicit_fmt!r} (choose from {', '.join(FORMATS)})")
        return explicit_fmt
    lower = out.rstrip("/").lower()
    if lower.endswith((".tar.gz", ".tgz")):
        return "smith"
    if lower.endswith(".tar"):
        return "oci-archive"
    return "oci"


def docker_reference(name: str) -> str:
    """Return the fully qualified form of a repository ``name`` (``docker.io/library/x``)."""
    first, _, rest = name.partition("/")
    if not rest:
        return f"docker.io/library/{name}"
    if "." in first or ":" in first or first == "localhost":
        return name
    return f"docker.io/{name}"


def split_reference(name: str | None, tag: str | None) -> tuple[str | None, str]:
    """Split a user's ``NAME[:TAG]`` and ``TAG`` into a repository name and a tag.

    The tag after the last ``/`` of ``name`` (``host:5000/app`` has none) and
    ``tag`` must agree when both are given; neither gives ``latest``.

    Returns:
        ``(name or None, tag)``, both checked.

    Raises:
        LayoutError: an invalid name or tag, a digest, or two different tags.
    """
    if name is not None:
        if "@" in name:
            raise LayoutError(f"invalid image name {name!r}: an image to build is named by a tag,"
                              " not a digest")
        slash = name.rfind("/")
        if ":" in name[slash + 1:]:
            name, _, own = name.rpartition(":")
            check_tag(own)
            if tag is not None and tag != own:
                raise LayoutError(f"two tags given: {own!r} in the name {name}:{own} and {tag!r}; give one")
            tag = own
        check_name(name)
    tag = tag or "latest"
    check_tag(tag)
    return name, tag


def image_name(name: str, tag: str) -> str:
    """Return the full reference of ``name:tag`` as containerd, podman and Docker store it.

    ``app`` and ``1.0`` give ``docker.io/library/app:1.0``; a name with a
    registry host (``example.org/app``, ``localhost/app``) is kept as it is.
    """
    return f"{docker_reference(name)}:{tag}"


def check_tag(tag: str) -> None:
    """Raise :class:`LayoutError` unless ``tag`` is a valid image tag."""
    if not _TAG_RE.match(tag):
        raise LayoutError(f"invalid tag {tag!r} (letters, digits, '_', '.', '-'; at most 128)")


def check_name(name: str) -> None:
    """Raise :class:`LayoutError` unless ``name`` is a valid repository name."""
    if len(name) > 255 or not _NAME_RE.match(name):
        raise LayoutError(f"invalid image name {name!r}"
                          " (lowercase letters, digits, separators '.', '_', '-', '/')")


def check_output(out: str, fmt: str | None, tag: str, name: str) -> tuple[str, str]:
    """Check an output's arguments and place before anything is written.

    Returns:
        ``(format, absolute target path)``.

    Raises:
        LayoutError: a bad tag or name, a missing parent directory, or an
            existing target of another kind (see :func:`check_target`).
    """
    fmt = format_for_path(out, fmt)
    check_tag(tag)
    check_name(name)
    target = os.path.abspath(out)
    parent = os.path.dirname(target)
    if not os.path.isdir(parent):
        raise LayoutError(f"{out}: parent directory {parent} does not exist")
    check_target(target, fmt)
    return fmt, target


def check_target(out: str, fmt: str) -> None:
    if fmt == "oci":
        if os.path.lexists(out) and not os.path.isdir(out):
            raise LayoutError(f"{out}: exists and is not a directory; not overwriting it with an OCI layout")
        if os.path.isdir(out):
            try:
                names = os.listdir(out)
            except OSError as error:
                raise LayoutError(f"{out}: cannot read: {error.strerror or error}") from None
            if names and OCI_LAYOUT_FILE not in names:
                raise LayoutError(f"{out}: exists and is not an OCI layout; not overwriting it")
    elif os.path.isdir(out):
        raise LayoutError(f"{out}: is a directory; a {fmt} output is a file")


def _verify_file(path: str, digest: str, size: int) -> None:
    sha = hashlib.sha256()
    count = 0
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(CHUNK_SIZE):
                sha.update(chunk)
                count += len(chunk)
    except OSError as error:
        raise LayoutError(f"{path}: cannot read layer blob: {error.strerror or error}") from None
    actual = "sha256:" + sha.hexdigest()
    if actual != digest or count != size:
        raise DigestMismatchError(
            f"{path}: layer blob is {actual} ({count} bytes), expected {digest} ({size} bytes)")


@dataclass(frozen=True)
class BaseLayer:
    """A parent image's layer, put under ours unchanged.

    Attributes:
        desc: its descriptor (digest and size as in the parent; OCI media type).
        path: a local copy, verified against ``desc`` when it was stored.
    """

    desc: Descriptor
    path: str


def write_image(out: str, fmt: str, layer_blob_path: str, layer: LayerInfo, config: Mapping[str, Any],
                tag: str, name: str, move_layer: bool = False,
                base_layers: Sequence[BaseLayer] = (),
                annotations: Mapping[str, str] | None = None) -> ImageResult:
    """Write an image (``base_layers`` then our layer) to ``out`` in format ``fmt``, atomically.

    Args:
        out: output path (directory for ``oci``, file otherwise).
        fmt: one of :data:`FORMATS`.
        layer_blob_path: the layer blob as written by
            :func:`~microcontainer_tool.oci.layer.write_layer` (verified against ``layer``).
        layer: the layer's digests and media type.
        config: the image config (see :func:`~microcontainer_tool.oci.model.image_config`).
        tag: the image tag (``org.opencontainers.image.ref.name``).
        name: repository name: ``io.containerd.image.name`` is its full
            reference with ``tag`` (see :func:`image_name`), and
            ``docker-archive``'s ``RepoTags`` is ``name:tag``.
        move_layer: the caller hashed ``layer_blob_path`` while writing it and
            hands it over: it is moved (not copied, not re-hashed) into an
            ``oci`` layout, and removed in every case.
        base_layers: a parent image's layers, bottom first, stored byte for
            byte (``config``'s ``diff_ids`` must list theirs first).
        annotations: more annotations on the image's entry in the index (for
            example smith's ``com.oracle.smith.build``); the tag and name ones win.

    Returns:
        The digests written.

    Raises:
        LayoutError: invalid arguments, an existing target that is not ours,
            or an I/O failure (the previous output is left intact).
        DigestMismatchError: the layer blob does not match ``layer``.
    """
    fmt, target = check_output(out, fmt, tag, name)
    if not move_layer:
        _verify_file(layer_blob_path, layer.digest, layer.size)

    config_bytes = canonical_json(dict(config))
    config_desc = Descriptor(oci.MEDIA_TYPE_CONFIG, oci.sha256_digest(config_bytes), len(config_bytes))
    layer_desc = Descriptor(layer.media_type, layer.digest, layer.size)
    layer_descs = [base.desc for base in base_layers] + [layer_desc]
    manifest_bytes = canonical_json(oci.manifest(config_desc, layer_descs))
    # ref.name is the tag (skopeo's oci-archive:FILE:TAG, umoci's --image DIR:TAG); podman and
    # containerd name a loaded image by io.containerd.image.name (a bare tag would become
    # localhost/TAG:latest in podman and import-DATE:TAG in containerd).
    entry = {**(annotations or {}),
             oci.ANNOTATION_REF_NAME: tag, oci.ANNOTATION_CONTAINERD_NAME: image_name(name, tag)}
    manifest_desc = Descriptor(oci.MEDIA_TYPE_MANIFEST, oci.sha256_digest(manifest_bytes),
                               len(manifest_bytes), entry, oci.platform_of(config))
    result = ImageResult(out, fmt, manifest_desc.digest, manifest_desc.size, config_desc.digest, layer)

    if fmt == "oci":
        _write_layout_dir(target, layer_blob_path, layer_desc, config_bytes, manifest_bytes, manifest_desc,
                          move_layer, base_layers)
        return result

    members: dict[str, bytes | str] = {
        OCI_LAYOUT_FILE: canonical_json(OCI_LAYOUT),
        INDEX_FILE: canonical_json(oci.index([manifest_desc])),
        f"{BLOBS_DIR}/{config_desc.hex}": config_bytes,
        f"{BLOBS_DIR}/{manifest_desc.hex}": manifest_bytes,
        f"{BLOBS_DIR}/{layer_desc.hex}": layer_blob_path,
    }
    for base in base_layers:
        members[f"{BLOBS_DIR}/{base.desc.hex}"] = base.path
    if fmt == "docker-archive":
        members["manifest.json"] = canonical_json([{
            "Config": f"{BLOBS_DIR}/{config_desc.hex}",
            "RepoTags": [f"{name}:{tag}"],
            "Layers": [f"{BLOBS_DIR}/{d.hex}" for d in layer_descs],
        }])
        members["repositories"] = canonical_json({name: {tag: layer_desc.hex}})
    write_archive_file(target, members, gzip=fmt == "smith")
    return result


def write_tree_image(out: str, fmt: str | None, tree: FileTree, compression: str, epoch: int,
                     make_config: Callable[[LayerInfo], Mapping[str, Any]], tag: str,
                     name: str, layer_cache: LayerCache | None = None,
                     base_layers: Sequence[BaseLayer] = (),
                     annotations: Mapping[str, str] | None = None) -> ImageResult:
    """Write ``tree`` as a one-layer image to ``out``: the whole build, atomically.

    The layer is streamed into a temporary file next to ``out`` and moved into
    place (removed in every case), or taken from ``layer_cache`` when it
    holds the same tree already; then :func:`write_image` stores it.

    Args:
        out: output path.
        fmt: output format, or ``None`` to choose by ``out``'s suffix.
        tree: the image content.
        compression: layer codec (``gzip``, ``zstd``, ``none``).
        epoch: build time stamped on the layer's members.
        make_config: builds the image config from the written layer (its ``diff_id``).
        tag: image tag.
        name: repository name (see :func:`write_image`).
        layer_cache: reuse and keep compressed layers there, by tree digest.
        base_layers: a parent image's layers, under ours (see :func:`write_image`).
        annotations: more annotations on the image's index entry (see :func:`write_image`).

    Raises:
        SourceError: a host file vanished or changed while the layer was written.
        LayoutError: the output cannot be written (the previous one is left intact).
    """
    fmt, target = check_output(out, fmt, tag, name)
    parent, base = os.path.split(target)
    if layer_cache is not None:
        blob, layer, _hit = layer_cache.layer(tree, compression, epoch)
        return write_image(out, fmt, blob, layer, make_config(layer), tag, name, base_layers=base_layers,
                           annotations=annotations)
    fd, tmp = temp_file(parent, f".{base}.layer")
    try:
        with os.fdopen(fd, "wb", buffering=CHUNK_SIZE) as sink:
            layer = write_layer(tree, sink, compression, epoch)
        return write_image(out, fmt, tmp, layer, make_config(layer), tag, name, move_layer=True,
                           base_layers=base_layers, annotations=annotations)
    except OSError as error:
        raise LayoutError(f"{out}: cannot write: {error.strerror or error}") from None
    finally:
        unlink_quietly(tmp)


def _write_layout_dir(target: str, layer_blob_path: str, layer_desc: Descriptor, config_bytes: bytes,
                      manifest_bytes: bytes, manifest_desc: Descriptor, move_layer: bool,
                      base_layers: Sequence[BaseLayer]) -> None:
    """Write the layout: a new one via a temp dir + rename, an existing one in place.

    In place, blobs are content-addressed and written idempotently (a blob
    already present, such as an unchanged layer, is not rewritten), then
    ``index.json`` is replaced atomically — the commit point — and only then
    are blobs no longer referenced removed. A failure before the commit point
    leaves the previous image fully readable.

    Referrers (artifacts with a ``subject``, see :mod:`microcontainer_tool.oci.referrers`) of the new
    manifest are kept, with their blobs; those of a previous manifest go.
    """
    if os.path.isfile(os.path.join(target, OCI_LAYOUT_FILE)):
        store = LayoutStore(target)
        kept, kept_blobs = surviving_referrers(target, [manifest_desc.digest])
        nested = _fill_layout(store, layer_blob_path, layer_desc, config_bytes, manifest_bytes,
                              manifest_desc, move_layer, base_layers, kept)
        store.collect_garbage([layer_desc.digest, manifest_desc.digest, oci.sha256_digest(config_bytes)]
                              + [base.desc.digest for base in base_layers] + kept_blobs + nested)
        return
    parent, base = os.path.split(target)
    try:
        tmp = make_temp_dir(parent, f".{base}.tmp-")
    except OSError as error:
        raise LayoutError(
            f"{parent}: cannot create a temporary directory: {error.strerror or error}") from None
    try:
        store = LayoutStore(tmp)
        _fill_layout(store, layer_blob_path, layer_desc, config_bytes, manifest_bytes, manifest_desc,
                     move_layer, base_layers)
        replace_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _fill_layout(store: LayoutStore, layer_blob_path: str, layer_desc: Descriptor, config_bytes: bytes,
                 manifest_bytes: bytes, manifest_desc: Descriptor, move_layer: bool,
                 base_layers: Sequence[BaseLayer] = (), referrers: Sequence[IndexEntry] = ()) -> list[str]:
    """Store the image's blobs and write ``index.json``; return the referrers index blobs written."""
    for base in base_layers:
        if not store.has_blob(base.desc.digest):
            store.put_file(base.path, base.desc.media_type, base.desc.digest)
    if move_layer:
        store.adopt_file(layer_blob_path, layer_desc)
    else:
        store.put_file(layer_blob_path, layer_desc.media_type, layer_desc.digest)
    store.put_blob(config_bytes, oci.MEDIA_TYPE_CONFIG)
    store.put_blob(manifest_bytes, oci.MEDIA_TYPE_MANIFEST)
    entries, nested = link_referrers(store, [manifest_desc], referrers)
    store.sync()
    store.write_index(entries)
    fsync_dir(store.root)
    return nested


def _dirs_of(names: Sequence[str]) -> list[str]:
    dirs: set[str] = set()
    for name in names:
        parts = name.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            dirs.add("/".join(parts[:i]))
    return sorted(dirs)


def write_layout_tar(sink: BinaryIO, members: Mapping[str, bytes | str]) -> None:
    """Write a reproducible tar of layout files to ``sink``.

    Args:
        sink: binary writer.
        members: archive path -> content bytes, or a host path to stream.
    """
    tar = TarStreamWriter(sink)
    entries: list[tuple[str, bytes | str | None]] = [(d, None) for d in _dirs_of(list(members))]
    entries += list(members.items())
    entries.sort(key=lambda item: tuple(item[0].split("/")))
    for name, content in entries:
        if content is None:
            tar.add(normalized_info(name, tarfile.DIRTYPE, 0o755, 0))
        elif isinstance(content, str):
            with open(content, "rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                tar.add_stream(normalized_info(name, tarfile.REGTYPE, 0o644, 0, size=size), handle, content)
        else:
            tar.add(normalized_info(name, tarfile.REGTYPE, 0o644, 0, size=len(content)), content)
    tar.finish()


def write_archive_file(target: str, members: Mapping[str, bytes | str], gzip: bool) -> None:
    """Write ``members`` as a layout tar (gzipped for ``smith``) to ``target``, atomically.

    Raises:
        LayoutError: the archive cannot be written.
    """
    try:
        with atomic_file(target) as out:
            if gzip:
                with open_compressor("gzip", out) as writer:
                    write_layout_tar(writer, members)  # type: ignore[arg-type]
            else:
                write_layout_tar(out, members)
        fsync_dir(os.path.dirname(os.path.abspath(target)))
    except OSError as error:
        raise LayoutError(f"{target}: cannot write: {error.strerror or error}") from None


def sync_layout_from_archive(archive: str, out: str) -> str:
    """Make the OCI layout ``out`` hold exactly the image of an oci-archive.

    Blobs are verified against their names while copied; a blob ``out``
    already has is not rewritten (so an unchanged layer keeps its file and
    mtime); ``index.json`` is replaced atomically, then unreferenced blobs are
    removed. A new ``out`` is filled in a temporary directory and renamed.
    Referrers in ``out`` whose subject the archive lists stay, with their blobs.

    Args:
        archive: an oci-archive (a tar of a layout), as :func:`write_image` writes.
        out: the layout directory to create or update.

    Returns:
        The digest of the (first) manifest in the index.

    Raises:
        LayoutError: the archive is unreadable or not a layout, or ``out`` is
            not a layout and not empty.
        DigestMismatchError: a blob does not match its name.
    """
    target = os.path.abspath(out)
    check_target(target, "oci")
    try:
        tar = tarfile.open(archive, "r:")
    except (OSError, tarfile.TarError) as error:
        raise LayoutError(f"{archive}: not a readable oci-archive ({error})") from None
    with tar:
        members = {m.name.lstrip("./"): m for m in tar.getmembers() if m.isfile()}
        index_member = members.get(INDEX_FILE)
        if index_member is None:
            raise LayoutError(f"{archive}: no index.json: not an oci-archive")
        index_bytes = _extract(tar, index_member, archive)
        try:
            index = jsontext.loads(index_bytes)
            descs = [Descriptor.from_dict(d) for d in index["manifests"]]
        except (ValueError, KeyError, TypeError) as error:
            raise LayoutError(f"{archive}: invalid index.json ({error})") from None
        blobs = sorted(n for n in members if n.startswith(BLOBS_DIR + "/"))
        existing = os.path.isfile(os.path.join(target, OCI_LAYOUT_FILE))
        root = (target if existing
                else make_temp_dir(os.path.dirname(target), f".{os.path.basename(target)}.tmp-"))
        try:
            store = LayoutStore(root)
            for name in blobs:
                digest = "sha256:" + name[len(BLOBS_DIR) + 1:]
                if not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
                    raise LayoutError(f"{archive}: unexpected member {name!r}")
                if store.has_blob(digest):
                    continue
                stream = tar.extractfile(members[name])
                if stream is None:
                    raise LayoutError(f"{archive}: cannot read {name}")
                store.put_blob(cast(BinaryIO, stream), expected_digest=digest)
            kept: list[IndexEntry] = []
            kept_blobs: list[str] = []
            images, carried = split_index(store, descs, archive)  # the archive's own referrers
            if existing:
                kept, kept_blobs = surviving_referrers(root, [d.digest for d in images])
            entries, nested = link_referrers(store, images, carried + [e for e in kept if e not in carried])
            store.sync()
            store.write_index(entries)
            if existing:
                store.collect_garbage(["sha256:" + n[len(BLOBS_DIR) + 1:] for n in blobs] + kept_blobs
                                      + nested)
            else:
                replace_dir(root, target)
        except BaseException:
            if not existing:
                shutil.rmtree(root, ignore_errors=True)
            raise
    return images[0].digest if images else ""


def _extract(tar: tarfile.TarFile, member: tarfile.TarInfo, archive: str) -> bytes:
    stream = tar.extractfile(member)
    if stream is None:
        raise LayoutError(f"{archive}: cannot read {member.name}")
    return stream.read()
