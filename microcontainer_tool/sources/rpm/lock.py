"""``microimage.lock``: the exact package set a spec resolved to.

``microcontainer lock`` resolves a spec's packages once and writes every
package's NEVRA, URL and checksum here; ``build`` installs exactly these
files (downloaded by checksum), so a build does not depend on what the
repositories hold today. ``inputs_digest`` records what was resolved
(requests, repositories, arch, excludes, weak-deps flag, local RPM
checksums): when the spec changes, the digest no longer matches and ``build``
says the lock is out of date.

Why JSON: it is in the standard library, has exactly one canonical form we
control (sorted keys, 2-space indent, ``\\n`` line ends, one trailing newline,
UTF-8), so re-locking an unchanged repository writes byte-identical files that
diff line by line; YAML would add implicit typing traps (``1.10`` read as a
float, ``no`` as a boolean) to a file that holds version strings.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

from microcontainer_tool import jsontext
from microcontainer_tool.errors import OutputError, SourceError
from microcontainer_tool.hostfs.atomic import atomic_file
from microcontainer_tool.sources.rpm.package import Checksum, PackageInfo

LOCK_VERSION = 1
"""``lockfile_version`` written and accepted."""

OUT_OF_DATE = "microimage.lock is out of date with the spec: run `microcontainer lock`"
"""The message for a lock whose ``inputs_digest`` does not match the spec."""

_HEX = re.compile(r"[0-9a-f]+")


@dataclass(frozen=True)
class LockedPackage:
    """One package of a lock.

    Attributes:
        name, epoch, version, release, arch: the NEVRA (``epoch`` 0 when unset).
        url: full URL of a repository package, or the path of a local RPM
            (relative to the spec's directory).
        checksum_type: ``sha256`` (or what the repository uses).
        checksum: hex digest of the package file.
        repo: repository id, or ``@local``.
    """

    name: str
    epoch: int
    version: str
    release: str
    arch: str
    url: str
    checksum_type: str
    checksum: str
    repo: str

    @property
    def nevra(self) -> str:
        """``name-[epoch:]version-release.arch``."""
        epoch = f"{self.epoch}:" if self.epoch else ""
        return f"{self.name}-{epoch}{self.version}-{self.release}.{self.arch}"

    @classmethod
    def from_package(cls, info: PackageInfo, url: str | None = None) -> LockedPackage:
        """Lock a resolved package (``url`` defaults to ``info.location``).

        Raises:
            SourceError: the package has no checksum.
        """
        if info.checksum is None:
            raise SourceError(f"{info.nevra}: no checksum to lock")
        return cls(info.name, info.epoch, info.version, info.release, info.arch,
                   url if url is not None else info.location, info.checksum.kind,
                   info.checksum.value, info.repo)


@dataclass
class Lock:
    """A lock file's content.

    Attributes:
        inputs_digest: ``sha256:<hex>`` of the canonical resolution inputs
            (:func:`inputs_digest`).
        packages: the locked packages (written sorted by name, arch, EVR).
    """

    inputs_digest: str
    packages: list[LockedPackage]


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _repo_entry(repo: Any) -> dict[str, Any]:
    if isinstance(repo, (tuple, list)):
        repo_id, baseurl, *rest = repo
        priority = rest[0] if rest else 99
    else:
        repo_id, baseurl, priority = repo.id, repo.baseurl, getattr(repo, "priority", 99)
    return {"id": str(repo_id), "baseurl": str(baseurl).rstrip("/") + "/", "priority": int(priority)}


def _local_entry(item: Checksum | PackageInfo | str) -> str:
    if isinstance(item, PackageInfo):
        if item.checksum is None:
            raise SourceError(f"{item.nevra}: a local package needs a checksum")
        item = item.checksum
    if isinstance(item, Checksum):
        return f"{item.kind.lower()}:{item.value.lower()}"
    text = str(item).lower()
    return text if ":" in text else f"sha256:{text}"


def inputs_digest(requests: Iterable[str], repos: Iterable[Any], arch: str,
                  exclude: Iterable[str] = (), install_weak_deps: bool = False,
                  local: Iterable[Checksum | PackageInfo | str] = ()) -> str:
    """The digest of everything a resolution depends on, except the repositories' content.

    Order does not matter (the resolver sorts its requests too); whitespace
    inside a request is normalised.

    Args:
        requests: the package requests (names, capabilities, constraints).
        repos: :class:`.repo.RepoConfig`-like objects (``id``, ``baseurl``,
            ``priority``) or ``(id, baseurl[, priority])`` tuples.
        arch: the target architecture.
        exclude: excluded package names.
        install_weak_deps: the weak-dependency flag.
        local: checksums of local RPM files (:class:`Checksum`, their
            :class:`PackageInfo`, or sha256 hex strings).

    Returns:
        ``sha256:<hex>``.
    """
    inputs = {
        "arch": arch,
        "exclude": sorted(set(exclude)),
        "install_weak_deps": bool(install_weak_deps),
        "local": sorted(_local_entry(item) for item in local),
        "repos": sorted((_repo_entry(r) for r in repos), key=lambda r: (r["id"], r["baseurl"])),
        "requests": sorted({" ".join(r.split()) for r in requests}),
        "version": LOCK_VERSION,
    }
    return "sha256:" + hashlib.sha256(_canonical(inputs)).hexdigest()


def _sort_key(p: LockedPackage) -> tuple:
    return (p.name, p.arch, p.epoch, p.version, p.release, p.repo, p.url)


def dumps_lock(lock: Lock) -> str:
    """The canonical text of a lock file (what :func:`write_lock` writes)."""
    data = {
        "inputs_digest": lock.inputs_digest,
        "lockfile_version": LOCK_VERSION,
        "packages": [asdict(p) for p in sorted(lock.packages, key=_sort_key)],
    }
    return json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def write_lock(path: str, lock: Lock) -> None:
    """Write a lock file canonically and atomically (temp file, fsync, rename).

    Raises:
        SourceError: the file cannot be written.
    """
    text = dumps_lock(lock).encode("utf-8")
    try:
        with atomic_file(path) as out:
            os.fchmod(out.fileno(), 0o644)  # whatever the umask: the file is shared (version control)
            out.write(text)
    except OSError as exc:
        raise SourceError(f"cannot write {path}: {exc.strerror}") from None
    except OutputError as exc:
        raise SourceError(f"cannot write {path}: {exc}") from None


_FIELD_TYPES = {f.name: (int if f.name == "epoch" else str) for f in fields(LockedPackage)}


def _package(path: str, index: int, item: Any) -> LockedPackage:
    where = f"{path}: packages[{index}]"
    if not isinstance(item, dict):
        raise SourceError(f"{where} is not an object")
    missing = sorted(set(_FIELD_TYPES) - set(item))
    if missing:
        raise SourceError(f"{where} lacks {', '.join(missing)}")
    unknown = sorted(set(item) - set(_FIELD_TYPES))
    if unknown:
        raise SourceError(f"{where} has unknown keys {', '.join(unknown)}")
    for name, kind in _FIELD_TYPES.items():
        value = item[name]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise SourceError(f"{where}.{name} must be {'an integer' if kind is int else 'a string'}")
        if kind is str and name not in ("release",) and not value:
            raise SourceError(f"{where}.{name} is empty")
    if item["epoch"] < 0:
        raise SourceError(f"{where}.epoch is negative")
    if not _HEX.fullmatch(item["checksum"]):
        raise SourceError(f"{where}.checksum is not lower-case hex")
    return LockedPackage(**item)


def read_lock(path: str) -> Lock:
    """Read and validate a lock file.

    Raises:
        SourceError: unreadable, not JSON, another lockfile version, or a bad
            entry (one line naming the file and the entry).
    """
    try:
        data = jsontext.load_file(path)
    except OSError as exc:
        raise SourceError(f"cannot read {path}: {exc.strerror}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise SourceError(f"{path}: not a valid lock file ({' '.join(str(exc).split())})") from None
    if not isinstance(data, dict):
        raise SourceError(f"{path}: not a valid lock file (not a JSON object)")
    version = data.get("lockfile_version")
    if version != LOCK_VERSION:
        raise SourceError(f"{path}: unsupported lockfile_version {version!r} (expected {LOCK_VERSION})")
    digest = data.get("inputs_digest")
    if not isinstance(digest, str) or not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
        raise SourceError(f"{path}: inputs_digest must be 'sha256:' and 64 hex digits")
    packages = data.get("packages")
    if not isinstance(packages, list):
        raise SourceError(f"{path}: packages must be a list")
    unknown = sorted(set(data) - {"inputs_digest", "lockfile_version", "packages"})
    if unknown:
        raise SourceError(f"{path}: unknown keys {', '.join(unknown)}")
    locked = [_package(path, i, item) for i, item in enumerate(packages)]
    seen: set[tuple[str, str]] = set()
    for p in locked:
        if (p.name, p.arch) in seen:
            raise SourceError(f"{path}: {p.name}.{p.arch} is locked twice")
        seen.add((p.name, p.arch))
    return Lock(digest, locked)


def lock_from_packages(packages: Sequence[PackageInfo], digest: str) -> Lock:
    """A :class:`Lock` of resolved packages (``url`` = their ``location``)."""
    return Lock(digest, [LockedPackage.from_package(p) for p in packages])
