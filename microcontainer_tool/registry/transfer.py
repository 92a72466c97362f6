"""Push images to and pull images from a registry.

:func:`push` sends an image that :func:`~microcontainer_tool.oci.imageview.open_image`
reads (OCI layout ``DIR[:TAG]``, oci-archive, smith ``.tar.gz``,
docker-archive): each blob is checked with ``HEAD`` first and skipped when the
registry has it, mounted from ``mount_from`` (a repository on the same
registry) when possible, uploaded otherwise; then the manifest goes up as the
image's **exact bytes**, so the pushed digest is the built digest.

With ``docker_media_types`` the manifest is rewritten to Docker schema 2 media
types (``application/vnd.docker.distribution.manifest.v2+json``, Docker
config and layer types; blobs unchanged). The manifest bytes change, and so
does its digest: the digest returned (and printed) is the pushed one.

From an OCI layout, the artifacts that refer to the image (OCI 1.1
``subject``: an SBOM attached by ``build --sbom``) follow it: their blobs, their
manifests by digest, and for registries without the referrers API the
referrers tag ``sha256-<hex>`` (:mod:`microcontainer_tool.registry.referrers`). :func:`pull` brings them back.

:func:`pull` reads OCI manifests, Docker schema 2 manifests, OCI indexes and
Docker manifest lists (choosing a platform, by default this machine's) and
writes an OCI layout (or an oci-archive for ``.tar``, a smith tar for
``.tar.gz``) atomically: everything goes to a temporary sibling of ``out``
and is renamed into place at the end; every blob is verified against its
digest before it is stored. A failure leaves ``out`` as it was.
"""

from __future__ import annotations

import functools
import os
import platform as _platform
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO, TextIO

from microcontainer_tool.errors import LayoutError, RegistryError
from microcontainer_tool.hostfs.atomic import make_temp_dir, replace_dir, write_atomic
from microcontainer_tool.oci import layout
from microcontainer_tool.oci import model as oci
from microcontainer_tool.oci.blobs import MAX_JSON_BLOB, parse_json_object
from microcontainer_tool.oci.imageview import open_image
from microcontainer_tool.oci.layout import format_for_path
from microcontainer_tool.oci.model import Descriptor, canonical_json
from microcontainer_tool.oci.referrers import link_referrers
from microcontainer_tool.oci.store import BLOBS_DIR, INDEX_FILE, OCI_LAYOUT, OCI_LAYOUT_FILE, LayoutStore
from microcontainer_tool.registry.client import Progress, RegistryClient
from microcontainer_tool.registry.reference import DEFAULT_TAG, Reference, normalize_registry
from microcontainer_tool.registry.referrers import fetch_referrers, push_referrers

PROGRESS_MIN_SIZE = 16 << 20
"""Transfers smaller than this show no progress."""

HOST_PLATFORMS = {"x86_64": "linux/amd64", "amd64": "linux/amd64", "aarch64": "linux/arm64",
                  "arm64": "linux/arm64", "armv7l": "linux/arm/v7", "armv6l": "linux/arm/v6",
                  "i686": "linux/386", "i386": "linux/386", "ppc64le": "linux/ppc64le",
                  "s390x": "linux/s390x", "riscv64": "linux/riscv64"}

_TO_DOCKER_LAYER = {
    oci.MEDIA_TYPE_LAYER_GZIP: oci.DOCKER_LAYER_GZIP,
    oci.MEDIA_TYPE_LAYER: oci.DOCKER_LAYER,
    oci.DOCKER_LAYER_GZIP: oci.DOCKER_LAYER_GZIP,
    oci.DOCKER_LAYER: oci.DOCKER_LAYER,
}
_MAX_INDEX_DEPTH = 4


@dataclass(frozen=True)
class PushResult:
    """What :func:`push` did; ``str()`` is the manifest digest.

    Attributes:
        digest: the pushed manifest's digest (the registry's).
        reference: the target, pinned to ``digest``.
        media_type: the manifest's media type.
        uploaded: blobs uploaded.
        skipped: blobs the repository had already.
        mounted: blobs mounted from ``mount_from``.
        bytes_uploaded: bytes of the uploaded blobs.
        referrers: artifacts referring to the image (SBOMs...) pushed with it
            (their blobs are counted above).
    """

    digest: str
    reference: Reference
    media_type: str
    uploaded: int
    skipped: int
    mounted: int
    bytes_uploaded: int
    referrers: int = 0

    def __str__(self) -> str:
        return self.digest


# --- progress -----------------------------------------------------------------------------------


def tty_progress(stream: TextIO | None = None, min_size: int = PROGRESS_MIN_SIZE) -> Progress | None:
    """A progress callback writing one updating line per large blob, or ``None`` if not a TTY.

    Args:
        stream: where to write (default ``sys.stderr``); nothing unless it is a TTY.
        min_size: blobs smaller than this are not reported.
    """
    out = stream or sys.stderr
    try:
        if not out.isatty():
            return None
    except (AttributeError, ValueError):
        return None
    last: dict[str, float] = {}

    def report(label: str, done: int, total: int) -> None:
        if total < min_size:
            return
        now = time.monotonic()
        finished = done >= total
        if not finished and now - last.get(label, 0.0) < 0.2:
            return
        last[label] = now
        short = label.split(":", 1)[-1][:12]
        out.write(f"\r{short}: {done >> 20}/{total >> 20} MiB {100 * done // max(total, 1):3d}%")
        if finished:
            out.write("\n")
        out.flush()

    return report


# --- push ---------------------------------------------------------------------------------------


def _hex(digest: str) -> str:
    return oci.check_digest(digest)[len("sha256:"):]


def _manifest_media_type(manifest: Mapping[str, Any]) -> str:
    declared = manifest.get("mediaType")
    if isinstance(declared, str) and declared:
        return declared
    config = manifest.get("config") or {}
    return oci.DOCKER_MANIFEST if config.get("mediaType") == oci.DOCKER_CONFIG else oci.MEDIA_TYPE_MANIFEST


def to_docker_manifest(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """Rewrite an image manifest to Docker schema 2 media types (blobs unchanged).

    Annotations, which schema 2 does not define, are dropped.

    Raises:
        LayoutError: a layer type has no Docker equivalent (zstd, foreign types).
    """
    out = {k: v for k, v in manifest.items() if k not in ("annotations", "artifactType")}
    out["mediaType"] = oci.DOCKER_MANIFEST
    config = {k: v for k, v in dict(manifest["config"]).items() if k != "annotations"}
    config["mediaType"] = oci.DOCKER_CONFIG
    out["config"] = config
    layers = []
    for item in manifest.get("layers") or []:
        layer = {k: v for k, v in dict(item).items() if k != "annotations"}
        docker_type = _TO_DOCKER_LAYER.get(layer.get("mediaType", ""))
        if docker_type is None:
            raise LayoutError(f"layer {layer.get('digest')} of type {layer.get('mediaType')!r} has no "
                              "Docker schema 2 media type (zstd layers need OCI media types)")
        layer["mediaType"] = docker_type
        layers.append(layer)
    out["layers"] = layers
    return out


def push(image_path: str, ref: Reference, client: RegistryClient, *, docker_media_types: bool = False,
         mount_from: str | None = None, progress: Progress | None = None,
         platform: str | None = None) -> PushResult:
    """Push an image to ``ref``.

    Args:
        image_path: anything :func:`~.image.open_image` reads (``DIR[:TAG]``, archives).
        ref: the target; its tag is set, or with only a digest the manifest is
            stored by digest (which must then be the manifest's).
        client: a client for ``ref.registry``.
        docker_media_types: rewrite the manifest to Docker schema 2 media types
            (its bytes and digest change; the result holds the pushed digest).
        mount_from: a repository on the same registry to mount missing blobs from.
        progress: called with ``(digest, done, total)`` during uploads.
        platform: of a multi-platform image (an image index), push only this
            platform's manifest (``[OS/]ARCH[/VARIANT]``); without it the whole
            index is pushed: each platform's manifest by digest, then the index
            under the tag.

    Returns:
        The pushed digest, the blob counts (uploaded, skipped, mounted) and
        the number of referrers pushed: an OCI layout's artifacts whose
        ``subject`` is the pushed manifest
        (see :func:`microcontainer_tool.registry.referrers.push_referrers`).

    Raises:
        LayoutError: the image is unreadable or malformed.
        DigestMismatchError: a local blob does not match its digest.
        RegistryError: the registry refuses or fails.
    """
    if normalize_registry(ref.registry) != client.registry:
        raise RegistryError(f"{ref}: the client talks to {client.registry}, not {ref.registry}")
    if mount_from is not None:
        mount_from = Reference.parse(f"{client.registry}/{mount_from}").repository
        if mount_from == ref.repository:
            mount_from = None
    with open_image(image_path, platform=platform) as view:
        if view.platform_index is not None and platform is None:
            index_bytes = view.index_bytes()
            children = list(view.platform_index[1])
        else:
            children = []
    if children:
        return _push_index(image_path, ref, client, index_bytes, children,
                           docker_media_types=docker_media_types, mount_from=mount_from, progress=progress)
    with open_image(image_path, platform=platform) as view:
        manifest_bytes = view.manifest_bytes()
        media_type = _manifest_media_type(view.manifest)
        if media_type not in oci.MANIFEST_TYPES:
            raise LayoutError(f"{image_path}: cannot push a manifest of type {media_type!r}")
        if docker_media_types and media_type != oci.DOCKER_MANIFEST:
            manifest_bytes = canonical_json(to_docker_manifest(view.manifest))
            media_type = oci.DOCKER_MANIFEST
        config_desc = Descriptor.from_dict(view.manifest.get("config") or {})
        blobs: list[tuple[Descriptor, Callable[[], BinaryIO]]] = [(config_desc, view.open_config_blob)]
        for number, desc in enumerate(view.layers):
            blobs.append((desc, functools.partial(view.open_layer_blob, number)))
        counts = {"uploaded": 0, "skipped": 0, "mounted": 0, "sent": 0}
        done: set[str] = set()

        def send_blob(desc: Descriptor, opener: Callable[[], BinaryIO] | str) -> None:
            if desc.digest in done:
                return
            done.add(desc.digest)
            if client.blob_exists(ref.repository, desc.digest, push=True):
                counts["skipped"] += 1
            elif mount_from and client.mount_blob(ref.repository, desc.digest, mount_from):
                counts["mounted"] += 1
            else:
                client.upload_blob(ref.repository, opener, desc.digest, desc.size, progress)
                counts["uploaded"] += 1
                counts["sent"] += desc.size

        for desc, opener in blobs:
            send_blob(desc, opener)
    digest = oci.sha256_digest(manifest_bytes)
    if ref.digest and ref.digest != digest:
        raise RegistryError(f"{ref}: the image's manifest is {digest}"
                            + (" (after --docker-media-types)" if docker_media_types else ""))
    pushed = client.put_manifest(ref.repository, ref.tag or digest, manifest_bytes, media_type)
    referrers = 0
    if os.path.isdir(view.path) and pushed == view.manifest_digest:  # a layout's artifacts of this image
        referrers = push_referrers(client, ref.repository, view.path, pushed, send_blob).pushed
    return PushResult(pushed, ref.with_digest(pushed), media_type, counts["uploaded"], counts["skipped"],
                      counts["mounted"], counts["sent"], referrers)


def _push_index(image_path: str, ref: Reference, client: RegistryClient, index_bytes: bytes,
                children: list[Descriptor], *, docker_media_types: bool, mount_from: str | None,
                progress: Progress | None) -> PushResult:
    """Push a multi-platform image: each platform's image by digest, then the index's exact bytes."""
    if docker_media_types:
        raise RegistryError(f"{image_path}: --docker-media-types converts one image manifest; "
                            "this is a multi-platform index (push it as OCI, or one --platform)")
    digest = oci.sha256_digest(index_bytes)
    if ref.digest and ref.digest != digest:
        raise RegistryError(f"{ref}: the image's index is {digest}")
    totals = {"uploaded": 0, "skipped": 0, "mounted": 0, "sent": 0, "referrers": 0}
    for child in children:
        if child.media_type not in oci.MANIFEST_TYPES or not child.platform:
            raise LayoutError(f"{image_path}: index entry {child.digest} is not a platform's image manifest")
        plat = child.platform
        text = "/".join([plat.get("os", ""), plat.get("architecture", "")]
                        + ([plat["variant"]] if plat.get("variant") else []))
        one = push(image_path, Reference(ref.registry, ref.repository, None, child.digest), client,
                   mount_from=mount_from, progress=progress, platform=text)
        for key, value in (("uploaded", one.uploaded), ("skipped", one.skipped), ("mounted", one.mounted),
                           ("sent", one.bytes_uploaded), ("referrers", one.referrers)):
            totals[key] += value
    pushed = client.put_manifest(ref.repository, ref.tag or digest, index_bytes, oci.MEDIA_TYPE_INDEX)
    return PushResult(pushed, ref.with_digest(pushed), oci.MEDIA_TYPE_INDEX, totals["uploaded"],
                      totals["skipped"], totals["mounted"], totals["sent"], totals["referrers"])


def push_and_record(image_path: str, ref: Reference, client: RegistryClient, stamp: str, *,
                    docker_media_types: bool = False, mount_from: str | None = None) -> PushResult:
    """Push an image with :func:`push`, then record where it went in the file ``stamp``.

    The stamp is written atomically, and only after a successful push: exactly
    ``REF@sha256:<manifest digest>`` (``REF`` as :class:`.Reference` prints it)
    and a newline, mode ``0o666`` before the umask.

    Args:
        image_path: anything :func:`~.image.open_image` reads.
        ref: the target.
        client: a client for ``ref.registry``.
        stamp: the file to write.
        docker_media_types: see :func:`push`.
        mount_from: see :func:`push` (``MCT_CACHE_REPO`` on the same registry).

    Returns:
        What :func:`push` returned.

    Raises:
        LayoutError: the image is unreadable or malformed.
        DigestMismatchError: a local blob does not match its digest.
        RegistryError: the registry refuses or fails.
        OutputError: the stamp cannot be written.
    """
    result = push(image_path, ref, client, docker_media_types=docker_media_types, mount_from=mount_from)
    write_atomic(stamp, f"{result.reference}\n".encode(), 0o666)
    return result


# --- pull ---------------------------------------------------------------------------------------


def host_platform() -> str:
    """This machine's platform as ``os/arch[/variant]`` (``linux/amd64``)."""
    machine = _platform.machine()
    return HOST_PLATFORMS.get(machine, f"linux/{machine.lower()}")


def parse_platform(text: str) -> dict[str, str]:
    """Parse ``os/arch[/variant]``.

    Raises:
        RegistryError: malformed.
    """
    parts = text.split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise RegistryError(f"invalid platform {text!r} (expected os/arch[/variant], e.g. linux/amd64)")
    out = {"os": parts[0], "architecture": parts[1]}
    if len(parts) == 3:
        out["variant"] = parts[2]
    return out


def _platform_text(plat: Mapping[str, Any] | None) -> str:
    if not plat:
        return "?"
    text = f"{plat.get('os', '?')}/{plat.get('architecture', '?')}"
    return text + (f"/{plat['variant']}" if plat.get("variant") else "")


def choose_platform(descs: list[Descriptor], wanted: Mapping[str, str], label: str) -> Descriptor:
    """Pick the manifest for ``wanted`` from an index's descriptors.

    A wanted variant must match (``arm64`` without variant counts as ``v8``);
    without a wanted variant an entry without variant is preferred.

    Raises:
        RegistryError: nothing matches (the message lists what there is).
    """
    def variant(plat: Mapping[str, Any]) -> str:
        value = str(plat.get("variant") or "")
        return value or ("v8" if plat.get("architecture") == "arm64" else "")

    matches = [d for d in descs if d.platform and d.platform.get("os") == wanted["os"]
               and d.platform.get("architecture") == wanted["architecture"]]
    if "variant" in wanted:
        matches = [d for d in matches if variant(d.platform or {}) == variant(wanted)]
    else:
        matches.sort(key=lambda d: bool((d.platform or {}).get("variant")))
    if not matches:
        have = ", ".join(sorted({_platform_text(d.platform) for d in descs})) or "none"
        raise RegistryError(f"{label}: no image for platform {_platform_text(wanted)} (available: {have})")
    return matches[0]


def _resolve(ref: Reference, client: RegistryClient, wanted: Mapping[str, str]) -> tuple[bytes, str, str]:
    data, media_type, digest = client.get_manifest(ref.repository, ref.reference)
    for _ in range(_MAX_INDEX_DEPTH):
        if media_type not in oci.INDEX_TYPES:
            return data, media_type, digest
        body = parse_json_object(data, f"{ref}: index {digest}")
        entries = body.get("manifests")
        if not isinstance(entries, list):
            raise LayoutError(f"{ref}: index {digest} has no manifests list")
        descs = [Descriptor.from_dict(d) for d in entries if isinstance(d, dict)]
        chosen = choose_platform(descs, wanted, str(ref))
        data, media_type, digest = client.get_manifest(ref.repository, chosen.digest)
        if len(data) != chosen.size:
            raise LayoutError(f"{ref}: manifest {digest} is {len(data)} bytes, the index says {chosen.size}")
    raise LayoutError(f"{ref}: image indexes nested more than {_MAX_INDEX_DEPTH} deep")


def resolve_manifest(ref: Reference, client: RegistryClient, platform: str | None = None) -> str:
    """The digest of the image manifest ``ref`` means for ``platform`` (an index is followed).

    Raises:
        RegistryError: the registry refuses or fails, or no image fits ``platform``.
        LayoutError: a malformed manifest or index.
    """
    _data, media_type, digest = _resolve(ref, client, parse_platform(platform or host_platform()))
    if media_type not in oci.MANIFEST_TYPES:
        raise RegistryError(f"{ref}: unsupported manifest type {media_type!r}")
    return digest


def pull(ref: Reference, out: str, client: RegistryClient, platform: str | None = None, *,
         progress: Progress | None = None, tag: str | None = None) -> str:
    """Pull the image ``ref`` into ``out``.

    Args:
        ref: what to pull (by tag or digest).
        out: an OCI layout directory, or ``.tar`` (oci-archive), ``.tar.gz``/``.tgz`` (smith).
            An existing layout there is replaced; anything else there is refused.
        client: a client for ``ref.registry``.
        platform: ``os/arch[/variant]`` chosen from an index (default: this machine's).
        progress: called with ``(digest, done, total)`` during downloads.
        tag: the tag the image gets in ``out`` (``org.opencontainers.image.ref.name``;
            default: ``ref``'s tag, ``latest`` for a pull by digest), so ``out:TAG``
            names it.

    Returns:
        The digest of the image manifest written (the platform's, for an index).

    Raises:
        DigestMismatchError: a manifest or blob does not match its digest (nothing is written).
        LayoutError: malformed content, or ``out`` cannot be written.
        RegistryError: the registry refuses or fails, or no image fits ``platform``.
    """
    if normalize_registry(ref.registry) != client.registry:
        raise RegistryError(f"{ref}: the client talks to {client.registry}, not {ref.registry}")
    wanted = parse_platform(platform or host_platform())
    if tag is not None:
        layout.check_tag(tag)
    fmt = format_for_path(out)
    if fmt not in ("oci", "oci-archive", "smith"):
        raise LayoutError(f"{out}: pull writes an OCI layout, .tar or .tar.gz")
    target = os.path.abspath(out)
    parent, base = os.path.split(target)
    if not os.path.isdir(parent):
        raise LayoutError(f"{out}: parent directory {parent} does not exist")
    layout.check_target(target, fmt)  # the same rules as build's outputs

    data, media_type, digest = _resolve(ref, client, wanted)
    if media_type not in oci.MANIFEST_TYPES:
        raise RegistryError(f"{ref}: unsupported manifest type {media_type!r}")
    manifest = parse_json_object(data, f"{ref}: manifest {digest}")
    config_desc = Descriptor.from_dict(manifest.get("config") or {})
    if config_desc.size > MAX_JSON_BLOB:
        raise LayoutError(f"{ref}: config {config_desc.digest} is too large")
    if not isinstance(manifest.get("layers"), list):
        raise LayoutError(f"{ref}: manifest {digest} has no layers list")
    layers = [Descriptor.from_dict(d) if isinstance(d, dict) else Descriptor.from_dict({})
              for d in manifest["layers"]]

    tmp = make_temp_dir(parent, f".{base}.tmp-")
    try:
        store = LayoutStore(tmp)
        store.put_blob(data, media_type, expected_digest=digest)
        for desc in [config_desc, *layers]:
            if not store.has_blob(desc.digest):
                client.get_blob(ref.repository, desc.digest, store.blob_path(desc.digest), desc.size,
                                progress)
        config = store.read_json(config_desc, f"{ref}: config")
        annotations = {oci.ANNOTATION_REF_NAME: tag or ref.tag or DEFAULT_TAG}
        referrers = fetch_referrers(client, ref.repository, digest, store, progress)  # SBOMs and the like
        image = Descriptor(media_type, digest, len(data), annotations, oci.platform_of(config))
        entries, _nested = link_referrers(store, [image], referrers)
        store.sync()
        store.write_index(entries)
        if fmt == "oci":
            replace_dir(tmp, target)
            tmp = ""
        else:
            members: dict[str, bytes | str] = {OCI_LAYOUT_FILE: canonical_json(OCI_LAYOUT)}
            with open(os.path.join(tmp, INDEX_FILE), "rb") as handle:
                members[INDEX_FILE] = handle.read()
            for desc in [Descriptor(media_type, digest, len(data)), config_desc, *layers]:
                members[f"{BLOBS_DIR}/{desc.hex}"] = store.blob_path(desc.digest)
            for name in sorted(os.listdir(os.path.join(tmp, BLOBS_DIR))):  # the referrers' blobs
                if not name.startswith("."):
                    members.setdefault(f"{BLOBS_DIR}/{name}", os.path.join(tmp, BLOBS_DIR, name))
            layout.write_archive_file(target, members, gzip=fmt == "smith")
    except OSError as error:
        raise LayoutError(f"{out}: cannot write: {error.strerror or error}") from None
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    return digest
