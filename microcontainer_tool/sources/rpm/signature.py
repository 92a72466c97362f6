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
  signed header commits to the payload through that digest, as in rpm itself);
* the legacy *header+payload* OpenPGP signature (``SIGPGP``; v3 or v4
  signature packets) and the ``MD5`` digest of header+payload, which is all
  that covers the payload of a package built by rpm < 4.14 (CentOS/RHEL 7,
  Amazon Linux 2, Oracle Linux 7): ``rpm_rs`` does not verify these, so this
  module does, as ``rpm -K`` does: the main header bytes and then the
  compressed payload bytes are hashed while they are read (one pass, bounded
  memory, together with the payload digest), and the signature is checked
  with the RSA public key (PKCS#1 v1.5, SHA-1 or SHA-2) of the issuing
  (sub)key in the ring (plain integer arithmetic, no extra dependency).
  DSA (``SIGGPG``) cannot be checked: ``rpm_rs`` does not load DSA keys, so a
  DSA ``gpgkey`` is refused when it is read.

A package is accepted when a signature by a key of the ring covers its payload:
a verified header signature together with a matching ``PAYLOADDIGEST``, or a
verified header+payload signature. Any signature or digest that is present and
does not match refuses the package (as ``rpm -K`` says ``BAD``). A package whose
only verified signature is the header one and that has no payload digest is
refused unless ``header_only_ok=True``, in which case the caller must check
every file against the (signed) header's file digests, as
:func:`~microcontainer_tool.sources.rpm.cpio.extract_rpm` does by default for
exactly such packages. A header+payload signature by a non-RSA key of the ring
(EdDSA, ...) is not checked; it is ignored when the payload digest covers the
payload, and refuses the package otherwise.

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
from microcontainer_tool.sources.rpm.header import PackageHeaders, open_package, read_headers
from microcontainer_tool.sources.rpm.payload import HashingReader

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
_SIG_MD5 = 1004   # legacy MD5 of header+payload
_SIG_GPG = 1005

# Public-key algorithms and hash algorithms of header+payload signatures (RFC 4880, 9.1, 9.4).
_PK_RSA = (1, 3)  # RSA, RSA sign-only
_PK_NAMES = {1: "RSA", 3: "RSA", 16: "ElGamal", 17: "DSA", 18: "ECDH", 19: "ECDSA", 22: "EdDSA",
             27: "Ed25519", 28: "Ed448"}
_SIG_HASHES = {2: "sha1", 8: "sha256", 9: "sha384", 10: "sha512", 11: "sha224"}
# The ASN.1 DigestInfo prefix of EMSA-PKCS1-v1_5 for each hash (RFC 4880, 5.2.2).
_DIGEST_INFO = {
    "sha1": bytes.fromhex("3021300906052b0e03021a05000414"),
    "sha224": bytes.fromhex("302d300d06096086480165030402040500041c"),
    "sha256": bytes.fromhex("3031300d060960864801650304020105000420"),
    "sha384": bytes.fromhex("3041300d060960864801650304020205000430"),
    "sha512": bytes.fromhex("3051300d060960864801650304020305000440"),
}
_PKT_SIGNATURE = 2
_SUB_ISSUER = 16
_SUB_ISSUER_FPR = 33
_SIGTYPE_BINARY = 0x00

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
        material: ``(key id, algorithm, public integers n and e)`` of each of
            its v4 RSA (sub)keys, to check legacy header+payload signatures with.
    """

    fingerprint: str
    key_id: str
    subkey_fingerprints: tuple[str, ...] = ()
    subkey_ids: tuple[str, ...] = ()
    user_ids: tuple[str, ...] = ()
    source: str = ""
    material: tuple[tuple[str, int, tuple[int, ...]], ...] = ()

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
                        material=known.material + tuple(m for m in key.material
                                                        if m[0] in {k for _, k in extra}),
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
    bodies = [body for tag, _, body in packets if tag == _PKT_PUBLIC_SUBKEY]
    subkeys = [_fingerprint(body, source) for body in bodies]
    uids = tuple(body.decode("utf-8", "replace") for tag, _, body in packets if tag == _PKT_USER_ID)
    material = []
    for (_, kid), body in zip([(fingerprint, key_id), *subkeys], [packets[0][2], *bodies], strict=True):
        numbers = _key_material(body)
        if numbers is not None:
            material.append((kid, *numbers))
    return PublicKey(fingerprint, key_id, tuple(f for f, _ in subkeys), tuple(i for _, i in subkeys),
                     uids, source, tuple(material))


def _key_material(body: bytes) -> tuple[int, tuple[int, ...]] | None:
    """(algorithm, (n, e)) of a v4 RSA (sub)key packet body, else ``None``."""
    if len(body) < 6 or body[0] != 4 or body[5] not in _PK_RSA:
        return None
    try:
        numbers, _ = _mpis(body, 6, 2)
    except ValueError:
        return None  # rpm_rs judged the key; a key we cannot read just signs nothing legacy
    return body[5], numbers


def _mpis(data: bytes, pos: int, count: int) -> tuple[tuple[int, ...], int]:
    """``count`` OpenPGP multiprecision integers from ``pos``; ``ValueError`` if truncated."""
    out = []
    for _ in range(count):
        if pos + 2 > len(data):
            raise ValueError("truncated integer")
        size = (int.from_bytes(data[pos:pos + 2], "big") + 7) // 8
        if pos + 2 + size > len(data):
            raise ValueError("truncated integer")
        out.append(int.from_bytes(data[pos + 2:pos + 2 + size], "big"))
        pos += 2 + size
    return tuple(out), pos


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


def verify_signature(path: str, keys: KeyRing, *, header_only_ok: bool = False,
                     label: str | None = None) -> str:
    """Check that a package is signed by one of ``keys`` and intact.

    Args:
        path: a local ``.rpm`` file.
        keys: from :func:`load_keys`.
        header_only_ok: accept a package without a payload digest (rpm < 4.14)
            and without a verifiable header+payload signature on its header
            signature alone; the caller must then check each file against the
            header's file digests (``extract_rpm`` does so by default for such
            packages).
        label: what messages call the package (default: ``path``), e.g. its
            NEVRA and repository URL rather than a cache file.

    Returns:
        The id (16 lowercase hex digits) of the key, or signing subkey, that
        made the verified signature covering the payload.

    Raises:
        RpmError: one line, ``LABEL: not signed``, ``LABEL: signed with unknown
            key 0x...``, ``LABEL: bad signature ...`` (the header or the payload
            is not what was signed, or a digest does not match), or the package
            is corrupt or unreadable.
    """
    what = label or path
    with open_package(path) as handle:
        pkg = read_headers(handle, what)  # structure + header digests
        has_header_sig = any(pkg.signature.has(t) for t in (_SIG_RSAHEADER, _SIG_DSAHEADER, _SIG_OPENPGP))
        legacy_tag = next((t for t in (_SIG_PGP, _SIG_GPG) if pkg.signature.has(t)), None)
        if not has_header_sig and legacy_tag is None:
            raise RpmError(f"{what}: not signed")

        verified: str | None = None
        unknown: list[str] = []
        if has_header_sig:
            verified, unknown = _check_header_signature(pkg, keys, what)
        legacy = legacy_key = None
        if legacy_tag is not None:
            legacy = _parse_signature(pkg.signature.binary(legacy_tag), what)
            found = keys.find(legacy.key_id)
            if found is None:
                unknown.append(legacy.key_id)
            else:
                legacy_key = next((m for m in found.material if m[0] == legacy.key_id), None)
                if legacy_key is None and not (verified and pkg.payload_digest):
                    algo = _PK_NAMES.get(legacy.algo, str(legacy.algo))
                    raise RpmError(f"{what}: cannot check the header+payload signature by key "
                                   f"0x{legacy.key_id}: {algo} keys are not supported for it "
                                   "(only RSA)")
                if legacy_key is not None and legacy.algo not in _PK_RSA:
                    raise RpmError(f"{what}: bad signature by key 0x{legacy.key_id} (a "
                                   f"{_PK_NAMES.get(legacy.algo, legacy.algo)} signature by a "
                                   f"{_PK_NAMES.get(legacy_key[1])} key)")

        if not (verified and pkg.payload_digest) and legacy_key is None:
            if unknown:
                raise RpmError(f"{what}: signed with unknown key 0x{unknown[0]}"
                               f" (not in gpgkey {' '.join(keys.sources)})".rstrip())
            if verified and header_only_ok:
                return verified
            raise RpmError(f"{what}: the signature does not cover the payload "
                           "(no payload digest: built by rpm < 4.14)")

        # One pass over the payload: its digest, MD5 and the header+payload signature.
        header_blob = pkg.prefix[pkg.header_offset:]
        md5 = hashlib.md5(header_blob) if pkg.signature.has(_SIG_MD5) else None
        signed = hashlib.new(legacy.hash_name, header_blob) if legacy and legacy_key else None
        handle.seek(pkg.payload_offset)
        reader = HashingReader(handle, what, pkg, [h for h in (md5, signed) if h is not None])
        reader.drain()

    if reader.payload_digest_matches() is False:
        raise RpmError(f"{what}: bad signature: the payload is not the signed one "
                       f"({pkg.payload_algo} digest mismatch)")
    if legacy is not None and legacy_key is not None and signed is not None:
        signed.update(legacy.trailer)
        if not _signature_holds(legacy, legacy_key, signed.digest()):
            raise RpmError(f"{what}: bad signature by key 0x{legacy.key_id} (the header and "
                           "payload are not the signed ones: header+payload signature mismatch)")
        verified = verified or legacy.key_id
    if md5 is not None and md5.digest() != pkg.signature.binary(_SIG_MD5):
        raise RpmError(f"{what}: bad signature: the header and payload are not the signed ones "
                       "(md5 digest mismatch)")
    assert verified is not None  # either the header signature or the legacy one verified
    return verified


def _check_header_signature(pkg: PackageHeaders, keys: KeyRing, what: str) -> tuple[str | None, list[str]]:
    """Verify the header-only signature(s) with ``rpm_rs``: (key id, or ``None``; unknown key ids).

    Raises:
        RpmError: a bad header signature (by a key of the ring, or naming no key).
    """
    meta = _call(lambda: rpm_rs.PackageMetadata.from_bytes(pkg.prefix), f"{what}: unreadable header")
    report = _call(lambda: meta.check_signatures(keys._verifier),
                   f"{what}: bad signature: unreadable signature")
    results = list(report.signatures)
    if not results:
        raise RpmError(f"{what}: bad signature: no readable signature packet")
    unknown: list[str] = []
    bad: list[str] = []
    for result in results:
        info = result.info
        key_id = (info.key_id or "").lower()
        fingerprint = (info.fingerprint or "").lower()
        if not key_id and fingerprint:  # v4: the fingerprint's tail; v6: its head
            key_id = fingerprint[:16] if len(fingerprint) == 64 else fingerprint[-16:]
        if result.is_verified():
            return key_id, []
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
    if bad:
        raise RpmError(f"{what}: bad signature {bad[0]}")
    return None, unknown


# --------------------------------------------------------------------------- header+payload signatures


@dataclass(frozen=True)
class _Signature:
    """A v3 or v4 OpenPGP signature packet over a binary document (rpm's header+payload one).

    Attributes:
        algo: the public-key algorithm.
        hash_name: the ``hashlib`` name of its hash.
        key_id: the issuer's key id (16 lowercase hex digits).
        trailer: what is hashed after the signed data (v3: type and time; v4:
            the hashed part and its length trailer).
        left16: the first two bytes of the digest, as the packet states them.
        numbers: the signature integer ``s`` of an RSA signature (others: empty).
    """

    algo: int
    hash_name: str
    key_id: str
    trailer: bytes
    left16: bytes
    numbers: tuple[int, ...]


def _parse_signature(blob: bytes, what: str) -> _Signature:
    """The signature packet of a ``SIGPGP``/``SIGGPG`` tag.

    Raises:
        RpmError: not one well-formed binary-document signature packet, or an
            unsupported hash.
    """
    try:
        packets = _packets(blob)
        if len(packets) != 1 or packets[0][0] != _PKT_SIGNATURE:
            raise ValueError("not one signature packet")
        body = packets[0][2]
        version = body[0]
        key_id: str | None
        if version == 3:
            if body[1] != 5:
                raise ValueError("bad v3 hashed length")
            sigtype, trailer = body[2], body[2:7]
            key_id, algo, hash_algo = body[7:15].hex(), body[15], body[16]
            pos = 17
        elif version == 4:
            sigtype, algo, hash_algo = body[1], body[2], body[3]
            hashed_end = 6 + int.from_bytes(body[4:6], "big")
            unhashed_end = hashed_end + 2 + int.from_bytes(body[hashed_end:hashed_end + 2], "big")
            if unhashed_end > len(body):
                raise ValueError("truncated subpackets")
            trailer = body[:hashed_end] + b"\x04\xff" + hashed_end.to_bytes(4, "big")
            key_id = _issuer(body[6:hashed_end]) or _issuer(body[hashed_end + 2:unhashed_end])
            pos = unhashed_end
        else:
            raise ValueError(f"unsupported signature version {version}")
        if sigtype != _SIGTYPE_BINARY:
            raise ValueError(f"signature type 0x{sigtype:02x}, not a binary document one")
        if not key_id:
            raise ValueError("the signature names no key")
        left16 = body[pos:pos + 2]
        if len(left16) != 2:
            raise ValueError("truncated signature")
        numbers: tuple[int, ...] = ()
        if algo in _PK_RSA:  # others are not checked (see the module docstring)
            numbers, end = _mpis(body, pos + 2, 1)
            if end != len(body):
                raise ValueError("trailing bytes after the signature integers")
    except (ValueError, IndexError) as exc:
        raise RpmError(f"{what}: bad signature: unreadable header+payload signature "
                       f"({_one_line(exc)})") from None
    if hash_algo not in _SIG_HASHES:
        raise RpmError(f"{what}: bad signature: header+payload signature with unsupported "
                       f"hash algorithm {hash_algo}")
    return _Signature(algo, _SIG_HASHES[hash_algo], key_id, bytes(trailer), bytes(left16), numbers)


def _issuer(subpackets: bytes) -> str | None:
    """The issuer key id named by signature subpackets (issuer, or v4 issuer fingerprint)."""
    pos = 0
    while pos < len(subpackets):
        first = subpackets[pos]
        if first < 192:
            length, pos = first, pos + 1
        elif first < 255:
            length, pos = ((first - 192) << 8) + subpackets[pos + 1] + 192, pos + 2
        else:
            length, pos = int.from_bytes(subpackets[pos + 1:pos + 5], "big"), pos + 5
        if length < 1 or pos + length > len(subpackets):
            raise ValueError("truncated subpacket")
        kind, data = subpackets[pos] & 0x7F, subpackets[pos + 1:pos + length]
        if kind == _SUB_ISSUER and len(data) == 8:
            return data.hex()
        if kind == _SUB_ISSUER_FPR and len(data) == 21 and data[0] == 4:
            return data[-8:].hex()
        pos += length
    return None


def _signature_holds(sig: _Signature, key: tuple[str, int, tuple[int, ...]], digest: bytes) -> bool:
    """Whether ``sig`` is a valid RSA (EMSA-PKCS1-v1_5) signature of ``digest`` by ``key``."""
    if digest[:2] != sig.left16:
        return False
    n, e = key[2]
    (s,) = sig.numbers
    size = (n.bit_length() + 7) // 8
    payload = _DIGEST_INFO[sig.hash_name] + digest
    if not 0 < s < n or size < len(payload) + 11:
        return False
    expected = b"\x00\x01" + b"\xff" * (size - len(payload) - 3) + b"\x00" + payload
    return pow(s, e, n).to_bytes(size, "big") == expected


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
