"""SCons adapter: the ``MicroImage`` pseudo-builder, its scanner and ``MCT_*`` variables.

Only glue lives here: specs are validated by :mod:`.spec`, images are built by
:func:`.build.build_image`. Load the tool as ``tools=['default', 'microimage']``
(see the README for the three ways SCons can find it).

``env.MicroImage(target, source, **keywords)``:

* ``source``: the spec file (``*.yaml``) and/or program nodes (same as
  ``BINARIES``).
* keywords named like spec keys in upper case (``FROM PATHS EXCLUDES FILES
  LIBS NSS ROOT USER GROUPS MOUNTS ENTRYPOINT CMD DIR ENV LABELS PORTS ARCH``)
  replace the spec's value, except ``FILES``, ``ENV`` and ``LABELS``, which
  extend it. ``BINARIES`` go to ``$MCT_BINDIR``, ``LIBRARIES`` to
  ``$MCT_LIBDIR``. Any other keyword is a construction-variable override.
* The target is an OCI layout directory unless it ends in ``.tar``
  (oci-archive), ``.tar.gz``/``.tgz`` (smith) or ``$MCT_FORMAT`` says
  otherwise. A layout ``DIR`` is built as the cacheable oci-archive
  ``DIR.tar`` and then synced into ``DIR`` (``DIR/index.json`` is the target):
  ``CacheDir`` then restores whole images.

Signatures: the canonical spec (with the library's ``FORMAT_VERSION``) is a
``Value`` source; every ``MCT_*`` variable that changes output bytes is in the
action's ``varlist``; the scanner adds every sysroot file the image takes
(selected paths and the ELF closure) as an implicit dependency.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import sys
from typing import Any

import SCons.Action
import SCons.Builder
import SCons.Errors
import SCons.Node.FS
import SCons.Scanner
import SCons.Tool
import SCons.Util
import yaml

from . import FORMAT_VERSION
from .errors import MicrocontainerError

TOOL_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "site_tools")

#: MicroImage keywords that set spec keys.
SPEC_KEYWORDS = {
    "FROM": "from", "PATHS": "paths", "EXCLUDES": "excludes", "FILES": "files", "LIBS": "libs",
    "NSS": "nss", "ROOT": "root", "USER": "user", "GROUPS": "groups", "MOUNTS": "mounts",
    "ENTRYPOINT": "entrypoint", "CMD": "cmd", "DIR": "dir", "ENV": "env", "LABELS": "labels",
    "PORTS": "ports", "ARCH": "arch", "PACKAGES": "packages", "REPOS": "repos",
    "EXCLUDE_PACKAGES": "exclude_packages", "INSTALL_WEAK_DEPS": "install_weak_deps",
}
#: Construction variables that change the output bytes (in the action's varlist).
OUTPUT_VARIABLES = ["MCT_COMPRESSION", "MCT_TAG", "MCT_NAME", "MCT_SOURCE_DATE_EPOCH",
                    "MCT_ALLOW_MISSING", "_MCT_FORMAT"]
_ARCHIVE_SUFFIXES = {".tar": "oci-archive", ".tar.gz": "smith", ".tgz": "smith"}


def register() -> None:
    """Let SCons find the ``microimage`` tool of the installed package.

    Product repos call this from ``site_scons/site_init.py`` (one line:
    ``import microcontainer_tool.sconstool as m; m.register()``).
    """
    if TOOL_DIR not in SCons.Tool.DefaultToolpath:
        SCons.Tool.DefaultToolpath.append(TOOL_DIR)


def exists(env: Any) -> bool:
    """Whether the library imports (the tool is usable)."""
    try:
        from . import build  # noqa: F401
    except ImportError:
        return False
    return True


def generate(env: Any) -> None:
    """Add ``MicroImage`` and the ``MCT_*`` defaults to ``env``."""
    env.SetDefault(
        MCT_COMPRESSION="gzip",
        MCT_FORMAT="",
        MCT_TAG="latest",
        MCT_NAME="",
        MCT_SOURCE_DATE_EPOCH=os.environ.get("SOURCE_DATE_EPOCH", "0"),
        MCT_ALLOW_MISSING=False,
        MCT_BINDIR="/usr/local/bin",
        MCT_LIBDIR="/usr/local/lib",
        MCT_CACHEDIR="#.mct-cache",
        MCT_COMSTR="MicroImage $TARGET",
        MCT_LAYOUTCOMSTR="OCI layout ${TARGET.dir}",
    )
    env["BUILDERS"]["_MicroImageArchive"] = SCons.Builder.Builder(
        action=SCons.Action.Action(_build_archive, "$MCT_COMSTR", varlist=OUTPUT_VARIABLES),
        target_scanner=SCons.Scanner.Scanner(function=_scan, name="MicroImageScanner"),
        target_factory=SCons.Node.FS.File,
        source_factory=SCons.Node.FS.File,
    )
    env["BUILDERS"]["_MicroImageLayout"] = SCons.Builder.Builder(
        action=SCons.Action.Action(_sync_layout, "$MCT_LAYOUTCOMSTR"),
        target_factory=SCons.Node.FS.File,
    )
    env.AddMethod(micro_image, "MicroImage")


def micro_image(env: Any, target: Any, source: Any = None, **keywords: Any) -> list[Any]:
    """The ``MicroImage`` pseudo-builder (see the module docstring).

    Returns:
        The target nodes: the image archive, and for a layout its index.json.

    Raises:
        SCons.Errors.UserError: the spec or keywords are invalid (one line).
    """
    from .spec import ImageSpec, check_spec, load_spec, merge_specs

    name = str(SCons.Util.flatten([target])[0])
    sources = [s for s in env.Flatten([source]) if s is not None] if source is not None else []
    spec_nodes = [env.File(s) for s in sources if str(s).endswith((".yaml", ".yml"))]
    rpm_nodes = [env.File(s) for s in sources if str(s).endswith(".rpm")]
    binaries = [s for s in sources if not str(s).endswith((".yaml", ".yml", ".rpm"))]
    binaries += env.Flatten([keywords.pop("BINARIES", [])])
    libraries = env.Flatten([keywords.pop("LIBRARIES", [])])
    given = {key: keywords.pop(key) for key in list(keywords) if key in SPEC_KEYWORDS}
    overrides = env.Override(keywords) if keywords else env
    try:
        if spec_nodes:
            spec = load_spec(spec_nodes[0].srcnode().abspath, complete=False)
        else:
            spec = ImageSpec(base_dir=env.Dir(".").srcnode().abspath, source=f"MicroImage('{name}')")
        project: list[Any] = list(spec_nodes)
        files: dict[str, str] = {}
        for image_path, local in dict(given.pop("FILES", {})).items():
            node = env.File(local) if isinstance(local, str) else local
            files[image_path] = node
        for directory, nodes in (("$MCT_BINDIR", binaries), ("$MCT_LIBDIR", libraries)):
            for node in nodes:
                node = env.File(node) if isinstance(node, str) else node
                files[f"{overrides.subst(directory).rstrip('/')}/{node.name}"] = node
        data = {SPEC_KEYWORDS[k]: _plain(v) for k, v in given.items()}
        if rpm_nodes:
            data["packages"] = list(data.get("packages", [])) + [
                os.path.relpath(_host_path(node), spec.base_dir) for node in rpm_nodes]
            project += rpm_nodes
        if files:
            data["files"] = {path: os.path.relpath(_host_path(node), spec.base_dir)
                             for path, node in files.items()}
            project += list(files.values())
        if data:
            spec = merge_specs(spec, _keyword_spec(data, spec.base_dir))
        check_spec(spec)
    except MicrocontainerError as error:
        _fail_in_sconscript(f"MicroImage('{name}'): {error}")
    project += _spec_inputs(env, spec, files)
    if spec.packages:
        project += _package_inputs(env, spec, name)
    project += _image_inputs(env, spec)
    top = env.Dir("#").abspath
    payload = json.dumps({"format": FORMAT_VERSION, "base": os.path.relpath(spec.base_dir, top),
                          "spec": spec.canonical()}, sort_keys=True)
    value = env.Value(payload)
    fmt = overrides.subst("$MCT_FORMAT") or _format_by_suffix(name)
    build_kw = {"_MCT_SPEC": payload, "_MCT_PROJECT": [_host_path(n) for n in project]}
    if fmt != "oci":
        return env.Flatten(overrides._MicroImageArchive(name, [value] + project, _MCT_FORMAT=fmt, **build_kw))
    archive = overrides._MicroImageArchive(f"{name}.tar", [value] + project, _MCT_FORMAT="oci-archive",
                                           **build_kw)
    layout = overrides._MicroImageLayout(f"{name}/index.json", archive)
    env.NoCache(layout)
    env.Clean(layout, env.Dir(name))
    return env.Flatten([archive, layout])


def _fail_in_sconscript(message: str) -> None:
    """Stop reading SConscripts with a one-line error pointing at the caller's line.

    A raised ``UserError`` would make SCons point at this module's frame; the
    user wants the SConscript line that called ``MicroImage``.
    """
    here = os.path.abspath(__file__)
    for frame in inspect.stack()[1:]:
        if os.path.abspath(frame.filename) != here and "SCons" not in frame.filename.split(os.sep):
            print(f"scons: *** {message}", file=sys.stderr)
            print(f'File "{frame.filename}", line {frame.lineno}, in {frame.function}', file=sys.stderr)
            break
    else:
        raise SCons.Errors.UserError(message)
    raise SystemExit(2)


def _keyword_spec(data: dict[str, Any], base_dir: str) -> Any:
    """Validate MicroImage keywords with the spec's own rules (messages without a line)."""
    from .errors import SpecError
    from .spec import parse_spec

    text = yaml.dump(data, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper), default_flow_style=False)
    try:
        return parse_spec(text, "<keywords>", base_dir, complete=False)
    except SpecError as error:
        raise SpecError(re.sub(r"^<keywords>(:\d+)?: ", "", str(error))) from None


def _host_path(node: Any) -> str:
    """Where a node's bytes are: built nodes in the build dir, sources in the source dir."""
    return node.abspath if node.has_builder() else node.srcnode().abspath


def _plain(value: Any) -> Any:
    """Turn SCons nodes and tuples in keyword values into YAML-able data."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) or SCons.Util.is_List(value):
        return [_plain(v) for v in value]
    if isinstance(value, (bool, int, str)):
        return value
    return str(value)


def _spec_inputs(env: Any, spec: Any, overridden: dict[str, Any]) -> list[Any]:
    """Project files the spec reads: its ``files`` entries and the rootfs/ overlay."""
    nodes = []
    for image_path, local in spec.files:
        if image_path not in overridden:
            path = os.path.normpath(os.path.join(spec.base_dir, local))
            if os.path.isfile(path):
                nodes.append(env.File(path))
    overlay = spec.overlay_dir
    for dirpath, dirnames, filenames in os.walk(overlay):
        dirnames.sort()
        for filename in sorted(filenames):
            nodes.append(env.File(os.path.join(dirpath, filename)))
    return nodes


def _package_inputs(env: Any, spec: Any, name: str) -> list[Any]:
    """An RPM spec's lock file and local ``.rpm`` files, content-tracked.

    SCons builds never resolve: the lock must exist (``microcontainer lock``),
    so a no-op build never touches a repository.
    """
    from .rpmroot import local_rpms, lock_path

    lock = lock_path(spec)
    if not os.path.exists(lock):
        _fail_in_sconscript(f"MicroImage('{name}'): no {lock}: run `microcontainer lock -c {spec.source}` first")
    return [env.File(lock)] + [env.File(path) for path in local_rpms(spec)]


def _image_inputs(env: Any, spec: Any) -> list[Any]:
    """A microized image's source: the archive file, or the layout's index.json and blobs."""
    from .build import image_source

    source = image_source(spec)
    if source is None:
        return []
    path = source.rsplit(":", 1)[0] if not os.path.exists(source) else source
    if os.path.isfile(path):
        return [env.File(path)]
    blobs = os.path.join(path, "blobs", "sha256")
    names = sorted(os.listdir(blobs)) if os.path.isdir(blobs) else []
    return [env.File(os.path.join(path, "index.json"))] + [env.File(os.path.join(blobs, n)) for n in names]


def _format_by_suffix(name: str) -> str:
    for suffix, fmt in _ARCHIVE_SUFFIXES.items():
        if name.endswith(suffix):
            return fmt
    return "oci"


def _spec_of(payload: str, top: str) -> Any:
    from .spec import spec_from_canonical

    data = json.loads(payload)
    return spec_from_canonical(data["spec"], os.path.normpath(os.path.join(top, data["base"])),
                               "MicroImage spec")


def _build_archive(target: list[Any], source: list[Any], env: Any) -> int:
    """Action: build the image archive with the library."""
    from .build import build_image
    from .layercache import LayerCache

    out = target[0].abspath
    try:
        spec = _spec_of(source[0].read(), env.Dir("#").abspath)
        cache_dir = env.subst("$MCT_CACHEDIR")
        epoch = env.subst("$MCT_SOURCE_DATE_EPOCH")
        if not epoch.isdigit():
            raise MicrocontainerError(f"MCT_SOURCE_DATE_EPOCH={epoch!r} is not a non-negative integer")
        result = build_image(
            spec, out, fmt=env.subst("$_MCT_FORMAT"), tag=env.subst("$MCT_TAG"),
            name=env.subst("$MCT_NAME") or None, compression=env.subst("$MCT_COMPRESSION"),
            epoch=int(epoch), allow_missing=bool(env.get("MCT_ALLOW_MISSING")),
            layer_cache=LayerCache(env.Dir(cache_dir).abspath) if cache_dir else None,
            cache_dir=env.Dir(cache_dir).abspath if cache_dir else None,
        )
    except MicrocontainerError as error:
        raise SCons.Errors.UserError(f"{target[0]}: {error}") from None
    for warning in result.warnings:
        print(f"microcontainer: warning: {target[0]}: {warning}")
    return 0


def _sync_layout(target: list[Any], source: list[Any], env: Any) -> int:
    """Action: make the layout directory hold the archive's image."""
    from .layout import sync_layout_from_archive

    try:
        sync_layout_from_archive(source[0].abspath, os.path.dirname(target[0].abspath))
    except MicrocontainerError as error:
        raise SCons.Errors.UserError(f"{target[0]}: {error}") from None
    return 0


_SCAN_MEMO: dict[tuple[Any, ...], list[str]] = {}


def _scan(node: Any, env: Any, path: Any) -> list[Any]:
    """Scanner: every sysroot file the image takes, as implicit dependencies.

    The whole image is resolved (``paths`` and the ELF closure, through the
    same code as the build) once per state of its project files; sources not
    built yet give nothing, and SCons rescans after building them.
    """
    payload = env.get("_MCT_SPEC")
    if not payload:
        return []
    project = list(env.get("_MCT_PROJECT", []))
    state = []
    for project_path in project:
        try:
            st = os.stat(project_path)
        except OSError:
            return []  # not built yet: rescanned after it is
        state.append((project_path, st.st_mtime_ns, st.st_size, st.st_ino))
    key = (payload, tuple(state))
    if key not in _SCAN_MEMO:
        _SCAN_MEMO[key] = _sysroot_inputs(payload, env.Dir("#").abspath, set(project))
    return [env.File(p) for p in _SCAN_MEMO[key]]


def _sysroot_inputs(payload: str, top: str, project: set[str]) -> list[str]:
    from .assemble import assemble
    from .tree import HostFile

    try:
        spec = _spec_of(payload, top)
        from .build import image_source

        if image_source(spec) is not None:
            return []  # the source image itself is a tracked source (blobs are content-addressed)
        if spec.packages:
            # The sysroot is the lock's packages, verified by checksum: the lock
            # file and local .rpm files (explicit sources) say all there is.
            return []
        assembly = assemble(spec, allow_missing=True)
    except MicrocontainerError:
        return []  # the build reports it
    paths = {entry.content.path for entry in assembly.tree
             if isinstance(entry.content, HostFile) and entry.content.path not in project}
    return sorted(paths)
