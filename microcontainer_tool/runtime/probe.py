"""Probing an image: run a command in it, traced, and name the files it lacks.

:func:`probe_image` runs the image as a microcontainer (read-only root, no
network, its own user) under ``strace`` (:mod:`~microcontainer_tool.runtime.tracer`),
keeps the lookups of the probe command and its children
(:func:`~microcontainer_tool.closure.accesses.parse_accesses` with
``follow_exec``) and compares them with the sysroot the image was built from:
every path the program looked for in vain that the sysroot has is reported
(:class:`MissingFile`), with its owner package and the spec entry that adds it.

What is not reported: lookups that fail in the sysroot too (the loader's
``glibc-hwcaps`` probing, locale fallbacks), ``/etc/ld.so.cache`` and
``/etc/ld.so.preload`` (the build writes a cache when the image needs one), and
directories the program only stat'ed: the files it needs from them are reported
themselves and bring the directory along. A directory the program *listed*
(opened with ``O_DIRECTORY``) is reported whole.
"""

from __future__ import annotations

import os
import re
import stat
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from microcontainer_tool.closure.accesses import Access, Outcome, summarize
from microcontainer_tool.errors import RunError
from microcontainer_tool.runtime.containers import default_state_dir, run
from microcontainer_tool.runtime.tracer import read_log, strace_prefix
from microcontainer_tool.sources.dpkg import DpkgDatabase
from microcontainer_tool.sources.sysroot import SysRoot

#: Lookups that fail in a correct image: the build writes ``/etc/ld.so.cache``
#: only when the image's loader needs it, and nothing wants a preload file.
EXPECTED_ABSENT = frozenset({"/etc/ld.so.cache", "/etc/ld.so.preload"})

_LIBRARY_RE = re.compile(r"\.so(\.[0-9]+)*$")

Owners = Callable[[Sequence[str]], dict[str, str]]
"""Canonical sysroot paths -> the name of the package owning each (those that have one)."""


@dataclass(frozen=True)
class MissingFile:
    """A path the program looked for that the sysroot has and the image lacks.

    Attributes:
        path: the path as the program looked it up.
        canonical: the same path in the sysroot with symlinks resolved.
        package: the package owning it in the sysroot, if known.
        key: the spec key that adds it: ``libs`` (a shared library) or ``paths``.
        kind: ``file``, ``library``, ``program`` (executed) or ``directory`` (listed).
    """

    path: str
    canonical: str
    package: str | None
    key: str
    kind: str

    @property
    def spec_line(self) -> str:
        """The spec entry that adds it, e.g. ``paths: [- /usr/lib/...]``."""
        return f"{self.key}: [- {self.path}]"


@dataclass
class ProbeReport:
    """What a probe found.

    Attributes:
        args: the probe command.
        exit_code: its exit status (128 + N when killed by signal N).
        missing: the files the image lacks, sorted by path.
        lookups: how many distinct paths the program looked up.
    """

    args: list[str]
    exit_code: int
    missing: list[MissingFile] = field(default_factory=list)
    lookups: int = 0

    @property
    def passed(self) -> bool:
        """The command succeeded and looked for nothing the sysroot would have given it."""
        return self.exit_code == 0 and not self.missing

    def lines(self) -> list[str]:
        """The human-readable report: one line per missing file, then the spec entries to add."""
        command = " ".join(self.args)
        out = [f"probe `{command}`: exit status {self.exit_code}, {self.lookups} paths looked up"]
        if not self.missing:
            return out
        out.append(f"probe: {len(self.missing)} paths the program looked for are in the sysroot "
                   "but not in the image:")
        width = max(len(item.path) for item in self.missing)
        for item in self.missing:
            owner = item.package or "no package"
            out.append(f"  {item.path:<{width}}  {item.kind:<9} ({owner})  {item.spec_line}")
        out.append("probe: add to the spec:")
        for key in ("paths", "libs"):
            entries = [item.path for item in self.missing if item.key == key]
            if entries:
                out.append(f"  {key}:")
                out.extend(f"    - {path}" for path in entries)
        return out


def dpkg_owners(sysroot: SysRoot) -> Owners:
    """Owner lookup through a Debian sysroot's dpkg database (no owners if it has none)."""
    database = DpkgDatabase.open(sysroot)

    def owners(paths: Sequence[str]) -> dict[str, str]:
        if database is None:
            return {}
        return {path: package.name for path, package in database.owners(paths).items()}

    return owners


def table_owners(table: dict[str, str]) -> Owners:
    """Owner lookup in a path -> ``NAME-VERSION-RELEASE.ARCH`` table (an RPM sysroot's)."""

    def owners(paths: Sequence[str]) -> dict[str, str]:
        return {path: table[path].rsplit("-", 2)[0] for path in paths if path in table}

    return owners


def missing_files(accesses: Iterable[Access], sysroot: SysRoot, owners: Owners) -> list[MissingFile]:
    """The paths looked for in vain that ``sysroot`` has, with owner and spec key, sorted by path."""
    found: list[tuple[str, str, str]] = []  # (path, canonical, kind)
    for path, access in sorted(summarize(accesses).items()):
        if access.outcome is not Outcome.MISSING or path in EXPECTED_ABSENT:
            continue
        resolved = sysroot.resolve(path)
        if resolved is None:
            continue
        if stat.S_ISDIR(resolved.st.st_mode):
            if access.directory:
                found.append((path, resolved.path, "directory"))
            continue
        if access.syscall in ("execve", "execveat"):
            kind = "program"
        elif stat.S_ISREG(resolved.st.st_mode) and _LIBRARY_RE.search(resolved.path):
            kind = "library"
        else:
            kind = "file"
        found.append((path, resolved.path, kind))
    owned = owners([canonical for _, canonical, _ in found])
    return [MissingFile(path, canonical, owned.get(canonical), "libs" if kind == "library" else "paths", kind)
            for path, canonical, kind in found]


def probe_image(image: str, args: Sequence[str], sysroot: SysRoot, owners: Owners, *, cache_dir: str,
                cwd: str = "/", state_dir: str | None = None, read_dir: str | None = None,
                tag: str | None = None) -> ProbeReport:
    """Run ``args`` in ``image`` traced and report what it missed (see the module docstring).

    The container has a read-only root, no network and the image's user;
    ``read_dir`` is mounted at ``/read``. The program's standard output goes to
    our standard error, so a build's own output stays clean.

    Args:
        image: the built image (an OCI layout ``DIR[:TAG]`` or an archive).
        args: the probe command (``args[0]`` is looked up in the image's ``PATH``).
        sysroot: the root the image was built from.
        owners: package owners of sysroot paths (:func:`dpkg_owners`, :func:`table_owners`).
        cache_dir: the tool's cache (the unpacked image goes there).
        cwd: the image's working directory (relative paths resolve against it).
        state_dir: container state (default :func:`~.containers.default_state_dir`).
        read_dir: host directory mounted read-only at ``/read``.
        tag: the image to pick when the layout holds several.

    Raises:
        RunError: not root, no runc or strace, or the container could not start.
    """
    if not args:
        raise RunError("the probe command is empty")
    with tempfile.TemporaryDirectory(prefix="mct-probe-") as temp:
        log = os.path.join(temp, "strace.log")
        code = run(image, state_dir=state_dir or default_state_dir(), cache_dir=cache_dir, tag=tag,
                   wrapper=strace_prefix(log), stdout=2, args=list(args), read_dir=read_dir)
        accesses = read_log(log, cwd=cwd, follow_exec=list(args))
    if not accesses:
        raise RunError(f"probe `{' '.join(args)}`: the trace shows no exec of the command "
                       "(is it in the image's PATH?)")
    return ProbeReport(list(args), code, missing_files(accesses, sysroot, owners),
                       len({access.path for access in accesses}))
