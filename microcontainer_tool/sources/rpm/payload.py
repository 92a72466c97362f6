"""RPM packages as inputs: read headers, extract payloads (pure, unprivileged, no scriptlets).

An ``.rpm`` file is a 96-byte *lead*, a *signature header* (padded to 8 bytes),
the main *header* and the compressed *payload* (a cpio archive). This module

* parses the lead and both headers itself, with bounds checks, and verifies the
  header digests (``SHA256HEADER``/``SHA1HEADER``) *before* handing the bytes to
  ``rpm_rs`` (the Rust ``rpm`` crate panics on some corrupt headers, and a panic
  prints a Rust backtrace);
* reads typed metadata (dependencies, file entries) with ``rpm_rs``;
* streams the payload itself: ``rpm_rs`` holds whole files in memory and
  cannot read bzip2 payloads. Decompression is chosen by magic bytes (zstd, xz
  or legacy lzma, gzip, bzip2, or none); both cpio flavours rpm writes are
  parsed: ``newc`` (``070701``) and the header-driven "stripped" format
  (``07070X``, used when a file is 4 GiB or larger: each member is only a file
  index into the header, and sizes come from the header);
* writes members below a destination directory through directory file
  descriptors, never following a symlink at the final component, and resolving
  symlinked parent directories (``/lib64 -> usr/lib64``) *inside* the
  destination only (absolute link targets mean the destination's root, as they
  would in the image; climbing above it is refused).

The header is authoritative, as in rpm itself: the payload provides content and
the mapping of members to header entries; types, modes and link targets come
from the header. Errors are :class:`~microcontainer_tool.errors.RpmError` (or
``DigestMismatchError`` for an ``expected`` checksum), always one line.
"""

from __future__ import annotations

import bz2
import errno
import hashlib
import lzma
import os
import stat
import struct
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, BinaryIO, Protocol, Self

import isal.igzip
import isal.isal_zlib
import rpm_rs  # type: ignore[import-untyped]
import zstandard

from microcontainer_tool.errors import DigestMismatchError, RpmError
from microcontainer_tool.sources.rpm.package import Checksum, Dep, PackageInfo, split_evr

CHUNK = 1 << 20
"""Read/write granularity of payload streaming (bounded memory)."""

_LEAD_SIZE = 96
_LEAD_MAGIC = b"\xed\xab\xee\xdb"
_HEADER_MAGIC = b"\x8e\xad\xe8\x01"
_MAX_INDEX = 1 << 16
_MAX_STORE = 256 << 20

# Header data types (rpmtag.h) and the size of one element of the fixed-size ones.
_NULL, _CHAR, _INT8, _INT16, _INT32, _INT64, _STRING, _BIN, _STRING_ARRAY, _I18NSTRING = range(10)
_TYPE_SIZE = {_CHAR: 1, _INT8: 1, _INT16: 2, _INT32: 4, _INT64: 8, _BIN: 1}
_INT_FORMAT = {_CHAR: "B", _INT8: "B", _INT16: "H", _INT32: "I", _INT64: "Q"}

# Signature header tags.
_SIG_SIZE = 1000
_SIG_LONGSIZE = 270
_SIG_MD5 = 1004
_SIG_SHA1 = 269
_SIG_SHA256 = 273
_SIG_SHA3_256 = 279
# Main header tags.
_TAG_EPOCH = 1003
_TAG_SIZE = 1009
_TAG_LONGSIZE = 5009
_TAG_FILEDEVICES = 1095
_TAG_FILEINODES = 1096
_TAG_PAYLOADFORMAT = 1124
_TAG_PAYLOADCOMPRESSOR = 1125
_TAG_FILEDIGESTALGO = 5011
_TAG_PAYLOADDIGEST = 5092
_TAG_PAYLOADDIGESTALGO = 5093

# rpm's PGPHASHALGO numbers -> hashlib names.
_HASH_ALGOS = {1: "md5", 2: "sha1", 8: "sha256", 9: "sha384", 10: "sha512", 11: "sha224"}

# rpmsenseFlags (rpmds.h).
_SENSE_LESS, _SENSE_GREATER, _SENSE_EQUAL = 2, 4, 8
_SENSE_PREREQ = 64
_SENSE_PRE_MASK = 64 | 512 | 1024 | 128 | 32  # PREREQ, SCRIPT_PRE, SCRIPT_POST, PRETRANS, POSTTRANS
_SENSE_RPMLIB = 1 << 24
_CMP = {_SENSE_EQUAL: "EQ", _SENSE_LESS: "LT", _SENSE_LESS | _SENSE_EQUAL: "LE",
        _SENSE_GREATER: "GT", _SENSE_GREATER | _SENSE_EQUAL: "GE"}
_FILE_GHOST = 64

_NEWC = (b"070701", b"070702")
_STRIPPED = b"07070X"
_TRAILER = b"TRAILER!!!"
_MAX_NAME = 4096  # as rpm's cpio reader
_MAX_SYMLINK_HOPS = 40
# What decoders and the cpio parser raise on a corrupt payload (OSError aside).
_ISAL_ERROR: type[BaseException] = isal.isal_zlib.error  # type: ignore[assignment]
_DECODE_ERRORS: tuple[type[BaseException], ...] = (
    lzma.LZMAError, zlib.error, _ISAL_ERROR, zstandard.ZstdError, EOFError, ValueError,
    struct.error)


# --------------------------------------------------------------------------- public API


@dataclass(frozen=True)
class ExtractedEntry:
    """One member of a package as extracted (or reported) by :func:`extract_rpm`.

    Attributes:
        path: absolute image path, e.g. ``/usr/bin/curl``.
        kind: ``file``, ``dir``, ``symlink``, ``hardlink`` (a further name of a
            file extracted earlier: ``linkname``), ``ghost`` (``%ghost``: in the
            header only, not created) or ``special`` (device, fifo, socket: not
            created).
        mode: the full original ``st_mode`` from the header, type and
            setuid/setgid/sticky bits included (on disk only ``mode & 0o777``
            for files, ``0o755`` for directories).
        size: size from the header (symlinks: length of the target).
        linkname: symlink target, or the image path a hardlink points to.
        digest: the file digest from the header (hex, algorithm of the
            package's ``FILEDIGESTALGO``), ``""`` if none.
        user, group: owner names from the header (not applied on disk).
    """

    path: str
    kind: str
    mode: int
    size: int
    linkname: str = ""
    digest: str = ""
    user: str = "root"
    group: str = "root"


def read_rpm(path: str) -> PackageInfo:
    """Read and verify a package file; return its identity, metadata, deps and files.

    The whole file is read once: its sha256 becomes ``checksum``; the header
    digests, the payload digest (``PAYLOADDIGEST``) and the sizes recorded in
    the signature header are verified.

    Args:
        path: a local ``.rpm`` file.

    Returns:
        The :class:`PackageInfo` (``repo="@local"``, ``location=path``).
        ``rpmlib(...)`` requirements (rpm's own features) are left out, as
        repository metadata does; a rich dependency keeps its whole string as
        ``name``; ``pre`` marks ``Requires(pre|post|pretrans|posttrans)``.

    Raises:
        RpmError: unreadable, not an rpm, a source rpm, corrupt or truncated.
    """
    with _open(path) as handle:
        pkg = _read_headers(handle, path)
        whole = hashlib.sha256(pkg.prefix)
        reader = _HashingReader(handle, path, pkg, [whole])
        reader.drain()
    reader.verify()
    meta = _metadata(pkg, path)
    return _package_info(path, pkg, meta, Checksum("sha256", whole.hexdigest()),
                         reader.total + len(pkg.prefix))


def rpm_installed_size(path: str) -> int:
    """The installed size of a package (header ``SIZE``/``LONGSIZE``), for the rpm manifest.

    Reads and verifies the headers only.

    Raises:
        RpmError: as :func:`read_rpm` (payload not checked).
    """
    with _open(path) as handle:
        pkg = _read_headers(handle, path)
    return pkg.header.installed_size()


def rpm_manifest_line(info: PackageInfo, installed_size: int | None = None) -> str:
    """One line of ``/var/lib/rpmmanifest/container-manifest-2`` for ``info``.

    The file is what CBL-Mariner/Azure Linux distroless images ship instead of an
    rpm database; Trivy and Syft read it. Each line is the output of::

        rpm -qa --qf '%{NAME}\\t%{VERSION}-%{RELEASE}\\t%{INSTALLTIME}\\t%{BUILDTIME}\\t%{VENDOR}\\t
                      %{EPOCH}\\t%{SIZE}\\t%{ARCH}\\t%{EPOCHNUM}\\t%{SOURCERPM}\\n'

    Sources (checked): Syft ``syft/pkg/cataloger/redhat/package.go``
    ``newMetadataFromManifestLine`` (needs >= 10 tab-separated fields; field 2
    split on ``-`` into exactly version and release; epoch from field 9
    (``EPOCHNUM``) unless field 6 is ``(none)``; size from field 7) and Trivy
    ``pkg/fanal/analyzer/pkg/rpm/rpmqa.go`` (exactly 10 fields; field 10 must
    be a parseable source rpm file name; field 8 is the arch).

    ``INSTALLTIME`` is always ``0`` (reproducible). Unset tags print as rpm
    prints them: ``(none)``. An epoch of 0 counts as unset (``PackageInfo``
    cannot tell them apart). Tabs and newlines inside values become spaces.

    Args:
        info: the package.
        installed_size: the header's ``SIZE`` (see :func:`rpm_installed_size`;
            repository metadata has it as ``<size installed=...>``). ``None``:
            read it from ``info.location`` if that is a local file, else 0.

    Returns:
        The line *without* its newline: the file is the lines (sorted, for
        reproducibility), each followed by ``"\\n"``.
    """
    def clean(value: str) -> str:
        return " ".join(value.replace("\t", " ").splitlines()) if value else "(none)"

    if installed_size is None:
        installed_size = rpm_installed_size(info.location) if os.path.isfile(info.location) else 0

    fields = [
        clean(info.name),
        clean(f"{info.version}-{info.release}"),
        "0",
        str(info.buildtime),
        clean(info.vendor),
        str(info.epoch) if info.epoch else "(none)",
        str(installed_size),
        clean(info.arch),
        str(info.epoch),
        clean(info.sourcerpm),
    ]
    return "\t".join(fields)


def safe_member_path(name: str) -> str:
    """Turn a payload member name into an absolute image path, or refuse it.

    ``./usr/bin/x`` and ``usr/bin/x`` become ``/usr/bin/x``; empty and ``.``
    components are dropped; ``./`` (the root, which ``filesystem`` owns) is ``/``.

    Raises:
        RpmError: the name is absolute, contains ``..`` or a NUL, or is empty.
    """
    if "\0" in name:
        raise RpmError(f"payload member name {name!r} contains a NUL byte")
    if len(name) > _MAX_NAME:
        raise RpmError(f"payload member name {name[:60]!r}... is longer than {_MAX_NAME} bytes")
    text = name.removeprefix("./")
    if text.startswith("/"):
        raise RpmError(f"payload member {name!r} has an absolute name")
    parts = [p for p in text.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise RpmError(f"payload member {name!r} climbs out with '..'")
    if not name:
        raise RpmError(f"payload member {name!r} names no file")
    return "/" + "/".join(parts)


def extract_rpm(path: str, dest: str, expected: Checksum | None = None, *,
                verify_file_digests: bool | None = None) -> list[ExtractedEntry]:
    """Extract a package's payload below ``dest``, without running anything.

    Files get ``mode & 0o777`` (setuid/setgid/sticky and file capabilities are
    never set), directories ``0o755``; symlinks are created as symlinks and
    hardlink sets as real hardlinks; ``%ghost`` entries and device nodes, fifos
    and sockets are reported but not created; owners and mtimes are not applied.
    Existing non-directories at a member's path are replaced (packages
    extracted into one tree overwrite each other, as rpm does).

    Args:
        path: the ``.rpm`` file.
        dest: destination directory (created if missing); may already hold
            other packages' files.
        expected: if given, the whole file must have this checksum; it is
            verified before anything is written.
        verify_file_digests: also check every file against its header digest;
            ``None`` (default): only when the package has no payload digest.

    Returns:
        Every header entry (files, dirs, symlinks, hardlinks, ghosts,
        specials), sorted by path.

    Raises:
        DigestMismatchError: ``expected`` does not match the file.
        RpmError: corrupt, truncated or digest-failing package, an unsupported
            payload, a member that would land outside ``dest``, or a write
            failure. After an error the content of ``dest`` is undefined.
    """
    if expected is not None:
        _check_expected(path, expected)
    with _open(path) as handle:
        pkg = _read_headers(handle, path)
        meta = _metadata(pkg, path)
        table = _FileTable(pkg, meta, path)
        reader = _HashingReader(handle, path, pkg, [])
        verify = (pkg.payload_digest is None) if verify_file_digests is None else verify_file_digests
        stream = _decompressor(reader, path)
        try:
            with _Dest(dest, path) as out:
                entries = _Extractor(stream, table, out, path, verify).run()
        except _DECODE_ERRORS as exc:
            raise RpmError(f"{path}: corrupt payload: {_one_line(exc)}") from None
        except OSError as exc:  # read errors are RpmError already: this is a decoder's
            raise RpmError(f"{path}: corrupt payload: {_one_line(exc)}") from None
        reader.drain()
    reader.verify()
    return entries


# --------------------------------------------------------------------------- headers


class _Header:
    """A structurally validated rpm header (index + data store)."""

    def __init__(self, blob: bytes, what: str) -> None:
        nindex, hsize = struct.unpack(">II", blob[8:16])
        self.blob = blob
        self.store = memoryview(blob)[16 + 16 * nindex:]
        self.entries: dict[int, tuple[int, int, int]] = {}
        for i in range(nindex):
            tag, kind, offset, count = struct.unpack(">iIiI", blob[16 + 16 * i:32 + 16 * i])
            if kind > _I18NSTRING or offset < 0 or offset > hsize or count < 1 and kind != _NULL:
                raise ValueError(f"{what}: bad index entry for tag {tag}")
            if kind in _TYPE_SIZE:
                if offset + count * _TYPE_SIZE[kind] > hsize:
                    raise ValueError(f"{what}: tag {tag} overruns the data")
            elif kind in (_STRING, _STRING_ARRAY, _I18NSTRING):
                if kind == _STRING and count != 1:
                    raise ValueError(f"{what}: tag {tag} has {count} strings")
                pos = offset
                for _ in range(count):
                    end = blob.find(b"\0", 16 + 16 * nindex + pos, 16 + 16 * nindex + hsize)
                    if end < 0:
                        raise ValueError(f"{what}: tag {tag} overruns the data")
                    pos = end - (16 + 16 * nindex) + 1
            self.entries[tag] = (kind, offset, count)

    def has(self, tag: int) -> bool:
        return tag in self.entries

    def ints(self, tag: int) -> list[int]:
        kind, offset, count = self.entries[tag]
        fmt = _INT_FORMAT.get(kind)
        if fmt is None:
            raise ValueError(f"tag {tag} is not an integer")
        return list(struct.unpack_from(f">{count}{fmt}", self.store, offset))

    def strings(self, tag: int) -> list[str]:
        kind, offset, count = self.entries[tag]
        if kind not in (_STRING, _STRING_ARRAY, _I18NSTRING):
            raise ValueError(f"tag {tag} is not a string")
        out = []
        blob, base = self.blob, len(self.blob) - len(self.store)
        pos = base + offset
        for _ in range(count):
            end = blob.index(b"\0", pos)
            out.append(blob[pos:end].decode("utf-8", "surrogateescape"))
            pos = end + 1
        return out

    def string(self, tag: int, default: str = "") -> str:
        return self.strings(tag)[0] if tag in self.entries else default

    def binary(self, tag: int) -> bytes:
        _, offset, count = self.entries[tag]
        return bytes(self.store[offset:offset + count])

    def digest_hex(self, tag: int) -> str | None:
        """A digest tag as lowercase hex (stored as hex string or as binary)."""
        if tag not in self.entries:
            return None
        kind = self.entries[tag][0]
        if kind == _BIN:
            return self.binary(tag).hex()
        return self.strings(tag)[0].strip().lower()

    def installed_size(self) -> int:
        for tag in (_TAG_LONGSIZE, _TAG_SIZE):
            if tag in self.entries:
                return self.ints(tag)[0]
        return 0


@dataclass
class _Package:
    """The parsed, verified headers of one package file."""

    prefix: bytes                 # lead + signature (+ padding) + header: bytes before the payload
    signature: _Header
    header: _Header
    header_offset: int
    payload_offset: int
    signed_size: int | None       # header + payload bytes, from the signature header
    payload_digest: str | None
    payload_algo: str
    md5: bytes | None             # legacy MD5 of header + payload (only when no header digest)


def _open(path: str) -> BinaryIO:
    try:
        return open(path, "rb")
    except OSError as exc:
        raise RpmError(f"cannot open {path}: {_one_line(exc)}") from None


def _read_exact(handle: BinaryIO, size: int, path: str, what: str) -> bytes:
    data = handle.read(size)
    if len(data) != size:
        raise RpmError(f"{path}: truncated in the {what}")
    return data


def _read_header_blob(handle: BinaryIO, path: str, what: str) -> bytes:
    intro = _read_exact(handle, 16, path, what)
    if intro[:4] != _HEADER_MAGIC:
        raise RpmError(f"{path}: bad {what} magic")
    nindex, hsize = struct.unpack(">II", intro[8:16])
    if nindex > _MAX_INDEX or hsize > _MAX_STORE:
        raise RpmError(f"{path}: implausible {what} size ({nindex} entries, {hsize} bytes)")
    return intro + _read_exact(handle, 16 * nindex + hsize, path, what)


def _read_headers(handle: BinaryIO, path: str) -> _Package:
    """Read lead, signature and header; check structure, sizes' plausibility and header digests."""
    try:
        lead = _read_exact(handle, _LEAD_SIZE, path, "lead")
        if lead[:4] != _LEAD_MAGIC:
            raise RpmError(f"{path}: not an rpm package (bad lead magic)")
        sig_blob = _read_header_blob(handle, path, "signature header")
        pad = (-len(sig_blob)) % 8
        padding = _read_exact(handle, pad, path, "signature header")
        hdr_blob = _read_header_blob(handle, path, "header")
        signature = _Header(sig_blob, "signature header")
        header = _Header(hdr_blob, "header")
    except (ValueError, struct.error, IndexError) as exc:
        raise RpmError(f"{path}: corrupt: {_one_line(exc)}") from None
    except OSError as exc:
        raise RpmError(f"{path}: cannot read: {_one_line(exc)}") from None

    header_offset = _LEAD_SIZE + len(sig_blob) + pad
    checks = [(_SIG_SHA256, "sha256"), (_SIG_SHA1, "sha1"), (_SIG_SHA3_256, "sha3_256")]
    checked = False
    try:
        for tag, algo in checks:
            want = signature.digest_hex(tag)
            if want is None:
                continue
            got = hashlib.new(algo, hdr_blob).hexdigest()
            if got != want:
                raise RpmError(f"{path}: header {algo} digest mismatch (corrupt or tampered header)")
            checked = True
        md5 = None if checked or not signature.has(_SIG_MD5) else signature.binary(_SIG_MD5)
        if not checked and md5 is None:
            raise RpmError(f"{path}: the package has no header digest")
        size = None
        for tag in (_SIG_LONGSIZE, _SIG_SIZE):
            if signature.has(tag):
                size = signature.ints(tag)[0]
                break
        payload_digest = header.digest_hex(_TAG_PAYLOADDIGEST)
        algo_no = header.ints(_TAG_PAYLOADDIGESTALGO)[0] if header.has(_TAG_PAYLOADDIGESTALGO) else 8
    except (ValueError, struct.error, IndexError) as exc:
        raise RpmError(f"{path}: corrupt: {_one_line(exc)}") from None
    if algo_no not in _HASH_ALGOS:
        raise RpmError(f"{path}: unsupported payload digest algorithm {algo_no}")
    return _Package(lead + sig_blob + padding + hdr_blob, signature, header, header_offset,
                    header_offset + len(hdr_blob), size, payload_digest, _HASH_ALGOS[algo_no], md5)


def _metadata(pkg: _Package, path: str) -> rpm_rs.PackageMetadata:
    meta = _call(lambda: rpm_rs.PackageMetadata.from_bytes(pkg.prefix), path, "header")
    if _call(lambda: bool(meta.is_source_package()), path, "header"):
        raise RpmError(f"{path}: is a source package, not a binary one")
    return meta


def _call(func: Callable[[], object], path: str, what: str) -> Any:
    """Call into rpm_rs; any exception (a Rust panic included) becomes one-line RpmError."""
    try:
        return func()
    except (KeyboardInterrupt, SystemExit, RpmError):
        raise
    except BaseException as exc:  # noqa: BLE001  (pyo3's PanicException is a BaseException)
        where = f"{path}: " if path else ""
        raise RpmError(f"{where}unreadable {what}: {_one_line(exc)}") from None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300]


# --------------------------------------------------------------------------- metadata


def _optional(func: Callable[[], object], default: object) -> object:
    try:
        value = func()
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException:  # noqa: BLE001  (a missing tag: RuntimeError, or a Rust panic)
        return default
    return default if value is None else value




def _deps(items: Iterable, kind: str) -> tuple[Dep, ...]:
    out: list[Dep] = []
    seen: set[Dep] = set()
    for item in items:
        flags = int(item.flags)
        name = item.name
        if kind == "requires" and (flags & _SENSE_RPMLIB or name.startswith("rpmlib(")):
            continue
        cmp = _CMP.get(flags & (_SENSE_LESS | _SENSE_GREATER | _SENSE_EQUAL), "")
        epoch = version = release = None
        if cmp and item.version:
            epoch, version, release = split_evr(item.version)
        else:
            cmp = ""
        dep = Dep(name, cmp, epoch, version, release,
                  pre=kind == "requires" and bool(flags & _SENSE_PRE_MASK))
        if dep not in seen:
            seen.add(dep)
            out.append(dep)
    return tuple(out)


def _package_info(path: str, pkg: _Package, meta: rpm_rs.PackageMetadata, checksum: Checksum,
                  size: int) -> PackageInfo:
    def get(attr: str) -> str:
        return str(_optional(lambda: getattr(meta, attr), ""))

    try:
        epoch = pkg.header.ints(_TAG_EPOCH)[0] if pkg.header.has(_TAG_EPOCH) else 0
    except (ValueError, struct.error) as exc:
        raise RpmError(f"{path}: corrupt epoch: {_one_line(exc)}") from None
    def dep_list(kind: str) -> tuple[Dep, ...]:
        method = getattr(meta, kind)
        return _deps(_call(method, path, kind), kind)

    deps = {kind: dep_list(kind) for kind in ("provides", "requires", "conflicts", "obsoletes",
                                              "recommends", "suggests", "supplements", "enhances")}
    files = tuple(sorted(_call(lambda: meta.file_paths(), path, "file list")))
    return PackageInfo(
        name=_call(lambda: meta.name, path, "name"),
        epoch=epoch,
        version=_call(lambda: meta.version, path, "version"),
        release=_call(lambda: meta.release, path, "release"),
        arch=get("arch"),
        summary=get("summary"),
        license=get("license"),
        url=get("url"),
        sourcerpm=get("source_rpm"),
        vendor=get("vendor"),
        buildtime=int(_optional(lambda: meta.build_time, 0)),  # type: ignore[call-overload]
        files=files,
        location=path,
        checksum=checksum,
        size=size,
        repo="@local",
        **deps,
    )


# --------------------------------------------------------------------------- payload input


class _HashingReader:
    """The raw payload bytes of an open package file, hashed as they are read."""

    def __init__(self, handle: BinaryIO, path: str, pkg: _Package, extra: list) -> None:
        self._handle = handle
        self._path = path
        self._pkg = pkg
        self._hashers = list(extra)
        self._payload_hash = hashlib.new(pkg.payload_algo) if pkg.payload_digest else None
        self._md5 = hashlib.md5(pkg.prefix[pkg.header_offset:]) if pkg.md5 is not None else None
        for hasher in (self._payload_hash, self._md5):
            if hasher is not None:
                self._hashers.append(hasher)
        self._updates = [h.update for h in self._hashers]
        self.total = 0
        self._head = b""

    def peek(self, size: int) -> bytes:
        """The first ``size`` payload bytes (call before any read)."""
        if not self._head:
            self._head = self._raw_read(CHUNK)
        return self._head[:size]

    def _raw_read(self, size: int) -> bytes:
        try:
            data = self._handle.read(size)
        except OSError as exc:
            raise RpmError(f"{self._path}: cannot read: {_one_line(exc)}") from None
        for update in self._updates:
            update(data)
        self.total += len(data)
        return data

    def read(self, size: int = -1) -> bytes:
        if self._head:
            if size < 0 or size >= len(self._head):
                data, self._head = self._head, b""
                if size < 0:
                    return data + self._raw_read(-1)
                return data
            data, self._head = self._head[:size], self._head[size:]
            return data
        return self._raw_read(size if size >= 0 else -1)

    def readinto(self, buffer: bytearray | memoryview) -> int:  # for io.BufferedReader users
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def drain(self) -> None:
        """Read (and hash) the rest of the file."""
        self._head = b""
        while self._raw_read(CHUNK):
            pass

    def verify(self) -> None:
        """Check sizes and payload digests once everything was read."""
        pkg, path = self._pkg, self._path
        actual = len(pkg.prefix) - pkg.header_offset + self.total
        if pkg.signed_size is not None and actual != pkg.signed_size:
            if actual < pkg.signed_size:
                raise RpmError(f"{path}: truncated ({pkg.signed_size - actual} bytes missing)")
            raise RpmError(f"{path}: {actual - pkg.signed_size} unexpected bytes after the payload")
        if self._payload_hash is not None and self._payload_hash.hexdigest() != pkg.payload_digest:
            raise RpmError(f"{path}: payload {pkg.payload_algo} digest mismatch (corrupt payload)")
        if self._md5 is not None and self._md5.digest() != pkg.md5:
            raise RpmError(f"{path}: md5 digest mismatch (corrupt package)")


class _Stream(Protocol):
    def read(self, size: int = ..., /) -> bytes: ...


def _decompressor(raw: _HashingReader, path: str) -> _Stream:
    """Pick the payload decompressor by magic bytes (the header tag may be absent)."""
    head = raw.peek(6)
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        return zstandard.ZstdDecompressor().stream_reader(
            raw, read_size=CHUNK, read_across_frames=True, closefd=False)  # type: ignore[arg-type]
    if head.startswith((b"\xfd7zXZ\x00", b"\x5d\x00\x00")):
        return lzma.LZMAFile(raw)  # type: ignore[arg-type]
    if head.startswith(b"\x1f\x8b"):
        return isal.igzip.IGzipFile(fileobj=raw, mode="rb")  # type: ignore[arg-type]
    if head.startswith(b"BZh"):
        return bz2.BZ2File(raw)  # type: ignore[call-overload]
    if head.startswith(b"0707"):
        return raw
    raise RpmError(f"{path}: unsupported or corrupt payload (starts with {head.hex() or 'nothing'})")


class _Input:
    """Buffered exact reads over a decompressed stream."""

    def __init__(self, stream: _Stream) -> None:
        self._read = stream.read
        self._buf = b""
        self._pos = 0

    def read_exact(self, size: int) -> bytes:
        buf, pos = self._buf, self._pos
        end = pos + size
        if end <= len(buf):
            self._pos = end
            return buf[pos:end]
        parts = [buf[pos:]]
        have = len(buf) - pos
        while have < size:
            chunk = self._read(max(CHUNK, size - have))
            if not chunk:
                raise EOFError("payload ends early")
            parts.append(chunk)
            have += len(chunk)
        data = b"".join(parts)
        self._buf, self._pos = data, size
        return data[:size]

    def copy(self, size: int, sink: Callable[[memoryview], None] | None) -> None:
        """Pass the next ``size`` bytes to ``sink`` in chunks (``None``: skip them)."""
        avail = len(self._buf) - self._pos
        if avail:
            take = min(avail, size)
            if sink is not None:
                sink(memoryview(self._buf)[self._pos:self._pos + take])
            self._pos += take
            size -= take
        while size:
            chunk = self._read(min(CHUNK, size))
            if not chunk:
                raise EOFError("payload ends early")
            if len(chunk) > size:  # defensive: a stream returned more than asked
                self._buf, self._pos = chunk, size
                chunk = chunk[:size]
            if sink is not None:
                sink(memoryview(chunk))
            size -= len(chunk)


# --------------------------------------------------------------------------- file table


@dataclass
class _FileInfo:
    index: int
    path: str
    mode: int
    size: int
    ghost: bool
    linkto: str
    digest: str
    user: str
    group: str
    link_key: tuple[int, int] | None = None   # header hardlink set, if more than one member
    last_link: bool = False                    # the member that carries the data (stripped)


class _FileTable:
    def __init__(self, pkg: _Package, meta: rpm_rs.PackageMetadata, path: str) -> None:
        entries = _call(lambda: meta.file_entries(), path, "file entries")
        self.files: list[_FileInfo] = []
        for i, entry in enumerate(entries):
            digest = entry.digest
            self.files.append(_FileInfo(
                index=i,
                path=entry.path,
                mode=int(entry.mode.raw_mode),
                size=int(entry.size),
                ghost=bool(int(entry.flags) & _FILE_GHOST),
                linkto=entry.linkto or "",
                digest=digest.digest.lower() if digest is not None else "",
                user=entry.user or "",
                group=entry.group or "",
            ))
        self.by_path = {f.path: f for f in self.files}
        if len(self.by_path) != len(self.files):
            raise RpmError(f"{path}: the header lists a path twice")
        self.digest_algo = "md5"
        try:
            if pkg.header.has(_TAG_FILEDIGESTALGO):
                number = pkg.header.ints(_TAG_FILEDIGESTALGO)[0]
                if number not in _HASH_ALGOS:
                    raise RpmError(f"{path}: unsupported file digest algorithm {number}")
                self.digest_algo = _HASH_ALGOS[number]
            inodes = pkg.header.ints(_TAG_FILEINODES) if pkg.header.has(_TAG_FILEINODES) else []
            devices = pkg.header.ints(_TAG_FILEDEVICES) if pkg.header.has(_TAG_FILEDEVICES) else []
        except (ValueError, struct.error) as exc:
            raise RpmError(f"{path}: corrupt header: {_one_line(exc)}") from None
        if len(inodes) == len(self.files) and len(devices) == len(self.files):
            groups: dict[tuple[int, int], list[_FileInfo]] = {}
            for info in self.files:
                if stat.S_ISREG(info.mode) and not info.ghost:
                    key = (devices[info.index], inodes[info.index])
                    groups.setdefault(key, []).append(info)
            for key, members in groups.items():
                if len(members) > 1:
                    for info in members:
                        info.link_key = key
                    members[-1].last_link = True


# --------------------------------------------------------------------------- destination


_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_O_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class _Dest:
    """Writes below one directory through directory fds; never follows a final symlink.

    Directory fds are cached (LRU, keyed by the unresolved image path parts) so
    a member costs about one syscall to locate its parent. The cache is dropped
    whenever a symlink is replaced, since cached paths may resolve through it.
    """

    _CACHE_SIZE = 128

    def __init__(self, dest: str, path: str) -> None:
        self._path = path
        try:
            os.makedirs(dest, exist_ok=True)
            self._root = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise RpmError(f"{path}: cannot use destination {dest}: {_one_line(exc)}") from None
        self._cache: OrderedDict[tuple[str, ...], int] = OrderedDict()
        self._umask = _current_umask()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self._forget()
        os.close(self._root)

    def _forget(self) -> None:
        for fd in self._cache.values():
            os.close(fd)
        self._cache.clear()

    def _fail(self, image_path: str, exc: BaseException | str) -> RpmError:
        reason = exc if isinstance(exc, str) else _one_line(exc)
        return RpmError(f"{self._path}: cannot extract {image_path}: {reason}")

    def _new_dir(self, parent: int, name: str) -> None:
        """Create ``name`` 0755 (tolerating a race with an existing one)."""
        try:
            os.mkdir(name, 0o755, dir_fd=parent)
        except FileExistsError:
            return
        if self._umask & 0o755:
            os.chmod(name, 0o755, dir_fd=parent)

    def walk(self, parts: tuple[str, ...], image_path: str, create: bool = True) -> int:
        """Open the directory ``parts`` from the root (creating missing ones 0755); a new fd.

        Symlinks met on the way are resolved inside the destination: an absolute
        target restarts at the destination's root; ``..`` above it is refused.
        """
        stack: list[int] = []
        todo = list(reversed(parts))
        hops = 0
        try:
            while todo:
                name = todo.pop()
                if name in ("", "."):
                    continue
                cur = stack[-1] if stack else self._root
                if name == "..":
                    if not stack:
                        raise self._fail(image_path, "a symlink on its path leads outside the destination")
                    os.close(stack.pop())
                    continue
                try:
                    fd = os.open(name, _O_DIR, dir_fd=cur)
                except FileNotFoundError:
                    if not create:
                        raise
                    self._new_dir(cur, name)
                    fd = os.open(name, _O_DIR, dir_fd=cur)
                except OSError as exc:
                    if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                        raise
                    try:
                        target = os.readlink(name, dir_fd=cur)
                    except OSError:
                        raise self._fail(image_path, f"{name!r} on its path is not a directory") from None
                    hops += 1
                    if hops > _MAX_SYMLINK_HOPS:
                        raise self._fail(image_path, "too many levels of symbolic links") from None
                    if target.startswith("/"):
                        while stack:
                            os.close(stack.pop())
                    todo.extend(reversed(target.split("/")))
                    continue
                stack.append(fd)
        except RpmError:
            for fd in stack:
                os.close(fd)
            raise
        except OSError as exc:
            for fd in stack:
                os.close(fd)
            raise self._fail(image_path, exc) from None
        result = stack.pop() if stack else os.dup(self._root)
        for fd in stack:
            os.close(fd)
        return result

    def dir_fd(self, parts: tuple[str, ...], image_path: str) -> int:
        """The cached fd of directory ``parts`` (created if missing); valid until the next call."""
        cache = self._cache
        known = len(parts)
        while known and parts[:known] not in cache:
            known -= 1
        fd = self._root
        if known:
            fd = cache[parts[:known]]
            cache.move_to_end(parts[:known])
        for depth in range(known, len(parts)):
            name = parts[depth]
            try:
                try:
                    fd = os.open(name, _O_DIR, dir_fd=fd)
                except FileNotFoundError:
                    self._new_dir(fd, name)
                    fd = os.open(name, _O_DIR, dir_fd=fd)
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise self._fail(image_path, exc) from None
                fd = self.walk(parts[:depth + 1], image_path)  # a symlink: resolve from the root
            cache[parts[:depth + 1]] = fd
            if len(cache) > self._CACHE_SIZE:  # the newest entry (fd) is never the one evicted
                os.close(cache.popitem(last=False)[1])
        return fd

    def _clear(self, parent: int, name: str, image_path: str) -> None:
        """Remove a non-directory in the way of a new member."""
        st = os.stat(name, dir_fd=parent, follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            raise self._fail(image_path, "a directory is in the way")
        os.unlink(name, dir_fd=parent)
        if stat.S_ISLNK(st.st_mode):
            self._forget()  # cached directories may have been reached through it

    def make_dir(self, parts: tuple[str, ...], image_path: str) -> None:
        if not parts:
            return
        parent = self.dir_fd(parts[:-1], image_path)
        name = parts[-1]
        try:
            os.mkdir(name, 0o755, dir_fd=parent)
        except FileExistsError:
            # an existing directory, or a symlink to one (``/lib64`` from another package)
            self.dir_fd(parts, image_path)
            return
        except OSError as exc:
            raise self._fail(image_path, exc) from None
        if self._umask & 0o755:
            os.chmod(name, 0o755, dir_fd=parent)

    def write_file(self, parts: tuple[str, ...], image_path: str, perm: int,
                   fill: Callable[[Callable[[memoryview], None]], None]) -> None:
        parent = self.dir_fd(parts[:-1], image_path)
        name = parts[-1]
        perm &= 0o777
        try:
            try:
                fd = os.open(name, _O_NEW, perm, dir_fd=parent)
            except FileExistsError:
                self._clear(parent, name, image_path)
                parent = self.dir_fd(parts[:-1], image_path)
                fd = os.open(name, _O_NEW, perm, dir_fd=parent)
        except OSError as exc:
            raise self._fail(image_path, exc) from None

        def sink(data: memoryview) -> None:
            try:
                while data:
                    data = data[os.write(fd, data):]
            except OSError as exc:
                raise self._fail(image_path, exc) from None

        try:
            fill(sink)
            if self._umask & perm:
                os.fchmod(fd, perm)
        finally:
            os.close(fd)

    def symlink(self, parts: tuple[str, ...], image_path: str, target: str) -> None:
        parent = self.dir_fd(parts[:-1], image_path)
        name = parts[-1]
        try:
            try:
                os.symlink(target, name, dir_fd=parent)
            except FileExistsError:
                self._clear(parent, name, image_path)
                parent = self.dir_fd(parts[:-1], image_path)
                os.symlink(target, name, dir_fd=parent)
        except OSError as exc:
            raise self._fail(image_path, exc) from None

    def link(self, parts: tuple[str, ...], image_path: str, source: tuple[str, ...]) -> None:
        try:
            src_parent = os.dup(self.dir_fd(source[:-1], image_path))
        except OSError as exc:
            raise self._fail(image_path, exc) from None
        try:
            parent = self.dir_fd(parts[:-1], image_path)
            name = parts[-1]
            try:
                os.link(source[-1], name, src_dir_fd=src_parent, dst_dir_fd=parent,
                        follow_symlinks=False)
            except FileExistsError:
                self._clear(parent, name, image_path)
                parent = self.dir_fd(parts[:-1], image_path)
                os.link(source[-1], name, src_dir_fd=src_parent, dst_dir_fd=parent,
                        follow_symlinks=False)
        except OSError as exc:
            raise self._fail(image_path, exc) from None
        finally:
            os.close(src_parent)


def _current_umask() -> int:
    """The process umask, read without changing it (Linux); 0o777 if unknown (always chmod)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o777


# --------------------------------------------------------------------------- cpio


class _Extractor:
    """Walks the cpio archive and writes what the header says each member is."""

    def __init__(self, stream: _Stream, table: _FileTable, out: _Dest, path: str,
                 verify: bool) -> None:
        self.inp = _Input(stream)
        self.table = table
        self.out = out
        self.path = path
        self.verify = verify
        self.results: dict[int, ExtractedEntry] = {}
        # hardlink sets: key -> carrier path parts, and members waiting for the data
        self.carriers: dict[object, tuple[tuple[str, ...], str]] = {}
        self.pending: dict[object, list[tuple[_FileInfo, tuple[str, ...]]]] = {}

    def run(self) -> list[ExtractedEntry]:
        inp = self.inp
        while True:
            magic = inp.read_exact(6)
            if magic in _NEWC:
                fields = inp.read_exact(104)
                try:
                    (ino, _mode, _uid, _gid, nlink, _mtime, filesize, dev_major, dev_minor,
                     _rmaj, _rmin, namesize, _check) = [int(fields[i:i + 8], 16)
                                                       for i in range(0, 104, 8)]
                except ValueError:
                    raise RpmError(f"{self.path}: corrupt cpio header in the payload") from None
                if not 0 < namesize <= _MAX_NAME:
                    raise RpmError(f"{self.path}: corrupt cpio header in the payload (name size)")
                raw_name = inp.read_exact(namesize)
                inp.copy((-(110 + namesize)) % 4, None)
                if raw_name[-1:] != b"\0":
                    raise RpmError(f"{self.path}: corrupt cpio member name in the payload")
                raw_name = raw_name[:-1]
                if raw_name == _TRAILER:
                    break
                name = raw_name.decode("utf-8", "surrogateescape")
                image_path = safe_member_path(name)
                info = self.table.by_path.get(image_path)
                if info is None:
                    raise RpmError(f"{self.path}: payload member {image_path} is not in the header")
                key = ("cpio", dev_major, dev_minor, ino) if nlink > 1 else info.link_key
                self.member(info, image_path, filesize, key)
            elif magic == _STRIPPED:
                try:
                    index = int(inp.read_exact(8), 16)
                except ValueError:
                    raise RpmError(f"{self.path}: corrupt cpio header in the payload") from None
                inp.copy(2, None)
                if index == 0xFFFFFFFF:
                    break
                if index >= len(self.table.files):
                    raise RpmError(f"{self.path}: payload member #{index} is not in the header")
                info = self.table.files[index]
                image_path = safe_member_path("." + info.path)
                # rpm's rpmfiArchiveReadHeader: symlinks carry their target, regular
                # files their data, except non-last members of a hardlink set and ghosts.
                carries = not info.ghost and (stat.S_ISLNK(info.mode) or (
                    stat.S_ISREG(info.mode) and (info.link_key is None or info.last_link)))
                size = info.size if carries else 0
                self.member(info, image_path, size, info.link_key)
            else:
                raise RpmError(f"{self.path}: corrupt payload (bad cpio magic {magic!r})")
        return self.finish()

    def member(self, info: _FileInfo, image_path: str, size: int, key: object) -> None:
        inp, out = self.inp, self.out
        if info.index in self.results:
            raise RpmError(f"{self.path}: payload member {image_path} appears twice")
        parts = tuple(image_path[1:].split("/")) if image_path != "/" else ()
        mode = info.mode
        if not parts and not stat.S_ISDIR(mode):
            raise RpmError(f"{self.path}: payload member / is not a directory")
        entry: ExtractedEntry | None = None
        if info.ghost:  # rpm < 4.11 sometimes put ghosts in the payload: rpm skips them
            inp.copy(size, None)
        elif stat.S_ISDIR(mode):
            inp.copy(size, None)
            out.make_dir(parts, image_path)
            entry = self.entry(info, image_path, "dir")
        elif stat.S_ISLNK(mode):
            inp.copy(size, None)
            if not info.linkto:
                raise RpmError(f"{self.path}: symlink {image_path} has no target in the header")
            out.symlink(parts, image_path, info.linkto)
            entry = self.entry(info, image_path, "symlink", linkname=info.linkto)
        elif stat.S_ISREG(mode):
            entry = self.regular(info, image_path, parts, size, key)
        else:
            inp.copy(size, None)
            entry = self.entry(info, image_path, "special")
        inp.copy((-size) % 4, None)
        if entry is not None:
            self.results[info.index] = entry

    def regular(self, info: _FileInfo, image_path: str, parts: tuple[str, ...], size: int,
                key: object) -> ExtractedEntry | None:
        if key is not None and key in self.carriers:
            self.inp.copy(size, None)
            source, source_path = self.carriers[key]
            self.out.link(parts, image_path, source)
            return self.entry(info, image_path, "hardlink", linkname=source_path)
        if key is not None and size == 0 and info.size > 0:
            self.pending.setdefault(key, []).append((info, parts))
            self.results[info.index] = self.entry(info, image_path, "hardlink")  # placeholder
            return None
        if size != info.size:
            raise RpmError(f"{self.path}: {image_path}: payload has {size} bytes, "
                           f"the header says {info.size}")
        self.write(info, image_path, parts, size)
        if key is not None:
            self.carriers[key] = (parts, image_path)
            for member, member_parts in self.pending.pop(key, []):
                member_path = "/" + "/".join(member_parts)
                self.out.link(member_parts, member_path, parts)
                self.results[member.index] = self.entry(member, member_path, "hardlink",
                                                        linkname=image_path)
        return self.entry(info, image_path, "file")

    def write(self, info: _FileInfo, image_path: str, parts: tuple[str, ...], size: int) -> None:
        inp = self.inp
        if not (self.verify and info.digest):
            self.out.write_file(parts, image_path, info.mode, lambda sink: inp.copy(size, sink))
            return
        hasher = hashlib.new(self.table.digest_algo)

        def fill(sink: Callable[[memoryview], None]) -> None:
            def both(data: memoryview) -> None:
                hasher.update(data)
                sink(data)
            inp.copy(size, both)

        self.out.write_file(parts, image_path, info.mode, fill)
        if hasher.hexdigest() != info.digest:
            raise RpmError(f"{self.path}: {image_path}: file {self.table.digest_algo} digest "
                           "mismatch (corrupt payload)")

    def entry(self, info: _FileInfo, image_path: str, kind: str, linkname: str = "") -> ExtractedEntry:
        return ExtractedEntry(
            path=image_path, kind=kind, mode=info.mode,
            size=0 if kind in ("dir", "special") else info.size,
            linkname=linkname, digest=info.digest, user=info.user, group=info.group)

    def finish(self) -> list[ExtractedEntry]:
        for members in self.pending.values():
            names = ", ".join("/" + "/".join(parts) for _, parts in members)
            raise RpmError(f"{self.path}: hardlink set without data in the payload: {names}")
        missing = []
        for info in self.table.files:
            if info.index in self.results:
                continue
            if info.ghost:
                self.results[info.index] = self.entry(info, info.path, "ghost")
            else:
                missing.append(info.path)
        if missing:
            raise RpmError(f"{self.path}: {len(missing)} header entries missing from the payload, "
                           f"first {missing[0]}")
        return sorted(self.results.values(), key=lambda e: e.path)


def _check_expected(path: str, expected: Checksum) -> None:
    kind = {"sha": "sha1"}.get(expected.kind.lower(), expected.kind.lower())
    try:
        hasher = hashlib.new(kind)
    except ValueError:
        raise RpmError(f"{path}: unsupported checksum type {expected.kind!r}") from None
    with _open(path) as handle:
        try:
            while chunk := handle.read(CHUNK):
                hasher.update(chunk)
        except OSError as exc:
            raise RpmError(f"cannot read {path}: {_one_line(exc)}") from None
    if hasher.hexdigest() != expected.value.lower():
        raise DigestMismatchError(
            f"{path}: {expected.kind} is {hasher.hexdigest()}, expected {expected.value}")
