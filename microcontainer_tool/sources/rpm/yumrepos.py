"""Repositories a spec without ``repos:`` gets: its ``mock.config``, else the host's yum.repos.d.

smith installed ``package: NAME`` with mock, in a chroot whose yum/dnf
configuration came from the mock config file (``mock: {config: FILE}``), or
from the machine's own repositories. A spec that names packages but no
``repos`` gets them the same way:

* ``mock.config``: the repository sections of the ``config_opts['yum.conf']``
  (or ``dnf.conf``) text of that mock config file (the file is read, never
  executed; ``include()`` and templates are not followed);
* otherwise every ``.repo`` file in ``$MCT_YUM_REPOS_DIR`` (default
  ``/etc/yum.repos.d``).

Every enabled section with a ``baseurl`` becomes a ``repos`` entry (its
``priority``, and its ``gpgkey`` unless ``gpgcheck=0``). ``$basearch``/``$arch``
are the spec's RPM architecture; ``$releasever`` is the mock config's
``config_opts['releasever']``, else ``$MCT_YUM_RELEASEVER``, else the major
part of the host's ``VERSION_ID`` (``/etc/os-release``).
"""

from __future__ import annotations

import configparser
import os
import re
from dataclasses import replace

from microcontainer_tool.errors import SpecError
from microcontainer_tool.spec.imagespec import ImageSpec, RepoSpec

REPOS_DIR = "/etc/yum.repos.d"
REPOS_DIR_ENV = "MCT_YUM_REPOS_DIR"
RELEASEVER_ENV = "MCT_YUM_RELEASEVER"
MOCK_DIR = "/etc/mock"
_VARIABLE = re.compile(r"\$(\{[A-Za-z0-9_]+\}|[A-Za-z0-9_]+)")
_TRUE = ("1", "yes", "true", "on")
_MOCK_CONF = re.compile(r"""^config_opts\[(['"])(?:yum|dnf)\.conf\1\]\s*=\s*"""
                        r"""(?:\"\"\"|''')(.*?)(?:\"\"\"|''')""", re.DOTALL | re.MULTILINE)
_MOCK_RELEASEVER = re.compile(r"""^config_opts\[(['"])releasever\1\]\s*=\s*(['"])([^'"]+)\2""", re.MULTILINE)


def with_system_repos(spec: ImageSpec) -> ImageSpec:
    """The spec, with its mock config's or the host's repositories when it names packages but no ``repos``.

    Returns:
        ``spec`` itself when it has ``repos``, or names only local ``.rpm`` files.

    Raises:
        SpecError: no enabled repository with a ``baseurl`` was found (the
            message says ``repos:`` is needed), or a file is malformed.
    """
    if spec.repos or all(p.endswith(".rpm") for p in spec.packages):
        return spec
    if spec.mock_config:
        path = mock_config_path(spec)
        repos = read_mock_config(path, spec.rpm_arch)
        where, origin = spec.where("mock"), f"the yum.conf/dnf.conf of mock config {path}"
    else:
        directory = os.environ.get(REPOS_DIR_ENV) or REPOS_DIR
        repos = read_repos_dir(directory, spec.rpm_arch)
        where = spec.where("package" if "package" in spec.lines else "packages")
        origin = f"{directory}/*.repo"
    if not repos:
        raise SpecError(f"{where}: no 'repos' in the spec and no enabled repository with "
                        f"a baseurl in {origin}: give 'repos:'")
    return replace(spec, repos=tuple(repos))


def mock_config_path(spec: ImageSpec) -> str:
    """The file ``mock.config`` names: a path (relative to the spec) or a name in ``/etc/mock``."""
    value = spec.mock_config
    if "/" in value or value.endswith(".cfg"):
        return os.path.normpath(os.path.join(spec.base_dir, value))
    return os.path.join(MOCK_DIR, value + ".cfg")


def read_mock_config(path: str, arch: str) -> list[RepoSpec]:
    """The enabled repositories of a mock config file's ``yum.conf``/``dnf.conf``.

    Raises:
        SpecError: unreadable file, no such text in it, or a malformed section.
    """
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as err:
        raise SpecError(f"mock config {path}: cannot read: {getattr(err, 'strerror', None) or err}") from None
    match = _MOCK_CONF.search(text)
    if match is None:
        raise SpecError(f"mock config {path}: no config_opts['yum.conf'] or ['dnf.conf'] text "
                        "(include() and templates are not followed): give 'repos:'")
    release = _MOCK_RELEASEVER.search(text)
    variables = {"basearch": arch, "arch": arch,
                 "releasever": release.group(3) if release else _releasever()}
    return parse_repo_text(match.group(2), f"mock config {path}", variables)


def read_repos_dir(directory: str, arch: str) -> list[RepoSpec]:
    """The enabled repositories of ``directory/*.repo`` (files and sections in sorted order).

    Args:
        directory: a ``yum.repos.d`` directory (missing: no repositories).
        arch: the RPM architecture ``$basearch`` and ``$arch`` stand for.

    Raises:
        SpecError: a malformed file, an unknown variable, or an enabled
            section with only a ``mirrorlist``/``metalink``.
    """
    try:
        names = sorted(n for n in os.listdir(directory) if n.endswith(".repo"))
    except FileNotFoundError:
        return []
    except OSError as err:
        raise SpecError(f"{directory}: {err.strerror}") from None
    variables = {"basearch": arch, "arch": arch, "releasever": _releasever()}
    repos: list[RepoSpec] = []
    for name in names:
        path = os.path.join(directory, name)
        try:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
        except (OSError, UnicodeDecodeError) as err:
            raise SpecError(f"{path}: cannot read: {getattr(err, 'strerror', None) or err}") from None
        known = {r.id for r in repos}
        repos += [r for r in parse_repo_text(text, path, variables) if r.id not in known]
    return repos


def parse_repo_text(text: str, source: str, variables: dict[str, str]) -> list[RepoSpec]:
    """The enabled repositories of yum/dnf INI text (sections in sorted order; ``[main]`` gives defaults).

    Raises:
        SpecError: as :func:`read_repos_dir`, naming ``source`` and the section.
    """
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        parser.read_string(text, source)
    except configparser.Error as err:
        raise SpecError(f"{source}: not a readable .repo text: {str(err).splitlines()[0]}") from None
    main_gpgcheck = parser.get("main", "gpgcheck", fallback="1") if parser.has_section("main") else "1"
    repos: list[RepoSpec] = []
    for section in sorted(s for s in parser.sections() if s != "main"):
        values = parser[section]
        if values.get("enabled", "1").strip().lower() not in _TRUE:
            continue
        where = f"{source}: [{section}]"
        baseurl = values.get("baseurl", "").split()
        if not baseurl:
            if values.get("mirrorlist") or values.get("metalink"):
                raise SpecError(f"{where} has only a mirrorlist/metalink, which is not "
                                "supported: give 'repos:' with a baseurl")
            continue
        url = _expand(baseurl[0], variables, where)
        if not re.match(r"^(https?|file)://", url):
            raise SpecError(f"{where}: baseurl {url!r} must be http://, https:// or file://")
        gpgkey = ""
        if values.get("gpgcheck", main_gpgcheck).strip().lower() in _TRUE:
            gpgkey = " ".join(_expand(k, variables, where)
                              for k in re.split(r"[\s,]+", values.get("gpgkey", "")) if k)
        try:
            priority = int(values.get("priority", "99"))
        except ValueError:
            raise SpecError(f"{where}: priority must be an integer") from None
        repos.append(RepoSpec(section, url.rstrip("/") + "/", priority, gpgkey))
    return repos


def _expand(text: str, variables: dict[str, str], where: str) -> str:
    def one(match: re.Match[str]) -> str:
        name = match.group(1).strip("{}")
        if name not in variables or not variables[name]:
            raise SpecError(f"{where}: unknown variable ${name} in {text!r}")
        return variables[name]

    return _VARIABLE.sub(one, text)


def _releasever() -> str:
    value = os.environ.get(RELEASEVER_ENV)
    if value:
        return value
    try:
        with open("/etc/os-release", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("VERSION_ID="):
                    return line.split("=", 1)[1].strip().strip("\"'").split(".")[0]
    except OSError:
        pass
    return ""
