"""SCons adapter: the ``MicroImage`` and ``MicroPush`` pseudo-builders, a scanner, ``MCT_*`` variables.

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

``env.MicroPush(target, image, REF="host/repo:tag", **overrides)`` pushes an
image with :func:`.transfer.push` and writes the stamp file ``target``: exactly
``REF@sha256:<manifest digest>`` and a newline, with ``REF`` normalized as
:class:`.reference.Reference` prints it. ``image`` is what ``MicroImage``
returned (the layout's archive ``NAME.tar`` is pushed and depended on: it is
the layout's content, and needs no synced layout), an archive, or a path (an
archive, or a layout directory, tracked by its ``index.json``). The stamp's
sources are the image and a ``Value`` of ``REF``; the push options below are
in the ``varlist``: the push runs again only when one of these changes (or the
stamp is deleted). The stamp is ``NoCache``: a ``CacheDir`` never stands in for
a push. A failed push writes no stamp and is one ``scons: ***`` line. Other
keywords are construction-variable overrides. Variables:

* ``MCT_PUSH_PLAIN_HTTP``: talk plain HTTP to the registry (default false).
* ``MCT_PUSH_INSECURE``: do not verify the registry's TLS certificate (default false).
* ``MCT_DOCKER_MEDIA_TYPES``: push a Docker schema 2 manifest (its digest, the
  one recorded, differs from the built one; default false).
* ``MCT_DOCKER_CONFIG``: Docker ``config.json`` file or directory holding the
  credentials (relative paths from the top directory; default ``$DOCKER_CONFIG``
  or ``~/.docker``). Credentials never appear in output.
* ``MCT_PUSHCOMSTR``: what SCons prints for a push (default ``MicroPush $TARGET``).

Images that ``from:``/``parent:`` name by registry reference are pulled into
``$MCT_CACHEDIR`` (pin them by digest: SCons cannot see a tag move):

* ``MCT_PULL_PLAIN_HTTP``: talk plain HTTP to those registries (default false).
* ``MCT_PULL_INSECURE``: do not verify their TLS certificates (default false).
  ``MCT_DOCKER_CONFIG`` gives the credentials for pulls too.

* ``MCT_MAX_LAYER_SIZE``, ``MCT_MAX_LAYER_RATIO``: how far a layer of a
  ``from:``/``parent:`` image may expand when decompressed (as ``build
  --max-layer-size``/``--max-layer-ratio``; default ``""``: 16G and 1000).

A build cache shared through a registry repository (as ``build --cache-repo``;
none of these changes output bytes, so none is in a signature):

* ``MCT_CACHE_REPO``: ``REGISTRY/REPO`` whose entries stand in for layer and
  RPM work (default: ``$MCT_CACHE_REPO`` from the environment, else none).
  ``MCT_DOCKER_CONFIG`` gives its credentials. ``MicroPush`` to the same
  registry mounts blobs from it instead of uploading them.
* ``MCT_CACHE_REPO_READONLY``: only read it (default: ``$MCT_CACHE_REPO_READONLY``).
* ``MCT_CACHE_REPO_PLAIN_HTTP``, ``MCT_CACHE_REPO_INSECURE``: as ``MCT_PULL_*``, for it.

``env.CacheDir("DIR", RegistryCacheDir)`` backs a SCons ``CacheDir`` with the
same repository (any target: see :class:`RegistryCacheDir`).

The flags take booleans or strings (``""``, ``0``, ``false``, ``no``, ``off``
are false).

Multi-platform images: a spec (or an ``ARCH`` keyword) whose ``arch`` is a list
builds each platform as its own node, the oci-archive
``NAME.platforms/ARCH.tar`` (its own spec ``Value``, scanner and sysroot
inputs), and joins them into one image index at the target: a change to one
platform's inputs rebuilds that platform's archive only, then the (cheap)
join. ``docker-archive`` targets are refused for them.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import re
import sys
from typing import Any

import SCons.Action
import SCons.Builder
import SCons.CacheDir
import SCons.Errors
import SCons.Node.FS
import SCons.Scanner
import SCons.Tool
import SCons.Util
import yaml

from microcontainer_tool import FORMAT_VERSION, jsontext
from microcontainer_tool.errors import MicrocontainerError, SpecError
from microcontainer_tool.hostfs.stamps import keep_signature, kept_signature

TOOL_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "site_tools")

#: MicroImage keywords that set spec keys.
SPEC_KEYWORDS = {
    "FROM": "from", "PATHS": "paths", "EXCLUDES": "excludes", "FILES": "files", "LIBS": "libs",
    "NSS": "nss", "ROOT": "root", "USER": "user", "GROUPS": "groups", "MOUNTS": "mounts",
    "ENTRYPOINT": "entrypoint", "CMD": "cmd", "DIR": "dir", "ENV": "env", "LABELS": "labels",
    "PORTS": "ports", "ARCH": "arch", "PACKAGES": "packages", "REPOS": "repos",
    "EXCLUDE_PACKAGES": "exclude_packages", "INSTALL_WEAK_DEPS": "install_weak_deps",
    "PACKS": "packs", "AUTO_PACKS": "auto_packs",
}
#: Construction variables that change the output bytes (in the action's varlist).
OUTPUT_VARIABLES = ["MCT_COMPRESSION", "MCT_TAG", "MCT_NAME", "MCT_SOURCE_DATE_EPOCH",
                    "MCT_ALLOW_MISSING", "_MCT_FORMAT"]
#: Construction variables that change a multi-platform index's bytes (the join's varlist).
INDEX_VARIABLES = ["MCT_TAG", "MCT_NAME", "_MCT_FORMAT"]
#: Provenance and signing after each build (``build --attest``, ``build --sign``).
SIGNING_VARIABLES = ["MCT_ATTEST", "MCT_SIGN_KEY"]
#: The probe run after each build (``build --probe``): a change builds and probes again.
PROBE_VARIABLES = ["MCT_PROBE", "MCT_PROBE_WARN"]
#: MicroPush options (in the push action's varlist: a change pushes again).
PUSH_VARIABLES = ["MCT_PUSH_PLAIN_HTTP", "MCT_PUSH_INSECURE", "MCT_DOCKER_MEDIA_TYPES"]
_ARCHIVE_SUFFIXES = {".tar": "oci-archive", ".tar.gz": "smith", ".tgz": "smith"}
_FALSE_WORDS = ("", "0", "false", "no", "off")


class RegistryCacheDir(SCons.CacheDir.CacheDir):
    """A SCons ``CacheDir`` backed by the ``$MCT_CACHE_REPO`` registry repository as well.

    ``CacheDir("DIR", RegistryCacheDir)``: SCons looks in ``DIR`` first; on a
    miss the file stored under the node's build signature is fetched from the
    repository into ``DIR`` (its digest checked), then retrieved as usual; a
    file SCons pushes to ``DIR`` is stored in the repository too (not with
    ``MCT_CACHE_REPO_READONLY``). Failures are warnings. Variables are read
    from the node's environment, else from the process environment.
    """

    def __init__(self, path: Any) -> None:
        """As :class:`SCons.CacheDir.CacheDir`."""
        super().__init__(path)
        self._caches: dict[int, Any] = {}
        self._off = False

    def _shared(self, node: Any) -> Any:
        import threading

        if self._off:
            return None
        ident = threading.get_ident()
        if ident not in self._caches:
            env = node.get_build_env()

            def setting(name: str) -> Any:
                return env.get(name) if env.get(name) is not None else os.environ.get(name, "")

            text = env.subst(str(setting("MCT_CACHE_REPO"))).strip()
            if not text:
                self._off = True
                return None
            from microcontainer_tool.registry.sharedcache import open_shared_cache

            def flag(name: str) -> bool:
                value = setting(name)
                return (env.subst(value).strip().lower() not in _FALSE_WORDS if isinstance(value, str)
                        else bool(value))

            try:
                self._caches[ident] = open_shared_cache(
                    text, read_only=flag("MCT_CACHE_REPO_READONLY"),
                    plain_http=flag("MCT_CACHE_REPO_PLAIN_HTTP"), insecure=flag("MCT_CACHE_REPO_INSECURE"),
                    docker_config=_docker_config(env) if env.get("MCT_DOCKER_CONFIG") else None,
                    warn=lambda line: print(f"microcontainer: warning: CacheDir: {line}"))
            except MicrocontainerError as error:
                print(f"microcontainer: warning: CacheDir: MCT_CACHE_REPO: {error}")
                self._off = True
                return None
        return self._caches[ident]

    def retrieve(self, node: Any) -> bool:
        """The node from ``DIR``, else from the repository through ``DIR``."""
        if not self.is_enabled():
            return False
        if super().retrieve(node):
            return True
        cache = self._shared(node)
        if cache is None:
            return False
        _cachedir, cachefile = self.cachepath(node)
        fetched = cache.fetch_file(node.get_cachedir_bsig(), cachefile)
        if cache.stats.errors:
            self._off = True
        return bool(fetched) and bool(super().retrieve(node))

    def push(self, node: Any) -> Any:
        """Push to ``DIR``, then store the cached file in the repository."""
        result = super().push(node)
        if self.is_readonly() or not self.is_enabled() or node.nocache:
            return result
        cache = self._shared(node)
        if cache is not None:
            _cachedir, cachefile = self.cachepath(node)
            cache.store_file(node.get_cachedir_bsig(), cachefile)
            if cache.stats.errors:
                self._off = True
        return result


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
        from microcontainer_tool import build  # noqa: F401
    except ImportError:
        return False
    return True


def generate(env: Any) -> None:
    """Add ``MicroImage`` and the ``MCT_*`` defaults to ``env``."""
    env.SetDefault(
        MCT_COMPRESSION="gzip",
        MCT_FORMAT="",
        MCT_TAG="",
        MCT_NAME="",
        MCT_SOURCE_DATE_EPOCH=os.environ.get("SOURCE_DATE_EPOCH", "0"),
        MCT_ALLOW_MISSING=False,
        MCT_BINDIR="/usr/local/bin",
        MCT_LIBDIR="/usr/local/lib",
        MCT_CACHEDIR="#.mct-cache",
        MCT_COMSTR="MicroImage $TARGET",
        MCT_LAYOUTCOMSTR="OCI layout ${TARGET.dir}",
        MCT_PULL_PLAIN_HTTP=False,
        MCT_PULL_INSECURE=False,
        MCT_MAX_LAYER_SIZE="",
        MCT_MAX_LAYER_RATIO="",
        MCT_PUSH_PLAIN_HTTP=False,
        MCT_PUSH_INSECURE=False,
        MCT_DOCKER_MEDIA_TYPES=False,
        MCT_DOCKER_CONFIG="",
        MCT_PUSHCOMSTR="MicroPush $TARGET",
        MCT_PROBE="",
        MCT_PROBE_WARN=False,
        MCT_CACHE_REPO=os.environ.get("MCT_CACHE_REPO", ""),
        MCT_CACHE_REPO_READONLY=os.environ.get("MCT_CACHE_REPO_READONLY", ""),
        MCT_CACHE_REPO_PLAIN_HTTP=False,
        MCT_CACHE_REPO_INSECURE=False,
        MCT_ATTEST=False,
        MCT_SIGN_KEY="",
    )
    env["BUILDERS"]["_MicroImageArchive"] = SCons.Builder.Builder(
        action=SCons.Action.Action(_build_archive, "$MCT_COMSTR",
                                   varlist=OUTPUT_VARIABLES + PROBE_VARIABLES + SIGNING_VARIABLES),
        target_scanner=SCons.Scanner.Scanner(function=_scan, name="MicroImageScanner"),
        target_factory=SCons.Node.FS.File,
        source_factory=SCons.Node.FS.File,
    )
    env["BUILDERS"]["_MicroImageLayout"] = SCons.Builder.Builder(
        action=SCons.Action.Action(_sync_layout, "$MCT_LAYOUTCOMSTR"),
        target_factory=SCons.Node.FS.File,
    )
    env["BUILDERS"]["_MicroImageIndex"] = SCons.Builder.Builder(
        action=SCons.Action.Action(_join_platforms, "$MCT_COMSTR", varlist=INDEX_VARIABLES),
        target_factory=SCons.Node.FS.File,
        source_factory=SCons.Node.FS.File,
    )
    env["BUILDERS"]["_MicroPush"] = SCons.Builder.Builder(
        action=SCons.Action.Action(_push_image, "$MCT_PUSHCOMSTR", varlist=PUSH_VARIABLES),
        target_factory=SCons.Node.FS.File,
    )
    env.AddMethod(micro_image, "MicroImage")
    env.AddMethod(micro_push, "MicroPush")


def micro_image(env: Any, target: Any, source: Any = None, **keywords: Any) -> list[Any]:
    """The ``MicroImage`` pseudo-builder (see the module docstring).

    Returns:
        The target nodes: the image archive, and for a layout its index.json.

    Raises:
        SCons.Errors.UserError: the spec or keywords are invalid (one line).
    """
    from microcontainer_tool.spec.imagespec import ImageSpec, check_spec, load_spec, merge_specs

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
    if spec.platforms:
        return _micro_image_platforms(env, overrides, name, spec, project)
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
        return _signature_decided(env.Flatten(overrides._MicroImageArchive(name, [value] + project,
                                                                           _MCT_FORMAT=fmt, **build_kw)))
    archive = _signature_decided(overrides._MicroImageArchive(f"{name}.tar", [value] + project,
                                                              _MCT_FORMAT="oci-archive", **build_kw))
    layout = overrides._MicroImageLayout(f"{name}/index.json", archive)
    env.NoCache(layout)
    env.Clean(layout, env.Dir(name))
    return env.Flatten([archive, layout])


def _micro_image_platforms(env: Any, overrides: Any, name: str, spec: Any, project: list[Any]) -> list[Any]:
    """``MicroImage`` of a multi-platform spec: one archive node per platform, joined into an index."""
    from microcontainer_tool.spec.imagespec import platform_specs

    fmt = overrides.subst("$MCT_FORMAT") or _format_by_suffix(name)
    if fmt == "docker-archive":
        _fail_in_sconscript(f"MicroImage('{name}'): a docker-archive holds one image per tag, not a "
                            "multi-platform index: use an OCI layout or oci-archive target")
    if _flag(overrides, "MCT_ATTEST") or overrides.subst("$MCT_SIGN_KEY").strip():
        _fail_in_sconscript(f"MicroImage('{name}'): MCT_ATTEST and MCT_SIGN_KEY are not supported for a "
                            "multi-platform image yet (the index would not carry them): build one platform "
                            "(ARCH=...) or sign the pushed index with `microcontainer sign`")
    top = env.Dir("#").abspath
    parts = []
    for one in platform_specs(spec):
        payload = json.dumps({"format": FORMAT_VERSION, "base": os.path.relpath(one.base_dir, top),
                              "spec": one.canonical()}, sort_keys=True)
        inputs = project + (_package_inputs(env, one, name) if one.packages else []) + _image_inputs(env, one)
        parts += _signature_decided(overrides._MicroImageArchive(
            f"{name}.platforms/{one.arch}.tar", [env.Value(payload)] + inputs, _MCT_FORMAT="oci-archive",
            _MCT_SPEC=payload, _MCT_PROJECT=[_host_path(n) for n in inputs]))
    if fmt != "oci":
        return _signature_decided(env.Flatten(overrides._MicroImageIndex(name, parts, _MCT_FORMAT=fmt)))
    archive = _signature_decided(overrides._MicroImageIndex(f"{name}.tar", parts, _MCT_FORMAT="oci-archive"))
    layout = overrides._MicroImageLayout(f"{name}/index.json", archive)
    env.NoCache(layout)
    env.Clean(layout, env.Dir(name))
    return env.Flatten([archive, layout])


def _archive_changed(dependency: Any, target: Any, prev_ni: Any, repo_node: Any = None) -> bool:
    """Decider of an image archive as a dependency (of its layout, of a push).

    The archive's content signature is what decides, as always; it is kept
    in ``$MCT_CACHEDIR/stamps/`` with the archive's ``(inode, size, mtime in
    ns)``, and reused while the file is the one it was computed for, so a
    no-op run does not read and hash every image (that was most of what
    images added to a no-op run). SCons's own ``content-timestamp`` decider
    is not enough: it compares whole seconds, and an archive rebuilt within
    the second of the version its dependents recorded would count as
    unchanged. Archives are always replaced by a rename (a new inode), and
    a ``CacheDir`` retrieval copies them, so a kept signature is never taken
    for another file's.
    """
    stamp = _stamp_path(dependency)
    csig = kept_signature(stamp, dependency.abspath) if stamp else None
    if csig is not None:
        dependency.get_ninfo().csig = csig  # SCons records it as the node's signature
    else:
        csig = dependency.get_csig()
        if stamp:
            keep_signature(stamp, dependency.abspath, csig)
    return bool(csig != getattr(prev_ni, "csig", None))


def _stamp_path(node: Any) -> str | None:
    """Where the content signature of the archive ``node`` is kept (``None``: no ``$MCT_CACHEDIR``)."""
    env = node.get_build_env()
    cache_dir = env.subst("$MCT_CACHEDIR") if env is not None else ""
    if not cache_dir:
        return None
    name = hashlib.sha256(node.abspath.encode()).hexdigest()[:32]
    return os.path.join(env.Dir(cache_dir).abspath, "stamps", f"{name}.json")


def _signature_decided(nodes: list[Any]) -> list[Any]:
    """``nodes`` (image archives), each judged as a dependency by :func:`_archive_changed`."""
    for node in nodes:
        node.Decider(_archive_changed)
    return nodes


def micro_push(env: Any, target: Any, image: Any = None, **keywords: Any) -> list[Any]:
    """The ``MicroPush`` pseudo-builder (see the module docstring).

    Returns:
        The stamp node, in a list.

    Raises:
        SCons.Errors.UserError: no or an invalid ``REF``, or not one image (one line).
    """
    from microcontainer_tool.registry.reference import Reference

    name = str(SCons.Util.flatten([target])[0])
    given = keywords.pop("REF", None)
    overrides = env.Override(keywords) if keywords else env
    if not given:
        _fail_in_sconscript(f"MicroPush('{name}'): REF='host[:port]/repository[:tag]' is required")
    try:
        ref = Reference.parse(overrides.subst(str(given)))
    except MicrocontainerError as error:
        _fail_in_sconscript(f"MicroPush('{name}'): {error}")
    source = _push_source(env, image, name)
    value = env.Value(json.dumps({"ref": str(ref)}, sort_keys=True))
    stamp = overrides._MicroPush(target, [source, value])
    env.NoCache(stamp)  # a cache hit would skip the push
    return env.Flatten(stamp)


def _push_source(env: Any, image: Any, name: str) -> Any:
    """The node that holds ``image``'s content: an archive, or a layout's ``index.json``.

    ``MicroImage``'s layout ``[NAME.tar, NAME/index.json]`` gives its archive:
    the layout is synced from it, it is cacheable, and pushing it needs no
    synced layout. A layout directory (path or node) is its sibling ``NAME.tar``
    when SCons builds that, else the directory, tracked by its ``index.json``
    (which names the manifest digest, a hash of everything pushed).
    """
    nodes = [env.Entry(n) if isinstance(n, str) else n for n in env.Flatten([image]) if n is not None]
    archives = [n for n in nodes if str(n).endswith(tuple(_ARCHIVE_SUFFIXES))]
    if len(nodes) == 2 and len(archives) == 1:  # MicroImage's layout: archive and index.json
        layout = next(n for n in nodes if n is not archives[0])
        if str(layout) == os.path.join(str(archives[0])[:-len(".tar")], "index.json"):
            return archives[0]
    if len(nodes) != 1:
        _fail_in_sconscript(f"MicroPush('{name}'): give one image (what one MicroImage returned, or a path), "
                            f"not {len(nodes)} nodes")
    node = nodes[0]
    if isinstance(node, SCons.Node.FS.Entry):
        node = node.disambiguate()
    if isinstance(node, SCons.Node.FS.Dir):
        layout = node
    elif isinstance(node, SCons.Node.FS.File) and node.name == "index.json":
        layout = node.dir
    elif isinstance(node, SCons.Node.FS.File):
        return node
    else:
        _fail_in_sconscript(f"MicroPush('{name}'): {node} is not an image file or layout directory")
    try:
        archive = layout.dir.File(layout.name + ".tar")
    except TypeError:  # a directory of that name
        archive = None
    if archive is not None and archive.has_builder():
        return archive
    return layout.File("index.json")


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
    from microcontainer_tool.spec.imagespec import parse_spec

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
    from microcontainer_tool.spec.imagespec import project_files

    return [env.File(path) for path in project_files(spec, skip=overridden)]


def _package_inputs(env: Any, spec: Any, name: str) -> list[Any]:
    """An RPM spec's lock file and local ``.rpm`` files, content-tracked.

    SCons builds never resolve: the lock must exist (``microcontainer lock``),
    so a no-op build never touches a repository.
    """
    from microcontainer_tool.sources.rpm.root import local_rpms, lock_path

    lock = lock_path(spec)
    if not os.path.exists(lock):
        _fail_in_sconscript(f"MicroImage('{name}'): no {lock}: "
                            f"run `microcontainer lock -c {spec.source}` first")
    return [env.File(lock)] + [env.File(path) for path in local_rpms(spec)]


def _image_inputs(env: Any, spec: Any) -> list[Any]:
    """Local images the spec names (``from:``, ``parent:``): archive files, or layout index and blobs.

    A registry image is identified by the spec itself (a ``Value``): pin it
    by digest, since SCons cannot see a tag move.
    """
    from microcontainer_tool.sources.image.locate import locate_image

    nodes = []
    try:
        locations = [locate_image(spec.from_, spec.base_dir, directory_ok=True)]
        if spec.parent:
            locations.append(locate_image(spec.parent, spec.base_dir, directory_ok=False))
    except MicrocontainerError as error:
        _fail_in_sconscript(f"{spec.source}: {error}")
    for location in locations:
        if location is not None and location.local is not None:
            from microcontainer_tool.oci.imageview import image_files  # only for local images: a heavy import

            nodes += [env.File(path) for path in image_files(location.local)]
    return nodes


def _format_by_suffix(name: str) -> str:
    for suffix, fmt in _ARCHIVE_SUFFIXES.items():
        if name.endswith(suffix):
            return fmt
    return "oci"


def _spec_of(payload: str, top: str) -> Any:
    from microcontainer_tool.spec.imagespec import spec_from_canonical

    data = jsontext.loads(payload)
    return spec_from_canonical(data["spec"], os.path.normpath(os.path.join(top, data["base"])),
                               "MicroImage spec", project_dir=top)


def _build_archive(target: list[Any], source: list[Any], env: Any) -> int:
    """Action: build the image archive with the library."""
    from microcontainer_tool.build import build_image
    from microcontainer_tool.oci.layercache import LayerCache
    from microcontainer_tool.registry.imagecache import RegistryOptions

    out = target[0].abspath
    try:
        spec = _spec_of(source[0].read(), env.Dir("#").abspath)
        cache_dir = env.subst("$MCT_CACHEDIR")
        epoch = env.subst("$MCT_SOURCE_DATE_EPOCH")
        if not epoch.isdigit():
            raise MicrocontainerError(f"MCT_SOURCE_DATE_EPOCH={epoch!r} is not a non-negative integer")
        shared = _shared_cache(env, target[0])
        layer_root = env.Dir(cache_dir).abspath if cache_dir else None
        if layer_root is None and shared is not None:
            from microcontainer_tool.hostfs.cachedir import default_cache_dir

            layer_root = default_cache_dir()
        result = build_image(
            spec, out, fmt=env.subst("$_MCT_FORMAT"), tag=env.subst("$MCT_TAG") or None,
            name=env.subst("$MCT_NAME") or None, compression=env.subst("$MCT_COMPRESSION"),
            epoch=int(epoch), allow_missing=bool(env.get("MCT_ALLOW_MISSING")),
            layer_cache=LayerCache(layer_root, remote=shared) if layer_root else None,
            cache_dir=env.Dir(cache_dir).abspath if cache_dir else None, shared_packages=shared,
            registry=RegistryOptions(plain_http=_flag(env, "MCT_PULL_PLAIN_HTTP"),
                                     insecure=_flag(env, "MCT_PULL_INSECURE"),
                                     docker_config=_docker_config(env)),
            layer_limits=_layer_limits(env),
        )
        _attest_and_sign(env, spec, out, int(epoch))
    except MicrocontainerError as error:
        raise SCons.Errors.UserError(f"{target[0]}: {error}") from None
    for warning in result.warnings:
        print(f"microcontainer: warning: {target[0]}: {warning}")
    if shared is not None:
        from microcontainer_tool.registry.sharedcache import describe

        print(f"microcontainer: {target[0]}: cache {describe(shared)}")
    probe = env.subst("$MCT_PROBE").strip()
    if probe:
        _probe(target[0], result, probe, cache_dir=env.Dir(cache_dir).abspath if cache_dir else None,
               warn_only=_flag(env, "MCT_PROBE_WARN"))
    return 0


def _shared_cache(env: Any, target: Any) -> Any:
    """The ``$MCT_CACHE_REPO`` shared cache of a build, or ``None`` (its warnings name ``target``)."""
    text = env.subst("$MCT_CACHE_REPO").strip()
    if not text:
        return None
    from microcontainer_tool.registry.sharedcache import open_shared_cache

    return open_shared_cache(text, read_only=_flag(env, "MCT_CACHE_REPO_READONLY"),
                             plain_http=_flag(env, "MCT_CACHE_REPO_PLAIN_HTTP"),
                             insecure=_flag(env, "MCT_CACHE_REPO_INSECURE"),
                             docker_config=_docker_config(env),
                             compression=env.subst("$MCT_COMPRESSION"),
                             warn=lambda line: print(f"microcontainer: warning: {target}: {line}"))


def _join_platforms(target: list[Any], source: list[Any], env: Any) -> int:
    """Action: join the per-platform archives into one multi-platform image (an image index)."""
    from microcontainer_tool.platformbuild import join_archives

    try:
        join_archives([part.abspath for part in source], target[0].abspath, env.subst("$_MCT_FORMAT"),
                      tag=env.subst("$MCT_TAG") or None, name=env.subst("$MCT_NAME") or None)
    except MicrocontainerError as error:
        raise SCons.Errors.UserError(f"{target[0]}: {error}") from None
    return 0


def _probe(target: Any, result: Any, command: str, cache_dir: str | None, warn_only: bool) -> None:
    """Run ``$MCT_PROBE`` in the built image; a failure fails the target (a warning with ``MCT_PROBE_WARN``).

    The archive is written first: SCons then records no signature for a failed
    target, so the next run builds and probes it again.
    """
    from microcontainer_tool.build import probe_build

    try:
        report = probe_build(result, command, cache_dir=cache_dir)
    except MicrocontainerError as error:
        raise SCons.Errors.UserError(f"{target}: {error}") from None
    for line in report.lines():
        print(f"microcontainer: {target}: {line}")
    if not report.passed:
        message = f"{target}: probe `{command}` failed (exit status {report.exit_code}, " \
                  f"{len(report.missing)} missing paths)"
        if not warn_only:
            raise SCons.Errors.UserError(message)
        print(f"microcontainer: warning: {message}")


def _attest_and_sign(env: Any, spec: Any, out: str, epoch: int) -> None:
    """``$MCT_ATTEST``: attach the provenance statement; ``$MCT_SIGN_KEY``: sign the image and its referrers.

    The statement carries ``$MCT_SOURCE_DATE_EPOCH`` only when ``SOURCE_DATE_EPOCH`` was set.
    """
    attest = _flag(env, "MCT_ATTEST")
    key = env.subst("$MCT_SIGN_KEY").strip()
    if not attest and not key:
        return
    from microcontainer_tool.signing.attachments import attest_and_sign

    if key:
        top = env.Dir("#").abspath
        key = os.path.join(top, key[1:].lstrip("/") if key.startswith("#") else os.path.expanduser(key))
    parameters = {"format": "oci-archive", "compression": env.subst("$MCT_COMPRESSION"),
                  "tag": env.subst("$MCT_TAG") or "latest", "name": env.subst("$MCT_NAME"),
                  "allowMissing": bool(env.get("MCT_ALLOW_MISSING")), "sbom": ""}
    attest_and_sign(out, spec, parameters, attestation=attest, key=key or None,
                    epoch=epoch if os.environ.get("SOURCE_DATE_EPOCH") else None)


def _sync_layout(target: list[Any], source: list[Any], env: Any) -> int:
    """Action: make the layout directory hold the archive's image."""
    from microcontainer_tool.oci.layout import sync_layout_from_archive

    try:
        sync_layout_from_archive(source[0].abspath, os.path.dirname(target[0].abspath))
    except MicrocontainerError as error:
        raise SCons.Errors.UserError(f"{target[0]}: {error}") from None
    return 0


def _flag(env: Any, name: str) -> bool:
    value = env.get(name)
    if isinstance(value, str):
        return env.subst(value).strip().lower() not in _FALSE_WORDS
    return bool(value)


def _layer_limits(env: Any) -> Any:
    """``$MCT_MAX_LAYER_SIZE`` and ``$MCT_MAX_LAYER_RATIO`` as :class:`~.oci.layer.LayerLimits`.

    Raises:
        SpecError: a value that is not a size / a positive whole number.
    """
    from microcontainer_tool.oci.layer import layer_limits, parse_size

    size = env.subst("$MCT_MAX_LAYER_SIZE").strip()
    ratio = env.subst("$MCT_MAX_LAYER_RATIO").strip()
    try:
        max_size = parse_size(size) if size else None
    except ValueError as error:
        raise SpecError(f"MCT_MAX_LAYER_SIZE: {error}") from None
    if ratio and (not ratio.isdigit() or int(ratio) <= 0):
        raise SpecError(f"MCT_MAX_LAYER_RATIO={ratio!r} is not a positive whole number")
    return layer_limits(max_size, int(ratio) if ratio else None)


def _docker_config(env: Any) -> str | None:
    """``$MCT_DOCKER_CONFIG`` as an absolute path (relative to the top directory), or ``None``."""
    value = os.path.expanduser(env.subst("$MCT_DOCKER_CONFIG").strip())
    if not value:
        return None
    top = env.Dir("#").abspath
    return os.path.join(top, value[1:].lstrip("/") if value.startswith("#") else value)


def _push_image(target: list[Any], source: list[Any], env: Any) -> int:
    """Action: push the image, then write the stamp ``REF@DIGEST`` (atomically)."""
    from microcontainer_tool.registry.auth import load_credentials
    from microcontainer_tool.registry.client import RegistryClient
    from microcontainer_tool.registry.reference import Reference
    from microcontainer_tool.registry.transfer import push_and_record

    stamp = target[0].abspath
    image = _host_path(source[0])
    if source[0].name == "index.json":  # a layout directory (see _push_source)
        image = os.path.dirname(image)
    ref = Reference.parse(json.loads(source[1].read())["ref"])  # checked by MicroPush
    try:
        creds = load_credentials(ref.registry, docker_config=_docker_config(env))
        with RegistryClient(ref.registry, auth=creds, plain_http=_flag(env, "MCT_PUSH_PLAIN_HTTP"),
                            insecure=_flag(env, "MCT_PUSH_INSECURE")) as client:
            push_and_record(image, ref, client, stamp,
                            docker_media_types=_flag(env, "MCT_DOCKER_MEDIA_TYPES"),
                            mount_from=_cache_repo_on(env, ref.registry))
    except MicrocontainerError as error:  # SCons prefixes "[TARGET]"
        raise SCons.Errors.UserError(f"pushing {ref}: {error}") from None
    return 0


def _cache_repo_on(env: Any, registry: str) -> str | None:
    """``$MCT_CACHE_REPO``'s repository if it is on ``registry`` (a push mounts its blobs), else None."""
    from microcontainer_tool.registry.reference import Reference, normalize_registry

    text = env.subst("$MCT_CACHE_REPO").strip()
    if not text:
        return None
    try:
        cache = Reference.parse(text)
    except MicrocontainerError:
        return None
    return cache.repository if normalize_registry(cache.registry) == normalize_registry(registry) else None


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
        _SCAN_MEMO[key] = _remembered_scan(node, env, payload, project, key)
    return [env.File(p) for p in _SCAN_MEMO[key]]


def _remembered_scan(node: Any, env: Any, payload: str, project: list[str],
                     key: tuple[Any, ...]) -> list[str]:
    """The scan, kept in ``$MCT_CACHEDIR/scans/`` across runs while its inputs are unchanged."""
    import hashlib

    from microcontainer_tool.assembly.inputs import remembered_inputs

    top = env.Dir("#").abspath
    cache_dir = env.subst("$MCT_CACHEDIR")
    record = None
    if cache_dir:
        name = hashlib.sha256(node.abspath.encode("utf-8", "surrogateescape")).hexdigest()[:32]
        record = os.path.join(env.Dir(cache_dir).abspath, "scans", name + ".json")
    digest = hashlib.sha256(json.dumps([FORMAT_VERSION, key], sort_keys=True).encode()).hexdigest()
    return remembered_inputs(record, digest, lambda: _sysroot_inputs(payload, top, set(project)),
                             lambda: _sysroot_dir(payload, top))


def _sysroot_dir(payload: str, top: str) -> str | None:
    """The directory the spec's files are taken from (``None``: an image or packages)."""
    try:
        spec = _spec_of(payload, top)
    except MicrocontainerError:
        return None
    return None if spec.packages else spec.sysroot_dir


def _sysroot_inputs(payload: str, top: str, project: set[str]) -> list[str]:
    """The sysroot files the image takes that are not explicit sources already.

    An image ``from:`` is tracked by its files or its pinned reference, an RPM
    spec by its lock and local ``.rpm`` files: those give nothing here.
    """
    from microcontainer_tool.build import sysroot_inputs

    try:
        paths = sysroot_inputs(_spec_of(payload, top))
    except MicrocontainerError:
        return []  # the build reports it
    return [path for path in paths if path not in project]
