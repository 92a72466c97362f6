"""The image spec: ``microimage.yaml`` (or smith's ``smith.yaml``), validated.

Keys keep smith's meaning where smith had them. Validation walks the YAML node
tree so every error names ``file:line``. The result is an immutable
:class:`ImageSpec`; :meth:`ImageSpec.canonical` gives a stable JSON-able form
for build-system signatures.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, fields, replace
from typing import Any

import yaml

from microcontainer_tool.errors import SpecError, UnsupportedError

SPEC_NAMES = ("microimage.yaml", "smith.yaml")
#: libyaml's parser when PyYAML has it (about 5x faster; same nodes and marks).
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_USER = "10:10"
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PORT = re.compile(r"^[0-9]{1,5}(/(tcp|udp|sctp))?$")
_USER_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")

#: Keys a later version implements; until then they are an error, not ignored.
UNSUPPORTED_KEYS: dict[str, str] = {}
#: smith's ``mock:`` keys with no equivalent here (``config`` has one: its repositories).
UNSUPPORTED_MOCK_KEYS = {
    "pre-build": "a command run before the build",
    "post-build": "a command run after the build",
    "deps": "extra packages installed in the mock chroot",
    "debuginfo": "debuginfo packages",
    "debugdeps": "debuginfo packages",
    "debugpaths": "debuginfo paths",
}
#: smith's ``type:`` values: ``oci`` (``package`` names an image) or ``mock``
#: (an RPM package, which we resolve and extract ourselves).
PACKAGE_TYPES = ("oci", "mock")
_IMAGE_SUFFIXES = (".tar", ".tar.gz", ".tgz")
#: Files of the ``rootfs/`` overlay that only keep a directory in version
#: control: never put in the image, nor dependencies of it.
OVERLAY_SKIP = (".gitignore", ".gitkeep")


def names_image(text: str) -> bool:
    """Whether smith reads ``package:`` text as an image rather than an RPM.

    smith's rule: an ``http(s)://`` registry reference, or a file name ending in
    ``.tar``, ``.tar.gz`` or ``.tgz``, optionally followed by ``:TAG``.
    """
    if text.startswith(("https://", "http://")):
        return True
    left, sep, tag = text.rpartition(":")
    name = left if sep and left and "/" not in tag and not tag.endswith(_IMAGE_SUFFIXES) else text
    return name.endswith(_IMAGE_SUFFIXES)


#: OCI architecture names and the RPM architectures they mean.
ARCHES = {"amd64": "x86_64", "arm64": "aarch64", "arm": "armv7hl", "386": "i686",
          "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64", "mips64le": "mips64el"}
#: The OCI ``platform.variant`` a multi-platform build gives each architecture that has one
#: (the image spec's list for ``arm64`` and ``arm``; see README, "Multi-platform images").
VARIANTS = {"arm64": "v8", "arm": "v7"}


@dataclass(frozen=True)
class RepoSpec:
    """One ``repos:`` entry: a yum/dnf repository.

    Attributes:
        id: short name used in the lock file (``name``, or derived from the URL).
        baseurl: ``http(s)://`` or ``file://`` URL of the directory holding ``repodata/``.
        priority: dnf priority: lower wins (default 99).
        gpgkey: URL(s) or path of the repository's public key(s) (optional): when
            set, every package from this repository must be signed by one of them.
    """

    id: str
    baseurl: str
    priority: int = 99
    gpgkey: str = ""


@dataclass(frozen=True)
class ImageSpec:
    """A validated image spec.

    Attributes mirror the YAML keys (``from`` is ``from_``, ``dir`` is
    ``workdir``). ``base_dir`` is the spec's directory, which relative paths in
    ``from`` and ``files`` and the ``rootfs/`` overlay are taken from.
    ``project_dir`` (default: ``base_dir``) is what provenance names project
    files relative to: SCons sets its top directory, ``#``. ``given`` lists the
    YAML keys the spec set (sorted): a ``parent:`` image's config fills in the
    rest, so an explicitly empty list differs from an absent key.
    """

    base_dir: str
    source: str = "<spec>"
    from_: str = "/"
    parent: str = ""
    paths: tuple[str, ...] = ()
    excludes: tuple[str, ...] = ()
    files: tuple[tuple[str, str], ...] = ()
    libs: tuple[str, ...] = ()
    nss: bool = False
    root: bool = False
    user: str = ""
    groups: tuple[str, ...] = ()
    mounts: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    workdir: str = ""
    env: tuple[tuple[str, str], ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    ports: tuple[str, ...] = ()
    arch: str = ""
    platforms: tuple[str, ...] = ()
    from_platforms: tuple[tuple[str, str], ...] = ()
    variant: str = ""
    per_arch_lock: bool = False
    packages: tuple[str, ...] = ()
    repos: tuple[RepoSpec, ...] = ()
    exclude_packages: tuple[str, ...] = ()
    install_weak_deps: bool = False
    packs: tuple[str, ...] = ()
    auto_packs: bool = True
    mock_config: str = ""
    given: tuple[str, ...] = ()
    lines: dict[str, int] = field(default_factory=dict, compare=False, repr=False)
    project_dir: str = field(default="", compare=False, repr=False)

    def where(self, key: str) -> str:
        """``file:line`` of a key, for error messages."""
        line = self.lines.get(key)
        return f"{self.source}:{line}" if line else self.source

    @property
    def sysroot_dir(self) -> str:
        """The ``from`` directory as a host path."""
        return os.path.normpath(os.path.join(self.base_dir, self.from_))

    @property
    def overlay_dir(self) -> str:
        """The smith ``rootfs/`` overlay directory beside the spec."""
        return os.path.join(self.base_dir, "rootfs")

    @property
    def rpm_arch(self) -> str:
        """The RPM architecture packages are resolved for (default x86_64)."""
        return ARCHES.get(self.arch, self.arch) if self.arch else "x86_64"

    @property
    def effective_user(self) -> str:
        """The user string in force: ``root: true`` wins, then ``user``, then 10:10."""
        if self.root:
            return "0:0"
        return self.user or DEFAULT_USER

    def canonical(self) -> dict[str, Any]:
        """A stable, JSON-able form (no host paths except ``from``/``files``).

        The multi-platform fields (``platforms``, ``from_platforms``, ``variant``)
        appear only when set, so a single-platform spec's form is what it was
        before they existed.
        """
        out: dict[str, Any] = {}
        for fld in fields(self):
            if fld.name in ("base_dir", "source", "lines", "project_dir"):
                continue
            if fld.name in _OPTIONAL_CANONICAL and not getattr(self, fld.name):
                continue
            value = getattr(self, fld.name)
            if fld.name == "repos":
                value = tuple(tuple(vars(r).values()) for r in value)
            out[fld.name] = [list(v) if isinstance(v, tuple) else v for v in value] \
                if isinstance(value, tuple) else value
        return out


#: Fields :meth:`ImageSpec.canonical` leaves out when empty.
_OPTIONAL_CANONICAL = ("platforms", "from_platforms", "variant", "per_arch_lock")


def find_spec(path: str | None) -> str:
    """Return the spec file to use.

    Args:
        path: a spec file, a directory holding one, or ``None`` for the cwd.

    Raises:
        SpecError: no spec file found.
    """
    target = path or "."
    if os.path.isdir(target):
        for name in SPEC_NAMES:
            candidate = os.path.join(target, name)
            if os.path.isfile(candidate):
                return candidate
        raise SpecError(f"no {' or '.join(SPEC_NAMES)} in {target}")
    if not os.path.isfile(target):
        raise SpecError(f"spec file {target} not found")
    return target


def load_spec(path: str | None = None, complete: bool = True) -> ImageSpec:
    """Load and validate a spec file.

    Args:
        path: spec file or directory (default: cwd's microimage.yaml/smith.yaml).
        complete: also check it describes a whole image (see :func:`parse_spec`).

    Returns:
        The validated spec.

    Raises:
        SpecError: unreadable file, bad YAML, unknown key, wrong type, bad value.
    """
    spec_path = find_spec(path)
    try:
        with open(spec_path, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as err:
        raise SpecError(f"{spec_path}: cannot read: {err}") from err
    base_dir = os.path.dirname(os.path.abspath(spec_path))
    return parse_spec(text, spec_path, base_dir, complete)


def parse_spec(text: str, source: str, base_dir: str, complete: bool = True) -> ImageSpec:
    """Validate spec text.

    Args:
        text: YAML text.
        source: name used in error messages (usually the file path).
        base_dir: directory relative paths are taken from.
        complete: also check the spec describes a whole image (not just a
            set of overrides for :func:`merge_specs`).

    Returns:
        The validated spec.

    Raises:
        SpecError: as :func:`load_spec`.
    """
    try:
        root = yaml.compose(text, Loader=_LOADER)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise SpecError(f"{source}{line}: invalid YAML: {problem}") from err
    if root is None:
        raise SpecError(f"{source}: the spec is empty")
    checker = _Checker(source)
    if not isinstance(root, yaml.MappingNode):
        raise SpecError(f"{checker.at(root)}: the spec must be a mapping of keys")
    values: dict[str, Any] = {}
    lines: dict[str, int] = {}
    package_type: tuple[yaml.Node, str] | None = None
    for key_node, value_node in root.value:
        key = checker.scalar(key_node, "key")
        if key in lines:
            raise SpecError(f"{checker.at(key_node)}: duplicate key {key!r}")
        lines[key] = key_node.start_mark.line + 1
        if key in UNSUPPORTED_KEYS:
            raise UnsupportedError(
                f"{checker.at(key_node)}: {key!r} ({UNSUPPORTED_KEYS[key]}) is not supported yet"
            )
        if key == "type":
            package_type = (key_node, checker.scalar(value_node, "type"))
            if package_type[1] not in PACKAGE_TYPES:
                raise checker.fail(value_node, f"unknown type {package_type[1]!r} "
                                               f"(known: {', '.join(PACKAGE_TYPES)})")
            continue
        handler = _HANDLERS.get(key)
        if handler is None:
            raise SpecError(
                f"{checker.at(key_node)}: unknown key {key!r} (known: {', '.join(sorted(_HANDLERS))})"
            )
        name, convert = handler
        if key == "arch" and isinstance(value_node, yaml.SequenceNode):
            values["platforms"] = _arch_list(checker, value_node)
            continue
        if key == "from" and isinstance(value_node, yaml.MappingNode):
            values["from_platforms"] = _from_per_platform(checker, value_node)
            continue
        values[name] = convert(checker, value_node)
    _package_image(values, lines, package_type, checker)
    spec = ImageSpec(base_dir=base_dir, source=source, lines=lines, given=tuple(sorted(lines)), **values)
    if complete:
        check_spec(spec)
    return spec


def _package_image(values: dict[str, Any], lines: dict[str, int],
                   package_type: tuple[yaml.Node, str] | None, checker: _Checker) -> None:
    """smith's ``package:`` naming an image (``type: oci``, or implied by its form): it is ``from:``."""
    if package_type is not None and "package" not in lines:
        raise checker.fail(package_type[0], "'type' says what 'package' names: give 'package' too")
    if "package" not in lines:
        return
    text = values["packages"][0]
    if package_type is not None and package_type[1] == "mock" or \
            (package_type is None and not names_image(text)):
        return
    if "from" in lines:
        raise SpecError(f"{checker.source}:{lines['from']}: 'from' and 'package' (an image) "
                        "both name the sysroot: give one")
    del values["packages"]
    values["from_"] = text
    lines["from"] = lines.pop("package")


class _Checker:
    """Type checks on YAML nodes with ``file:line`` messages."""

    def __init__(self, source: str) -> None:
        self.source = source

    def at(self, node: yaml.Node) -> str:
        return f"{self.source}:{node.start_mark.line + 1}"

    def fail(self, node: yaml.Node, message: str) -> SpecError:
        return SpecError(f"{self.at(node)}: {message}")

    def scalar(self, node: yaml.Node, what: str) -> str:
        if not isinstance(node, yaml.ScalarNode):
            raise self.fail(node, f"{what} must be a string, not a {_kind(node)}")
        if node.tag in ("tag:yaml.org,2002:null",) or (node.value == "" and node.style is None):
            raise self.fail(node, f"{what} must not be empty")
        return str(node.value)

    def string(self, node: yaml.Node, what: str) -> str:
        if not isinstance(node, yaml.ScalarNode) or node.tag == "tag:yaml.org,2002:null":
            raise self.fail(node, f"{what} must be a string, not a {_kind(node)}")
        return str(node.value)

    def boolean(self, node: yaml.Node, what: str) -> bool:
        if not isinstance(node, yaml.ScalarNode) or node.tag != "tag:yaml.org,2002:bool":
            raise self.fail(node, f"{what} must be true or false")
        return node.value.lower() in ("true", "yes", "on", "y")

    def string_list(self, node: yaml.Node, what: str) -> tuple[str, ...]:
        if not isinstance(node, yaml.SequenceNode):
            raise self.fail(node, f"{what} must be a list of strings, not a {_kind(node)}")
        return tuple(self.string(item, f"each item of {what}") for item in node.value)

    def mapping(self, node: yaml.Node, what: str) -> list[tuple[yaml.Node, yaml.Node]]:
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, f"{what} must be a mapping, not a {_kind(node)}")
        return list(node.value)


def _kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "mapping"
    if isinstance(node, yaml.SequenceNode):
        return "list"
    if node.tag == "tag:yaml.org,2002:null":
        return "null"
    return node.tag.rsplit(":", 1)[-1]


def _abs_image_path(checker: _Checker, node: yaml.Node, what: str) -> str:
    value = checker.scalar(node, what)
    if not value.startswith("/"):
        raise checker.fail(node, f"{what} {value!r} must be an absolute image path")
    if any(part == ".." for part in value.split("/")):
        raise checker.fail(node, f"{what} {value!r} must not contain '..'")
    return value


def _paths(what: str) -> Callable[[_Checker, yaml.Node], tuple[str, ...]]:
    def convert(checker: _Checker, node: yaml.Node) -> tuple[str, ...]:
        if not isinstance(node, yaml.SequenceNode):
            raise checker.fail(node, f"{what} must be a list of absolute paths")
        return tuple(_abs_image_path(checker, item, f"{what} entry") for item in node.value)

    return convert


def _from(checker: _Checker, node: yaml.Node) -> str:
    return checker.scalar(node, "from")


def _parent(checker: _Checker, node: yaml.Node) -> str:
    return checker.scalar(node, "parent")


def _files(checker: _Checker, node: yaml.Node) -> tuple[tuple[str, str], ...]:
    out = []
    for key, value in checker.mapping(node, "files"):
        image_path = _abs_image_path(checker, key, "files key")
        out.append((image_path, checker.scalar(value, f"files[{image_path}]")))
    return tuple(sorted(out))


def _libs(checker: _Checker, node: yaml.Node) -> tuple[str, ...]:
    return tuple(checker.scalar(item, "libs entry")
                 for item in _seq(checker, node, "libs"))


def _seq(checker: _Checker, node: yaml.Node, what: str) -> list[yaml.Node]:
    if not isinstance(node, yaml.SequenceNode):
        raise checker.fail(node, f"{what} must be a list, not a {_kind(node)}")
    return node.value


def _user(checker: _Checker, node: yaml.Node) -> str:
    value = checker.string(node, "user")
    parts = value.split(":")
    if len(parts) > 2 or not all(_USER_PART.match(p) for p in parts):
        raise checker.fail(node, f"bad user {value!r}: expected USER or USER:GROUP (names or ids)")
    for part in parts:
        if part.isdigit() and int(part) > 0xFFFFFFFE:
            raise checker.fail(node, f"bad user {value!r}: id out of range")
    return value


def _groups(checker: _Checker, node: yaml.Node) -> tuple[str, ...]:
    items = checker.string_list(node, "groups")
    for item_node, item in zip(node.value, items, strict=True):
        if not _USER_PART.match(item) or item.isdigit():
            raise checker.fail(item_node, f"bad group name {item!r}")
    return items


def _argv(what: str) -> Callable[[_Checker, yaml.Node], tuple[str, ...]]:
    def convert(checker: _Checker, node: yaml.Node) -> tuple[str, ...]:
        return checker.string_list(node, what)

    return convert


def _workdir(checker: _Checker, node: yaml.Node) -> str:
    return _abs_image_path(checker, node, "dir")


def _env(checker: _Checker, node: yaml.Node) -> tuple[tuple[str, str], ...]:
    pairs: list[tuple[yaml.Node, str, str]] = []
    if isinstance(node, yaml.SequenceNode):
        for item in node.value:
            text = checker.string(item, "env entry")
            if "=" not in text:
                raise checker.fail(item, f"env entry {text!r} must be NAME=VALUE")
            name, value = text.split("=", 1)
            pairs.append((item, name, value))
    elif isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            pairs.append((key, checker.scalar(key, "env name"), checker.string(value, "env value")))
    else:
        raise checker.fail(node, "env must be a list of NAME=VALUE or a mapping")
    seen: dict[str, str] = {}
    for item, name, value in pairs:
        if not _ENV_NAME.match(name):
            raise checker.fail(item, f"bad environment variable name {name!r}")
        seen[name] = value
    return tuple(seen.items())


def _labels(checker: _Checker, node: yaml.Node) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(
        (checker.scalar(k, "label name"), checker.string(v, "label value"))
        for k, v in checker.mapping(node, "labels")
    ))


def _ports(checker: _Checker, node: yaml.Node) -> tuple[str, ...]:
    if isinstance(node, yaml.MappingNode):  # smith: {"80/tcp": {}}
        items = [k for k, _ in node.value]
    else:
        items = _seq(checker, node, "ports")
    out = []
    for item in items:
        text = checker.scalar(item, "port")
        if not _PORT.match(text) or not 0 < int(text.split("/")[0]) < 65536:
            raise checker.fail(item, f"bad port {text!r}: expected PORT or PORT/tcp|udp|sctp")
        out.append(text if "/" in text else f"{text}/tcp")
    return tuple(sorted(set(out)))


def _arch(checker: _Checker, node: yaml.Node) -> str:
    value = checker.scalar(node, "arch")
    by_rpm = {rpm: oci for oci, rpm in ARCHES.items()}
    if value in by_rpm:
        return by_rpm[value]
    if value not in ARCHES:
        raise checker.fail(node, f"unknown arch {value!r} (known: {', '.join(ARCHES)}, or "
                                 f"{', '.join(by_rpm)})")
    return value


def _arch_list(checker: _Checker, node: yaml.SequenceNode) -> tuple[str, ...]:
    """``arch: [amd64, arm64]``: the platforms of a multi-platform image, in order, each once."""
    if not node.value:
        raise checker.fail(node, "arch must not be an empty list")
    out: list[str] = []
    for item in node.value:
        arch = _arch(checker, item)
        if arch in out:
            raise checker.fail(item, f"arch {arch!r} is listed twice")
        out.append(arch)
    return tuple(out)


def _from_per_platform(checker: _Checker, node: yaml.MappingNode) -> tuple[tuple[str, str], ...]:
    """``from: {amd64: ./root-amd64, arm64: ./root-arm64}``: one sysroot per platform."""
    if not node.value:
        raise checker.fail(node, "from must not be an empty mapping")
    out: dict[str, str] = {}
    for key_node, value_node in node.value:
        arch = _arch(checker, key_node)
        if arch in out:
            raise checker.fail(key_node, f"from names arch {arch!r} twice")
        out[arch] = checker.scalar(value_node, f"from.{arch}")
    return tuple(out.items())


def _package(checker: _Checker, node: yaml.Node) -> tuple[str, ...]:
    return (checker.scalar(node, "package"),)


def _packages(checker: _Checker, node: yaml.Node) -> tuple[str, ...]:
    items = _seq(checker, node, "packages")
    return tuple(checker.scalar(item, "packages entry") for item in items)


def _repos(checker: _Checker, node: yaml.Node) -> tuple[RepoSpec, ...]:
    repos: list[RepoSpec] = []
    seen: set[str] = set()
    for item in _seq(checker, node, "repos"):
        fields_: dict[str, str | int] = {}
        for key, value in checker.mapping(item, "repos entry"):
            name = checker.scalar(key, "repos key")
            if name not in ("baseurl", "name", "priority", "gpgkey"):
                raise checker.fail(key, f"unknown repos key {name!r} "
                                        "(known: baseurl, name, priority, gpgkey)")
            if name == "priority":
                if not isinstance(value, yaml.ScalarNode) or value.tag != "tag:yaml.org,2002:int":
                    raise checker.fail(value, "priority must be an integer")
                fields_[name] = int(value.value)
            else:
                fields_[name] = checker.scalar(value, f"repos {name}")
        baseurl = fields_.get("baseurl")
        if not isinstance(baseurl, str):
            raise checker.fail(item, "a repos entry needs a baseurl")
        if not re.match(r"^(https?|file)://", baseurl):
            raise checker.fail(item, f"baseurl {baseurl!r} must be http://, https:// or file://")
        repo_id = str(fields_.get("name")
                      or re.sub(r"[^A-Za-z0-9_.-]+", "-", baseurl.split("://", 1)[1]).strip("-"))
        if repo_id in seen:
            raise checker.fail(item, f"two repos are named {repo_id!r}")
        seen.add(repo_id)
        repos.append(RepoSpec(repo_id, baseurl.rstrip("/") + "/", int(fields_.get("priority", 99)),
                              str(fields_.get("gpgkey", ""))))
    return tuple(repos)


def _paths_or_names(what: str) -> Callable[[_Checker, yaml.Node], tuple[str, ...]]:
    def convert(checker: _Checker, node: yaml.Node) -> tuple[str, ...]:
        return tuple(checker.scalar(item, f"{what} entry") for item in _seq(checker, node, what))

    return convert


#: Names ``packs:`` accepts (see :mod:`microcontainer_tool.assembly.packs`, which checks it has them all).
PACK_NAMES = ("gconv", "locale", "nss", "ssl", "tz")


def _packs(checker: _Checker, node: yaml.Node) -> tuple[str, ...]:
    names: list[str] = []
    for item in _seq(checker, node, "packs"):
        name = checker.scalar(item, "packs entry")
        if name not in PACK_NAMES:
            raise checker.fail(item, f"unknown pack {name!r} (known: {', '.join(PACK_NAMES)})")
        if name not in names:
            names.append(name)
    return tuple(sorted(names))


def _mock(checker: _Checker, node: yaml.Node) -> str:
    config = ""
    for key, value in checker.mapping(node, "mock"):
        name = checker.scalar(key, "mock key")
        if name == "config":
            config = checker.scalar(value, "mock config")
        elif name in UNSUPPORTED_MOCK_KEYS:
            raise UnsupportedError(f"{checker.at(key)}: 'mock.{name}' ({UNSUPPORTED_MOCK_KEYS[name]}) "
                                   "is not supported: packages are resolved and extracted, not installed "
                                   "with mock")
        else:
            raise checker.fail(key, f"unknown mock key {name!r} (known: config, "
                                    f"{', '.join(UNSUPPORTED_MOCK_KEYS)})")
    return config


def _bool(what: str) -> Callable[[_Checker, yaml.Node], bool]:
    def convert(checker: _Checker, node: yaml.Node) -> bool:
        return checker.boolean(node, what)

    return convert


_HANDLERS: dict[str, tuple[str, Callable[[_Checker, yaml.Node], Any]]] = {
    "from": ("from_", _from),
    "parent": ("parent", _parent),
    "paths": ("paths", _paths("paths")),
    "excludes": ("excludes", _paths("excludes")),
    "files": ("files", _files),
    "libs": ("libs", _libs),
    "nss": ("nss", _bool("nss")),
    "root": ("root", _bool("root")),
    "user": ("user", _user),
    "groups": ("groups", _groups),
    "mounts": ("mounts", _paths("mounts")),
    "entrypoint": ("entrypoint", _argv("entrypoint")),
    "cmd": ("cmd", _argv("cmd")),
    "dir": ("workdir", _workdir),
    "env": ("env", _env),
    "labels": ("labels", _labels),
    "ports": ("ports", _ports),
    "arch": ("arch", _arch),
    "package": ("packages", _package),
    "packages": ("packages", _packages),
    "repos": ("repos", _repos),
    "exclude_packages": ("exclude_packages", _paths_or_names("exclude_packages")),
    "install_weak_deps": ("install_weak_deps", _bool("install_weak_deps")),
    "packs": ("packs", _packs),
    "auto_packs": ("auto_packs", _bool("auto_packs")),
    "mock": ("mock_config", _mock),
}


def check_spec(spec: ImageSpec) -> None:
    """Checks across keys of a whole spec.

    Raises:
        SpecError: contradictory keys, or nothing to put in the image.
    """
    if "package" in spec.lines and "packages" in spec.lines:
        raise SpecError(f"{spec.where('packages')}: give 'package' or 'packages', not both")
    if spec.packages and "from" in spec.lines:
        raise SpecError(f"{spec.where('from')}: 'from' and 'packages' both name the sysroot: give one")
    if spec.mock_config and spec.repos:
        raise SpecError(f"{spec.where('mock')}: 'mock.config' and 'repos' both name the repositories: "
                        "give one")
    if spec.mock_config and not spec.packages:
        raise SpecError(f"{spec.where('mock')}: 'mock.config' without an RPM 'package' has nothing "
                        "to resolve")
    if spec.repos and not spec.packages:
        raise SpecError(f"{spec.where('repos')}: 'repos' without 'packages' has nothing to resolve")
    _check_platforms(spec)
    if not spec.paths and not spec.files and not spec.packages and not os.path.isdir(spec.overlay_dir):
        raise SpecError(f"{spec.source}: nothing to put in the image: "
                        "give 'paths', 'files' or a rootfs/ overlay")


def _check_platforms(spec: ImageSpec) -> None:
    """``from:`` per platform must name exactly the platforms ``arch:`` lists."""
    if not spec.from_platforms:
        return
    if spec.packages:
        raise SpecError(f"{spec.where('from')}: 'from' and 'packages' both name the sysroot: give one")
    named = [arch for arch, _ in spec.from_platforms]
    if not spec.platforms:
        raise SpecError(f"{spec.where('from')}: 'from' names a sysroot per platform: list the platforms "
                        f"in 'arch' (arch: [{', '.join(named)}])")
    missing = [arch for arch in spec.platforms if arch not in named]
    extra = [arch for arch in named if arch not in spec.platforms]
    if missing:
        raise SpecError(f"{spec.where('from')}: 'from' names no sysroot for {', '.join(missing)} "
                        "(listed in 'arch')")
    if extra:
        raise SpecError(f"{spec.where('from')}: 'from' names a sysroot for {', '.join(extra)}, "
                        "which 'arch' does not list")


def platform_specs(spec: ImageSpec) -> list[ImageSpec]:
    """The single-platform specs a multi-platform spec (``arch:`` a list) builds, in ``arch:`` order.

    Each has ``arch`` set to one platform, ``variant`` to its :data:`VARIANTS`
    entry, and ``from`` to that platform's sysroot (``from:`` per platform) or
    the shared one; an RPM spec's each resolves into a lock of its own
    architecture (``per_arch_lock``: ``microimage.ARCH.lock``). A
    single-platform spec gives itself.
    """
    if not spec.platforms:
        return [spec]
    sysroots = dict(spec.from_platforms)
    return [replace(spec, arch=arch, variant=VARIANTS.get(arch, ""), platforms=(), from_platforms=(),
                    from_=sysroots.get(arch, spec.from_), per_arch_lock=bool(spec.packages))
            for arch in spec.platforms]


def spec_warnings(spec: ImageSpec) -> list[str]:
    """Things a spec says that are allowed (smith allowed them) but probably not meant."""
    warnings = []
    if spec.root and spec.user and spec.user.split(":")[0] not in ("0", "root"):
        warnings.append(f"{spec.where('root')}: 'root: true' wins over 'user: {spec.user}': "
                        "the image runs as 0:0")
    return warnings


def project_files(spec: ImageSpec, skip: Collection[str] = ()) -> list[str]:
    """Host files the spec itself names, for dependency tracking.

    Args:
        spec: the spec.
        skip: image paths whose ``files`` entries to leave out.

    Returns:
        The ``files`` entries' local files that exist (in spec order), then
        every file under the ``rootfs/`` overlay (directories walked in sorted
        order, files sorted by name).
    """
    paths = []
    for image_path, local in spec.files:
        if image_path not in skip:
            path = os.path.normpath(os.path.join(spec.base_dir, local))
            if os.path.isfile(path):
                paths.append(path)
    for dirpath, dirnames, filenames in os.walk(spec.overlay_dir):
        dirnames.sort()
        paths += [os.path.join(dirpath, filename) for filename in sorted(filenames)
                  if filename not in OVERLAY_SKIP]
    return paths


#: Keys whose values a merge adds to instead of replacing.
EXTENDING_KEYS = ("files", "env", "labels")


def merge_specs(base: ImageSpec, override: ImageSpec) -> ImageSpec:
    """Apply the keys given in ``override`` to ``base``.

    Keys in :data:`EXTENDING_KEYS` are merged (``override`` wins per entry);
    every other key given in ``override`` replaces ``base``'s value. Paths of
    ``override`` (``from``, ``files``) are made relative to ``base``'s
    directory.

    Returns:
        The merged, checked spec.

    Raises:
        SpecError: the merged spec is inconsistent.
    """
    changes: dict[str, Any] = {}
    for key in override.lines:
        name = _HANDLERS[key][0]
        value = getattr(override, name)
        if key == "files":
            value = tuple((image, _rebase(local, override.base_dir, base.base_dir)) for image, local in value)
        if key == "from":
            value = _rebase(value, override.base_dir, base.base_dir)
            changes["from_platforms"] = tuple((arch, _rebase(path, override.base_dir, base.base_dir))
                                              for arch, path in override.from_platforms)
        if key == "arch":
            changes["platforms"] = override.platforms
        if key in EXTENDING_KEYS:
            merged = dict(getattr(base, name))
            merged.update(dict(value))
            value = tuple(sorted(merged.items())) if key != "env" else tuple(merged.items())
        changes[name] = value
    lines = dict(base.lines)
    lines.update({k: v for k, v in override.lines.items()})
    merged_spec = replace(base, lines=lines, given=tuple(sorted(set(base.given) | set(override.given))),
                          **changes)
    check_spec(merged_spec)
    return merged_spec


def spec_from_canonical(data: dict[str, Any], base_dir: str, source: str, project_dir: str = "") -> ImageSpec:
    """Rebuild a spec from :meth:`ImageSpec.canonical` output.

    ``project_dir`` is the build tree's top (SCons' ``#``): provenance names
    project files relative to it.

    Raises:
        SpecError: ``data`` is not a canonical spec of this version.
    """
    values: dict[str, Any] = {}
    try:
        for fld in fields(ImageSpec):
            if fld.name in ("base_dir", "source", "lines", "project_dir"):
                continue
            if fld.name in _OPTIONAL_CANONICAL and fld.name not in data:
                continue
            value = data[fld.name]
            if fld.name == "repos":
                value = tuple(RepoSpec(*entry) for entry in value)
            elif isinstance(value, list):
                value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
            values[fld.name] = value
    except (KeyError, TypeError) as err:
        raise SpecError(f"{source}: not a canonical spec ({err})") from err
    return ImageSpec(base_dir=base_dir, source=source, project_dir=project_dir, **values)


def _rebase(path: str, old_base: str, new_base: str) -> str:
    if os.path.isabs(path):
        return path
    return os.path.relpath(os.path.join(old_base, path), new_base)
