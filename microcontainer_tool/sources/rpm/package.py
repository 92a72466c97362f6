"""The package model shared by the RPM reader, the repository metadata and the resolver.

Pure data: no I/O. :mod:`.rpm` fills it from ``.rpm`` headers, :mod:`.repo`
from repository metadata (``primary.xml``), and :mod:`.resolve` hands both to
libsolv.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Dep:
    """One dependency or capability, as rpm writes it.

    Attributes:
        name: ``libc.so.6()(64bit)``, ``/bin/sh``, ``(a or b)`` (rich), ``glibc``.
        flags: comparison: ``""`` (none), ``"EQ"``, ``"LT"``, ``"LE"``, ``"GT"``, ``"GE"``.
        epoch: epoch of the version compared to, or ``None``.
        version: version compared to, or ``None``.
        release: release compared to, or ``None``.
        pre: a ``Requires(pre)``-style dependency (still a requirement for us).
    """

    name: str
    flags: str = ""
    epoch: int | None = None
    version: str | None = None
    release: str | None = None
    pre: bool = False

    def evr(self) -> str:
        """``[epoch:]version[-release]`` or ``""``."""
        if self.version is None:
            return ""
        text = f"{self.epoch}:{self.version}" if self.epoch else self.version
        return f"{text}-{self.release}" if self.release else text

    def __str__(self) -> str:
        ops = {"EQ": "=", "LT": "<", "LE": "<=", "GT": ">", "GE": ">="}
        return f"{self.name} {ops[self.flags]} {self.evr()}" if self.flags else self.name


@dataclass(frozen=True)
class Checksum:
    """A content checksum: ``kind`` (``sha256``, ``sha512``, ``sha1``, ``md5``) and hex ``value``."""

    kind: str
    value: str


@dataclass(frozen=True)
class PackageInfo:
    """Identity, metadata and dependencies of one binary package.

    Attributes:
        name, epoch, version, release, arch: the NEVRA (``epoch`` 0 when unset).
        summary, license, url, sourcerpm, vendor, buildtime: header metadata.
        provides, requires, conflicts, obsoletes, recommends, suggests,
            supplements, enhances: dependencies.
        files: every file path the package owns (directories included), sorted.
        location: where the package file is: a local path, or a URL relative
            to its repository's base URL (``location_href``).
        checksum: the package file's checksum (repository metadata, or
            computed for a local file).
        size: the package file's size in bytes (0 if unknown).
        repo: the repository id it comes from (``"@local"`` for local files).
    """

    name: str
    epoch: int
    version: str
    release: str
    arch: str
    summary: str = ""
    license: str = ""
    url: str = ""
    sourcerpm: str = ""
    vendor: str = ""
    buildtime: int = 0
    provides: tuple[Dep, ...] = ()
    requires: tuple[Dep, ...] = ()
    conflicts: tuple[Dep, ...] = ()
    obsoletes: tuple[Dep, ...] = ()
    recommends: tuple[Dep, ...] = ()
    suggests: tuple[Dep, ...] = ()
    supplements: tuple[Dep, ...] = ()
    enhances: tuple[Dep, ...] = ()
    files: tuple[str, ...] = field(default=(), repr=False)
    location: str = ""
    checksum: Checksum | None = None
    size: int = 0
    repo: str = ""

    @property
    def evr(self) -> str:
        """``[epoch:]version-release``."""
        base = f"{self.version}-{self.release}"
        return f"{self.epoch}:{base}" if self.epoch else base

    @property
    def nevra(self) -> str:
        """``name-[epoch:]version-release.arch``, as ``rpm -q`` prints it."""
        return f"{self.name}-{self.evr}.{self.arch}"


def split_evr(text: str) -> tuple[int | None, str | None, str | None]:
    """``[epoch:]version[-release]`` split as rpm's ``parseEVR`` does (``None`` for absent parts)."""
    if not text:
        return None, None, None
    epoch: int | None = None
    head, sep, rest = text.partition(":")
    if sep and head.isdigit():
        epoch, text = int(head), rest
    version, sep, release = text.rpartition("-")
    if not sep:
        return epoch, text, None
    return epoch, version, release
