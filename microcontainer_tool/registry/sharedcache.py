"""A build cache the team shares, kept in a repository of the registry it already runs.

The pattern of kaniko's ``--cache-repo``: one small OCI manifest per key,
tagged with the key, whose one layer is the cached blob; the registry
deduplicates the blobs. Two kinds of entries live side by side:

* **layers**, tagged ``layer-<hex>``: the hex is the SHA-256 of the layer
  cache key (:meth:`~microcontainer_tool.oci.layercache.LayerCache.key`: the
  tree digest, codec, epoch, owner and ``FORMAT_VERSION``), this tool's version
  and the codec library's version. The manifest's config blob (media type
  :data:`CACHE_CONFIG_TYPE`) and its annotations carry the key, the layer's
  ``diff_id``, digest, size and media type.
* **RPM payloads**, tagged ``rpm-sha256-<hex>``: the ``.rpm`` file whose
  SHA-256 (from ``microimage.lock``) is ``<hex>`` is the manifest's layer, so
  its blob digest *is* the lock's checksum.
* **build-system files**, tagged ``scons-<hex>`` (the SHA-256 of SCons's build
  signature): any file a SCons ``CacheDir`` holds. Only their integrity can be
  checked (the signature names inputs; nothing here can derive the output).

Nothing fetched is trusted: blobs are checked against their digest and size
while they download (:meth:`~.client.RegistryClient.get_blob`); a layer then
has to prove it is our tree's tar byte for byte
(:func:`~microcontainer_tool.oci.layercheck.check_layer`, run by the layer
cache), an RPM has to match the lock's checksum. An entry that fails is refused
with a one-line warning and the build goes on locally. An unreachable or
failing cache is a warning, never a failed build; a read-only cache never
writes (no ``POST``, ``PUT`` or ``PATCH`` is sent).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata

from microcontainer_tool import FORMAT_VERSION, __version__
from microcontainer_tool.errors import MicrocontainerError
from microcontainer_tool.oci import model as oci
from microcontainer_tool.oci.blobs import parse_json_object
from microcontainer_tool.oci.layer import LayerInfo
from microcontainer_tool.oci.model import canonical_json
from microcontainer_tool.registry.client import RegistryClient

log = logging.getLogger(__name__)

CACHE_ARTIFACT_TYPE = "application/vnd.microcontainer.cache.v1+json"
"""``artifactType`` of every cache manifest."""
CACHE_CONFIG_TYPE = CACHE_ARTIFACT_TYPE
"""Media type of a cache manifest's config blob (the entry's facts as JSON)."""
RPM_MEDIA_TYPE = "application/x-rpm"
"""Media type of an RPM payload entry's layer."""
FILE_MEDIA_TYPE = "application/octet-stream"
"""Media type of a build system's file entry (SCons ``CacheDir``)."""
ANNOTATION_PREFIX = "dev.microcontainer.cache."
"""Prefix of the annotations of a cache manifest (``key``, ``diff_id``, ``tool``, ``format``)."""

_CODEC_PACKAGES = {"gzip": "deflate", "gzip-fast": "deflate", "zstd": "zstandard"}


@dataclass
class SharedCacheStats:
    """What a :class:`SharedCache` did, counted.

    Attributes:
        layer_hits: layer entries found (and fetched).
        layer_misses: layer keys not in the repository.
        layers_stored: layer entries written.
        rpm_hits: RPM payloads fetched.
        rpm_misses: RPM payloads not in the repository.
        rpms_stored: RPM payloads written.
        file_hits: build-system files fetched (SCons ``CacheDir``).
        file_misses: build-system files not in the repository.
        files_stored: build-system files written.
        refused: entries that failed a check and were not used.
        errors: lookups or stores that failed (warned about).
    """

    layer_hits: int = 0
    layer_misses: int = 0
    layers_stored: int = 0
    rpm_hits: int = 0
    rpm_misses: int = 0
    rpms_stored: int = 0
    file_hits: int = 0
    file_misses: int = 0
    files_stored: int = 0
    refused: int = 0
    errors: int = 0


def codec_version(compression: str) -> str:
    """The version of the library that writes ``compression`` blobs (part of a layer entry's tag)."""
    package = _CODEC_PACKAGES.get(compression)
    if package is None:
        return compression
    try:
        return f"{package}=={metadata.version(package)}"
    except metadata.PackageNotFoundError:
        return f"{package}==?"


def layer_tag(key: str, compression: str) -> str:
    """The tag of the layer entry for the layer cache key ``key``."""
    text = f"{key}\0{__version__}\0{FORMAT_VERSION}\0{codec_version(compression)}"
    return "layer-" + hashlib.sha256(text.encode()).hexdigest()


def file_tag(signature: str) -> str:
    """The tag of a build system's file entry (SCons's build signature: hex)."""
    return "scons-" + hashlib.sha256(signature.encode()).hexdigest()


def rpm_tag(sha256_hex: str) -> str:
    """The tag of the RPM payload entry for a package of this SHA-256."""
    return f"rpm-sha256-{sha256_hex}"


class SharedCache:
    """Layers and RPM payloads in one registry repository (see the module docs).

    Implements :class:`~microcontainer_tool.oci.layercache.RemoteLayers`.

    Attributes:
        client: the registry client (its ``requests_sent`` counts every request).
        repository: the cache repository's path on the registry.
        read_only: never write to the repository.
        warnings: one line per problem (unreachable, refused, failed store).
        stats: the counts.
    """

    def __init__(self, client: RegistryClient, repository: str, *, read_only: bool = False,
                 compression: str = "gzip", warn: Callable[[str], None] | None = None) -> None:
        """Use ``repository`` on ``client``'s registry.

        Args:
            client: a client for the cache's registry (credentials as for push and pull).
            repository: the repository path (``team/mct-cache``).
            read_only: look entries up, never store any.
            compression: the build's layer codec (its library version goes into layer tags).
            warn: called with each warning as it happens (they are kept in :attr:`warnings` too).
        """
        self.client = client
        self.repository = repository
        self.read_only = read_only
        self.compression = compression
        self.warnings: list[str] = []
        self.stats = SharedCacheStats()
        self._warn = warn
        self._down = ""

    @property
    def name(self) -> str:
        """``REGISTRY/REPOSITORY``."""
        return f"{self.client.registry}/{self.repository}"

    def warn(self, message: str) -> None:
        """Record a warning (and pass it on)."""
        line = f"cache repository {self.name}: {message}"
        self.warnings.append(line)
        if self._warn is not None:
            self._warn(line)

    def _failed(self, what: str, error: Exception) -> None:
        self.stats.errors += 1
        if not self._down:  # one warning, then the cache is off for this build
            self._down = str(error)
            self.warn(f"{what} failed, building without it: {error}")

    # --- layers --------------------------------------------------------------------------------------

    def fetch_layer(self, key: str, dest: str) -> LayerInfo | None:
        """The layer entry of ``key``: its blob written to ``dest`` (digest and size checked).

        Returns:
            What the entry claims about the layer, or ``None`` on a miss, a
            malformed entry (refused) or a failure (warned about).
        """
        if self._down:
            return None
        tag = layer_tag(key, self.compression)
        try:
            found = self._get_entry(tag)
            if found is None:
                self.stats.layer_misses += 1
                return None
            manifest, layer = found
            annotations = manifest.get("annotations") or {}
            if not isinstance(annotations, dict) or annotations.get(ANNOTATION_PREFIX + "key") != key:
                self.refuse(key, "its manifest is not annotated with this key")
                return None
            diff_id = annotations.get(ANNOTATION_PREFIX + "diff_id")
            if not isinstance(diff_id, str) or not diff_id.startswith("sha256:"):
                self.refuse(key, "its manifest has no diff_id annotation")
                return None
            self.client.get_blob(self.repository, layer.digest, dest, layer.size)
        except MicrocontainerError as error:
            if _is_content_error(error):
                self.refuse(key, str(error))
                return None
            if _is_not_found(error):  # the entry's blob was garbage-collected: a miss, stored again
                self.stats.layer_misses += 1
                return None
            self._failed(f"looking up layer {tag}", error)
            return None
        self.stats.layer_hits += 1
        return LayerInfo(diff_id=diff_id, digest=layer.digest, size=layer.size, media_type=layer.media_type)

    def store_layer(self, key: str, blob: str, info: LayerInfo) -> None:
        """Store the layer built here as the entry of ``key`` (nothing in read-only mode)."""
        if self.read_only or self._down:
            return
        tag = layer_tag(key, self.compression)
        facts = {"key": key, "diff_id": info.diff_id, "digest": info.digest, "size": info.size,
                 "mediaType": info.media_type, "tool": __version__, "format": FORMAT_VERSION,
                 "codec": codec_version(self.compression)}
        annotations = {ANNOTATION_PREFIX + "key": key, ANNOTATION_PREFIX + "diff_id": info.diff_id,
                       ANNOTATION_PREFIX + "tool": __version__, ANNOTATION_PREFIX + "format": FORMAT_VERSION}
        try:
            self._put_entry(tag, blob, oci.Descriptor(info.media_type, info.digest, info.size), facts,
                            annotations)
        except MicrocontainerError as error:
            self._failed(f"storing layer {tag}", error)
            return
        self.stats.layers_stored += 1

    def refuse(self, key: str, reason: str) -> None:
        """Warn that the entry for ``key`` was refused (it is not used)."""
        self.stats.refused += 1
        self.warn(f"refused the entry for key {key[:16]}…: {reason}; building it here")

    # --- RPM payloads ----------------------------------------------------------------------------

    def fetch_rpm(self, sha256_hex: str, dest: str) -> bool:
        """Write the RPM whose SHA-256 is ``sha256_hex`` to ``dest`` if the repository has it.

        The blob's digest is the lock's checksum, so the download is checked
        against the lock while it is written; nothing is written otherwise.

        Returns:
            Whether ``dest`` now holds the package.
        """
        if self._down:
            return False
        digest = f"sha256:{sha256_hex}"
        try:
            oci.check_digest(digest)
            found = self._get_entry(rpm_tag(sha256_hex))
            if found is None:
                self.stats.rpm_misses += 1
                return False
            _manifest, layer = found
            if layer.digest != digest:
                self.stats.refused += 1
                self.warn(f"refused the entry {rpm_tag(sha256_hex)[:20]}…: its blob is {layer.digest}, "
                          "not the lock's checksum; downloading the package")
                return False
            self.client.get_blob(self.repository, digest, dest, layer.size)
        except MicrocontainerError as error:
            if _is_not_found(error):
                self.stats.rpm_misses += 1
                return False
            if _is_content_error(error):
                self.stats.refused += 1
                self.warn(f"refused the entry {rpm_tag(sha256_hex)[:20]}…: {error}; downloading the package")
                return False
            self._failed(f"looking up package sha256:{sha256_hex[:16]}…", error)
            return False
        self.stats.rpm_hits += 1
        return True

    def store_rpm(self, sha256_hex: str, path: str) -> None:
        """Store the package at ``path`` (whose SHA-256 is ``sha256_hex``, checked) as its entry."""
        if self.read_only or self._down:
            return
        digest = f"sha256:{sha256_hex}"
        try:
            size = os.path.getsize(path)
        except OSError:
            return
        facts = {"sha256": sha256_hex, "size": size, "mediaType": RPM_MEDIA_TYPE, "tool": __version__}
        try:
            self._put_entry(rpm_tag(sha256_hex), path, oci.Descriptor(RPM_MEDIA_TYPE, digest, size), facts,
                            {ANNOTATION_PREFIX + "key": digest})
        except MicrocontainerError as error:
            self._failed(f"storing package {digest[:23]}…", error)
            return
        self.stats.rpms_stored += 1

    # --- build-system files (SCons CacheDir) -----------------------------------------------------

    def fetch_file(self, signature: str, dest: str) -> bool:
        """Write the file stored under a build system's ``signature`` to ``dest`` (parents made).

        Only the blob's integrity is checked (its digest and size): the bytes a
        signature stands for cannot be derived here, so such entries are as
        trustworthy as the repository's writers (as a shared ``CacheDir`` is).

        Returns:
            Whether ``dest`` now holds the file.
        """
        if self._down:
            return False
        tag = file_tag(signature)
        try:
            found = self._get_entry(tag)
            if found is None:
                self.stats.file_misses += 1
                return False
            _manifest, blob = found
            os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
            self.client.get_blob(self.repository, blob.digest, dest, blob.size)
        except OSError as error:
            self._failed(f"looking up {tag}", MicrocontainerError(f"{dest}: {error.strerror or error}"))
            return False
        except MicrocontainerError as error:
            if _is_not_found(error):
                self.stats.file_misses += 1
                return False
            if _is_content_error(error):
                self.stats.refused += 1
                self.warn(f"refused the entry {tag}: {error}; building it here")
                return False
            self._failed(f"looking up {tag}", error)
            return False
        self.stats.file_hits += 1
        return True

    def store_file(self, signature: str, path: str) -> None:
        """Store the file at ``path`` under a build system's ``signature`` (nothing in read-only mode)."""
        if self.read_only or self._down:
            return
        try:
            with open(path, "rb") as handle:
                sha = hashlib.sha256()
                while chunk := handle.read(1 << 20):
                    sha.update(chunk)
            size = os.path.getsize(path)
        except OSError:
            return
        digest = "sha256:" + sha.hexdigest()
        facts = {"signature": signature, "size": size, "tool": __version__}
        try:
            self._put_entry(file_tag(signature), path, oci.Descriptor(FILE_MEDIA_TYPE, digest, size), facts,
                            {ANNOTATION_PREFIX + "key": signature})
        except MicrocontainerError as error:
            self._failed(f"storing {file_tag(signature)}", error)
            return
        self.stats.files_stored += 1

    # --- entries ---------------------------------------------------------------------------------

    def _get_entry(self, tag: str) -> tuple[dict, oci.Descriptor] | None:
        """The manifest tagged ``tag`` and its one layer, ``None`` if there is none.

        Raises:
            LayerMismatchError: the manifest is not a cache entry.
            RegistryError: the registry fails or refuses.
        """
        from microcontainer_tool.errors import LayerMismatchError, RegistryError

        try:
            data, _media_type, digest = self.client.get_manifest(self.repository, tag,
                                                                 accept=(oci.MEDIA_TYPE_MANIFEST,))
        except RegistryError as error:
            if _is_not_found(error):
                return None
            raise
        manifest = parse_json_object(data, f"cache entry {tag}")
        layers = manifest.get("layers")
        if manifest.get("artifactType") != CACHE_ARTIFACT_TYPE or not isinstance(layers, list) \
                or len(layers) != 1 or not isinstance(layers[0], dict):
            raise LayerMismatchError(f"{tag} ({digest}) is not a cache entry of this tool")
        try:
            layer = oci.Descriptor.from_dict(layers[0])
            oci.check_digest(layer.digest)
        except (MicrocontainerError, KeyError, TypeError, ValueError):
            raise LayerMismatchError(f"{tag} ({digest}) has a malformed layer descriptor") from None
        return manifest, layer

    def _put_entry(self, tag: str, blob: str, desc: oci.Descriptor, facts: dict,
                   annotations: dict[str, str]) -> None:
        config = canonical_json(facts)
        config_desc = oci.Descriptor(CACHE_CONFIG_TYPE, oci.sha256_digest(config), len(config))
        for item, source in ((desc, blob), (config_desc, config)):
            if not self.client.blob_exists(self.repository, item.digest, push=True):
                self.client.upload_blob(self.repository, source, item.digest, item.size)
        manifest = {
            "schemaVersion": 2,
            "mediaType": oci.MEDIA_TYPE_MANIFEST,
            "artifactType": CACHE_ARTIFACT_TYPE,
            "config": {"mediaType": config_desc.media_type, "digest": config_desc.digest,
                       "size": config_desc.size},
            "layers": [{"mediaType": desc.media_type, "digest": desc.digest, "size": desc.size}],
            "annotations": dict(sorted(annotations.items())),
        }
        self.client.put_manifest(self.repository, tag, canonical_json(manifest), oci.MEDIA_TYPE_MANIFEST)


def _is_not_found(error: Exception) -> bool:
    """Whether ``error`` is the registry's 404 (no such tag, repository or blob)."""
    from microcontainer_tool.errors import RegistryError

    return isinstance(error, RegistryError) and ": HTTP 404" in str(error)


def _is_content_error(error: Exception) -> bool:
    """Whether ``error`` says an entry's content is wrong (refuse it), not that the registry failed."""
    from microcontainer_tool.errors import DigestMismatchError, LayerMismatchError, LayoutError

    return isinstance(error, (DigestMismatchError, LayerMismatchError)) or (
        isinstance(error, LayoutError) and "cannot write" not in str(error))


def open_shared_cache(text: str, *, read_only: bool = False, plain_http: bool = False, insecure: bool = False,
                      docker_config: str | None = None, timeout: float = 10, retries: int = 1,
                      compression: str = "gzip", warn: Callable[[str], None] | None = None) -> SharedCache:
    """A :class:`SharedCache` for ``REGISTRY/REPOSITORY``, with credentials as push and pull find them.

    Credentials come from the Docker config (``auths``, ``credHelpers``,
    ``credsStore``), as for ``push`` and ``pull``; tokens are fetched as the
    registry asks (basic or bearer).

    Raises:
        SpecError: ``text`` is not a repository reference (or carries a tag or digest).
    """
    from microcontainer_tool.errors import SpecError
    from microcontainer_tool.registry.auth import load_credentials
    from microcontainer_tool.registry.reference import Reference

    ref = Reference.parse(text)
    if "@" in text or ":" in text.rsplit("/", 1)[-1]:
        raise SpecError(f"--cache-repo {text}: name a repository (REGISTRY/REPO), without a tag or digest")
    creds = load_credentials(ref.registry, docker_config=docker_config)
    client = RegistryClient(ref.registry, auth=creds, plain_http=plain_http, insecure=insecure,
                            timeout=timeout, retries=retries, backoff=0.2)
    return SharedCache(client, ref.repository, read_only=read_only, compression=compression, warn=warn)


def describe(cache: SharedCache) -> str:
    """One line of what the cache did (for ``build``'s output)."""
    s = cache.stats
    parts = [f"{s.layer_hits} layer hit(s)", f"{s.layer_misses} miss(es)", f"{s.layers_stored} stored"]
    if s.rpm_hits or s.rpm_misses or s.rpms_stored:
        parts.append(f"packages {s.rpm_hits} hit(s), {s.rpm_misses} miss(es), {s.rpms_stored} stored")
    if s.refused:
        parts.append(f"{s.refused} refused")
    return f"{cache.name}: " + ", ".join(parts) + (" (read-only)" if cache.read_only else "")
