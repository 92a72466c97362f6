"""The OCI image model: media types, canonical JSON, descriptors, config, manifest, index.

Pure functions over dicts; nothing here touches the disk. Everything that goes
into an image is deterministic: no host names, no tool version, no build time
(``created`` is the build epoch).
"""

from __future__ import annotations

import datetime
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from microcontainer_tool.errors import LayoutError

MEDIA_TYPE_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_TYPE_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_TYPE_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_TYPE_LAYER = "application/vnd.oci.image.layer.v1.tar"
MEDIA_TYPE_LAYER_GZIP = MEDIA_TYPE_LAYER + "+gzip"
MEDIA_TYPE_LAYER_ZSTD = MEDIA_TYPE_LAYER + "+zstd"

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"

MANIFEST_TYPES = (MEDIA_TYPE_MANIFEST, DOCKER_MANIFEST)
INDEX_TYPES = (MEDIA_TYPE_INDEX, DOCKER_MANIFEST_LIST)

ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
ANNOTATION_CONTAINERD_NAME = "io.containerd.image.name"

CREATED_BY = "microcontainer-tool"


def canonical_json(obj: Any) -> bytes:
    """Serialize ``obj`` canonically: sorted keys, no spaces, UTF-8, no newline."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def sha256_digest(data: bytes) -> str:
    """Return ``sha256:<hex>`` of ``data``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def rfc3339(epoch: int) -> str:
    """Format a Unix epoch as RFC 3339 UTC with second precision (``1970-01-01T00:00:00Z``)."""
    try:
        moment = datetime.datetime.fromtimestamp(epoch, tz=datetime.UTC)
    except (OverflowError, OSError, ValueError):
        raise LayoutError(f"epoch {epoch} is out of range") from None
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Descriptor:
    """An OCI content descriptor.

    Attributes:
        media_type: the content's media type.
        digest: ``sha256:<hex>``.
        size: content size in bytes.
        annotations: optional string annotations.
        platform: optional platform dict (``architecture``, ``os``, ``variant``).
    """

    media_type: str
    digest: str
    size: int
    annotations: Mapping[str, str] | None = field(default=None, compare=False)
    platform: Mapping[str, str] | None = field(default=None, compare=False)

    @property
    def hex(self) -> str:
        """The digest's hex part (the blob's file name)."""
        return self.digest.split(":", 1)[1]

    def to_dict(self) -> dict[str, Any]:
        """Return the descriptor as OCI JSON (empty optional fields omitted)."""
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.platform:
            out["platform"] = dict(self.platform)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Descriptor:
        """Parse a descriptor from OCI JSON.

        Raises:
            LayoutError: a required field is missing or malformed.
        """
        try:
            media_type, digest, size = data["mediaType"], data["digest"], data["size"]
        except (KeyError, TypeError):
            raise LayoutError("descriptor lacks mediaType, digest or size") from None
        if not isinstance(media_type, str) or not isinstance(size, int) or size < 0:
            raise LayoutError(f"malformed descriptor {digest!r}")
        check_digest(digest)
        return cls(media_type, digest, size, data.get("annotations"), data.get("platform"))

    def with_annotations(self, annotations: Mapping[str, str] | None) -> Descriptor:
        """Return a copy carrying ``annotations``."""
        return Descriptor(self.media_type, self.digest, self.size, annotations, self.platform)

    def with_platform(self, platform: Mapping[str, str] | None) -> Descriptor:
        """Return a copy carrying ``platform``."""
        return Descriptor(self.media_type, self.digest, self.size, self.annotations, platform)


def check_digest(digest: object) -> str:
    """Return ``digest`` if it is a well-formed ``sha256:<64 hex>``.

    Raises:
        LayoutError: otherwise.
    """
    if (not isinstance(digest, str) or not digest.startswith("sha256:") or len(digest) != 71
            or any(c not in "0123456789abcdef" for c in digest[7:])):
        raise LayoutError(f"unsupported or malformed digest {digest!r}")
    return digest


def _strings(name: str, values: Sequence[str] | None) -> list[str]:
    if values is None:
        return []
    if isinstance(values, str) or not all(isinstance(v, str) for v in values):
        raise LayoutError(f"config {name} must be a list of strings")
    return list(values)


def _port(port: str | int) -> str:
    text = str(port)
    return text if "/" in text else f"{text}/tcp"


def image_config(
    *,
    architecture: str,
    diff_ids: Sequence[str],
    created: int = 0,
    variant: str | None = None,
    os: str = "linux",
    user: str = "",
    env: Sequence[str] | Mapping[str, str] | None = None,
    entrypoint: Sequence[str] | None = None,
    cmd: Sequence[str] | None = None,
    workdir: str = "",
    labels: Mapping[str, str] | None = None,
    ports: Sequence[str | int] | None = None,
    volumes: Sequence[str] | None = None,
    comment: str | None = None,
) -> dict[str, Any]:
    """Build an OCI image configuration.

    Empty fields are omitted; in particular an empty ``cmd`` is omitted, and
    since this image has no base, nothing is inherited.

    Args:
        architecture: GOARCH name (``amd64``, ``arm64``...).
        diff_ids: the layers' uncompressed digests, bottom first.
        created: build time as a Unix epoch (``SOURCE_DATE_EPOCH``); ``created``
            and the history entry get it in RFC 3339.
        variant: architecture variant (``v8``...), if any.
        os: the operating system.
        user: ``User`` (``uid[:gid]`` or a name).
        env: ``Env`` as ``KEY=VALUE`` strings or a mapping (kept in order).
        entrypoint: ``Entrypoint`` argv.
        cmd: ``Cmd`` argv.
        workdir: ``WorkingDir``.
        labels: ``Labels``.
        ports: ``ExposedPorts`` like ``80``, ``"53/udp"`` (``/tcp`` is implied).
        volumes: volume paths.
        comment: optional ``history`` comment.

    Returns:
        The configuration as a dict (serialize with :func:`canonical_json`).
    """
    conf: dict[str, Any] = {}
    if user:
        conf["User"] = user
    env_list = [f"{k}={v}" for k, v in env.items()] if isinstance(env, Mapping) else _strings("Env", env)
    if env_list:
        conf["Env"] = env_list
    if entrypoint:
        conf["Entrypoint"] = _strings("Entrypoint", entrypoint)
    if cmd:
        conf["Cmd"] = _strings("Cmd", cmd)
    if workdir:
        conf["WorkingDir"] = workdir
    if labels:
        conf["Labels"] = {str(k): str(v) for k, v in labels.items()}
    if ports:
        conf["ExposedPorts"] = {_port(p): {} for p in ports}
    if volumes:
        conf["Volumes"] = {v: {} for v in _strings("Volumes", volumes)}
    stamp = rfc3339(created)
    history: dict[str, Any] = {"created": stamp, "created_by": CREATED_BY}
    if comment:
        history["comment"] = comment
    config: dict[str, Any] = {"created": stamp, "architecture": architecture, "os": os}
    if variant:
        config["variant"] = variant
    if conf:
        config["config"] = conf
    config["rootfs"] = {"type": "layers", "diff_ids": [check_digest(d) for d in diff_ids]}
    config["history"] = [history for _ in diff_ids] if diff_ids else []
    return config


def platform_of(config: Mapping[str, Any]) -> dict[str, str]:
    """Return the platform object (``architecture``, ``os``, ``variant``) of a config."""
    platform = {"architecture": str(config.get("architecture", "")), "os": str(config.get("os", ""))}
    if config.get("variant"):
        platform["variant"] = str(config["variant"])
    return platform


def manifest(config_desc: Descriptor, layer_descs: Sequence[Descriptor],
             annotations: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Build an OCI image manifest."""
    out: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_MANIFEST,
        "config": config_desc.to_dict(),
        "layers": [d.to_dict() for d in layer_descs],
    }
    if annotations:
        out["annotations"] = dict(annotations)
    return out


def index(manifests: Sequence[Descriptor]) -> dict[str, Any]:
    """Build an OCI image index listing ``manifests``."""
    return {
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_INDEX,
        "manifests": [d.to_dict() for d in manifests],
    }
