"""Images a spec names (``from:`` and ``parent:``): where they are, and making them local.

A spec may name an image in four ways:

* an OCI layout directory, ``DIR`` or ``DIR:TAG``;
* an archive file: oci-archive (``.tar``), smith's ``.tar.gz``, or a
  docker-archive (``docker save`` output);
* a registry reference, spelt ``docker://REF``, ``https://HOST/REPO[:TAG]``,
  ``http://HOST/REPO[:TAG]`` (plain HTTP), or a bare ``HOST/REPO[:TAG][@DIGEST]``
  whose first component is a host (it has a dot or a port, or is
  ``localhost``), exactly as Docker tells a registry from a Docker Hub user;
* for ``from:`` only, anything else is a directory tree (a sysroot).

A local path always wins over a registry reading of the same text. Registry
images are pulled into the cache (``CACHE/images/``) once, keyed by manifest
digest and platform, every blob verified against its digest; a reference
pinned by digest is then used without any network access.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

from microcontainer_tool.errors import RegistryError, SpecError
from microcontainer_tool.registry.reference import Reference

#: Cache subdirectory of pulled images.
IMAGES_DIR = "images"
_ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz")
_URL_SCHEMES = ("docker://", "https://", "http://")


@dataclass(frozen=True)
class ImageLocation:
    """An image named by a spec.

    Attributes:
        text: what the spec said.
        local: a path :func:`~.image.open_image` reads (``DIR[:TAG]`` or a file),
            or ``None`` for a registry image.
        ref: the registry reference, or ``None`` for a local image.
        plain_http: the spec said ``http://``: talk plain HTTP to that registry.
    """

    text: str
    local: str | None = None
    ref: Reference | None = None
    plain_http: bool = False

    @property
    def label(self) -> str:
        """How messages and provenance name it."""
        return self.local if self.local is not None else str(self.ref)


@dataclass(frozen=True)
class RegistryOptions:
    """How to reach registries for ``from:``/``parent:`` images.

    Attributes:
        plain_http: talk HTTP instead of HTTPS to every registry.
        insecure: do not verify TLS certificates.
        docker_config: ``config.json`` (or its directory) with credentials
            (default ``$DOCKER_CONFIG`` or ``~/.docker``).
        timeout: seconds per request.
        retries: attempts after a connection error or 5xx.
    """

    plain_http: bool = False
    insecure: bool = False
    docker_config: str | None = None
    timeout: float = 30.0
    retries: int = 3


def locate_image(text: str, base_dir: str, directory_ok: bool) -> ImageLocation | None:
    """Say what kind of image ``text`` names.

    Args:
        text: the spec's value.
        base_dir: the spec's directory (relative paths are taken from it).
        directory_ok: a plain directory is acceptable (``from:``): return
            ``None`` for it. Otherwise (``parent:``) it is an error.

    Returns:
        The location, or ``None`` for a plain directory tree.

    Raises:
        SpecError: a malformed reference, or (``parent:``) something that is no image.
    """
    for scheme in _URL_SCHEMES:
        if text.startswith(scheme):
            rest = text[len(scheme):]
            if not rest:
                raise SpecError(f"{text!r}: no image reference after {scheme}")
            return ImageLocation(text, ref=Reference.parse(rest), plain_http=scheme == "http://")
    host = os.path.normpath(os.path.join(base_dir, text))
    if os.path.isfile(host) and host.endswith(_ARCHIVE_SUFFIXES):
        return ImageLocation(text, local=host)
    if os.path.isfile(os.path.join(host, "oci-layout")):
        return ImageLocation(text, local=host)
    left, sep, tag = text.rpartition(":")
    if sep and left and "/" not in tag:
        layout = os.path.normpath(os.path.join(base_dir, left))
        if os.path.isfile(os.path.join(layout, "oci-layout")):
            return ImageLocation(text, local=f"{layout}:{tag}")
    if os.path.exists(host):
        if directory_ok and os.path.isdir(host):
            return None
        raise SpecError(f"{text}: not an image (an OCI layout, an image archive or a registry reference)")
    first = text.split("/", 1)[0]
    if "/" in text and ("." in first or ":" in first or first == "localhost"):
        return ImageLocation(text, ref=Reference.parse(text))
    if directory_ok:
        return None  # the assembler reports the missing directory
    raise SpecError(f"{text}: no such image (write docker://{text} for a registry image)")


def platform_for(arch: str) -> str:
    """The ``os/arch[/variant]`` to pull for a spec's ``arch`` (empty: this machine's)."""
    from microcontainer_tool.registry.transfer import host_platform

    if not arch:
        return host_platform()
    return f"linux/{arch}/v7" if arch == "arm" else f"linux/{arch}"


def fetch_image(location: ImageLocation, cache_dir: str, options: RegistryOptions | None = None,
                platform: str = "", offline: bool = False) -> tuple[str, str]:
    """Make a located image readable by :func:`~.image.open_image`.

    A local image is returned as it is. A registry image is pulled into
    ``cache_dir/images/`` unless it is there already; a reference pinned by
    digest that is cached needs no network at all.

    Args:
        location: from :func:`locate_image`.
        cache_dir: the build cache.
        options: how to reach the registry (default: HTTPS, verified, docker config).
        platform: ``os/arch[/variant]`` to choose from an index (default: this machine's).
        offline: never talk to a registry.

    Returns:
        ``(path, name)``: what to open, and its name for messages and
        provenance (``REF@DIGEST`` for a registry image, the spec's text otherwise).

    Raises:
        RegistryError: the registry refuses or fails, or offline without the image cached.
        DigestMismatchError: a pulled blob does not match its digest.
        LayoutError: the cache cannot be written or the image is malformed.
    """
    if location.local is not None:
        return location.local, location.text
    ref = location.ref
    assert ref is not None
    options = options or RegistryOptions()
    platform = platform or platform_for("")
    images = os.path.join(cache_dir, IMAGES_DIR)
    if ref.digest:
        pinned = _cache_path(images, ref.digest, platform)
        if os.path.isfile(os.path.join(pinned, "index.json")):
            return pinned, str(ref)
    if offline:
        raise RegistryError(f"{location.text}: not in the cache, and --offline forbids pulling it"
                            + ("" if ref.digest else " (pin it by digest: REF@sha256:...)"))
    from microcontainer_tool.registry.auth import load_credentials
    from microcontainer_tool.registry.client import RegistryClient
    from microcontainer_tool.registry.transfer import pull, resolve_manifest

    creds = load_credentials(ref.registry, docker_config=options.docker_config)
    plain_http = options.plain_http or location.plain_http
    with RegistryClient(ref.registry, auth=creds, plain_http=plain_http, insecure=options.insecure,
                        timeout=options.timeout, retries=options.retries) as client:
        digest = resolve_manifest(ref, client, platform)
        path = _cache_path(images, ref.digest or digest, platform)
        if not os.path.isfile(os.path.join(path, "index.json")):
            try:
                os.makedirs(images, exist_ok=True)
            except OSError as error:
                raise RegistryError(f"{images}: cannot create the cache: {error.strerror or error}") from None
            pull(ref.with_digest(digest), path, client, platform)
    return path, str(ref.with_digest(digest))


def _cache_path(images: str, digest: str, platform: str) -> str:
    key = hashlib.sha256(f"{digest}|{platform}".encode()).hexdigest()[:32]
    return os.path.join(images, key)
