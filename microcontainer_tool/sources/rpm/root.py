"""The RPM side of a spec: lock the package set, then lay it out as a sysroot.

``lock_packages`` resolves the spec's ``packages`` (names, capabilities,
version constraints, local ``.rpm`` files) over its ``repos`` with libsolv and
returns a :class:`~.lock.Lock`. ``prepare_sysroot`` turns a lock into a
directory holding the union of the packages' files, extracted without root
and without running any scriptlet, and remembers which package owns each
path (for provenance and the rpm manifest).

Everything is cached under the cache directory, by content:

* ``packages/``: downloaded ``.rpm`` files, by checksum (:class:`~.repo.Fetcher`);
* ``repos/``: parsed repository metadata, by repomd checksum;
* ``sysroots/<digest>/``: the extracted union of a lock's packages, with
  ``sysroots/<digest>.json`` mapping each path to its package. Written in a
  temporary directory and renamed, so an interrupted build leaves nothing
  half-extracted behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from typing import Any, Protocol

from microcontainer_tool import jsontext
from microcontainer_tool.errors import MicrocontainerError, SourceError, SpecError
from microcontainer_tool.hostfs.atomic import make_temp_dir, replace_dir
from microcontainer_tool.sources.rpm.lock import Lock, LockedPackage, inputs_digest, read_lock, write_lock
from microcontainer_tool.sources.rpm.package import Checksum, PackageInfo
from microcontainer_tool.spec.imagespec import ImageSpec

LOCK_NAME = "microimage.lock"


def lock_path(spec: ImageSpec) -> str:
    """Where a spec's lock file lives: ``microimage.lock`` beside the spec.

    One platform of a multi-platform spec (``per_arch_lock``) has its own,
    ``microimage.RPMARCH.lock`` (``microimage.aarch64.lock``).
    """
    if spec.per_arch_lock:
        return os.path.join(spec.base_dir, f"microimage.{spec.rpm_arch}.lock")
    return os.path.join(spec.base_dir, LOCK_NAME)


def local_rpms(spec: ImageSpec) -> list[str]:
    """The spec's ``packages`` entries that are local ``.rpm`` files (host paths)."""
    return [os.path.normpath(os.path.join(spec.base_dir, p)) for p in spec.packages if p.endswith(".rpm")]


def spec_inputs_digest(spec: ImageSpec) -> str:
    """The digest of everything resolution depends on (see :func:`.lock.inputs_digest`)."""
    local = []
    for path in local_rpms(spec):
        local.append(_file_sha256(path))
    requests = [p for p in spec.packages if not p.endswith(".rpm")]
    return inputs_digest(
        requests=requests,
        repos=[(r.id, r.baseurl, r.priority) for r in spec.repos],
        arch=spec.rpm_arch,
        exclude=list(spec.exclude_packages),
        install_weak_deps=spec.install_weak_deps,
        local=local,
    )


def _file_sha256(path: str) -> str:
    sha = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                sha.update(chunk)
    except OSError as error:
        raise SourceError(f"{path}: {error.strerror}") from None
    return sha.hexdigest()


def lock_packages(spec: ImageSpec, cache_dir: str, fetcher: object | None = None) -> Lock:
    """Resolve the spec's packages and return the lock (nothing is written).

    Raises:
        RepoError, ResolveError, RpmError: with one-line messages.
    """
    from microcontainer_tool.sources.rpm.payload import read_rpm
    from microcontainer_tool.sources.rpm.repo import Fetcher, RepoConfig, load_repo
    from microcontainer_tool.sources.rpm.solver import resolve

    fetch: Any = fetcher if fetcher is not None else Fetcher(cache_dir=cache_dir)
    repos = [load_repo(RepoConfig(r.id, r.baseurl, name=r.id, priority=r.priority, gpgkey=r.gpgkey),
                       fetch, cache_dir) for r in spec.repos]
    local = [read_rpm(path) for path in local_rpms(spec)]
    requests = [p for p in spec.packages if not p.endswith(".rpm")]
    resolution = resolve(repos, requests, local=local, arch=spec.rpm_arch,
                         exclude=list(spec.exclude_packages), install_weak_deps=spec.install_weak_deps)
    packages = []
    for info in resolution.packages:
        checksum = info.checksum or Checksum("sha256", _file_sha256(info.location))
        url = info.location
        if info.repo == "@local":
            url = os.path.relpath(info.location, spec.base_dir)
        packages.append(LockedPackage(info.name, info.epoch, info.version, info.release, info.arch,
                                      url, checksum.kind, checksum.value, info.repo))
    return Lock(spec_inputs_digest(spec), packages)


def ensure_lock(spec: ImageSpec, cache_dir: str, update: bool = False,
                fetcher: object | None = None) -> tuple[Lock, bool]:
    """The lock to build from: read it, or resolve and write it when absent or ``update``.

    Returns:
        ``(lock, written)``.

    Raises:
        SpecError: the lock exists but no longer matches the spec.
    """
    path = lock_path(spec)
    if os.path.exists(path) and not update:
        lock = read_lock(path)
        if lock.inputs_digest != spec_inputs_digest(spec):
            raise SpecError(f"{path} is out of date with {spec.source}: run `microcontainer lock --update`")
        return lock, False
    lock = lock_packages(spec, cache_dir, fetcher)
    write_lock(path, lock)
    return lock, True


@dataclass(frozen=True)
class PackageRoot:
    """A lock laid out on disk.

    Attributes:
        root: the directory holding the union of the packages' files.
        owners: image path -> NEVRA of the package that put it there.
        packages: NEVRA -> the package's rpm manifest line.
        local: NEVRAs of the packages that came from local ``.rpm`` files.
        meta: NEVRA -> header facts for provenance and SBOMs (``name``,
            ``epoch``, ``version``, ``release``, ``arch``, ``license``,
            ``sourcerpm``, ``vendor``, ``repo``).
    """

    root: str
    owners: dict[str, str]
    packages: dict[str, str]
    local: frozenset[str] = frozenset()
    meta: dict[str, dict[str, Any]] = field(default_factory=dict)


class SharedPackages(Protocol):
    """A store of ``.rpm`` files shared beyond this machine, by SHA-256 (see ``registry.sharedcache``)."""

    def fetch_rpm(self, sha256_hex: str, dest: str) -> bool:
        """Write the package of this SHA-256 to ``dest`` (checked against it); whether it did."""

    def store_rpm(self, sha256_hex: str, path: str) -> None:
        """Offer the package at ``path`` (failures are warnings)."""


def prepare_sysroot(lock: Lock, spec: ImageSpec, cache_dir: str, offline: bool = False,
                    fetcher: object | None = None, shared: SharedPackages | None = None) -> PackageRoot:
    """Download (or find in the cache) and extract the locked packages.

    Args:
        lock: the lock.
        spec: the spec (local ``.rpm`` paths are relative to its directory).
        cache_dir: the cache directory.
        offline: never download; a package not cached is an error.
        fetcher: a :class:`~.repo.Fetcher` (tests inject one).
        shared: a team-wide store asked for a package before its repository, and
            given the packages downloaded here (``build --cache-repo``).

    Packages from a repository with a ``gpgkey`` must carry a valid OpenPGP
    signature by one of its keys (checked before extraction, every time a
    sysroot is laid out).

    Raises:
        RepoError, RpmError, DigestMismatchError: one-line messages.
    """
    from microcontainer_tool.sources.rpm.repo import Fetcher
    from microcontainer_tool.sources.rpm.signature import load_keys, verify_signature

    gpgkeys = {r.id: r.gpgkey for r in spec.repos if r.gpgkey}
    baseurls = {r.id: r.baseurl for r in spec.repos}
    # The keys are part of the key: a sysroot extracted before a key was added
    # is never reused unchecked (strings, not fetched keys: offline hits work).
    key = hashlib.sha256(json.dumps([[vars(p) for p in lock.packages], sorted(gpgkeys.items())],
                                    sort_keys=True).encode()).hexdigest()
    sysroots = os.path.join(cache_dir, "sysroots")
    root = os.path.join(sysroots, key)
    meta = os.path.join(sysroots, f"{key}.json")
    if os.path.isdir(root) and os.path.isfile(meta):
        try:
            data = jsontext.load_file(meta)
            return PackageRoot(root, data["owners"], data["packages"], frozenset(data["local"]), data["meta"])
        except (OSError, ValueError, KeyError):
            pass  # rebuilt below
    if offline:
        raise MicrocontainerError(f"the packages of this lock are not in the cache {cache_dir}")
    fetch: Any = fetcher if fetcher is not None else Fetcher(cache_dir=cache_dir)
    rings: dict[str, Any] = {}
    files = []
    for package in lock.packages:
        path = _package_file(package, spec, fetch, shared)
        if package.repo in gpgkeys:
            if package.repo not in rings:
                rings[package.repo] = load_keys(gpgkeys[package.repo], fetch.get, base_dir=spec.base_dir)
            verify_signature(path, rings[package.repo],
                             label=f"{package.nevra} (from {baseurls.get(package.repo, package.url)})")
        files.append(path)
    return _extract_all(lock, files, sysroots, root, meta)


def _package_file(package: LockedPackage, spec: ImageSpec, fetch: Any,
                  shared: SharedPackages | None = None) -> str:
    checksum = Checksum(package.checksum_type, package.checksum)
    if package.repo == "@local":
        path = os.path.normpath(os.path.join(spec.base_dir, package.url))
        if _file_sha256(path) != package.checksum:
            raise SpecError(f"{path} changed since it was locked: run `microcontainer lock --update`")
        return path
    if shared is None or checksum.kind.lower() != "sha256" or not hasattr(fetch, "cache_path"):
        return str(fetch.download(package.url, checksum))
    cached = str(fetch.cache_path(checksum))
    fetched = False
    if not os.path.exists(cached):
        os.makedirs(os.path.dirname(cached), exist_ok=True)
        fetched = shared.fetch_rpm(checksum.value.lower(), cached)
        if fetched:
            os.chmod(cached, 0o644)  # the download cache may be shared
    missing = not fetched and not os.path.exists(cached)
    path = str(fetch.download(package.url, checksum))  # checks the lock's checksum, whatever the source
    if missing:
        shared.store_rpm(checksum.value.lower(), path)
    return path


def _extract_all(lock: Lock, files: list[str], sysroots: str, root: str, meta: str) -> PackageRoot:
    from microcontainer_tool.sources.rpm.cpio import extract_rpm
    from microcontainer_tool.sources.rpm.header import rpm_installed_size, rpm_manifest_line
    from microcontainer_tool.sources.rpm.payload import read_rpm

    os.makedirs(sysroots, exist_ok=True)
    tmp = make_temp_dir(sysroots, ".extract-")
    try:
        owners: dict[str, str] = {}
        lines: dict[str, str] = {}
        local: set[str] = set()
        facts: dict[str, dict[str, Any]] = {}
        for package, path in zip(lock.packages, files, strict=True):
            info: PackageInfo = read_rpm(path)
            lines[info.nevra] = rpm_manifest_line(info, rpm_installed_size(path))
            facts[info.nevra] = {"name": info.name, "epoch": info.epoch, "version": info.version,
                                 "release": info.release, "arch": info.arch, "license": info.license,
                                 "sourcerpm": info.sourcerpm, "vendor": info.vendor, "repo": package.repo}
            if package.repo == "@local":
                local.add(info.nevra)
            for entry in extract_rpm(path, tmp, Checksum(package.checksum_type, package.checksum)):
                if entry.kind not in ("ghost", "special"):
                    owners.setdefault(entry.path, info.nevra)
        data = json.dumps({"owners": owners, "packages": lines, "local": sorted(local), "meta": facts},
                          sort_keys=True)
        with open(os.path.join(tmp, ".mct-owners.json"), "w", encoding="utf-8") as handle:
            handle.write(data)
        replace_dir(tmp, root)
        os.replace(os.path.join(root, ".mct-owners.json"), meta)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return PackageRoot(root, owners, lines, frozenset(local), facts)
