"""The bundle cache: every image unpacked once, read-only, shared by its containers.

:func:`make_bundle` extracts an image's layers (:func:`~microcontainer_tool.runtime.extractor.extract_image`)
into ``CACHE/bundles/<manifest digest>/rootfs``, built in a temporary directory
and renamed into place, so concurrent runs share it.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from typing import Any

from microcontainer_tool.errors import RunError
from microcontainer_tool.hostfs.atomic import make_temp_dir, publish_dir
from microcontainer_tool.oci.imageview import open_image
from microcontainer_tool.runtime.extractor import extract_image


@dataclass(frozen=True)
class Bundle:
    """An unpacked image, shared by every container of it.

    Attributes:
        image: the image reference as given.
        digest: its manifest digest.
        rootfs: the cached root filesystem (``CACHE/bundles/<digest>/rootfs``).
        image_config: the image's OCI configuration (with ``config``, ``rootfs``...).
    """

    image: str
    digest: str
    rootfs: str
    image_config: dict[str, Any]


def make_bundle(image: str, cache_dir: str, tag: str | None = None, platform: str | None = None) -> Bundle:
    """Unpack ``image`` into the cache (once per manifest digest) and return it.

    Args:
        image: an OCI layout ``DIR[:TAG]``, an oci-archive, a smith ``.tar.gz`` or a
            docker-archive.
        cache_dir: the tool's cache; root filesystems go in ``cache_dir/bundles/``.
        tag: the image to pick when the layout holds several.
        platform: ``[OS/]ARCH[/VARIANT]``: the image to pick from a multi-platform index.

    Raises:
        LayoutError: the image cannot be read or a blob does not match its digest.
        RunError: a layer holds an unsafe member, or ``cache_dir/bundles`` cannot be created.
        OutputError: the cache is not writable (no temporary directory, or the rename failed).
    """
    with open_image(image, tag, platform) as view:
        digest = view.manifest_digest
        bundles = os.path.join(os.path.abspath(cache_dir), "bundles")
        final = os.path.join(bundles, digest)
        rootfs = os.path.join(final, "rootfs")
        if not os.path.isdir(rootfs):
            try:
                os.makedirs(bundles, exist_ok=True)
            except OSError as error:
                raise RunError(f"{bundles}: cannot create: {error.strerror or error}") from None
            temp = make_temp_dir(bundles, ".tmp-")
            try:
                os.chmod(temp, 0o755)
                os.mkdir(os.path.join(temp, "rootfs"), 0o755)
                extract_image(view, os.path.join(temp, "rootfs"))
                with open(os.path.join(temp, "config.json"), "w", encoding="utf-8") as handle:
                    json.dump(view.config, handle, sort_keys=True)
                publish_dir(temp, final)  # a concurrent run that got there first keeps its copy
            except OSError as error:
                raise RunError(f"{image}: cannot unpack into {bundles}: {error.strerror or error}") from None
            finally:
                if os.path.exists(temp):
                    shutil.rmtree(temp, ignore_errors=True)
            if not os.path.isdir(rootfs):
                raise RunError(f"{final}: exists but holds no rootfs; remove it")
        return Bundle(image, digest, rootfs, view.config)
