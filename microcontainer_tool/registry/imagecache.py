"""Registry images made local: pulled into the build cache once, then read from there.

Registry images are pulled into the cache (``CACHE/images/``) once, keyed by
manifest digest and platform, every blob verified against its digest; a
reference pinned by digest is then used without any network access. Local
images (:func:`~microcontainer_tool.sources.image.locate.locate_image`) are
used where they are.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

from microcontainer_tool.errors import RegistryError
from microcontainer_tool.sources.image.locate import ImageLocation

#: Cache subdirectory of pulled images.
IMAGES_DIR = "images"


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
        deadline: seconds each manifest or blob download may take, plus one per
            256 KiB of its declared size (see :class:`~.client.RegistryClient`).
    """

    plain_http: bool = False
    insecure: bool = False
    docker_config: str | None = None
    timeout: float = 30.0
    retries: int = 3
    deadline: float = 300.0


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
        location: from :func:`~microcontainer_tool.sources.image.locate.locate_image`.
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
                        timeout=options.timeout, retries=options.retries,
                        deadline=options.deadline) as client:
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
