"""The host's yum/dnf repository files (``/etc/yum.repos.d/*.repo``), for specs without ``repos:``.

smith installed ``package: NAME`` with the machine's own repositories. A spec
that names packages but no ``repos`` gets them the same way: every enabled
section of the ``.repo`` files in ``$MCT_YUM_REPOS_DIR`` (default
``/etc/yum.repos.d``) with a ``baseurl`` becomes a ``repos`` entry (its
``priority``, and its ``gpgkey`` unless ``gpgcheck=0``). ``$basearch``/``$arch``
are the spec's RPM architecture; ``$releasever`` is ``$MCT_YUM_RELEASEVER``,
else the major part of the host's ``VERSION_ID`` (``/etc/os-release``).
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
_VARIABLE = re.compile(r"\$(\{[A-Za-z0-9_]+\}|[A-Za-z0-9_]+)")
_TRUE = ("1", "yes", "true", "on")


def with_system_repos(spec: ImageSpec) -> ImageSpec:
    """The spec, with the host's repositories when it names packages but no ``repos``.

    Returns:
        ``spec`` itself when it has ``repos``, or names only local ``.rpm`` files.

    Raises:
        SpecError: no enabled repository with a ``baseurl`` was found (the
            message says ``repos:`` is needed), or a ``.repo`` file is malformed.
    """
    if spec.repos or all(p.endswith(".rpm") for p in spec.packages):
        return spec
    directory = os.environ.get(REPOS_DIR_ENV) or REPOS_DIR
    repos = read_repos_dir(directory, spec.rpm_arch)
    if not repos:
        key = "package" if "package" in spec.lines else "packages"
        raise SpecError(f"{spec.where(key)}: no 'repos' in the spec and no enabled repository with "
                        f"a baseurl in {directory}/*.repo: give 'repos:'")
    return replace(spec, repos=tuple(repos))


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
    seen: set[str] = set()
    for name in names:
        path = os.path.join(directory, name)
        parser = configparser.ConfigParser(interpolation=None, strict=False)
        try:
            with open(path, encoding="utf-8") as handle:
                parser.read_file(handle, path)
        except (OSError, UnicodeDecodeError, configparser.Error) as err:
            raise SpecError(f"{path}: not a readable .repo file: {str(err).splitlines()[0]}") from None
        for section in sorted(parser.sections()):
            values = parser[section]
            if values.get("enabled", "1").strip().lower() not in _TRUE or section in seen:
                continue
            baseurl = values.get("baseurl", "").split()
            if not baseurl:
                if values.get("mirrorlist") or values.get("metalink"):
                    raise SpecError(f"{path}: [{section}] has only a mirrorlist/metalink, which is not "
                                    "supported: give 'repos:' with a baseurl")
                continue
            where = f"{path}: [{section}]"
            url = _expand(baseurl[0], variables, where)
            if not re.match(r"^(https?|file)://", url):
                raise SpecError(f"{where}: baseurl {url!r} must be http://, https:// or file://")
            gpgkey = ""
            if values.get("gpgcheck", "1").strip().lower() in _TRUE:
                gpgkey = " ".join(_expand(k, variables, where)
                                  for k in re.split(r"[\s,]+", values.get("gpgkey", "")) if k)
            try:
                priority = int(values.get("priority", "99"))
            except ValueError:
                raise SpecError(f"{where}: priority must be an integer") from None
            seen.add(section)
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
