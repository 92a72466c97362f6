"""RPM package headers: the lead, the signature and main headers, and the package facts they hold.

An ``.rpm`` file is a 96-byte *lead*, a *signature header* (padded to 8 bytes),
the main *header* and the compressed *payload* (a cpio archive, see
:mod:`microcontainer_tool.sources.rpm.payload` and
:mod:`microcontainer_tool.sources.rpm.cpio`). This module

* parses the lead and both headers itself, with bounds checks, and verifies the
  header digests (``SHA256HEADER``/``SHA1HEADER``) *before* handing the bytes to
  ``rpm_rs`` (the Rust ``rpm`` crate panics on some corrupt headers, and a panic
  prints a Rust backtrace);
* reads typed metadata (dependencies, file entries) with ``rpm_rs`` and turns it
  into a :class:`~microcontainer_tool.sources.rpm.package.PackageInfo`, the
  header's file table, the installed size and the rpm manifest line.

The header is authoritative, as in rpm itself: the payload provides content and
the mapping of members to header entries; types, modes and link targets come
from the header. Errors are :class:`~microcontainer_tool.errors.RpmError`,
always one line.
"""

from __future__ import annotations

import hashlib
import os
import stat
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, BinaryIO

import rpm_rs  # type: ignore[import-untyped]

from microcontainer_tool.errors import RpmError
from microcontainer_tool.sources.rpm.package import Checksum, Dep, PackageInfo, split_evr

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


# --------------------------------------------------------------------------- headers


class Header:
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
class PackageHeaders:
    """The parsed, verified headers of one package file."""

    prefix: bytes                 # lead + signature (+ padding) + header: bytes before the payload
    signature: Header
    header: Header
    header_offset: int
    payload_offset: int
    signed_size: int | None       # header + payload bytes, from the signature header
    payload_digest: str | None
    payload_algo: str
    md5: bytes | None             # legacy MD5 of header + payload (only when no header digest)


def open_package(path: str) -> BinaryIO:
    """Open a package file for binary reading.

    Raises:
        RpmError: the file cannot be opened.
    """
    try:
        return open(path, "rb")
    except OSError as exc:
        raise RpmError(f"cannot open {path}: {describe_error(exc)}") from None


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


def read_headers(handle: BinaryIO, path: str) -> PackageHeaders:
    """Read lead, signature and header; check structure, sizes' plausibility and header digests.

    Args:
        handle: the package file, positioned at its start; left at the payload.
        path: the file's name, for messages.

    Raises:
        RpmError: not an rpm, truncated, corrupt, or a header digest mismatch.
    """
    try:
        lead = _read_exact(handle, _LEAD_SIZE, path, "lead")
        if lead[:4] != _LEAD_MAGIC:
            raise RpmError(f"{path}: not an rpm package (bad lead magic)")
        sig_blob = _read_header_blob(handle, path, "signature header")
        pad = (-len(sig_blob)) % 8
        padding = _read_exact(handle, pad, path, "signature header")
        hdr_blob = _read_header_blob(handle, path, "header")
        signature = Header(sig_blob, "signature header")
        header = Header(hdr_blob, "header")
    except (ValueError, struct.error, IndexError) as exc:
        raise RpmError(f"{path}: corrupt: {describe_error(exc)}") from None
    except OSError as exc:
        raise RpmError(f"{path}: cannot read: {describe_error(exc)}") from None

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
        raise RpmError(f"{path}: corrupt: {describe_error(exc)}") from None
    if algo_no not in _HASH_ALGOS:
        raise RpmError(f"{path}: unsupported payload digest algorithm {algo_no}")
    return PackageHeaders(lead + sig_blob + padding + hdr_blob, signature, header, header_offset,
                          header_offset + len(hdr_blob), size, payload_digest, _HASH_ALGOS[algo_no],
                          md5)


def read_metadata(pkg: PackageHeaders, path: str) -> rpm_rs.PackageMetadata:
    """Parse the verified headers with ``rpm_rs``.

    Raises:
        RpmError: ``rpm_rs`` cannot read them, or the package is a source rpm.
    """
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
        raise RpmError(f"{where}unreadable {what}: {describe_error(exc)}") from None


def describe_error(exc: BaseException) -> str:
    """An exception as one short line (at most 300 characters) for an error message."""
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


def build_package_info(path: str, pkg: PackageHeaders, meta: rpm_rs.PackageMetadata,
                       checksum: Checksum, size: int) -> PackageInfo:
    """The :class:`PackageInfo` of a local package file (``repo="@local"``, ``location=path``).

    Args:
        path: the package file.
        pkg: its verified headers.
        meta: its metadata (:func:`read_metadata`).
        checksum: the checksum of the whole file.
        size: the size of the whole file.

    Raises:
        RpmError: an unreadable tag.
    """
    def get(attr: str) -> str:
        return str(_optional(lambda: getattr(meta, attr), ""))

    try:
        epoch = pkg.header.ints(_TAG_EPOCH)[0] if pkg.header.has(_TAG_EPOCH) else 0
    except (ValueError, struct.error) as exc:
        raise RpmError(f"{path}: corrupt epoch: {describe_error(exc)}") from None
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


def rpm_installed_size(path: str) -> int:
    """The installed size of a package (header ``SIZE``/``LONGSIZE``), for the rpm manifest.

    Reads and verifies the headers only.

    Raises:
        RpmError: as :func:`~microcontainer_tool.sources.rpm.payload.read_rpm` (payload not checked).
    """
    with open_package(path) as handle:
        pkg = read_headers(handle, path)
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


# --------------------------------------------------------------------------- file table


@dataclass
class FileInfo:
    """One entry of the header's file list, as the cpio reader needs it."""

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


class FileTable:
    """The header's file list: entries by index and by path, the file digest algorithm, hardlink sets.

    Raises:
        RpmError: unreadable entries, a path listed twice, or an unsupported digest algorithm.
    """

    def __init__(self, pkg: PackageHeaders, meta: rpm_rs.PackageMetadata, path: str) -> None:
        entries = _call(lambda: meta.file_entries(), path, "file entries")
        self.files: list[FileInfo] = []
        for i, entry in enumerate(entries):
            digest = entry.digest
            self.files.append(FileInfo(
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
            raise RpmError(f"{path}: corrupt header: {describe_error(exc)}") from None
        if len(inodes) == len(self.files) and len(devices) == len(self.files):
            groups: dict[tuple[int, int], list[FileInfo]] = {}
            for info in self.files:
                if stat.S_ISREG(info.mode) and not info.ghost:
                    key = (devices[info.index], inodes[info.index])
                    groups.setdefault(key, []).append(info)
            for key, members in groups.items():
                if len(members) > 1:
                    for info in members:
                        info.link_key = key
                    members[-1].last_link = True
