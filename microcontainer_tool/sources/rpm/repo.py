"""yum/dnf repositories: fetch, verify and cache ``repodata``; download packages.

A repository is a directory (``http(s)://`` or ``file://``) holding
``repodata/repomd.xml``, which names the metadata files (``primary``,
``filelists``, ...) with their checksums. :func:`load_repo` fetches
``repomd.xml``, then ``primary``, verifies it against ``repomd.xml``,
decompresses it (gzip, xz, zstd, bzip2 or plain) and has libsolv parse it.
The parsed metadata is cached as a libsolv ``.solv`` file named by the sha256
of ``repomd.xml``, so loading an unchanged repository again reads no XML.
``filelists`` (every file of every package; primary lists only ``/etc/*`` and
``*/bin/*``) is fetched and cached the same way, but only when asked for
(:meth:`Repo.filelists_solv`): the resolver needs it for file dependencies
outside primary.

:class:`Fetcher` does all I/O: HTTP(S) through a ``requests`` session with
explicit timeouts and bounded retries, ``file://`` through ``open``, and
package downloads into a content-addressed cache
(``CACHE/packages/<kind>-<hex>.rpm``), verified on the way in.

libsolv pitfalls handled here: ``solv.xfopen`` only decompresses ``.gz`` (so
everything is decompressed here first and libsolv reads a plain temporary
file); a ``Pool`` must stay referenced while any of its solvables is used (the
:class:`Repo` keeps its own); ``Pool.select`` needs ``createwhatprovides()``
first (it crashes otherwise).
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import lzma
import os
import re
import shutil
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import IO, BinaryIO
from urllib.parse import unquote, urlparse

import requests
import solv
import zstandard

from microcontainer_tool.errors import DigestMismatchError, RepoError
from microcontainer_tool.hostfs.atomic import atomic_file, temp_file, unlink_quietly
from microcontainer_tool.sources.rpm.package import Checksum, Dep, PackageInfo, split_evr

REPO_NS = "http://linux.duke.edu/metadata/repo"
"""XML namespace of ``repomd.xml``."""

CHUNK = 1 << 20
"""Read/write block size for downloads and decompression."""

HASHES = {"sha": "sha1", "sha1": "sha1", "sha224": "sha224", "sha256": "sha256",
          "sha384": "sha384", "sha512": "sha512", "md5": "md5"}
"""Checksum type names used in repository metadata -> :mod:`hashlib` names."""

_MAGIC = {
    "gz": b"\x1f\x8b",
    "xz": b"\xfd7zXZ\x00",
    "zst": b"\x28\xb5\x2f\xfd",
    "bz2": b"BZh",
}
_SUFFIXES = {".gz": "gz", ".gzip": "gz", ".xz": "xz", ".zst": "zst", ".zstd": "zst",
             ".bz2": "bz2"}
_OPS = {"=": "EQ", "<": "LT", "<=": "LE", ">": "GT", ">=": "GE"}


# --------------------------------------------------------------------------- configuration


@dataclass
class RepoConfig:
    """One repository to resolve packages from.

    Attributes:
        id: short unique name (recorded in the lock file).
        baseurl: ``http://``, ``https://`` or ``file://`` URL of the directory
            holding ``repodata/``.
        name: human-readable name (informational).
        priority: dnf semantics: a LOWER number is preferred (default 99).
            :attr:`solv_priority` is libsolv's (higher wins).
        gpgkey: URL(s) or path of the repository's public key(s): every package
            downloaded from it must carry a valid signature by one of them
            (checked by :func:`.rpmroot.prepare_sysroot` with :mod:`.rpmsig`).
    """

    id: str
    baseurl: str
    name: str = ""
    priority: int = 99
    gpgkey: str = ""

    def __post_init__(self) -> None:
        if not self.id.strip() or any(ord(c) < 32 for c in self.id):
            raise RepoError(f"bad repository id {self.id!r}")
        if self.id.startswith("@"):
            raise RepoError(f"repository id {self.id!r} is reserved (ids starting with '@')")
        scheme = urlparse(self.baseurl).scheme
        if scheme not in ("http", "https", "file"):
            raise RepoError(f"repository {self.id}: baseurl {self.baseurl!r} is not an "
                            "http://, https:// or file:// URL")
        if not self.baseurl.endswith("/"):
            self.baseurl += "/"

    @property
    def solv_priority(self) -> int:
        """libsolv's priority (higher wins): the negated dnf priority, as libdnf does."""
        return -self.priority

    def url(self, href: str) -> str:
        """The absolute URL of ``href`` (a ``location href``) in this repository."""
        return self.baseurl + href.lstrip("/")


# --------------------------------------------------------------------------- I/O


def _one_line(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())


def _hasher(checksum: Checksum, what: str) -> hashlib._Hash:
    algo = HASHES.get(checksum.kind.lower())
    if algo is None:
        raise RepoError(f"{what}: unsupported checksum type {checksum.kind!r}")
    return hashlib.new(algo)


def _file_path(url: str) -> str:
    parsed = urlparse(url)
    if parsed.netloc not in ("", "localhost"):
        raise RepoError(f"{url}: file:// URLs must not name a host")
    return unquote(parsed.path)


class Fetcher:
    """All network and file I/O of repositories, injectable for tests and tools.

    Args:
        session: the ``requests`` session to use (one is made if ``None``).
        timeout: connect and read timeout of each HTTP request, in seconds.
        cache_dir: the cache directory; packages go to ``cache_dir/packages``.
        retries: attempts per URL for connection errors and HTTP 5xx (>= 1).
        backoff: seconds before the second attempt, doubled for each further one.
    """

    def __init__(self, session: requests.Session | None = None, timeout: float = 30, *,
                 cache_dir: str, retries: int = 3, backoff: float = 0.5) -> None:
        self.session = session if session is not None else requests.Session()
        self.timeout = timeout
        self.cache_dir = str(cache_dir)
        self.retries = max(1, retries)
        self.backoff = backoff
        self._verified: set[tuple[str, int, int, int]] = set()

    # ------------------------------------------------------------ fetching

    def get(self, url: str) -> bytes:
        """Fetch a whole (small) resource: metadata files.

        Raises:
            RepoError: unsupported scheme, HTTP error status (named), connection
                failure after all retries, unreadable file.
        """
        buf = io.BytesIO()
        self._stream(url, buf.write)
        return buf.getvalue()

    def _stream(self, url: str, sink: Callable[[bytes], object],
                restart: Callable[[], None] | None = None) -> None:
        """Feed the bytes of ``url`` to ``sink``; ``restart`` resets the sink before a retry."""
        scheme = urlparse(url).scheme
        if scheme == "file":
            path = _file_path(url)
            try:
                with open(path, "rb") as handle:
                    while chunk := handle.read(CHUNK):
                        sink(chunk)
            except OSError as exc:
                raise RepoError(f"cannot read {url}: {exc.strerror or _one_line(exc)}") from None
            return
        if scheme not in ("http", "https"):
            raise RepoError(f"cannot fetch {url}: unsupported URL scheme {scheme!r}")
        failure = ""
        for attempt in range(self.retries):
            if attempt:
                time.sleep(self.backoff * (2 ** (attempt - 1)))
                if restart is not None:
                    restart()
            try:
                with self.session.get(url, stream=True, timeout=(self.timeout, self.timeout),
                                      allow_redirects=True) as resp:
                    if resp.status_code >= 500:
                        failure = f"HTTP {resp.status_code}"
                        continue
                    if resp.status_code != 200:
                        raise RepoError(f"GET {url}: HTTP {resp.status_code} {resp.reason or ''}"
                                        .rstrip())
                    for chunk in resp.iter_content(CHUNK):
                        sink(chunk)
                    return
            except (requests.ConnectionError, requests.Timeout,
                    requests.exceptions.ChunkedEncodingError) as exc:
                failure = _one_line(exc)
            except requests.RequestException as exc:
                raise RepoError(f"GET {url}: {_one_line(exc)}") from None
        raise RepoError(f"GET {url}: {failure} (after {self.retries} attempts)")

    # ------------------------------------------------------------ packages

    def cache_path(self, checksum: Checksum) -> str:
        """Where a package with this checksum lives in the download cache."""
        kind = checksum.kind.lower()
        value = checksum.value.lower()
        if not re.fullmatch(r"[a-z0-9]+", kind) or not re.fullmatch(r"[0-9a-f]+", value):
            raise RepoError(f"bad package checksum {checksum.kind}:{checksum.value}")
        return os.path.join(self.cache_dir, "packages", f"{kind}-{value}.rpm")

    def download(self, url: str, checksum: Checksum, dest: str | None = None,
                 size: int | None = None) -> str:
        """Download a package into the content-addressed cache (or find it there).

        The file is streamed to a temporary file beside its cache entry,
        verified (checksum, and ``size`` if given) and renamed into place, so
        the cache never holds a partial or wrong file. A cached file is
        checked by size each time and by checksum once per :class:`Fetcher`;
        a bad one is replaced. A cache hit needs no network.

        Args:
            url: where the package is (``http(s)://`` or ``file://``).
            checksum: its expected checksum (from repository metadata).
            dest: optionally, also place the file here (hard link if
                possible, else a copy; atomically) and return this path.
            size: its expected size in bytes, if known.

        Returns:
            The path of the verified file (``dest`` if given, else the cache entry).

        Raises:
            DigestMismatchError: the downloaded bytes do not match ``checksum``/``size``.
            RepoError: the download failed.
        """
        path = self.cache_path(checksum)
        if not self._cached_ok(path, checksum, size):
            self._fetch_into_cache(url, checksum, size, path)
        if dest is None:
            return path
        _place(path, dest)
        return dest

    def _cached_ok(self, path: str, checksum: Checksum, size: int | None) -> bool:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return False
        if size is not None and st.st_size != size:
            os.unlink(path)
            return False
        key = (path, st.st_size, st.st_mtime_ns, st.st_ino)
        if key in self._verified:
            return True
        digest = _hasher(checksum, path)
        with open(path, "rb") as handle:
            while chunk := handle.read(CHUNK):
                digest.update(chunk)
        if digest.hexdigest() != checksum.value.lower():
            os.unlink(path)
            return False
        self._verified.add(key)
        return True

    def _fetch_into_cache(self, url: str, checksum: Checksum, size: int | None, path: str) -> None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with atomic_file(path) as out:
            os.fchmod(out.fileno(), 0o644)  # whatever the umask: the cache may be shared
            state = {"digest": _hasher(checksum, url), "size": 0}

            def sink(chunk: bytes) -> None:
                out.write(chunk)
                state["digest"].update(chunk)  # type: ignore[attr-defined]
                state["size"] += len(chunk)  # type: ignore[operator]

            def restart() -> None:
                out.seek(0)
                out.truncate()
                state["digest"] = _hasher(checksum, url)
                state["size"] = 0

            self._stream(url, sink, restart)
            got = state["digest"].hexdigest()  # type: ignore[attr-defined]
            if size is not None and state["size"] != size:
                raise DigestMismatchError(f"{url}: {state['size']} bytes downloaded, "
                                          f"repository metadata says {size}")
            if got != checksum.value.lower():
                raise DigestMismatchError(f"{url}: {checksum.kind} is {got}, repository metadata "
                                          f"says {checksum.value}")
        st = os.stat(path)
        self._verified.add((path, st.st_size, st.st_mtime_ns, st.st_ino))


def _place(src: str, dest: str) -> None:
    """Put a copy of ``src`` at ``dest`` atomically (hard link when on one file system)."""
    directory = os.path.dirname(os.path.abspath(dest))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = temp_file(directory, "." + os.path.basename(dest))  # a fresh name for the link
    os.close(fd)
    try:
        os.unlink(tmp)
        os.link(src, tmp)
        os.replace(tmp, dest)
        return
    except OSError:
        pass  # another file system: copy
    finally:
        unlink_quietly(tmp)  # left behind when dest already was a link to src (rename does nothing)
    with open(src, "rb") as source, atomic_file(dest, 0o666, fsync=False) as out:
        shutil.copyfileobj(source, out)


# --------------------------------------------------------------------------- metadata files


@dataclass(frozen=True)
class RepoFile:
    """One ``<data>`` entry of ``repomd.xml``.

    Attributes:
        type: ``primary``, ``filelists``, ``other``, ...
        href: location relative to the base URL.
        checksum: checksum of the file as stored (compressed).
        open_checksum: checksum of the decompressed content, if given.
        size: stored size, or ``None``.
    """

    type: str
    href: str
    checksum: Checksum
    open_checksum: Checksum | None = None
    size: int | None = None


def parse_repomd(data: bytes, url: str) -> dict[str, RepoFile]:
    """Parse ``repomd.xml``: data type -> :class:`RepoFile`.

    Raises:
        RepoError: not XML, not a repomd document, or an entry without location/checksum.
    """
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise RepoError(f"{url}: not valid XML ({_one_line(exc)})") from None
    if root.tag != f"{{{REPO_NS}}}repomd":
        raise RepoError(f"{url}: not a repomd.xml document (root element {root.tag!r})")
    files: dict[str, RepoFile] = {}
    for node in root.findall(f"{{{REPO_NS}}}data"):
        kind = node.get("type", "")
        loc = node.find(f"{{{REPO_NS}}}location")
        csum = node.find(f"{{{REPO_NS}}}checksum")
        if loc is None or not loc.get("href") or csum is None or not (csum.text or "").strip():
            raise RepoError(f"{url}: data entry {kind!r} lacks a location or checksum")
        ocsum = node.find(f"{{{REPO_NS}}}open-checksum")
        size = node.findtext(f"{{{REPO_NS}}}size")
        files[kind] = RepoFile(
            type=kind,
            href=loc.get("href", ""),
            checksum=Checksum(csum.get("type", "sha256"), (csum.text or "").strip().lower()),
            open_checksum=(Checksum(ocsum.get("type", "sha256"), (ocsum.text or "").strip().lower())
                           if ocsum is not None and (ocsum.text or "").strip() else None),
            size=int(size) if size and size.strip().isdigit() else None,
        )
    if "primary" not in files:
        raise RepoError(f"{url}: no primary metadata listed")
    return files


def _codec(href: str, head: bytes) -> str:
    """``gz``, ``xz``, ``zst``, ``bz2`` or ``plain``: by suffix, checked against the magic."""
    suffix = os.path.splitext(href)[1].lower()
    by_magic = next((kind for kind, magic in _MAGIC.items() if head.startswith(magic)), "plain")
    by_suffix = _SUFFIXES.get(suffix)
    if by_suffix is not None and by_suffix != by_magic:
        raise RepoError(f"{href}: not {by_suffix} data (bad magic)")
    return by_magic


def _reader(codec: str, raw: BinaryIO) -> BinaryIO:
    if codec == "gz":
        return gzip.GzipFile(fileobj=raw)  # type: ignore[return-value]
    if codec == "xz":
        return lzma.LZMAFile(raw)  # type: ignore[return-value]
    if codec == "bz2":
        return bz2.BZ2File(raw)  # type: ignore[return-value]
    return raw


def _decompress_chunks(codec: str, data: bytes) -> Iterator[bytes]:
    if codec == "zst":
        # stream_reader returns short data on a truncated frame without an
        # error: use a decompressobj per frame and insist on the end marker.
        pos = 0
        while pos < len(data):
            obj = zstandard.ZstdDecompressor().decompressobj()
            view = memoryview(data)[pos:]
            for start in range(0, len(view), CHUNK):
                out = obj.decompress(view[start:start + CHUNK])
                if out:
                    yield out
                if obj.eof:
                    break
            if not obj.eof:
                raise EOFError("zstd data ended before the end of the frame")
            pos = len(data) - len(obj.unused_data)
        return
    reader = _reader(codec, io.BytesIO(data))
    while chunk := reader.read(CHUNK):
        yield chunk


def decompress_to(href: str, data: bytes, out: IO[bytes], expected: Checksum | None = None) -> None:
    """Decompress metadata ``data`` (codec by suffix/magic) into ``out``.

    Args:
        href: the file's name (suffix says the codec; ``.xml`` or none: plain).
        data: the stored bytes.
        out: a binary file to write the decompressed bytes to.
        expected: the ``open-checksum`` to verify the decompressed bytes against.

    Raises:
        RepoError: bad magic, truncated or corrupt compressed data.
        DigestMismatchError: the decompressed bytes do not match ``expected``.
    """
    codec = _codec(href, data[:8])
    digest = _hasher(expected, href) if expected is not None else None
    try:
        for chunk in _decompress_chunks(codec, data):
            out.write(chunk)
            if digest is not None:
                digest.update(chunk)
    except (OSError, EOFError, ValueError, lzma.LZMAError, zstandard.ZstdError) as exc:
        raise RepoError(f"{href}: truncated or corrupt {codec} data ({_one_line(exc)})") from None
    if digest is not None and expected is not None and digest.hexdigest() != expected.value:
        raise DigestMismatchError(f"{href}: decompressed {expected.kind} is {digest.hexdigest()}, "
                                  f"repomd.xml says {expected.value}")


# --------------------------------------------------------------------------- solv helpers


def new_pool(arch: str = "x86_64") -> solv.Pool:
    """A libsolv pool for rpm packages of ``arch`` (keep it referenced while using its solvables)."""
    pool = solv.Pool()
    pool.setdisttype(solv.Pool.DISTTYPE_RPM)
    pool.setarch(arch)
    return pool


def _write_solv(path: str, write: Callable[[solv.xfile], bool]) -> None:
    """Write a ``.solv`` file atomically (temp + rename)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with atomic_file(path) as out:
        os.fchmod(out.fileno(), 0o644)  # whatever the umask: the cache may be shared
        fp = solv.xfopen_fd(None, out.fileno(), "w")
        ok = write(fp)
        fp.close()
        if not ok:
            raise RepoError(f"cannot write {path}")


def _add_solv(repo: solv.Repo, path: str, flags: int = 0) -> bool:
    fp = solv.xfopen(path)
    if fp is None:
        return False
    try:
        return bool(repo.add_solv(fp, flags))
    finally:
        fp.close()




def to_dep(dep: solv.Dep, pre: bool = False) -> Dep:
    """A libsolv dependency as a :class:`Dep` (a rich dependency keeps its whole string as name)."""
    text = dep.str()
    if text.startswith("("):
        return Dep(text, pre=pre)
    parts = text.split(" ")
    if len(parts) == 3 and parts[1] in _OPS:
        epoch, version, release = split_evr(parts[2])
        return Dep(parts[0], _OPS[parts[1]], epoch, version, release, pre)
    return Dep(text, pre=pre)


def solvable_files(solvable: solv.XSolvable) -> tuple[str, ...]:
    """The file list of a solvable as loaded (primary's subset unless filelists were loaded)."""
    iterator = solvable.Dataiterator(solv.SOLVABLE_FILELIST, None, solv.Dataiterator.SEARCH_FILES)
    return tuple(sorted({item.str for item in iterator}))


def solvable_info(solvable: solv.XSolvable, repo_id: str, location: str = "") -> PackageInfo:
    """The :class:`PackageInfo` of a solvable (its pool must stay alive during the call)."""
    epoch, version, release = split_evr(solvable.evr)
    chk = solvable.lookup_checksum(solv.SOLVABLE_CHECKSUM)
    href = solvable.lookup_location()[0] or ""

    def deps(key: int, marker: int = 0, pre: bool = False) -> tuple[Dep, ...]:
        return tuple(to_dep(d, pre) for d in solvable.lookup_deparray(key, marker))

    def text(key: int) -> str:
        return solvable.lookup_str(key) or ""

    return PackageInfo(
        name=solvable.name,
        epoch=epoch or 0,
        version=version or "",
        release=release or "",
        arch=solvable.arch,
        summary=text(solv.SOLVABLE_SUMMARY),
        license=text(solv.SOLVABLE_LICENSE),
        url=text(solv.SOLVABLE_URL),
        sourcerpm=solvable.lookup_sourcepkg() or "",
        vendor=solvable.vendor or "",
        buildtime=solvable.lookup_num(solv.SOLVABLE_BUILDTIME),
        # -1: before the file marker: not the file provides addfileprovides() adds
        provides=deps(solv.SOLVABLE_PROVIDES, -1),
        requires=deps(solv.SOLVABLE_REQUIRES, -1) + deps(solv.SOLVABLE_REQUIRES, 1, pre=True),
        conflicts=deps(solv.SOLVABLE_CONFLICTS),
        obsoletes=deps(solv.SOLVABLE_OBSOLETES),
        recommends=deps(solv.SOLVABLE_RECOMMENDS),
        suggests=deps(solv.SOLVABLE_SUGGESTS),
        supplements=deps(solv.SOLVABLE_SUPPLEMENTS),
        enhances=deps(solv.SOLVABLE_ENHANCES),
        files=solvable_files(solvable),
        location=location or href,
        checksum=Checksum(chk.typestr(), chk.hex()) if chk is not None else None,
        size=solvable.lookup_num(solv.SOLVABLE_DOWNLOADSIZE),
        repo=repo_id,
    )


# --------------------------------------------------------------------------- repositories


class Repo:
    """A loaded repository: its config, ``repomd.xml`` digest and cached libsolv metadata.

    Made by :func:`load_repo`. The resolver adds it to its own pool with
    :meth:`add_to_pool`; :meth:`packages` lists it through a pool of its own.

    Attributes:
        config: the :class:`RepoConfig`.
        repomd_sha256: sha256 of ``repomd.xml`` (names the cache files).
        files: ``repomd.xml``'s entries by type.
        solv_path: the cached primary ``.solv`` file.
        xml_parsed: which metadata types this object parsed from XML (empty
            when everything came from the ``.solv`` cache).
    """

    def __init__(self, config: RepoConfig, fetcher: Fetcher, cache_dir: str, repomd_sha256: str,
                 files: dict[str, RepoFile]) -> None:
        self.config = config
        self.fetcher = fetcher
        self.cache_dir = str(cache_dir)
        self.repomd_sha256 = repomd_sha256
        self.files = files
        stem = re.sub(r"[^A-Za-z0-9_.:+-]", "_", config.id)
        base = os.path.join(self.cache_dir, "repos", f"{stem}-{repomd_sha256}")
        self.solv_path = base + ".solv"
        self._filelists_path = base + "-filelists.solv"
        self.xml_parsed: list[str] = []
        self._pool: solv.Pool | None = None
        self._solv_repo: solv.Repo | None = None

    @property
    def id(self) -> str:
        """The repository id."""
        return self.config.id

    def __repr__(self) -> str:
        return f"Repo({self.config.id!r}, {self.config.baseurl!r}, repomd={self.repomd_sha256[:12]})"

    # ------------------------------------------------------------ loading

    def _metadata_file(self, kind: str) -> tempfile._TemporaryFileWrapper:
        """Fetch, verify and decompress one metadata file into a named temporary file."""
        entry = self.files.get(kind)
        if entry is None:
            raise RepoError(f"repository {self.id}: repomd.xml lists no {kind} metadata")
        url = self.config.url(entry.href)
        data = self.fetcher.get(url)
        digest = _hasher(entry.checksum, url)
        digest.update(data)
        if digest.hexdigest() != entry.checksum.value:
            raise DigestMismatchError(f"{url}: {entry.checksum.kind} is {digest.hexdigest()}, "
                                      f"repomd.xml says {entry.checksum.value}")
        tmp = tempfile.NamedTemporaryFile(prefix=f"mct-{kind}-", suffix=".xml")  # noqa: SIM115 - returned
        try:
            decompress_to(url, data, tmp, entry.open_checksum)
            tmp.flush()
        except BaseException:
            tmp.close()
            raise
        return tmp

    def _parse_into(self, repo: solv.Repo, kind: str, language: str | None, flags: int) -> None:
        with self._metadata_file(kind) as tmp:
            tmp.seek(0)
            head = tmp.read(4096).decode("utf-8", "replace")
            before = repo.nsolvables
            fp = solv.xfopen(tmp.name)
            try:
                ok = repo.add_rpmmd(fp, language, flags)
            finally:
                fp.close()
        where = f"repository {self.id}: {kind} metadata {self.config.url(self.files[kind].href)}"
        if not ok:
            raise RepoError(f"{where} is malformed ({' '.join(str(repo.pool.errstr).split())})")
        count = re.search(r'<metadata\b[^>]*\bpackages="(\d+)"', head)
        if kind == "primary" and count and repo.nsolvables - before != int(count.group(1)):
            raise RepoError(f"{where} announces {count.group(1)} packages but holds "
                            f"{repo.nsolvables - before}")
        self.xml_parsed.append(kind)

    def _load(self) -> None:
        """Fill this repo's own pool from the ``.solv`` cache, or parse primary and cache it."""
        pool = new_pool()
        repo = pool.add_repo(self.id)
        if not (os.path.exists(self.solv_path) and _add_solv(repo, self.solv_path)):
            repo.free(True)
            repo = pool.add_repo(self.id)
            self._parse_into(repo, "primary", None, 0)
            repo.internalize()
            _write_solv(self.solv_path, repo.write)
        pool.addfileprovides()
        pool.createwhatprovides()
        self._pool, self._solv_repo = pool, repo

    def filelists_solv(self) -> str:
        """The cached ``.solv`` extension with every file of every package (fetched on first use).

        Returns:
            Its path; load it right after :attr:`solv_path` with
            ``add_solv(fp, REPO_EXTEND_SOLVABLES | REPO_LOCALPOOL)``
            (``add_to_pool(pool, filelists=True)`` does).

        Raises:
            RepoError, DigestMismatchError: as for primary.
        """
        if os.path.exists(self._filelists_path):
            return self._filelists_path
        pool = new_pool()
        repo = pool.add_repo(self.id)
        if not _add_solv(repo, self.solv_path):
            raise RepoError(f"repository {self.id}: cannot read {self.solv_path}")
        data = repo.add_repodata(0)
        self._parse_into(repo, "filelists", "FL", solv.Repo.REPO_EXTEND_SOLVABLES
                         | solv.Repo.REPO_REUSE_REPODATA | solv.Repo.REPO_LOCALPOOL)
        data.internalize()
        _write_solv(self._filelists_path, data.write)
        del repo, pool
        return self._filelists_path

    def add_to_pool(self, pool: solv.Pool, *, filelists: bool = False) -> solv.Repo:
        """Add this repository's solvables to ``pool`` (priority set), optionally with filelists.

        Call ``pool.addfileprovides()`` and ``pool.createwhatprovides()`` after
        adding all repositories.
        """
        for attempt in range(2):
            repo = pool.add_repo(self.id)
            if not _add_solv(repo, self.solv_path):
                repo.free(True)
                raise RepoError(f"repository {self.id}: cannot read {self.solv_path}")
            if not filelists:
                break
            path = self.filelists_solv()
            if _add_solv(repo, path, solv.Repo.REPO_EXTEND_SOLVABLES | solv.Repo.REPO_LOCALPOOL):
                break
            repo.free(True)  # a damaged cache file: parse the XML once more
            os.unlink(path)
            if attempt:
                raise RepoError(f"repository {self.id}: cannot read {path}")
        repo.priority = self.config.solv_priority
        return repo

    # ------------------------------------------------------------ packages

    def package_info(self, solvable: solv.XSolvable) -> PackageInfo:
        """The :class:`PackageInfo` of one of this repository's solvables (any pool).

        ``location`` is the ``location href`` (relative to the base URL, or
        absolute when the metadata has an ``xml:base``); ``files`` is what is
        loaded: primary's subset unless filelists were loaded into the pool.
        """
        info = solvable_info(solvable, self.id)
        base = solvable.lookup_str(solv.SOLVABLE_MEDIABASE)
        if base:
            info = replace(info, location=base.rstrip("/") + "/" + info.location)
        return info

    def url_of(self, info: PackageInfo) -> str:
        """The absolute URL of a package of this repository."""
        if re.match(r"^[a-z][a-z0-9+.-]*://", info.location):
            return info.location
        return self.config.url(info.location)

    def packages(self) -> list[PackageInfo]:
        """Every package of the repository, sorted by name, arch, then EVR as stored."""
        assert self._pool is not None and self._solv_repo is not None
        infos = [self.package_info(s) for s in self._solv_repo.solvables]
        return sorted(infos, key=lambda i: (i.name, i.arch, i.epoch, i.version, i.release))

    def __len__(self) -> int:
        return self._solv_repo.nsolvables if self._solv_repo is not None else 0


def load_repo(config: RepoConfig, fetcher: Fetcher, cache_dir: str) -> Repo:
    """Load a repository's metadata: fetch ``repomd.xml``; primary from cache or XML.

    Args:
        config: which repository.
        fetcher: does the I/O.
        cache_dir: parsed metadata goes to ``cache_dir/repos/<id>-<repomd sha256>.solv``.

    Returns:
        The :class:`Repo` (filelists are fetched only when asked for).

    Raises:
        RepoError: unreachable, HTTP error, malformed or truncated metadata.
        DigestMismatchError: a metadata file does not match ``repomd.xml``.
    """
    url = config.url("repodata/repomd.xml")
    data = fetcher.get(url)
    files = parse_repomd(data, url)
    repo = Repo(config, fetcher, cache_dir, hashlib.sha256(data).hexdigest(), files)
    repo._load()
    return repo
