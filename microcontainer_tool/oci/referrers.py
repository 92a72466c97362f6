"""Artifacts that refer to an image (OCI 1.1 ``subject``), kept in an OCI image layout.

An artifact (an SBOM, a signature...) is stored as an OCI image manifest
with ``artifactType``, the *empty* config (``application/vnd.oci.empty.v1+json``,
the two bytes ``{}``), one layer holding the data (its media type is the
artifact type), and ``subject`` pointing at the image manifest it describes.

In a layout, ``index.json`` lists the *images* only, so that every client
reads the layout without being told a tag (syft, ``skopeo inspect oci:DIR``,
``oci-image-tool validate``: each refuses an ``index.json`` with more than one
entry, or fails on an artifact's empty config). An image's entry in
``index.json`` carries the annotation :data:`REFERRERS_ANNOTATION`: the digest
of an OCI image index blob listing its referrers -- those whose ``subject``
is the image, and those of them, transitively -- exactly as the registry
referrers API answers (each entry a manifest descriptor with
``artifactType`` and the manifest's annotations). The annotation is on the
index entry, not in the image manifest: the image digest does not depend on
its artifacts. Layouts written by other tools (or earlier versions), with
referrer manifests listed in ``index.json`` itself, are read too, and
rewritten to this form by the next :func:`attach` or rebuild.

Attaching again with the same artifact type for the same subject replaces
the previous one, so rebuilding does not accumulate. Referrers are ordered
by (subject, artifact type, digest), so the bytes do not depend on the order
things were attached in. Every write is deterministic: same data, same
bytes.

**Which referrers survive a rebuild**: a layout keeps a referrer only while
its subject is still in ``index.json`` (directly, or as another kept
referrer). Rebuilding an image into its layout with the same bytes keeps its
artifacts; a changed image drops the artifacts of the old one, and their
blobs go with the garbage (see :func:`surviving_referrers`).

Pushing referrers to a registry and fetching them from one is
:mod:`microcontainer_tool.registry.referrers`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from microcontainer_tool import jsontext
from microcontainer_tool.errors import LayoutError
from microcontainer_tool.oci import model as oci
from microcontainer_tool.oci.model import Descriptor, canonical_json
from microcontainer_tool.oci.store import INDEX_FILE, OCI_LAYOUT_FILE, LayoutStore

MEDIA_TYPE_EMPTY = "application/vnd.oci.empty.v1+json"
EMPTY_JSON = b"{}"
EMPTY_DESCRIPTOR = Descriptor(MEDIA_TYPE_EMPTY, oci.sha256_digest(EMPTY_JSON), len(EMPTY_JSON))
"""The OCI empty descriptor (``sha256:44136fa…``, 2 bytes): the config of an artifact."""

ANNOTATION_CREATED = "org.opencontainers.image.created"
ANNOTATION_TITLE = "org.opencontainers.image.title"
REFERRERS_ANNOTATION = "dev.microcontainer.referrers"
"""On an image's ``index.json`` entry: the digest of the image index blob listing its referrers."""

MAX_MANIFEST = 4 << 20
_MEDIA_TYPE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
                            r"/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$")


@dataclass(frozen=True)
class ArtifactDescriptor(Descriptor):
    """A descriptor that carries ``artifactType`` (as OCI 1.1 index entries of artifacts do)."""

    artifact_type: str = field(default="", compare=False)

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        return out


def _descriptor(raw: Mapping[str, Any]) -> Descriptor:
    """Parse an index entry, keeping its ``artifactType`` if it has one."""
    desc = Descriptor.from_dict(raw)
    artifact_type = raw.get("artifactType")
    if isinstance(artifact_type, str) and artifact_type:
        return ArtifactDescriptor(desc.media_type, desc.digest, desc.size, desc.annotations, desc.platform,
                                  artifact_type)
    return desc


def referrers_tag(subject_digest: str) -> str:
    """The referrers tag schema's tag for a subject: ``sha256-<hex>``."""
    algorithm, _, hexpart = oci.check_digest(subject_digest).partition(":")
    return f"{algorithm[:32]}-{hexpart[:64]}"


def artifact_manifest(subject: Descriptor, layer: Descriptor, artifact_type: str,
                      annotations: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The OCI 1.1 manifest of an artifact whose one layer is ``layer`` (canonical JSON it)."""
    out: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": oci.MEDIA_TYPE_MANIFEST,
        "artifactType": artifact_type,
        "config": EMPTY_DESCRIPTOR.to_dict(),
        "layers": [layer.to_dict()],
        "subject": {"mediaType": subject.media_type, "digest": subject.digest, "size": subject.size},
    }
    if annotations:
        out["annotations"] = dict(annotations)
    return out


# --- layouts ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IndexEntry:
    """An index entry and, for a referrer, what it refers to and the blobs it needs.

    Attributes:
        desc: the entry's descriptor.
        subject: the digest of the manifest it refers to; ``None``: not a referrer.
        artifact_type: its artifact type (``artifactType``, else the config's media type).
        blobs: the manifest's own digest and those of its config and layers.
    """

    desc: Descriptor
    subject: str | None = None
    artifact_type: str = ""
    blobs: tuple[str, ...] = ()


def _check_layout(layout_dir: str) -> None:
    if not os.path.isfile(os.path.join(layout_dir, OCI_LAYOUT_FILE)):
        raise LayoutError(f"{layout_dir}: not an OCI image layout (no oci-layout file)")


def _read_index(layout_dir: str) -> list[Descriptor]:
    try:
        with open(os.path.join(layout_dir, INDEX_FILE), "rb") as handle:
            index = jsontext.loads(handle.read(MAX_MANIFEST + 1), MAX_MANIFEST)
    except OSError as error:
        raise LayoutError(f"{layout_dir}: cannot read index.json: {error.strerror or error}") from None
    except ValueError as error:
        raise LayoutError(f"{layout_dir}: index.json is not valid JSON: {error}") from None
    entries = index.get("manifests") if isinstance(index, dict) else None
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise LayoutError(f"{layout_dir}: malformed index.json")
    return [_descriptor(e) for e in entries]


def read_index_entry(store: LayoutStore, desc: Descriptor, label: str) -> IndexEntry:
    """Classify an index entry: a referrer (a manifest with ``subject``) or anything else.

    Raises:
        DigestMismatchError: the manifest blob does not match ``desc``.
        LayoutError: the manifest blob is missing, unreadable or malformed.
    """
    if desc.media_type != oci.MEDIA_TYPE_MANIFEST:
        return IndexEntry(desc)
    manifest = store.read_json(desc, label, MAX_MANIFEST)
    subject = manifest.get("subject")
    if not isinstance(subject, dict):
        return IndexEntry(desc)
    subject_digest = oci.check_digest(subject.get("digest"))
    artifact_type = manifest.get("artifactType")
    if not isinstance(artifact_type, str) or not artifact_type:
        config = manifest.get("config") or {}
        artifact_type = str(config.get("mediaType", "")) if isinstance(config, dict) else ""
    blobs = [desc.digest]
    for item in [manifest.get("config")] + list(manifest.get("layers") or []):
        if isinstance(item, dict):
            blobs.append(Descriptor.from_dict(item).digest)
    if not isinstance(desc, ArtifactDescriptor) and artifact_type:
        desc = ArtifactDescriptor(desc.media_type, desc.digest, desc.size, desc.annotations, desc.platform,
                                  artifact_type)
    return IndexEntry(desc, subject_digest, artifact_type, tuple(blobs))


def order_entries(entries: Sequence[IndexEntry]) -> list[Descriptor]:
    """Images first, in their order; then referrers by (subject, artifact type, digest)."""
    images = [e.desc for e in entries if e.subject is None]
    refs = sorted((e for e in entries if e.subject is not None),
                  key=lambda e: (e.subject or "", e.artifact_type, e.desc.digest))
    return images + [e.desc for e in refs]


def _subject_descriptor(descs: Sequence[Descriptor], digest: str, label: str) -> Descriptor:
    """The descriptor of an image or a referrer of the layout (what an artifact may refer to)."""
    for desc in descs:
        if desc.digest == digest:
            return Descriptor(desc.media_type, desc.digest, desc.size)
    raise LayoutError(f"{label}: no manifest {digest} in the layout (neither an image nor a referrer)")


def attach(layout_dir: str, subject_digest: str, data: bytes, artifact_type: str,
           annotations: Mapping[str, str] | None = None, *, epoch: int | None = None,
           title: str | None = None, layer_media_type: str | None = None,
           layer_annotations: Mapping[str, str] | None = None) -> Descriptor:
    """Attach ``data`` to the manifest ``subject_digest`` of a layout, as an OCI 1.1 referrer.

    Stores ``data`` and the empty config as blobs, writes the artifact
    manifest and the image's referrers index, and atomically rewrites
    ``index.json`` to name that index (see the module docstring), dropping
    any earlier referrer of the same ``artifact_type`` for the same subject
    (whose blobs are removed unless something else still uses them).

    Args:
        layout_dir: an OCI image layout directory.
        subject_digest: the image manifest (or index) the artifact describes: an
            image of ``index.json``, or a referrer of one.
        data: the artifact's content.
        artifact_type: its media type (``application/vnd.cyclonedx+json``...).
        annotations: the manifest's annotations.
        epoch: if given (``SOURCE_DATE_EPOCH``), ``org.opencontainers.image.created``.
        title: if given, the layer's ``org.opencontainers.image.title`` (a file name).
        layer_media_type: the layer's media type, if not ``artifact_type`` (a cosign
            signature's payload, a DSSE envelope).
        layer_annotations: more annotations on the layer (a cosign signature's).

    Returns:
        The artifact manifest's descriptor (with ``artifact_type`` and the annotations).

    Raises:
        LayoutError: not a layout, no such subject, a bad artifact type, or an I/O error.
    """
    _check_layout(layout_dir)
    if not isinstance(artifact_type, str) or not _MEDIA_TYPE_RE.match(artifact_type):
        raise LayoutError(f"invalid artifact type {artifact_type!r} (a media type: type/subtype)")
    notes = {str(k): str(v) for k, v in (annotations or {}).items()}
    if epoch is not None:
        notes[ANNOTATION_CREATED] = oci.rfc3339(epoch)
    store = LayoutStore(layout_dir)
    descs = _read_index(layout_dir)
    images, refs = split_index(store, descs, layout_dir)
    subject = _subject_descriptor(images + [e.desc for e in refs], oci.check_digest(subject_digest),
                                  layout_dir)

    layer = store.put_blob(bytes(data), layer_media_type or artifact_type)
    layer_notes = {str(k): str(v) for k, v in (layer_annotations or {}).items()}
    if title:
        layer_notes[ANNOTATION_TITLE] = title
    if layer_notes:
        layer = layer.with_annotations(layer_notes)
    store.put_blob(EMPTY_JSON, MEDIA_TYPE_EMPTY)
    manifest_bytes = canonical_json(artifact_manifest(subject, layer, artifact_type, notes))
    stored = store.put_blob(manifest_bytes, oci.MEDIA_TYPE_MANIFEST)
    desc = ArtifactDescriptor(oci.MEDIA_TYPE_MANIFEST, stored.digest, stored.size, notes or None, None,
                              artifact_type)

    replaced = [e for e in refs if e.subject == subject.digest and e.artifact_type == artifact_type]
    kept = [e for e in refs if e not in replaced]
    kept.append(IndexEntry(desc, subject.digest, artifact_type,
                           (desc.digest, EMPTY_DESCRIPTOR.digest, layer.digest)))
    linked, nested = link_referrers(store, images, kept)
    store.sync()
    store.write_index(linked)
    candidates = [b for e in replaced for b in e.blobs] + _nested_digests(descs)
    _remove_unused(store, linked, nested + [b for e in kept for b in e.blobs], candidates, layout_dir)
    return desc


def _nested_digests(descs: Sequence[Descriptor]) -> list[str]:
    """The referrers index blobs that ``index.json`` entries name."""
    return [str((d.annotations or {})[REFERRERS_ANNOTATION]) for d in descs
            if REFERRERS_ANNOTATION in (d.annotations or {})]


def split_index(store: LayoutStore, descs: Sequence[Descriptor],
                label: str) -> tuple[list[Descriptor], list[IndexEntry]]:
    """Split ``index.json`` entries into the images and every referrer of the layout.

    Referrers come from each image's referrers index (:data:`REFERRERS_ANNOTATION`)
    and from referrer manifests listed in ``index.json`` itself (the form
    other tools write). The images are returned without the annotation.

    Raises:
        DigestMismatchError: a manifest or referrers index does not match its digest.
        LayoutError: one is missing, unreadable or malformed.
    """
    images: list[Descriptor] = []
    refs: dict[str, IndexEntry] = {}
    for desc in descs:
        entry = read_index_entry(store, desc, label)
        if entry.subject is not None:
            refs.setdefault(desc.digest, entry)
            continue
        notes = dict(desc.annotations or {})
        nested = notes.pop(REFERRERS_ANNOTATION, None)
        images.append(replace(desc, annotations=notes or None))
        if nested is None:
            continue
        digest = oci.check_digest(nested)
        if not store.has_blob(digest):
            raise LayoutError(f"{label}: no referrers index {digest} (named by {desc.digest})")
        size = os.path.getsize(store.blob_path(digest))
        index = store.read_json(Descriptor(oci.MEDIA_TYPE_INDEX, digest, size), label, MAX_MANIFEST)
        listed = index.get("manifests")
        if not isinstance(listed, list) or not all(isinstance(e, dict) for e in listed):
            raise LayoutError(f"{label}: malformed referrers index {digest}")
        for raw in listed:
            entry = read_index_entry(store, _descriptor(raw), label)
            if entry.subject is None:
                raise LayoutError(f"{label}: referrers index {digest} lists {entry.desc.digest},"
                                  " which has no subject")
            refs.setdefault(entry.desc.digest, entry)
    return images, list(refs.values())


def _referrers_of(root: str, refs: Sequence[IndexEntry]) -> list[IndexEntry]:
    """The referrers of ``root``, and theirs, transitively."""
    present = {root}
    found: list[IndexEntry] = []
    changed = True
    while changed:
        changed = False
        for entry in refs:
            if entry not in found and entry.subject in present and entry.desc.digest != root:
                found.append(entry)
                present.add(entry.desc.digest)
                changed = True
    return found


def link_referrers(store: LayoutStore, images: Sequence[Descriptor],
                   refs: Sequence[IndexEntry]) -> tuple[list[Descriptor], list[str]]:
    """The ``index.json`` entries of ``images`` with their referrers linked in.

    Stores, for each image that has referrers among ``refs`` (transitively),
    the image index listing them (ordered as :func:`order_entries` orders
    them) and names it in the image entry's :data:`REFERRERS_ANNOTATION`.
    Referrers that reach no image are left out.

    Returns:
        ``(entries, blobs)``: the image entries for ``index.json``, and the
        digests of the referrers index blobs written.
    """
    out: list[Descriptor] = []
    nested: list[str] = []
    for image in images:
        notes = dict(image.annotations or {})
        notes.pop(REFERRERS_ANNOTATION, None)
        mine = _referrers_of(image.digest, refs)
        if mine:
            stored = store.put_blob(canonical_json(oci.index(order_entries(mine))), oci.MEDIA_TYPE_INDEX)
            notes[REFERRERS_ANNOTATION] = stored.digest
            nested.append(stored.digest)
        out.append(replace(image, annotations=notes or None))
    return out, nested


def _reachable(store: LayoutStore, descs: Sequence[Descriptor], label: str) -> set[str]:
    """Every blob digest reachable from ``descs`` (manifests, their configs and layers, nested indexes)."""
    seen: set[str] = set()
    todo = list(descs)
    while todo:
        desc = todo.pop()
        if desc.digest in seen:
            continue
        seen.add(desc.digest)
        if desc.media_type in oci.MANIFEST_TYPES or desc.media_type in oci.INDEX_TYPES:
            obj = store.read_json(desc, label, MAX_MANIFEST)
            items = [obj.get("config")] + list(obj.get("layers") or []) + list(obj.get("manifests") or [])
            todo += [Descriptor.from_dict(i) for i in items if isinstance(i, dict)]
    return seen


def _remove_unused(store: LayoutStore, kept: Sequence[Descriptor], used: Sequence[str],
                   candidates: Sequence[str], label: str) -> None:
    """Remove the ``candidates`` blobs that neither ``kept`` reaches nor ``used`` names."""
    if not candidates:
        return
    try:
        reached = _reachable(store, kept, label) | set(used)
    except LayoutError:
        return  # something unreadable: removing nothing is the safe answer
    for digest in sorted(set(candidates) - reached):
        try:
            os.unlink(store.blob_path(digest))
        except OSError:
            pass


def referrers(layout_dir: str, subject_digest: str) -> list[Descriptor]:
    """The referrers of ``subject_digest`` in the layout, ordered as :func:`order_entries` orders them.

    Each is an :class:`ArtifactDescriptor` (``artifact_type`` set when known).

    Raises:
        LayoutError: not a layout, or an unreadable index or manifest.
    """
    _check_layout(layout_dir)
    oci.check_digest(subject_digest)
    store = LayoutStore(layout_dir)
    _images, refs = split_index(store, _read_index(layout_dir), layout_dir)
    return order_entries([e for e in refs if e.subject == subject_digest])


def surviving_referrers(layout_dir: str, subjects: Sequence[str]) -> tuple[list[IndexEntry], list[str]]:
    """The referrers of a layout that a rewrite whose index lists ``subjects`` keeps.

    The GC rule: a referrer is kept while its subject is in the index (one of
    ``subjects``, or another kept referrer); the blobs it needs are returned so
    garbage collection keeps them. A referrer with a missing or unreadable blob
    is dropped; an unreadable layout keeps nothing (it never fails a build).
    Give the entries to :func:`link_referrers` with the new images.

    Returns:
        ``(entries, blob digests)``: the kept referrers (ordered as
        :func:`order_entries` orders them), and every blob they need.
    """
    try:
        _check_layout(layout_dir)
        store = LayoutStore(layout_dir)
        descs = _read_index(layout_dir)
    except LayoutError:
        return [], []
    candidates: dict[str, IndexEntry] = {}
    for desc in descs:
        try:
            _images, refs = split_index(store, [desc], layout_dir)
        except LayoutError:
            continue
        for entry in refs:
            if all(store.has_blob(b) for b in entry.blobs):
                candidates.setdefault(entry.desc.digest, entry)
    kept: list[IndexEntry] = []
    for subject in subjects:
        kept += [e for e in _referrers_of(subject, list(candidates.values()))
                 if e not in kept and e.desc.digest not in set(subjects)]
    order = {d.digest: n for n, d in enumerate(order_entries(kept))}
    kept.sort(key=lambda e: order[e.desc.digest])
    return kept, sorted({b for e in kept for b in e.blobs})
