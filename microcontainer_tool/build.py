"""One build: spec -> assembled tree -> layer -> config -> image output.

This is the only module that ties the model to the writers. Output is written
atomically by :mod:`layout`; the layer is staged in a temporary file next to
the output (or taken from a :class:`~.layercache.LayerCache`), so nothing
half-written is ever left at the output path.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from microcontainer_tool.assembly.assemble import Assembly, assemble
from microcontainer_tool.errors import ProbeError, SpecError
from microcontainer_tool.model.provenance import add_record
from microcontainer_tool.model.tree import HostFile
from microcontainer_tool.oci.layer import LayerInfo, LayerLimits
from microcontainer_tool.oci.layercache import LayerCache
from microcontainer_tool.oci.layout import format_for_path, split_reference, write_tree_image
from microcontainer_tool.oci.model import image_config
from microcontainer_tool.sources.image.locate import ImageLocation, locate_image
from microcontainer_tool.sources.sysroot import SysRoot
from microcontainer_tool.spec.imagespec import DEFAULT_PATH, ImageSpec, spec_warnings

if TYPE_CHECKING:
    from microcontainer_tool.closure.proposals import MissingFile
    from microcontainer_tool.registry.imagecache import RegistryOptions
    from microcontainer_tool.runtime.probe import ProbeReport
    from microcontainer_tool.sources.image.parent import ParentImage
    from microcontainer_tool.sources.rpm.root import SharedPackages


@dataclass
class BuildResult:
    """What a build produced.

    Attributes:
        output: the output path.
        format: the output format used.
        manifest_digest: digest of the image manifest (the image's identity).
        config_digest: digest of the image config.
        layer: the layer's digests and size.
        files: number of entries in the layer.
        assembly: the assembled tree and closure.
        warnings: messages for the user.
        sysroot: the root the files were taken from (a directory, the RPM
            sysroot or a source image), for probes.
        rpm_owners: an RPM sysroot's image path -> NEVRA table, else None.
        workdir: the image's working directory.
    """

    output: str
    format: str
    manifest_digest: str
    config_digest: str
    layer: LayerInfo
    files: int
    assembly: Assembly
    warnings: list[str] = field(default_factory=list)
    sysroot: SysRoot | None = None
    rpm_owners: dict[str, str] | None = None
    workdir: str = "/"


def config_for(spec: ImageSpec, assembly: Assembly, layer: LayerInfo, epoch: int,
               parent: ParentImage | None = None) -> dict:
    """The OCI image config of a build.

    Args:
        spec: the spec.
        assembly: the assembled image (user, platform).
        layer: the image's layer (its diff_id).
        epoch: ``SOURCE_DATE_EPOCH``.
        parent: the ``parent:`` image, whose diff_ids and history come first.

    Returns:
        The config as a JSON-able dict.
    """
    values: dict[str, Any] = {
        "user": assembly.identity.config_user,
        "env": dict(spec.env),
        "entrypoint": list(spec.entrypoint),
        "cmd": list(spec.cmd),
        "workdir": spec.workdir,
        "labels": dict(spec.labels),
        "ports": list(spec.ports),
        "volumes": list(spec.mounts),
    }
    if parent is not None:
        values = inherit_from_parent(spec, values, parent.config)
    values["env"].setdefault("PATH", DEFAULT_PATH)
    values["env"] = [f"{k}={v}" for k, v in values["env"].items()]
    arch, variant = assembly.platform
    config = image_config(
        architecture=arch,
        variant=variant,
        created=epoch,
        diff_ids=(parent.diff_ids if parent else []) + [layer.diff_id],
        **values,
    )
    if parent is not None:
        config["history"] = parent.history + config["history"][-1:]
    return config


def build_image(spec: ImageSpec, output: str, fmt: str | None = None, tag: str | None = None,
                name: str | None = None, compression: str = "gzip", epoch: int = 0,
                allow_missing: bool = False, layer_cache: LayerCache | None = None,
                cache_dir: str | None = None, offline: bool = False,
                registry: RegistryOptions | None = None,
                layer_limits: LayerLimits | None = None,
                annotations: Mapping[str, str] | None = None,
                shared_packages: SharedPackages | None = None) -> BuildResult:
    """Build the image a spec describes and write it to ``output``.

    Args:
        spec: the validated spec.
        output: output path (directory, ``.tar``, ``.tar.gz``/``.tgz``).
        fmt: output format, or ``None`` to choose by ``output``'s suffix.
        tag: the image's tag (``org.opencontainers.image.ref.name``; default: the
            tag in ``name``, else ``latest``).
        name: the image's name, ``[HOST[:PORT]/]REPO[:TAG]`` (default: output
            stem): ``io.containerd.image.name`` (podman and containerd name the
            loaded image by it) and docker-archive's ``RepoTags``.
        compression: ``gzip``, ``zstd`` or ``none``.
        epoch: ``SOURCE_DATE_EPOCH``: every timestamp in the output.
        allow_missing: warn instead of failing on missing libraries.
        layer_cache: reuse compressed layers of identical trees from there.
        cache_dir: downloads, repository metadata, extracted packages, pulled
            images and indexed image layers
            (default: :func:`~microcontainer_tool.hostfs.cachedir.default_cache_dir`).
        offline: never download: RPM specs use only the lock and the cache,
            registry images only what the cache holds (pinned by digest).
        registry: how to reach registries for ``from:``/``parent:`` images.
        layer_limits: how far a layer of a ``from:``/``parent:`` image may expand
            when decompressed (default: :class:`~microcontainer_tool.oci.layer.LayerLimits`).
        annotations: more annotations on the image's entry in the index
            (``microcontainer-smith -b``: ``com.oracle.smith.build``).
        shared_packages: a team-wide store of ``.rpm`` files, asked before the
            repositories (``--cache-repo``; layers are shared through
            ``layer_cache``'s ``remote``).

    Returns:
        The build result.

    Raises:
        MicrocontainerError: any input or output problem (nothing is written).
    """
    _one_platform(spec, "this command")
    fmt = format_for_path(output, fmt)
    name, tag = split_reference(name, tag)
    packages = None
    sysroot = None
    notes: list[str] = spec_warnings(spec)
    if cache_dir is None:
        from microcontainer_tool.hostfs.cachedir import default_cache_dir

        cache_dir = default_cache_dir()
    cache = cache_dir
    source = locate_image(spec.from_, spec.base_dir, directory_ok=True)
    if source is not None:
        from microcontainer_tool.registry.imagecache import fetch_image, platform_for
        from microcontainer_tool.sources.image.root import ImageRoot

        path, image_name = fetch_image(source, cache, registry, platform_for(spec.arch), offline)
        sysroot = ImageRoot.open(path, cache, name=image_name, limits=layer_limits,
                                 platform=spec.arch or None)
        image_id = _image_id(source, image_name, sysroot.manifest_digest, sysroot.config_digest)
        sysroot.label = f"image:{image_id}"
        spec = inherit_from_image(spec, sysroot.config)
    parent = None
    parent_id: str | None = None
    if spec.parent:
        from microcontainer_tool.registry.imagecache import fetch_image, platform_for
        from microcontainer_tool.sources.image.parent import open_parent

        location = locate_image(spec.parent, spec.base_dir, directory_ok=False)
        assert location is not None
        path, parent_name = fetch_image(location, cache, registry, platform_for(spec.arch), offline)
        parent = open_parent(path, parent_name, cache, layer_limits)
        parent_id = _image_id(location, parent.name, parent.manifest_digest, parent.config_digest)
        if not ("env" in spec.given and not spec.env):  # ``env: []`` drops all the parent's
            spec = inherit_from_image(spec, parent.config)
    if spec.packages:
        from microcontainer_tool.sources.rpm.root import ensure_lock, lock_path, prepare_sysroot
        from microcontainer_tool.sources.rpm.yumrepos import with_system_repos

        spec = with_system_repos(spec)
        if offline and not os.path.exists(lock_path(spec)):
            raise SpecError(f"no {lock_path(spec)} to build offline from: run `microcontainer lock`")
        lock, written = ensure_lock(spec, cache)
        if written:
            notes.append(f"resolved the packages and wrote {lock_path(spec)}")
        packages = prepare_sysroot(lock, spec, cache, offline=offline, shared=shared_packages)
    assembly = assemble(spec, allow_missing=allow_missing, packages=packages, sysroot=sysroot,
                        cache_dir=cache)
    if spec.arch and assembly.closure is not None:  # every ELF file of the image is of its machine
        from microcontainer_tool.closure.machines import check_machines

        where = "packages" if spec.packages else spec.from_
        check_machines(assembly.closure.objects, spec.arch,
                       f"{spec.where('from')} (arch {spec.arch}, from {where})")
    if parent is not None:
        from microcontainer_tool.sources.image.parent import check_platform, drop_inherited

        check_platform(parent, assembly.platform, spec.where("parent"))
        shared = drop_inherited(assembly.tree, parent)
        if shared:
            notes.append(f"{len(shared)} entries are the parent's already and were left out of the layer")
    add_record(assembly.tree, assembly.packages, {
        "arch": assembly.platform[0],
        "from": "packages" if spec.packages else "image" if source is not None else "directory",
        "from_image": sysroot.label[len("image:"):] if source is not None and sysroot is not None else None,
        "parent": parent_id,
    })
    out_dir = os.path.dirname(os.path.abspath(output))
    os.makedirs(out_dir, exist_ok=True)
    result = write_tree_image(
        output, fmt, assembly.tree, compression, epoch,
        lambda layer: config_for(spec, assembly, layer, epoch, parent), tag,
        name or _default_name(output), layer_cache=layer_cache,
        base_layers=parent.layers if parent is not None else (), annotations=annotations,
    )
    for image_root in (sysroot, parent.root if parent is not None else None):
        if image_root is not None:
            image_root.close()  # its scratch layer tars; a later lookup (--probe) reads the image again
    root = sysroot if sysroot is not None else SysRoot(packages.root if packages is not None
                                                       else spec.sysroot_dir)
    return BuildResult(output, fmt, result.manifest_digest, result.config_digest, result.layer,
                       len(assembly.tree), assembly, notes + list(assembly.warnings), root,
                       dict(packages.owners) if packages is not None else None, spec.workdir or "/")


def probe_build(result: BuildResult, command: str, cache_dir: str | None = None,
                read_dir: str | None = None, tag: str | None = None) -> ProbeReport:
    """Run ``command`` in a built image, traced, and report what it lacks (``build --probe``).

    Args:
        result: the build (its output is run; its sysroot is what missing files are looked up in).
        command: the probe command line, split like a shell would (``shlex``).
        cache_dir: the tool's cache (the unpacked image goes there).
        read_dir: host directory mounted read-only at ``/read``.
        tag: the tag the build gave the image (a layout may hold several).

    Raises:
        ProbeError: the command line is empty or cannot be split.
        RunError: the image cannot be run traced (not root, no runc or strace).
    """
    from microcontainer_tool.closure.proposals import dpkg_owners, table_owners
    from microcontainer_tool.runtime.probe import probe_image

    try:
        args = shlex.split(command)
    except ValueError as error:
        raise ProbeError(f"probe command {command!r}: {error}") from None
    if not args:
        raise ProbeError("the probe command is empty")
    if cache_dir is None:
        from microcontainer_tool.hostfs.cachedir import default_cache_dir

        cache_dir = default_cache_dir()
    assert result.sysroot is not None
    owners = (table_owners(result.rpm_owners) if result.rpm_owners is not None
              else dpkg_owners(result.sysroot))
    return probe_image(result.output, args, result.sysroot, owners, cache_dir=cache_dir, cwd=result.workdir,
                       read_dir=read_dir, tag=tag)


@dataclass
class TraceReport:
    """What ``microcontainer trace`` found.

    Attributes:
        args: the traced command.
        exit_code: its exit status (128 + N when killed by signal N).
        missing: what the program used from the sysroot that the spec's image lacks, by path.
        lookups: how many distinct paths the program looked up.
    """

    args: list[str]
    exit_code: int
    missing: list[MissingFile]
    lookups: int

    def lines(self) -> list[str]:
        """The human-readable report: one line per proposal, then the spec entries to add."""
        from microcontainer_tool.closure.proposals import proposal_lines

        command = shlex.join(self.args)
        out = [f"trace `{command}`: exit status {self.exit_code}, {self.lookups} paths looked up"]
        if not self.missing:
            return out + ["trace: the spec's image has everything the program used"]
        out.append(f"trace: {len(self.missing)} paths the program used are not in the spec's image:")
        return out + proposal_lines(self.missing, "trace: add to the spec:")


def trace_spec(spec: ImageSpec, args: list[str], cache_dir: str | None = None, read_dir: str | None = None,
               network: bool = False, state_dir: str | None = None, offline: bool = False) -> TraceReport:
    """Run ``args`` in the spec's sysroot, traced, and name what the spec's image lacks (``trace``).

    The program runs as a microcontainer whose root is the sysroot (read-only,
    the image's user, ``env`` and working directory, no network unless
    ``network``); what it used is compared with the tree the spec builds
    (assembled in memory, nothing written; missing libraries allowed).

    Args:
        spec: the spec (``from:`` a directory, or ``packages:``).
        args: the command.
        cache_dir: the tool's cache.
        read_dir: host directory mounted read-only at ``/read``.
        network: share the host's network.
        state_dir: container state.
        offline: an RPM spec uses only the lock and the cache.

    Raises:
        UnsupportedError: ``from:`` names an image, or the spec has a ``parent:``.
        RunError: not root, no runc or strace, or the program could not be started.
        MicrocontainerError: the spec cannot be assembled.
    """
    from microcontainer_tool.closure.accesses import Outcome
    from microcontainer_tool.closure.proposals import dpkg_owners, propose, table_owners
    from microcontainer_tool.errors import UnsupportedError
    from microcontainer_tool.runtime.tracer import trace_root

    _one_platform(spec, "trace")
    if cache_dir is None:
        from microcontainer_tool.hostfs.cachedir import default_cache_dir

        cache_dir = default_cache_dir()
    if spec.parent:
        raise UnsupportedError(f"{spec.where('parent')}: trace does not support specs with a parent: image")
    if locate_image(spec.from_, spec.base_dir, directory_ok=True) is not None:
        raise UnsupportedError(f"{spec.where('from')}: trace runs programs in a directory or RPM sysroot; "
                               "from: names an image (trace its files in a directory copy instead)")
    packages = None
    if spec.packages:
        from microcontainer_tool.sources.rpm.root import ensure_lock, lock_path, prepare_sysroot
        from microcontainer_tool.sources.rpm.yumrepos import with_system_repos

        spec = with_system_repos(spec)
        if offline and not os.path.exists(lock_path(spec)):
            raise SpecError(f"no {lock_path(spec)} to trace offline from: run `microcontainer lock`")
        lock, _ = ensure_lock(spec, cache_dir)
        packages = prepare_sysroot(lock, spec, cache_dir, offline=offline)
    assembly = assemble(spec, allow_missing=True, packages=packages, package_facts=False)
    root = SysRoot(packages.root if packages is not None else spec.sysroot_dir)
    owners = table_owners(dict(packages.owners)) if packages is not None else dpkg_owners(root)
    env = dict(spec.env)
    env.setdefault("PATH", DEFAULT_PATH)
    identity = assembly.identity
    run = trace_root(root.root, args, user=f"{identity.uid}:{identity.gid}", cache_dir=cache_dir,
                     env=[f"{key}={value}" for key, value in env.items()], cwd=spec.workdir or "/",
                     net="host" if network else "none", read_dir=read_dir, state_dir=state_dir,
                     label=f"the sysroot {spec.from_ if packages is None else 'of the packages'}")
    tree = assembly.tree
    missing = propose(run.accesses, root, owners, lambda access: access.outcome is not Outcome.MISSING
                      and tree.resolve(access.path) is None)
    return TraceReport(run.args, run.exit_code, missing, len({access.path for access in run.accesses}))


def sysroot_inputs(spec: ImageSpec) -> list[str]:
    """The sysroot's host files a build of ``spec`` takes (``paths`` and the ELF closure), sorted.

    For dependency tracking: the spec is assembled as the build assembles it,
    missing libraries allowed (the build reports them).

    Returns:
        The host paths; none when ``from:`` names an image (the image is the
        input) or the spec lists packages (the lock and the local ``.rpm``
        files, verified by checksum, say all there is).

    Raises:
        MicrocontainerError: the spec names a malformed image, or cannot be assembled.
    """
    if locate_image(spec.from_, spec.base_dir, directory_ok=True) is not None:
        return []
    if spec.packages:
        return []
    assembly = assemble(spec, allow_missing=True, package_facts=False)
    return sorted({entry.content.path for entry in assembly.tree if isinstance(entry.content, HostFile)})


#: Environment variables a microized image takes from its source image when
#: the spec does not set them (README, "Microizing an image").
INHERITED_ENV = ("PATH", "LD_LIBRARY_PATH")


def inherit_from_image(spec: ImageSpec, image_config: dict) -> ImageSpec:
    """The spec with what a microized image inherits from its source image.

    ``PATH`` and ``LD_LIBRARY_PATH`` (used for library resolution too) come
    from the source's ``Env`` and the working directory from its
    ``WorkingDir``, each only when the spec does not set it. Nothing else is
    inherited: an empty ``cmd`` stays empty, the user is the spec's.
    """
    conf = image_config.get("config") or {}
    env = dict(spec.env)
    source_env = dict(item.split("=", 1) for item in conf.get("Env") or [] if "=" in item)
    for key in INHERITED_ENV:
        if key not in env and key in source_env:
            env[key] = source_env[key]
    return replace(spec, env=tuple(env.items()), workdir=spec.workdir or conf.get("WorkingDir") or "")


def inherit_from_parent(spec: ImageSpec, values: dict[str, Any], parent_config: dict) -> dict[str, Any]:
    """Config values a ``parent:`` image passes on, as Dockerfile ``FROM`` does.

    Every key the spec does not set is the parent's: ``Entrypoint``, ``Cmd``
    (but a spec that sets ``entrypoint`` resets ``Cmd``, as Docker does),
    ``WorkingDir``, ``User`` (``user`` or ``root`` set it; without either, and
    without one in the parent, it stays ``10:10``), ``ExposedPorts``
    (``ports``) and ``Volumes`` (``mounts``). ``Env`` and ``Labels`` are merged,
    the spec's entries winning; ``env: []`` or ``labels: {}`` drops the parent's.

    Args:
        spec: the spec (its ``given`` keys say what it set).
        values: the config values from the spec alone (``env`` and ``labels`` as dicts).
        parent_config: the parent image's config.

    Returns:
        The values with the parent's filled in.
    """
    conf = parent_config.get("config") or {}
    given = set(spec.given)
    out = dict(values)

    def strings(key: str) -> list[str]:
        value = conf.get(key)
        return [str(v) for v in value] if isinstance(value, list) else []

    def keys(key: str) -> list[str]:
        value = conf.get(key)
        return sorted(str(k) for k in value) if isinstance(value, dict) else []

    if "entrypoint" not in given:
        out["entrypoint"] = strings("Entrypoint")
    if "cmd" not in given and "entrypoint" not in given:
        out["cmd"] = strings("Cmd")
    if "dir" not in given and isinstance(conf.get("WorkingDir"), str):
        out["workdir"] = conf["WorkingDir"]
    if "user" not in given and "root" not in given and isinstance(conf.get("User"), str) and conf["User"]:
        out["user"] = conf["User"]
    if "ports" not in given:
        out["ports"] = keys("ExposedPorts")
    if "mounts" not in given:
        out["volumes"] = keys("Volumes")
    if not ("env" in given and not spec.env):
        env = dict(item.split("=", 1) for item in strings("Env") if "=" in item)
        env.update(values["env"])
        out["env"] = env
    if not ("labels" in given and not spec.labels):
        labels = conf.get("Labels")
        merged = {str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {}
        merged.update(values["labels"])
        out["labels"] = merged
    return out


def _image_id(location: ImageLocation, name: str, manifest_digest: str, config_digest: str) -> str:
    """How provenance names an image: ``REF@MANIFEST_DIGEST`` from a registry, else its image ID.

    A local image is named by its config digest (Docker's image ID), never by
    its path: where a file lies on the build machine is not part of the image,
    and the same image as an OCI layout or a docker-archive (other manifests,
    other layer compression) is the same source.
    """
    if location.ref is None:
        return config_digest or manifest_digest
    return name if "@sha256:" in name else f"{name}@{manifest_digest}"


def _one_platform(spec: ImageSpec, what: str) -> None:
    """Refuse a multi-platform spec (``arch:`` a list) where one platform's image is made.

    Raises:
        UnsupportedError: the spec lists several platforms.
    """
    if spec.platforms:
        from microcontainer_tool.errors import UnsupportedError

        raise UnsupportedError(f"{spec.where('arch')}: arch lists {len(spec.platforms)} platforms and {what} "
                               "handles one: `microcontainer build` builds them all (an image index), "
                               "`build --platform ARCH` one")


def default_name(output: str) -> str:
    """The image name a build gives by default: the output's stem, cleaned to a valid name."""
    return _default_name(output)


def _default_name(output: str) -> str:
    base = os.path.basename(os.path.normpath(output))
    for suffix in (".tar.gz", ".tgz", ".tar"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    cleaned = "".join(c if c.isalnum() or c in "._-" else "-" for c in base.lower()).strip("._-")
    return cleaned or "microcontainer"
