"""Artifacts that refer to an image (OCI 1.1 ``subject``): in layouts and in registries.

An artifact (an SBOM, a signature...) is stored as an OCI image manifest
with ``artifactType``, the *empty* config (``application/vnd.oci.empty.v1+json``,
the two bytes ``{}``), one layer holding the data (its media type is the
artifact type), and ``subject`` pointing at the image manifest it describes.

In a layout, :func:`attach` lists that manifest in ``index.json`` *without* a
``ref.name`` (it is not an image to pick by tag); attaching again with the
same artifact type for the same subject replaces the previous one, so
rebuilding does not accumulate. Referrers are ordered after the images, by
(subject, artifact type, digest), so ``index.json`` does not depend on the
order things were attached in. Every write is deterministic: same data, same
bytes.

**Which referrers survive a rebuild**: a layout keeps a referrer only while
its subject is still in ``index.json`` (directly, or as another kept
referrer). Rebuilding an image into its layout with the same bytes keeps its
artifacts; a changed image drops the artifacts of the old one, and their
blobs go with the garbage (see :func:`surviving_referrers`).

In a registry, referrer manifests are pushed by digest. Registries without
the referrers API (distribution 2.8, Debian's ``docker-registry``) get the
*referrers tag schema*: the tag ``sha256-<hex of the subject digest>`` names
an image index listing the referrers, fetched, merged and put again
(:func:`push_referrers`); :func:`fetch_referrers` reads either.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from microcontainer_tool.oci import model as oci
from microcontainer_tool.registry.auth import pull_scope, push_scope
from microcontainer_tool.errors import DigestMismatchError, LayoutError, RegistryError
from microcontainer_tool.oci.layout import INDEX_FILE, OCI_LAYOUT_FILE, LayoutStore
from microcontainer_tool.oci.model import Descriptor, canonical_json

MEDIA_TYPE_EMPTY = "application/vnd.oci.empty.v1+json"
EMPTY_JSON = b"{}"
EMPTY_DESCRIPTOR = Descriptor(MEDIA_TYPE_EMPTY, oci.sha256_digest(EMPTY_JSON), len(EMPTY_JSON))
"""The OCI empty descriptor (``sha256:44136fa…``, 2 bytes): the config of an artifact."""

ANNOTATION_CREATED = "org.opencontainers.image.created"
ANNOTATION_TITLE = "org.opencontainers.image.title"

MAX_MANIFEST = 4 << 20
_MEDIA_TYPE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$")


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
class _Entry:
    """An index entry and, for a referrer, what it refers to and the blobs it needs."""

    desc: Descriptor
    subject: str | None = None
    artifact_type: str = ""
    blobs: tuple[str, ...] = ()


def _check_layout(layout_dir: str) -> None:
    if not os.path.isfile(os.path.join(layout_dir, OCI_LAYOUT_FILE)):
        raise LayoutError(f"{layout_dir}: not an OCI image layout (no oci-layout file)")


def _read_blob_json(store: LayoutStore, desc: Descriptor, label: str) -> dict[str, Any]:
    if desc.size > MAX_MANIFEST:
        raise LayoutError(f"{label}: blob {desc.digest} is too large for a manifest")
    try:
        with open(store.blob_path(desc.digest), "rb") as handle:
            data = handle.read(MAX_MANIFEST + 1)
    except OSError as error:
        raise LayoutError(f"{label}: cannot read blob {desc.digest}: {error.strerror or error}") from None
    if oci.sha256_digest(data) != desc.digest or len(data) != desc.size:
        raise DigestMismatchError(f"{label}: blob {desc.digest} does not match its content")
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise LayoutError(f"{label}: blob {desc.digest} is not JSON") from None
    if not isinstance(obj, dict):
        raise LayoutError(f"{label}: blob {desc.digest} is not a JSON object")
    return obj


def _read_index(layout_dir: str) -> list[Descriptor]:
    try:
        with open(os.path.join(layout_dir, INDEX_FILE), "rb") as handle:
            index = json.loads(handle.read(MAX_MANIFEST + 1))
    except OSError as error:
        raise LayoutError(f"{layout_dir}: cannot read index.json: {error.strerror or error}") from None
    except (ValueError, UnicodeDecodeError):
        raise LayoutError(f"{layout_dir}: index.json is not valid JSON") from None
    entries = index.get("manifests") if isinstance(index, dict) else None
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise LayoutError(f"{layout_dir}: malformed index.json")
    return [_descriptor(e) for e in entries]


def _entry(store: LayoutStore, desc: Descriptor, label: str) -> _Entry:
    """Classify an index entry: a referrer (a manifest with ``subject``) or anything else."""
    if desc.media_type != oci.MEDIA_TYPE_MANIFEST:
        return _Entry(desc)
    manifest = _read_blob_json(store, desc, label)
    subject = manifest.get("subject")
    if not isinstance(subject, dict):
        return _Entry(desc)
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
    return _Entry(desc, subject_digest, artifact_type, tuple(blobs))


def _ordered(entries: Sequence[_Entry]) -> list[Descriptor]:
    """Images first, in their order; then referrers by (subject, artifact type, digest)."""
    images = [e.desc for e in entries if e.subject is None]
    refs = sorted((e for e in entries if e.subject is not None),
                  key=lambda e: (e.subject or "", e.artifact_type, e.desc.digest))
    return images + [e.desc for e in refs]


def _subject_descriptor(store: LayoutStore, descs: Sequence[Descriptor], digest: str,
                        label: str) -> Descriptor:
    for desc in descs:
        if desc.digest == digest:
            return Descriptor(desc.media_type, desc.digest, desc.size)
    if not store.has_blob(digest):
        raise LayoutError(f"{label}: no manifest {digest} in the layout")
    size = os.path.getsize(store.blob_path(digest))
    manifest = _read_blob_json(store, Descriptor(oci.MEDIA_TYPE_MANIFEST, digest, size), label)
    media_type = manifest.get("mediaType")
    if not isinstance(media_type, str) or not media_type:
        media_type = oci.MEDIA_TYPE_INDEX if "manifests" in manifest else oci.MEDIA_TYPE_MANIFEST
    return Descriptor(media_type, digest, size)


def attach(layout_dir: str, subject_digest: str, data: bytes, artifact_type: str,
           annotations: Mapping[str, str] | None = None, *, epoch: int | None = None,
           title: str | None = None) -> Descriptor:
    """Attach ``data`` to the manifest ``subject_digest`` of a layout, as an OCI 1.1 referrer.

    Stores ``data`` and the empty config as blobs, writes the artifact
    manifest, and atomically rewrites ``index.json`` with it (no ``ref.name``),
    dropping any earlier referrer of the same ``artifact_type`` for the same
    subject (whose blobs are removed unless something else still uses them).

    Args:
        layout_dir: an OCI image layout directory.
        subject_digest: the image manifest (or index) the artifact describes;
            listed in ``index.json`` or at least present as a blob.
        data: the artifact's content.
        artifact_type: its media type (``application/vnd.cyclonedx+json``...).
        annotations: the manifest's annotations.
        epoch: if given (``SOURCE_DATE_EPOCH``), ``org.opencontainers.image.created``.
        title: if given, the layer's ``org.opencontainers.image.title`` (a file name).

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
    subject = _subject_descriptor(store, descs, oci.check_digest(subject_digest), layout_dir)

    layer = store.put_blob(bytes(data), artifact_type)
    if title:
        layer = layer.with_annotations({ANNOTATION_TITLE: title})
    store.put_blob(EMPTY_JSON, MEDIA_TYPE_EMPTY)
    manifest_bytes = canonical_json(artifact_manifest(subject, layer, artifact_type, notes))
    stored = store.put_blob(manifest_bytes, oci.MEDIA_TYPE_MANIFEST)
    desc = ArtifactDescriptor(oci.MEDIA_TYPE_MANIFEST, stored.digest, stored.size, notes or None, None,
                              artifact_type)

    entries = [_entry(store, d, layout_dir) for d in descs]
    replaced = [e for e in entries if e.subject == subject.digest and e.artifact_type == artifact_type]
    kept = [e for e in entries if e not in replaced]
    kept.append(_Entry(desc, subject.digest, artifact_type, ()))
    store.sync()
    store.write_index(_ordered(kept))
    _remove_unused(store, kept, [b for e in replaced for b in e.blobs], layout_dir)
    return desc


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
            obj = _read_blob_json(store, desc, label)
            items = [obj.get("config")] + list(obj.get("layers") or []) + list(obj.get("manifests") or [])
            todo += [Descriptor.from_dict(i) for i in items if isinstance(i, dict)]
    return seen


def _remove_unused(store: LayoutStore, kept: Sequence[_Entry], candidates: Sequence[str], label: str) -> None:
    """Remove the ``candidates`` blobs that nothing in the index reaches any more."""
    if not candidates:
        return
    try:
        used = _reachable(store, [e.desc for e in kept], label)
    except LayoutError:
        return  # something unreadable: removing nothing is the safe answer
    for digest in sorted(set(candidates) - used):
        try:
            os.unlink(store.blob_path(digest))
        except OSError:
            pass


def referrers(layout_dir: str, subject_digest: str) -> list[Descriptor]:
    """The referrers of ``subject_digest`` listed in the layout's ``index.json``, in index order.

    Each is an :class:`ArtifactDescriptor` (``artifact_type`` set when known).

    Raises:
        LayoutError: not a layout, or an unreadable index or manifest.
    """
    _check_layout(layout_dir)
    oci.check_digest(subject_digest)
    store = LayoutStore(layout_dir)
    entries = [_entry(store, d, layout_dir) for d in _read_index(layout_dir)]
    return [e.desc for e in entries if e.subject == subject_digest]


def surviving_referrers(layout_dir: str, subjects: Sequence[str]) -> tuple[list[Descriptor], list[str]]:
    """The referrers of a layout that a rewrite whose index lists ``subjects`` keeps.

    The GC rule: a referrer is kept while its subject is in the index (one of
    ``subjects``, or another kept referrer); the blobs it needs are returned so
    garbage collection keeps them. A referrer with a missing or unreadable blob
    is dropped; an unreadable layout keeps nothing (it never fails a build).

    Returns:
        ``(descriptors, blob digests)``: index entries to add after the
        images (ordered as :func:`attach` orders them), and every blob they need.
    """
    try:
        _check_layout(layout_dir)
        store = LayoutStore(layout_dir)
        descs = _read_index(layout_dir)
    except LayoutError:
        return [], []
    candidates: list[_Entry] = []
    for desc in descs:
        try:
            entry = _entry(store, desc, layout_dir)
        except LayoutError:
            continue
        if entry.subject is not None and all(store.has_blob(b) for b in entry.blobs):
            candidates.append(entry)
    present = set(subjects)
    kept: list[_Entry] = []
    changed = True
    while changed:
        changed = False
        for entry in candidates:
            if entry not in kept and entry.subject in present and entry.desc.digest not in set(subjects):
                kept.append(entry)
                present.add(entry.desc.digest)
                changed = True
    return _ordered(kept), sorted({b for e in kept for b in e.blobs})


# --- registries ---------------------------------------------------------------------------------


def _scope(repo: str, push: bool) -> list[str]:
    return [push_scope(repo) if push else pull_scope(repo)]


def _get_index(client: Any, url: str, repo: str, push: bool, what: str,
               probe: bool = False) -> dict[str, Any] | None:
    """GET an image index; ``None`` for 404 (no such tag).

    With ``probe`` (the referrers API), any answer but an image index means
    the registry does not have the API: ``None``, never an error.
    """
    # RegistryClient has no public call for an arbitrary GET; _send adds auth and retries.
    response = client._send("GET", url, _scope(repo, push), headers={"Accept": oci.MEDIA_TYPE_INDEX})
    with response:
        if response.status_code == 404 or (probe and response.status_code != 200):
            _ = response.content
            return None
        if response.status_code != 200:
            _ = response.content  # read the error body for the message
            raise client._fail(what, response)
        data = response.content
    try:
        if len(data) > MAX_MANIFEST:
            raise RegistryError(f"{client.registry}: {what}: larger than {MAX_MANIFEST} bytes")
        try:
            index = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            raise RegistryError(f"{client.registry}: {what}: not JSON") from None
        if not isinstance(index, dict) or not isinstance(index.get("manifests"), list):
            raise RegistryError(f"{client.registry}: {what}: not an image index")
    except RegistryError:
        if probe:
            return None
        raise
    return index


def _api_url(client: Any, repo: str, subject_digest: str) -> str:
    return f"{client.base_url}/v2/{repo}/referrers/{subject_digest}"


def _tag_url(client: Any, repo: str, subject_digest: str) -> str:
    return f"{client.base_url}/v2/{repo}/manifests/{referrers_tag(subject_digest)}"


def registry_descriptor(manifest: Mapping[str, Any], desc: Descriptor) -> dict[str, Any]:
    """A referrers-list entry: the manifest's descriptor with its ``artifactType`` and annotations."""
    out: dict[str, Any] = {"mediaType": desc.media_type, "digest": desc.digest, "size": desc.size}
    artifact_type = manifest.get("artifactType")
    if not artifact_type and isinstance(manifest.get("config"), dict):
        artifact_type = manifest["config"].get("mediaType")
    if isinstance(artifact_type, str) and artifact_type:
        out["artifactType"] = artifact_type
    if isinstance(manifest.get("annotations"), dict) and manifest["annotations"]:
        out["annotations"] = dict(manifest["annotations"])
    return out


@dataclass
class ReferrerPush:
    """What :func:`push_referrers` did.

    Attributes:
        pushed: referrer manifests put.
        tag_updated: whether the referrers tag's index was (re)written.
        api: whether the registry has the referrers API (no tag needed then).
    """

    pushed: int = 0
    tag_updated: bool = False
    api: bool = False


def push_referrers(client: Any, repo: str, layout_dir: str, subject_digest: str,
                   send_blob: Callable[[Descriptor, str], None]) -> ReferrerPush:
    """Push the layout's referrers of ``subject_digest`` (already pushed) to ``repo``.

    For each referrer: its blobs through ``send_blob(desc, path)`` (which
    skips those the registry has), then its manifest by digest. A registry
    without the referrers API gets the referrers tag: the index it names is
    fetched (if any), the new referrers are added, and it is put back only if
    it changed.

    Raises:
        LayoutError: the layout is unreadable.
        RegistryError: the registry refuses or fails.
    """
    store = LayoutStore(layout_dir)
    result = ReferrerPush()
    entries: list[dict[str, Any]] = []
    for desc in referrers(layout_dir, subject_digest):
        manifest = _read_blob_json(store, desc, layout_dir)
        for item in [manifest.get("config")] + list(manifest.get("layers") or []):
            if isinstance(item, dict):
                blob = Descriptor.from_dict(item)
                send_blob(blob, store.blob_path(blob.digest))
        with open(store.blob_path(desc.digest), "rb") as handle:
            data = handle.read()
        client.put_manifest(repo, desc.digest, data, desc.media_type)
        result.pushed += 1
        entries.append(registry_descriptor(manifest, desc))
    if not entries:
        return result
    if _get_index(client, _api_url(client, repo, subject_digest), repo, True,
                  f"referrers of {subject_digest} in {repo}", probe=True) is not None:
        result.api = True
        return result
    tag = referrers_tag(subject_digest)
    current = _get_index(client, _tag_url(client, repo, subject_digest), repo, True,
                         f"get manifest {repo}:{tag}")
    listed = list(current["manifests"]) if current is not None else []
    have = {e.get("digest") for e in listed if isinstance(e, dict)}
    added = [e for e in entries if e["digest"] not in have]
    if added or current is None:
        index = {"schemaVersion": 2, "mediaType": oci.MEDIA_TYPE_INDEX, "manifests": listed + added}
        client.put_manifest(repo, tag, canonical_json(index), oci.MEDIA_TYPE_INDEX)
        result.tag_updated = True
    return result


def fetch_referrers(client: Any, repo: str, subject_digest: str, store: LayoutStore,
                    progress: Any = None) -> list[Descriptor]:
    """Download the referrers of ``subject_digest`` into ``store`` (referrers API, else the tag).

    Only OCI manifests whose ``subject`` really is ``subject_digest`` are
    taken; each manifest and blob is verified. Nothing listed: ``[]``.

    Returns:
        Their index entries (:class:`ArtifactDescriptor`), sorted as :func:`attach` sorts them.

    Raises:
        DigestMismatchError: a manifest or blob does not match its digest.
        RegistryError: the registry refuses or fails.
    """
    index = _get_index(client, _api_url(client, repo, subject_digest), repo, False,
                       f"referrers of {subject_digest} in {repo}", probe=True)
    if index is None:
        index = _get_index(client, _tag_url(client, repo, subject_digest), repo, False,
                           f"get manifest {repo}:{referrers_tag(subject_digest)}")
    if index is None:
        return []
    entries: list[_Entry] = []
    seen: set[str] = set()
    for raw in index["manifests"]:
        if not isinstance(raw, dict) or raw.get("mediaType") != oci.MEDIA_TYPE_MANIFEST:
            continue
        listed = _descriptor(raw)
        if listed.digest in seen:
            continue
        seen.add(listed.digest)
        data, media_type, digest = client.get_manifest(repo, listed.digest, accept=(oci.MEDIA_TYPE_MANIFEST,))
        try:
            manifest = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            raise LayoutError(f"{client.registry}: referrer {digest} in {repo} is not JSON") from None
        subject = manifest.get("subject") if isinstance(manifest, dict) else None
        if not isinstance(subject, dict) or subject.get("digest") != subject_digest:
            continue
        blobs = [Descriptor.from_dict(i) for i in [manifest.get("config")] + list(manifest.get("layers") or [])
                 if isinstance(i, dict)]
        for blob in blobs:
            if not store.has_blob(blob.digest):
                client.get_blob(repo, blob.digest, store.blob_path(blob.digest), blob.size, progress)
        stored = store.put_blob(data, media_type, expected_digest=digest)
        entry = _entry(store, stored, repo)
        notes = manifest.get("annotations") if isinstance(manifest.get("annotations"), dict) else None
        desc = ArtifactDescriptor(stored.media_type, stored.digest, stored.size, notes or None, None,
                                  entry.artifact_type)
        entries.append(_Entry(desc, entry.subject, entry.artifact_type, entry.blobs))
    return _ordered(entries)
