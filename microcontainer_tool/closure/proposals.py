"""From a traced program's lookups to the spec entries an image lacks.

One function, :func:`propose`, serves both ways of tracing a program:

- ``build --probe`` runs the *built image*: what the image lacks is what the
  program looked for in vain (``MISSING`` lookups);
- ``trace`` runs the *sysroot*: what the image lacks is what the program found
  there that the tree the spec builds does not hold.

Either way a path is proposed only if the sysroot has it, with its owner
package and the spec key that adds it: ``libs`` for a shared library (its
closure comes along), ``paths`` otherwise.

What is never proposed: ``/``, ``/etc/ld.so.cache`` and ``/etc/ld.so.preload``
(the build writes a cache when the image's loader needs one; nothing wants a
preload file), lookups that failed otherwise (``EACCES``...), and directories
the program only stat'ed or walked through: the files it needs from them are
proposed themselves and bring the directory along. A directory the program
*listed* (opened with ``O_DIRECTORY``) is proposed whole, unless something
below it is proposed itself: then those entries are what it used (Python lists
every ``sys.path`` directory to cache its names, but imports only a few files
of the standard library).
"""

from __future__ import annotations

import re
import stat
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from microcontainer_tool.closure.accesses import Access, Outcome, summarize
from microcontainer_tool.sources.dpkg import DpkgDatabase
from microcontainer_tool.sources.sysroot import SysRoot

#: Lookups that fail in a correct image: the build writes ``/etc/ld.so.cache``
#: only when the image's loader needs it, and nothing wants a preload file.
EXPECTED_ABSENT = frozenset({"/", "/etc/ld.so.cache", "/etc/ld.so.preload"})

#: The spec keys proposals go to, in the order reports list them.
SPEC_KEYS = ("paths", "libs")

_LIBRARY_RE = re.compile(r"\.so(\.[0-9]+)*$")

Owners = Callable[[Sequence[str]], dict[str, str]]
"""Canonical sysroot paths -> the name of the package owning each (those that have one)."""

Absent = Callable[[Access], bool]
"""Whether the image lacks what an access looked up (its summarized access)."""


@dataclass(frozen=True)
class MissingFile:
    """A path the program used that the sysroot has and the image lacks.

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


def propose(accesses: Iterable[Access], sysroot: SysRoot, owners: Owners,
            absent: Absent) -> list[MissingFile]:
    """The paths the image lacks (``absent``) that ``sysroot`` has, with owner and spec key, by path.

    Args:
        accesses: the program's lookups (duplicates are summarized).
        sysroot: the root the image is built from.
        owners: package owners of sysroot paths (:func:`dpkg_owners`, :func:`table_owners`).
        absent: whether the image lacks a looked-up path; only ``FOUND``,
            ``EXECUTED`` and ``MISSING`` lookups are asked.
    """
    files: list[tuple[str, str, str]] = []  # (path, canonical, kind)
    listed: list[tuple[str, str]] = []
    for path, access in sorted(summarize(accesses).items()):
        if path in EXPECTED_ABSENT or access.outcome is Outcome.FAILED or not absent(access):
            continue
        resolved = sysroot.resolve(path)
        if resolved is None:
            continue
        if stat.S_ISDIR(resolved.st.st_mode):
            if access.directory:
                listed.append((path, resolved.path))
            continue
        if access.syscall in ("execve", "execveat"):
            kind = "program"
        elif stat.S_ISREG(resolved.st.st_mode) and _LIBRARY_RE.search(resolved.path):
            kind = "library"
        else:
            kind = "file"
        files.append((path, resolved.path, kind))
    found = list(files)
    for path, canonical in listed:
        if not any(other.startswith(path + "/") for other, _, _ in files):
            found.append((path, canonical, "directory"))
    found.sort()
    owned = owners([canonical for _, canonical, _ in found])
    return [MissingFile(path, canonical, owned.get(canonical), "libs" if kind == "library" else "paths", kind)
            for path, canonical, kind in found]


def proposal_lines(missing: Sequence[MissingFile], add_title: str) -> list[str]:
    """One line per proposal (path, kind, owner, spec line), then the spec entries under ``add_title``."""
    if not missing:
        return []
    out: list[str] = []
    width = max(len(item.path) for item in missing)
    for item in missing:
        owner = item.package or "no package"
        out.append(f"  {item.path:<{width}}  {item.kind:<9} ({owner})  {item.spec_line}")
    out.append(add_title)
    for key in SPEC_KEYS:
        entries = [item.path for item in missing if item.key == key]
        if entries:
            out.append(f"  {key}:")
            out.extend(f"    - {path}" for path in entries)
    return out


def spec_additions(missing: Iterable[MissingFile]) -> dict[str, list[str]]:
    """The proposals as spec entries: key -> paths, in report order, keys without entries left out."""
    additions: dict[str, list[str]] = {}
    for item in missing:
        additions.setdefault(item.key, []).append(item.path)
    return {key: additions[key] for key in SPEC_KEYS if key in additions}
