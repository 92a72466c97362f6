"""Multi-platform images: one OCI image index over one image manifest per platform.

A multi-platform build makes each platform's image as an ordinary
single-image OCI layout (:mod:`microcontainer_tool.oci.layout`), then this
module joins them: the image index lists each platform's manifest with its
``platform`` (``os``, ``architecture``, ``variant``), in the order given, and
the output's ``index.json`` lists that index once, under the tag
(``org.opencontainers.image.ref.name``) and ``io.containerd.image.name``, as
``docker buildx`` and ``skopeo copy --all`` lay it out. The per-platform
manifests are byte for byte the single-platform ones, so adding a platform
changes no other platform's manifest; the index bytes depend only on them.

Formats: ``oci`` (layout directory), ``oci-archive`` and ``smith`` (the same
tar, gzipped). ``docker-archive`` is refused: its ``manifest.json`` names
images by ``RepoTags``, and ``docker load`` gives a tag to one image only,
so it cannot hold several platforms of one tag.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from microcontainer_tool import jsontext
from microcontainer_tool.errors import LayoutError, UnsupportedError
from microcontainer_tool.hostfs.atomic import fsync_dir, make_temp_dir, replace_dir
from microcontainer_tool.oci import model as oci
from microcontainer_tool.oci.layout import (
    check_output,
    format_for_path,
    image_name,
    write_archive_file,
)
from microcontainer_tool.oci.model import Descriptor, canonical_json
from microcontainer_tool.oci.store import BLOBS_DIR, INDEX_FILE, OCI_LAYOUT, OCI_LAYOUT_FILE, LayoutStore


@dataclass(frozen=True)
class PlatformImage:
    """One platform's image, stored in an OCI layout of its own.

    Attributes:
        layout: the layout directory.
        manifest: the image manifest's descriptor, with its ``platform``.
        blobs: the manifest's config and layers.
    """

    layout: str
    manifest: Descriptor
    blobs: tuple[Descriptor, ...]

    @property
    def platform_text(self) -> str:
        """``os/architecture[/variant]``."""
        plat = self.manifest.platform or {}
        parts = [plat.get("os", ""), plat.get("architecture", "")]
        return "/".join(parts + ([plat["variant"]] if plat.get("variant") else []))


@dataclass(frozen=True)
class IndexResult:
    """What :func:`write_index_image` wrote.

    Attributes:
        output: the output path.
        format: the output format.
        index_digest: digest of the image index (the multi-platform image's identity).
        index_size: its size in bytes.
        manifests: each platform's manifest descriptor, in index order.
    """

    output: str
    format: str
    index_digest: str
    index_size: int
    manifests: tuple[Descriptor, ...]


def read_platform_image(layout: str) -> PlatformImage:
    """Read the one image of a single-image OCI layout (as a single-platform build writes it).

    Raises:
        LayoutError: the layout does not hold exactly one image manifest.
        DigestMismatchError: a blob does not match its digest.
    """
    store = LayoutStore(layout)
    try:
        with open(os.path.join(layout, INDEX_FILE), "rb") as handle:
            index = jsontext.loads(handle.read())
    except (OSError, ValueError) as error:
        raise LayoutError(f"{layout}: cannot read index.json ({error})") from None
    entries = index.get("manifests") if isinstance(index, dict) else None
    if not isinstance(entries, list) or len(entries) != 1 or not isinstance(entries[0], dict):
        raise LayoutError(f"{layout}: expected one image in index.json")
    entry = Descriptor.from_dict(entries[0])
    if entry.media_type != oci.MEDIA_TYPE_MANIFEST:
        raise LayoutError(f"{layout}: {entry.digest} is not an OCI image manifest")
    manifest = store.read_json(entry, layout)
    try:
        config = Descriptor.from_dict(manifest["config"])
        layers = [Descriptor.from_dict(d) for d in manifest["layers"]]
    except (KeyError, TypeError):
        raise LayoutError(f"{layout}: manifest {entry.digest} lacks config or layers") from None
    plat = store.read_json(config, layout)
    desc = Descriptor(entry.media_type, entry.digest, entry.size, None, oci.platform_of(plat))
    return PlatformImage(layout, desc, (config, *layers))


def platform_index(images: Sequence[PlatformImage]) -> bytes:
    """The image index over ``images``' manifests, in order (canonical JSON bytes).

    Raises:
        LayoutError: no images, or two for one platform.
    """
    if not images:
        raise LayoutError("a multi-platform image needs at least one platform")
    seen: set[str] = set()
    for image in images:
        if image.platform_text in seen:
            raise LayoutError(f"two images for platform {image.platform_text}")
        seen.add(image.platform_text)
    return canonical_json(oci.index([image.manifest for image in images]))


def check_index_format(out: str, fmt: str) -> None:
    """Refuse ``docker-archive`` for a multi-platform image (see the module docstring).

    Raises:
        UnsupportedError: ``fmt`` is ``docker-archive``.
    """
    if fmt == "docker-archive":
        raise UnsupportedError(f"{out}: a docker-archive holds one image per tag, not a multi-platform "
                               "index: write an OCI layout or oci-archive, or build one platform")


def write_index_image(out: str, fmt: str | None, images: Sequence[PlatformImage], tag: str, name: str,
                      annotations: Mapping[str, str] | None = None) -> IndexResult:
    """Write ``images`` as one multi-platform image (an image index) to ``out``, atomically.

    Args:
        out: output path (directory for ``oci``, file otherwise).
        fmt: output format, or ``None`` to choose by ``out``'s suffix.
        images: each platform's image, in index order.
        tag: the tag (``org.opencontainers.image.ref.name`` on the index's entry).
        name: repository name (``io.containerd.image.name`` is its reference with ``tag``).
        annotations: more annotations on the index's entry in ``index.json``.

    Returns:
        The digests written.

    Raises:
        UnsupportedError: ``docker-archive`` (one image per tag; see the module).
        LayoutError: invalid arguments, an existing target that is not an
            OCI layout, or an I/O failure (the previous output is left intact).
    """
    check_index_format(out, format_for_path(out, fmt))
    fmt, target = check_output(out, fmt, tag, name)
    index_bytes = platform_index(images)
    entry = {**(annotations or {}),
             oci.ANNOTATION_REF_NAME: tag, oci.ANNOTATION_CONTAINERD_NAME: image_name(name, tag)}
    index_desc = Descriptor(oci.MEDIA_TYPE_INDEX, oci.sha256_digest(index_bytes), len(index_bytes), entry)
    result = IndexResult(out, fmt, index_desc.digest, index_desc.size,
                         tuple(image.manifest for image in images))
    blobs: dict[str, str] = {}  # blob name -> file holding it
    for image in images:
        source = LayoutStore(image.layout)
        for desc in (image.manifest, *image.blobs):
            blobs.setdefault(f"{BLOBS_DIR}/{desc.hex}", source.blob_path(desc.digest))
    if fmt == "oci":
        _write_layout(target, blobs, index_bytes, index_desc)
        return result
    members: dict[str, bytes | str] = {
        OCI_LAYOUT_FILE: canonical_json(OCI_LAYOUT),
        INDEX_FILE: canonical_json(oci.index([index_desc])),
        f"{BLOBS_DIR}/{index_desc.hex}": index_bytes,
        **blobs,
    }
    write_archive_file(target, members, gzip=fmt == "smith")
    return result


def _write_layout(target: str, blobs: Mapping[str, str], index_bytes: bytes, index_desc: Descriptor) -> None:
    """Fill a layout: an existing one in place (``index.json`` last, then unused blobs go), else a new one."""
    existing = os.path.isfile(os.path.join(target, OCI_LAYOUT_FILE))
    parent, base = os.path.split(target)
    root = target if existing else make_temp_dir(parent, f".{base}.tmp-")
    try:
        store = LayoutStore(root)
        for name, path in sorted(blobs.items()):
            digest = "sha256:" + name[len(BLOBS_DIR) + 1:]
            if not store.has_blob(digest):
                store.put_file(path, expected_digest=digest)
        store.put_blob(index_bytes, oci.MEDIA_TYPE_INDEX, index_desc.digest)
        store.sync()
        store.write_index([index_desc])
        fsync_dir(store.root)
        if existing:
            store.collect_garbage([index_desc.digest] + ["sha256:" + n[len(BLOBS_DIR) + 1:] for n in blobs])
        else:
            replace_dir(root, target)
    except BaseException:
        if not existing:
            shutil.rmtree(root, ignore_errors=True)
        raise
