"""OpenPGP signatures of RPM packages, checked against a repository's ``gpgkey``.

A spec's ``repos:`` entry may name the repository's public key(s) as dnf does
(``gpgkey: https://.../RPM-GPG-KEY-Rocky-9``, ``file:///etc/pki/...``, a path,
or several of those separated by whitespace). :func:`load_keys` reads them into
a :class:`KeyRing`; :func:`verify_signature` checks a downloaded package
against it and returns the id of the key that signed it.

What is checked, and how:

* the header digests (``SHA256HEADER``/``SHA1HEADER``) and the header's
  structure, by :func:`microcontainer_tool.sources.rpm.header.read_headers` (the same guard
  that keeps corrupt headers away from ``rpm_rs``);
* the *header-only* OpenPGP signature (``RSAHEADER``/``DSAHEADER``, or v6
  ``OPENPGP``), which is what ``rpmsign`` has written since rpm 4.14 (RSA,
  EdDSA, ...), by ``rpm_rs.PackageMetadata.check_signatures`` on the lead and
  headers only, so a large payload is never held in memory;
* the payload, by streaming it through the header's ``PAYLOADDIGEST`` (the
  signed header commits to the payload through that digest, as in rpm itself).

Packages built by rpm < 4.14 have no ``PAYLOADDIGEST``: their payload is only
covered by the legacy header+payload signature (``SIGPGP``/``SIGGPG``), which
``rpm_rs`` does not verify. They are refused unless ``header_only_ok=True``, in
which case the caller must check every file against the (signed) header's file
digests, as :func:`~microcontainer_tool.sources.rpm.cpio.extract_rpm` does by default for
exactly such packages.

Keys are parsed here too (ASCII armor with its CRC, or binary packets), so that
a signature by a key that is not in the ring ("unknown key") is told apart from
a signature that does not verify ("bad signature"), and so that several armored
blocks in one file all count (``rpm_rs.Verifier`` reads only the first block of
its input). ``rpm_rs`` then validates each certificate (self-signatures,
binding signatures, algorithms) and does the cryptography.

All errors are one-line :class:`~microcontainer_tool.errors.RpmError`.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import unquote, urlparse

import rpm_rs  # type: ignore[import-untyped]

from microcontainer_tool.errors import RpmError
from microcontainer_tool.sources.rpm.header import open_package, read_headers
from microcontainer_tool.sources.rpm.payload import CHUNK

__all__ = ["KeyRing", "PublicKey", "load_keys", "parse_keys", "verify_signature"]

# OpenPGP packet tags (RFC 9580, section 5).
_PKT_SECRET_KEY = 5
_PKT_PUBLIC_KEY = 6
_PKT_SECRET_SUBKEY = 7
_PKT_USER_ID = 13
_PKT_PUBLIC_SUBKEY = 14

# Signature header tags (rpmtag.h).
_SIG_DSAHEADER = 267
_SIG_RSAHEADER = 268
_SIG_OPENPGP = 278
_SIG_PGP = 1002   # legacy header+payload signatures
_SIG_GPG = 1005

_MAX_KEY_FILE = 1 << 20
_ARMOR = re.compile(rb"-----BEGIN PGP ([A-Z0-9 ,/]+)-----[ \t]*\r?\n(.*?)-----END PGP \1-----",
                    re.DOTALL)
_NO_KEY_MARKERS = ("no matching key", "unable to find key")


# --------------------------------------------------------------------------- keys


@dataclass(frozen=True)
class PublicKey:
    """One OpenPGP certificate (a primary key and its subkeys).

    Attributes:
        fingerprint: the primary key's fingerprint, lowercase hex.
        key_id: the primary key's 64-bit key id, lowercase hex (16 digits).
        subkey_fingerprints: the fingerprints of its subkeys.
        subkey_ids: the key ids of its subkeys.
        user_ids: its user ids (``Name <mail>``), for messages.
        source: where it was read from.
    """

    fingerprint: str
    key_id: str
    subkey_fingerprints: tuple[str, ...] = ()
    subkey_ids: tuple[str, ...] = ()
    user_ids: tuple[str, ...] = ()
    source: str = ""

    @property
    def all_ids(self) -> tuple[str, ...]:
        """The key ids a signature by this certificate can name as issuer."""
        return (self.key_id, *self.subkey_ids)


@dataclass(frozen=True)
class KeyRing:
    """Public keys to verify packages with (see :func:`load_keys`).

    Attributes:
        keys: the certificates, in the order they were read (one per primary
            key: a key given twice is merged).
        sources: the ``gpgkey`` entries they came from.
    """

    keys: tuple[PublicKey, ...]
    sources: tuple[str, ...] = ()
    _verifier: Any = field(default=None, repr=False, compare=False)

    def find(self, key_id: str | None, fingerprint: str | None = None) -> PublicKey | None:
        """The certificate holding the (sub)key named by a signature's issuer, if any."""
        key_id = (key_id or "").lower()
        fingerprint = (fingerprint or "").lower()
        for key in self.keys:
            if key_id and key_id in key.all_ids:
                return key
            if fingerprint and fingerprint in (key.fingerprint, *key.subkey_fingerprints):
                return key
        return None

    def __len__(self) -> int:
        return len(self.keys)


def load_keys(source: str, fetch: Callable[[str], bytes], *, base_dir: str | None = None) -> KeyRing:
    """Read the public key(s) named by a ``gpgkey`` value.

    Args:
        source: one or more (whitespace-separated, as dnf allows) ``http://``,
            ``https://`` or ``file://`` URLs or paths; each names an ASCII-armored
            (possibly several blocks) or binary OpenPGP public key file.
        fetch: gets the bytes of an ``http(s)://`` URL (e.g. ``Fetcher.get``);
            ``file://`` URLs and paths are read directly.
        base_dir: what relative paths are relative to (default: the current
            directory); pass the spec's directory.

    Returns:
        A :class:`KeyRing` of every key of every entry.

    Raises:
        RpmError: empty ``source``, an unsupported URL scheme, an unreachable or
            unreadable file, or content that is not a usable OpenPGP public key
            (a private key is refused too).
    """
    entries = source.split()
    if not entries:
        raise RpmError("gpgkey is empty")
    ring = _Builder()
    for entry in entries:
        ring.add(_read_source(entry, fetch, base_dir), entry)
    return ring.build(entries)


def parse_keys(data: bytes, source: str = "(inline)") -> KeyRing:
    """A :class:`KeyRing` from the bytes of one key file (armored or binary).

    Raises:
        RpmError: not a usable OpenPGP public key.
    """
    ring = _Builder()
    ring.add(data, source)
    return ring.build([source])


class _Builder:
    """Certificates, deduplicated by fingerprint, and the ``rpm_rs`` verifier holding them."""

    def __init__(self) -> None:
        self.keys: list[PublicKey] = []
        self.verifier = _call(rpm_rs.Verifier, "gpgkey: cannot make a verifier")

    def add(self, data: bytes, source: str) -> None:
        for key, armored in _parse(data, source):
            _call(functools.partial(self.verifier.load_from_asc_bytes, armored),
                  f"gpgkey {source}: unusable OpenPGP key 0x{key.key_id}")
            for i, known in enumerate(self.keys):
                if known.fingerprint == key.fingerprint:  # the same key again, maybe updated
                    extra = [(f, k) for f, k in zip(key.subkey_fingerprints, key.subkey_ids, strict=True)
                             if f not in known.subkey_fingerprints]
                    self.keys[i] = replace(
                        known,
                        subkey_fingerprints=known.subkey_fingerprints + tuple(f for f, _ in extra),
                        subkey_ids=known.subkey_ids + tuple(k for _, k in extra),
                        user_ids=known.user_ids + tuple(u for u in key.user_ids
                                                        if u not in known.user_ids))
                    break
            else:
                self.keys.append(key)

    def build(self, sources: list[str]) -> KeyRing:
        return KeyRing(tuple(self.keys), tuple(sources), self.verifier)


def _read_source(entry: str, fetch: Callable[[str], bytes], base_dir: str | None) -> bytes:
    parsed = urlparse(entry)
    scheme = parsed.scheme.lower()
    if scheme in ("http", "https"):
        try:
            data = fetch(entry)
        except Exception as exc:  # noqa: BLE001  (RepoError, requests' errors, a test's fetch)
            raise RpmError(f"cannot fetch gpgkey {entry}: {_one_line(exc)}") from None
        return bytes(data)
    if scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise RpmError(f"gpgkey {entry}: file:// URLs must not name a host")
        path = unquote(parsed.path)
    elif "://" in entry:
        raise RpmError(f"gpgkey {entry}: unsupported URL scheme {parsed.scheme!r} "
                       "(use http://, https://, file:// or a path)")
    else:
        path = os.path.join(base_dir, entry) if base_dir else entry
    try:
        with open(path, "rb") as handle:
            data = handle.read(_MAX_KEY_FILE + 1)
    except OSError as exc:
        raise RpmError(f"cannot read gpgkey {entry}: {exc.strerror or _one_line(exc)}") from None
    if len(data) > _MAX_KEY_FILE:
        raise RpmError(f"gpgkey {entry}: larger than {_MAX_KEY_FILE} bytes, not a key file")
    return data


def _parse(data: bytes, source: str) -> list[tuple[PublicKey, bytes]]:
    """Each certificate in a key file, with itself re-armored for ``rpm_rs``."""
    blobs: list[bytes] = []
    if b"-----BEGIN PGP " in data:
        for match in _ARMOR.finditer(data):
            kind = match.group(1).decode()
            if kind == "PRIVATE KEY BLOCK":
                raise RpmError(f"gpgkey {source}: is a private key; give the public key")
            if kind != "PUBLIC KEY BLOCK":
                raise RpmError(f"gpgkey {source}: holds a PGP {kind}, not a public key")
            blobs.append(_dearmor(match.group(2), source))
        if not blobs:
            raise RpmError(f"gpgkey {source}: unterminated ASCII armor, not a public key")
    elif data[:1] and data[0] & 0x80:
        blobs.append(data)
    else:
        raise RpmError(f"gpgkey {source}: not an OpenPGP public key")

    out: list[tuple[PublicKey, bytes]] = []
    for blob in blobs:
        try:
            packets = _packets(blob)
        except ValueError as exc:
            raise RpmError(f"gpgkey {source}: not an OpenPGP public key: {exc}") from None
        if any(tag in (_PKT_SECRET_KEY, _PKT_SECRET_SUBKEY) for tag, _, _ in packets):
            raise RpmError(f"gpgkey {source}: is a private key; give the public key")
        if not packets or packets[0][0] != _PKT_PUBLIC_KEY:
            raise RpmError(f"gpgkey {source}: not an OpenPGP public key")
        start = 0
        for i in range(1, len(packets) + 1):
            if i == len(packets) or packets[i][0] == _PKT_PUBLIC_KEY:
                cert = packets[start:i]
                out.append((_public_key(cert, source),
                            _armor(b"".join(raw for _, raw, _ in cert))))
                start = i
    return out


def _public_key(packets: list[tuple[int, bytes, bytes]], source: str) -> PublicKey:
    fingerprint, key_id = _fingerprint(packets[0][2], source)
    subkeys = [_fingerprint(body, source) for tag, _, body in packets if tag == _PKT_PUBLIC_SUBKEY]
    uids = tuple(body.decode("utf-8", "replace") for tag, _, body in packets if tag == _PKT_USER_ID)
    return PublicKey(fingerprint, key_id, tuple(f for f, _ in subkeys), tuple(i for _, i in subkeys),
                     uids, source)


def _fingerprint(body: bytes, source: str) -> tuple[str, str]:
    """(fingerprint, key id) of a public (sub)key packet body, v4, v5 or v6."""
    version = body[0] if body else 0
    if version == 4:
        digest = hashlib.sha1(b"\x99" + len(body).to_bytes(2, "big") + body).hexdigest()
        return digest, digest[-16:]
    if version in (5, 6):
        prefix = b"\x9a" if version == 5 else b"\x9b"
        digest = hashlib.sha256(prefix + len(body).to_bytes(4, "big") + body).hexdigest()
        return digest, digest[:16]
    raise RpmError(f"gpgkey {source}: unsupported OpenPGP key version {version}")


def _packets(data: bytes) -> list[tuple[int, bytes, bytes]]:
    """Split OpenPGP packets: ``(tag, raw packet, body)``; ``ValueError`` if malformed."""
    out = []
    pos, end = 0, len(data)
    while pos < end:
        start = pos
        first = data[pos]
        if not first & 0x80:
            raise ValueError(f"bad packet header at byte {pos}")
        pos += 1
        if first & 0x40:  # new format
            tag = first & 0x3F
            if pos >= end:
                raise ValueError("truncated packet header")
            octet = data[pos]
            if octet < 192:
                length, pos = octet, pos + 1
            elif octet < 224:
                if pos + 2 > end:
                    raise ValueError("truncated packet header")
                length, pos = ((octet - 192) << 8) + data[pos + 1] + 192, pos + 2
            elif octet == 255:
                if pos + 5 > end:
                    raise ValueError("truncated packet header")
                length, pos = int.from_bytes(data[pos + 1:pos + 5], "big"), pos + 5
            else:
                raise ValueError("partial-length packet in a key")
        else:  # legacy format
            tag, kind = (first >> 2) & 0x0F, first & 0x03
            if kind == 3:
                length = end - pos
            else:
                size = 1 << kind
                if pos + size > end:
                    raise ValueError("truncated packet header")
                length, pos = int.from_bytes(data[pos:pos + size], "big"), pos + size
        if pos + length > end:
            raise ValueError("truncated packet")
        out.append((tag, data[start:pos + length], data[pos:pos + length]))
        pos += length
    return out


def _crc24(data: bytes) -> int:
    crc = 0xB704CE
    for byte in data:
        crc ^= byte << 16
        for _ in range(8):
            crc <<= 1
            if crc & 0x1000000:
                crc ^= 0x1864CFB
    return crc & 0xFFFFFF


def _dearmor(text: bytes, source: str) -> bytes:
    """The bytes of an armor body (header lines, base64, optional ``=CRC``)."""
    lines = [line.strip() for line in text.splitlines()]
    body: list[bytes] = []
    checksum = None
    in_headers = True
    for line in lines:
        if in_headers:
            if b":" in line:
                continue
            in_headers = False
            if not line:
                continue
        if not line:
            continue
        if line.startswith(b"=") and len(line) == 5:
            checksum = line[1:]
            break
        body.append(line)
    try:
        data = base64.b64decode(b"".join(body), validate=True)
        want = int.from_bytes(base64.b64decode(checksum, validate=True), "big") if checksum else None
    except (binascii.Error, ValueError):
        raise RpmError(f"gpgkey {source}: corrupt ASCII armor (bad base64)") from None
    if not data:
        raise RpmError(f"gpgkey {source}: empty ASCII armor, not a public key")
    if want is not None and want != _crc24(data):
        raise RpmError(f"gpgkey {source}: corrupt ASCII armor (CRC mismatch)")
    return data


def _armor(data: bytes) -> bytes:
    text = base64.b64encode(data)
    lines = [text[i:i + 64] for i in range(0, len(text), 64)]
    crc = base64.b64encode(_crc24(data).to_bytes(3, "big"))
    return b"\n".join([b"-----BEGIN PGP PUBLIC KEY BLOCK-----", b"", *lines, b"=" + crc,
                       b"-----END PGP PUBLIC KEY BLOCK-----", b""])


# --------------------------------------------------------------------------- packages


def verify_signature(path: str, keys: KeyRing, *, header_only_ok: bool = False) -> str:
    """Check that a package is signed by one of ``keys`` and intact.

    Args:
        path: a local ``.rpm`` file.
        keys: from :func:`load_keys`.
        header_only_ok: accept a package without a payload digest (rpm < 4.14)
            on its header signature alone; the caller must then check each
            file against the header's file digests (``extract_rpm`` does so by
            default for such packages).

    Returns:
        The id (16 lowercase hex digits) of the key, or signing subkey, that
        made the verified signature.

    Raises:
        RpmError: one line, ``PATH: not signed``, ``PATH: signed with unknown key
            0x...``, ``PATH: bad signature ...`` (the header or the payload is
            not what was signed), or the package is corrupt or unreadable.
    """
    with open_package(path) as handle:
        pkg = read_headers(handle, path)  # structure + header digests
        if not any(pkg.signature.has(t) for t in (_SIG_RSAHEADER, _SIG_DSAHEADER, _SIG_OPENPGP)):
            if any(pkg.signature.has(t) for t in (_SIG_PGP, _SIG_GPG)):
                raise RpmError(f"{path}: only has a legacy header+payload signature, "
                               "which cannot be verified (no header signature)")
            raise RpmError(f"{path}: not signed")

        meta = _call(lambda: rpm_rs.PackageMetadata.from_bytes(pkg.prefix),
                     f"{path}: unreadable header")
        report = _call(lambda: meta.check_signatures(keys._verifier),
                       f"{path}: bad signature: unreadable signature")
        results = list(report.signatures)
        if not results:
            raise RpmError(f"{path}: bad signature: no readable signature packet")

        verified = None
        unknown: list[str] = []
        bad: list[str] = []
        for result in results:
            info = result.info
            key_id = (info.key_id or "").lower()
            fingerprint = (info.fingerprint or "").lower()
            if not key_id and fingerprint:  # v4: the fingerprint's tail; v6: its head
                key_id = fingerprint[:16] if len(fingerprint) == 64 else fingerprint[-16:]
            if result.is_verified():
                verified = key_id
                break
            error = _one_line_text(result.error or "verification failed")
            if not key_id:
                bad.append(f"(the signature names no key: {error})")
            elif keys.find(key_id, fingerprint) is None:
                unknown.append(key_id)
            elif any(marker in error for marker in _NO_KEY_MARKERS):
                bad.append(f"by key 0x{key_id} (gpgkey has the key, but it cannot verify: {error})")
            else:  # the header, or the signature itself, is not what the key signed
                bad.append(f"by key 0x{key_id} (altered header or signature: "
                           f"{error.rsplit(': ', 1)[-1]})")
        if verified is None:
            if bad:
                raise RpmError(f"{path}: bad signature {bad[0]}")
            raise RpmError(f"{path}: signed with unknown key 0x{unknown[0]}"
                           f" (not in gpgkey {' '.join(keys.sources)})".rstrip())

        if pkg.payload_digest is None:
            if header_only_ok:
                return verified
            raise RpmError(f"{path}: the signature does not cover the payload "
                           "(no payload digest: built by rpm < 4.14)")
        handle.seek(pkg.payload_offset)
        hasher = hashlib.new(pkg.payload_algo)
        try:
            while chunk := handle.read(CHUNK):
                hasher.update(chunk)
        except OSError as exc:
            raise RpmError(f"{path}: cannot read: {_one_line(exc)}") from None
    if hasher.hexdigest() != pkg.payload_digest:
        raise RpmError(f"{path}: bad signature: the payload is not the signed one "
                       f"({pkg.payload_algo} digest mismatch)")
    return verified


# --------------------------------------------------------------------------- helpers


def _call(func: Callable[[], Any], what: str) -> Any:
    """Call into rpm_rs; any exception (a Rust panic included) becomes one-line RpmError."""
    try:
        return func()
    except (KeyboardInterrupt, SystemExit, RpmError):
        raise
    except BaseException as exc:  # noqa: BLE001  (pyo3's PanicException is a BaseException)
        raise RpmError(f"{what}: {_one_line(exc)}") from None


def _one_line_text(text: str) -> str:
    return " ".join(str(text).split())[:300]


def _one_line(exc: BaseException) -> str:
    return _one_line_text(str(exc)) or type(exc).__name__
