"""Multi-platform builds: one spec with ``arch:`` a list -> one image per platform -> one image index.

Each platform is an ordinary single-platform build
(:func:`microcontainer_tool.build.build_image`) of the spec narrowed to it
(:func:`~microcontainer_tool.spec.imagespec.platform_specs`): its own sysroot
(``from:`` per platform), its own ELF closure under that machine's loader
rules, and a check that every ELF file in its closure is of that machine
(:func:`~microcontainer_tool.closure.machines.check_machines`). Each is
written as an OCI layout of its own, then
:func:`~microcontainer_tool.oci.imageindex.write_index_image` joins them.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from microcontainer_tool.build import BuildResult, build_image, default_name
from microcontainer_tool.errors import SpecError
from microcontainer_tool.hostfs.atomic import make_temp_dir
from microcontainer_tool.oci.imageindex import (
    IndexResult,
    PlatformImage,
    check_index_format,
    read_platform_image,
    write_index_image,
)
from microcontainer_tool.oci.layer import LayerLimits
from microcontainer_tool.oci.layercache import LayerCache
from microcontainer_tool.oci.layout import format_for_path, split_reference, sync_layout_from_archive
from microcontainer_tool.registry.imagecache import RegistryOptions
from microcontainer_tool.spec.imagespec import ARCHES, ImageSpec, platform_specs

if TYPE_CHECKING:
    from microcontainer_tool.sources.rpm.root import SharedPackages


@dataclass
class PlatformsResult:
    """What a multi-platform build produced.

    Attributes:
        output: the output path.
        format: the output format.
        index_digest: digest of the image index.
        builds: each platform's build (its ``output`` is its own layout, gone
            after the build unless ``platform_dir`` kept it), in index order.
        platforms: each platform as ``os/arch[/variant]``, in index order.
        warnings: messages for the user, each prefixed with its platform.
    """

    output: str
    format: str
    index_digest: str
    builds: list[BuildResult]
    platforms: list[str]
    warnings: list[str] = field(default_factory=list)


def select_platform(spec: ImageSpec, platform: str) -> ImageSpec:
    """The single-platform spec of ``platform`` (``arm64``, ``aarch64``, ``linux/arm64``, ``linux/arm64/v8``).

    Raises:
        SpecError: the spec does not list that platform.
    """
    parts = platform.split("/")
    arch = parts[1] if len(parts) > 1 else parts[0]
    arch = {rpm: oci for oci, rpm in ARCHES.items()}.get(arch, arch)  # aarch64 is arm64
    for one in platform_specs(spec):
        if one.arch == arch:
            return one
    listed = ", ".join(spec.platforms) if spec.platforms else spec.arch or "(detected)"
    raise SpecError(f"{spec.where('arch')}: the spec builds no {platform} image (arch: {listed})")


def platform_layout(platform_dir: str, arch: str) -> str:
    """Where a kept per-platform layout of ``arch`` lies under ``platform_dir``."""
    return os.path.join(platform_dir, arch)


def build_one_platform(spec: ImageSpec, layout: str, tag: str, name: str, **options: object) -> BuildResult:
    """Build one platform's image (a single-platform spec) as an OCI layout.

    :func:`~microcontainer_tool.build.build_image` checks that every ELF file
    of the image is of ``spec.arch``'s machine.

    Args:
        spec: a spec from :func:`~microcontainer_tool.spec.imagespec.platform_specs` (``arch`` set).
        layout: the layout directory to write.
        tag: the image's tag.
        name: the image's name.
        options: passed to :func:`~microcontainer_tool.build.build_image`.

    Raises:
        ElfError: an ELF file of the image is of another machine than ``spec.arch``.
        MicrocontainerError: as :func:`~microcontainer_tool.build.build_image`.
    """
    return build_image(spec, layout, fmt="oci", tag=tag, name=name, **options)  # type: ignore[arg-type]


def build_platforms(spec: ImageSpec, output: str, fmt: str | None = None, tag: str | None = None,
                    name: str | None = None, compression: str = "gzip", epoch: int = 0,
                    allow_missing: bool = False, layer_cache: LayerCache | None = None,
                    cache_dir: str | None = None, offline: bool = False,
                    registry: RegistryOptions | None = None,
                    layer_limits: LayerLimits | None = None,
                    annotations: Mapping[str, str] | None = None,
                    platform_dir: str | None = None,
                    shared_packages: SharedPackages | None = None) -> PlatformsResult:
    """Build every platform of a multi-platform spec and write them as one image index to ``output``.

    Args:
        spec: a spec whose ``arch:`` is a list.
        output: output path (directory, ``.tar``, ``.tar.gz``/``.tgz``).
        fmt: output format (not ``docker-archive``), or ``None`` to choose by ``output``'s suffix.
        tag: the index's tag (default: the tag in ``name``, else ``latest``).
        name: the image's name (default: output stem).
        compression: ``gzip``, ``zstd`` or ``none``.
        epoch: ``SOURCE_DATE_EPOCH``.
        allow_missing: warn instead of failing on missing libraries.
        layer_cache: reuse compressed layers of identical trees.
        cache_dir: the tool's cache.
        offline: never download.
        registry: how to reach registries for ``from:``/``parent:`` images.
        layer_limits: how far a source image's layer may expand.
        annotations: more annotations on the index's entry in ``index.json``.
        platform_dir: keep each platform's layout at ``platform_dir/ARCH``
            (default: a temporary directory beside ``output``, removed).
        shared_packages: a team-wide store of ``.rpm`` files (``--cache-repo``).

    Returns:
        The index digest and each platform's build.

    Raises:
        SpecError: the spec lists no platforms.
        UnsupportedError: ``docker-archive`` output.
        ElfError: a platform's image holds an ELF file of another machine.
        MicrocontainerError: as :func:`~microcontainer_tool.build.build_image`.
    """
    if not spec.platforms:
        raise SpecError(f"{spec.where('arch')}: not a multi-platform spec (arch is not a list)")
    fmt = format_for_path(output, fmt)
    check_index_format(output, fmt)
    name, tag = split_reference(name, tag)
    name = name or default_name(output)
    options = {"compression": compression, "epoch": epoch, "allow_missing": allow_missing,
               "layer_cache": layer_cache, "cache_dir": cache_dir, "offline": offline,
               "registry": registry, "layer_limits": layer_limits, "shared_packages": shared_packages}
    target = os.path.abspath(output)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    temp = None
    if platform_dir is None:
        temp = make_temp_dir(os.path.dirname(target), f".{os.path.basename(target)}.platforms-")
    work = platform_dir or temp
    assert work is not None
    try:
        builds: list[BuildResult] = []
        images: list[PlatformImage] = []
        warnings: list[str] = []
        for one in platform_specs(spec):
            build = build_one_platform(one, platform_layout(work, one.arch), tag, name, **options)
            image = read_platform_image(build.output)
            builds.append(build)
            images.append(image)
            warnings += [f"{image.platform_text}: {warning}" for warning in build.warnings]
        written = join_platforms(images, output, fmt, tag, name, annotations)
        return PlatformsResult(output, written.format, written.index_digest, builds,
                               [image.platform_text for image in images], warnings)
    finally:
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)


def join_archives(archives: Sequence[str], output: str, fmt: str | None, tag: str | None = None,
                  name: str | None = None, annotations: Mapping[str, str] | None = None) -> IndexResult:
    """Join single-platform oci-archives (one image each) into one multi-platform image at ``output``.

    Each archive is read into a temporary layout beside ``output`` (removed
    after), in the order given.

    Args:
        archives: the per-platform oci-archives (as :func:`build_one_platform`'s
            builds would write them as archives).
        output: the output path.
        fmt: output format, or ``None`` to choose by ``output``'s suffix.
        tag: the index's tag (default: the tag in ``name``, else ``latest``).
        name: the image's name (default: output stem).
        annotations: more annotations on the index's entry.

    Raises:
        LayoutError: an archive does not hold exactly one image, or the output cannot be written.
    """
    name, tag = split_reference(name, tag)
    target = os.path.abspath(output)
    work = make_temp_dir(os.path.dirname(target), f".{os.path.basename(target)}.platforms-")
    try:
        images = []
        for number, archive in enumerate(archives):
            layout = os.path.join(work, str(number))
            sync_layout_from_archive(archive, layout)
            images.append(read_platform_image(layout))
        return join_platforms(images, output, fmt, tag, name or default_name(output), annotations)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def join_platforms(images: Sequence[PlatformImage], output: str, fmt: str | None, tag: str, name: str,
                   annotations: Mapping[str, str] | None = None) -> IndexResult:
    """Write per-platform images as one image index.

    See :func:`~microcontainer_tool.oci.imageindex.write_index_image`.
    """
    return write_index_image(output, fmt, images, tag, name, annotations)
