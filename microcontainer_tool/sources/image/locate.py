"""Images a spec names (``from:`` and ``parent:``): where they are.

A spec may name an image in four ways:

* an OCI layout directory, ``DIR`` or ``DIR:TAG``;
* an archive file: oci-archive (``.tar``), smith's ``.tar.gz``, or a
  docker-archive (``docker save`` output), ``FILE`` or (smith's form)
  ``FILE:TAG`` for a ``.tar``, ``.tar.gz`` or ``.tgz``;
* a registry reference, spelt ``docker://REF``, ``https://HOST/REPO[:TAG]``,
  ``http://HOST/REPO[:TAG]`` (plain HTTP), or a bare ``HOST/REPO[:TAG][@DIGEST]``
  whose first component is a host (it has a dot or a port, or is
  ``localhost``), exactly as Docker tells a registry from a Docker Hub user;
* for ``from:`` only, anything else is a directory tree (a sysroot).

A local path always wins over a registry reading of the same text.
:func:`~microcontainer_tool.registry.imagecache.fetch_image` makes a located
image local (pulling a registry image into the cache).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from microcontainer_tool.errors import SpecError

if TYPE_CHECKING:
    from microcontainer_tool.registry.reference import Reference

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
            if scheme != "docker://" and rest.split("?", 1)[0].endswith(_ARCHIVE_SUFFIXES):
                raise SpecError(f"{text}: downloading an image archive is not supported yet: "
                                "download it and name the file")
            from microcontainer_tool.registry.reference import Reference

            return ImageLocation(text, ref=Reference.parse(rest), plain_http=scheme == "http://")
    host = os.path.normpath(os.path.join(base_dir, text))
    if os.path.isfile(host) and host.endswith(_ARCHIVE_SUFFIXES):
        return ImageLocation(text, local=host)
    if os.path.isfile(os.path.join(host, "oci-layout")):
        return ImageLocation(text, local=host)
    left, sep, tag = text.rpartition(":")
    if sep and left and "/" not in tag:
        layout = os.path.normpath(os.path.join(base_dir, left))
        if os.path.isfile(os.path.join(layout, "oci-layout")) or (
                os.path.isfile(layout) and layout.endswith(_ARCHIVE_SUFFIXES)):
            return ImageLocation(text, local=f"{layout}:{tag}")
    if not os.path.exists(host) and (host.endswith(_ARCHIVE_SUFFIXES) or (
            sep and left and "/" not in tag and left.endswith(_ARCHIVE_SUFFIXES))):
        raise SpecError(f"{text}: no such image archive")
    if os.path.exists(host):
        if directory_ok and os.path.isdir(host):
            return None
        raise SpecError(f"{text}: not an image (an OCI layout, an image archive or a registry reference)")
    first = text.split("/", 1)[0]
    if "/" in text and ("." in first or ":" in first or first == "localhost"):
        from microcontainer_tool.registry.reference import Reference

        return ImageLocation(text, ref=Reference.parse(text))
    if directory_ok:
        return None  # the assembler reports the missing directory
    raise SpecError(f"{text}: no such image (write docker://{text} for a registry image)")
