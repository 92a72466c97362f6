"""Referrers (OCI 1.1 ``subject`` artifacts) in registries: pushed with an image, fetched with a pull.

Referrer manifests are pushed by digest. Registries without the referrers API
(distribution 2.8, Debian's ``docker-registry``) get the *referrers tag
schema*: the tag ``sha256-<hex of the subject digest>`` names an image index
listing the referrers, fetched, merged and put again (:func:`push_referrers`);
:func:`fetch_referrers` reads either. How referrers are kept in an OCI layout
is :mod:`microcontainer_tool.oci.referrers`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from microcontainer_tool import jsontext
from microcontainer_tool.errors import LayoutError, RegistryError
from microcontainer_tool.oci import model as oci
from microcontainer_tool.oci.model import Descriptor, canonical_json
from microcontainer_tool.oci.referrers import (
    MAX_MANIFEST,
    ArtifactDescriptor,
    IndexEntry,
    order_entries,
    read_index_entry,
    referrers,
    referrers_tag,
)
from microcontainer_tool.oci.store import LayoutStore
from microcontainer_tool.registry.auth import pull_scope, push_scope


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
            index = jsontext.loads(data)
        except ValueError as error:
            raise RegistryError(f"{client.registry}: {what}: not JSON: {error}") from None
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
                   send_blob: Callable[[Descriptor, str], None], _depth: int = 0) -> ReferrerPush:
    """Push the layout's referrers of ``subject_digest`` (already pushed) to ``repo``.

    For each referrer: its blobs through ``send_blob(desc, path)`` (which
    skips those the registry has), then its manifest by digest, then its own
    referrers (a signature of an SBOM), the same way. A registry without the
    referrers API gets the referrers tag: the index it names is fetched (if
    any), the new referrers are added, and it is put back only if it changed
    (:func:`publish_referrers`).

    Raises:
        LayoutError: the layout is unreadable.
        RegistryError: the registry refuses or fails.
    """
    store = LayoutStore(layout_dir)
    result = ReferrerPush()
    entries: list[dict[str, Any]] = []
    nested: list[str] = []
    for desc in referrers(layout_dir, subject_digest):
        manifest = store.read_json(desc, layout_dir, MAX_MANIFEST)
        for item in [manifest.get("config")] + list(manifest.get("layers") or []):
            if isinstance(item, dict):
                blob = Descriptor.from_dict(item)
                send_blob(blob, store.blob_path(blob.digest))
        with open(store.blob_path(desc.digest), "rb") as handle:
            data = handle.read()
        client.put_manifest(repo, desc.digest, data, desc.media_type)
        result.pushed += 1
        entries.append(registry_descriptor(manifest, desc))
        nested.append(desc.digest)
    if not entries:
        return result
    result.api, result.tag_updated = publish_referrers(client, repo, subject_digest, entries)
    for digest in nested if _depth < 4 else []:
        more = push_referrers(client, repo, layout_dir, digest, send_blob, _depth + 1)
        result.pushed += more.pushed
    return result


def publish_referrers(client: Any, repo: str, subject_digest: str,
                      entries: list[dict[str, Any]]) -> tuple[bool, bool]:
    """Make the referrers (already pushed by digest) listed for ``subject_digest``.

    A registry with the referrers API lists them itself; otherwise the
    referrers tag's index is fetched, the entries it lacks are added, and it
    is put back only if it changed.

    Args:
        entries: referrers-list entries (:func:`registry_descriptor`).

    Returns:
        ``(api, tag_updated)``: the registry has the API; the tag was (re)written.

    Raises:
        RegistryError: the registry refuses or fails.
    """
    if _get_index(client, _api_url(client, repo, subject_digest), repo, True,
                  f"referrers of {subject_digest} in {repo}", probe=True) is not None:
        return True, False
    tag = referrers_tag(subject_digest)
    current = _get_index(client, _tag_url(client, repo, subject_digest), repo, True,
                         f"get manifest {repo}:{tag}")
    listed = list(current["manifests"]) if current is not None else []
    have = {e.get("digest") for e in listed if isinstance(e, dict)}
    added = [e for e in entries if e["digest"] not in have]
    if added or current is None:
        index = {"schemaVersion": 2, "mediaType": oci.MEDIA_TYPE_INDEX, "manifests": listed + added}
        client.put_manifest(repo, tag, canonical_json(index), oci.MEDIA_TYPE_INDEX)
        return False, True
    return False, False


def fetch_referrers(client: Any, repo: str, subject_digest: str, store: LayoutStore,
                    progress: Any = None, _depth: int = 0) -> list[IndexEntry]:
    """Download the referrers of ``subject_digest`` into ``store`` (referrers API, else the tag).

    Only OCI manifests whose ``subject`` really is ``subject_digest`` are
    taken; each manifest and blob is verified. The referrers of those
    referrers (a signature of an SBOM) come too. Nothing listed: ``[]``.

    Returns:
        Their entries (each ``desc`` an :class:`~microcontainer_tool.oci.referrers.ArtifactDescriptor`),
        sorted as :func:`~microcontainer_tool.oci.referrers.order_entries` sorts them; give them to
        :func:`~microcontainer_tool.oci.referrers.link_referrers`.

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
    entries: list[IndexEntry] = []
    seen: set[str] = set()
    for raw in index["manifests"]:
        if not isinstance(raw, dict) or raw.get("mediaType") != oci.MEDIA_TYPE_MANIFEST:
            continue
        listed = Descriptor.from_dict(raw)
        if listed.digest in seen:
            continue
        seen.add(listed.digest)
        data, media_type, digest = client.get_manifest(repo, listed.digest, accept=(oci.MEDIA_TYPE_MANIFEST,))
        try:
            manifest = jsontext.loads(data)
        except ValueError as error:
            raise LayoutError(f"{client.registry}: referrer {digest} in {repo} is not JSON: "
                              f"{error}") from None
        subject = manifest.get("subject") if isinstance(manifest, dict) else None
        if not isinstance(subject, dict) or subject.get("digest") != subject_digest:
            continue
        items = [manifest.get("config")] + list(manifest.get("layers") or [])
        blobs = [Descriptor.from_dict(i) for i in items if isinstance(i, dict)]
        for blob in blobs:
            if not store.has_blob(blob.digest):
                client.get_blob(repo, blob.digest, store.blob_path(blob.digest), blob.size, progress)
        stored = store.put_blob(data, media_type, expected_digest=digest)
        entry = read_index_entry(store, stored, repo)
        notes = manifest.get("annotations") if isinstance(manifest.get("annotations"), dict) else None
        desc = ArtifactDescriptor(stored.media_type, stored.digest, stored.size, notes or None, None,
                                  entry.artifact_type)
        entries.append(IndexEntry(desc, entry.subject, entry.artifact_type, entry.blobs))
    for entry in list(entries) if _depth < 4 else []:
        known = {e.desc.digest for e in entries}
        entries += [e for e in fetch_referrers(client, repo, entry.desc.digest, store, progress, _depth + 1)
                    if e.desc.digest not in known]
    order = {d.digest: n for n, d in enumerate(order_entries(entries))}
    return sorted(entries, key=lambda e: order[e.desc.digest])
