"""Signing keys: what ``--key``/``--sign`` name, and ECDSA P-256 signatures made and checked with them.

A key is either a PEM file (cosign's format: an ECDSA P-256 private key to
sign, its public key to verify) or ``gpg:FINGERPRINT`` (containers simple
signing, made and checked by ``gpg``). Private keys are read as PEM PKCS#8
(``openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256``) or SEC1
(``openssl ecparam -genkey``); a passphrase comes from ``$MCT_KEY_PASSWORD``
(``$COSIGN_PASSWORD`` too). cosign's own encrypted format (``ENCRYPTED SIGSTORE
PRIVATE KEY``, scrypt and NaCl secretbox) is refused with the command that
converts it.

Signatures are ECDSA over SHA-256, DER-encoded, made **deterministically**
(RFC 6979): the same key and the same bytes give the same signature, so a
signed build is as reproducible as an unsigned one.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from microcontainer_tool.errors import SigningError

GPG_PREFIX = "gpg:"
PASSWORD_VARIABLES = ("MCT_KEY_PASSWORD", "COSIGN_PASSWORD")
MAX_KEY_FILE = 1 << 20
_FINGERPRINT_RE = re.compile(r"^(?:[0-9A-Fa-f]{16}|[0-9A-Fa-f]{40}|[0-9A-Fa-f]{64})$")


@dataclass(frozen=True)
class KeySpec:
    """A key as the command line names it.

    Attributes:
        kind: ``cosign`` (a PEM file) or ``gpg``.
        value: the file's path, or the GPG fingerprint (upper case, no spaces).
    """

    kind: str
    value: str

    def __str__(self) -> str:
        return f"{GPG_PREFIX}{self.value}" if self.kind == "gpg" else self.value


def parse_key_spec(text: str) -> KeySpec:
    """Parse ``PATH`` or ``gpg:FINGERPRINT``.

    Raises:
        SigningError: empty, or a malformed fingerprint.
    """
    if not text:
        raise SigningError("empty key: give a PEM key file or gpg:FINGERPRINT")
    if text.startswith(GPG_PREFIX):
        fingerprint = text[len(GPG_PREFIX):].replace(" ", "").upper()
        if not _FINGERPRINT_RE.match(fingerprint):
            raise SigningError(f"{text!r}: not a GPG key id or fingerprint (16, 40 or 64 hex digits)")
        return KeySpec("gpg", fingerprint)
    return KeySpec("cosign", text)


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_KEY_FILE + 1)
    except OSError as error:
        raise SigningError(f"{path}: cannot read the key: {error.strerror or error}") from None
    if len(data) > MAX_KEY_FILE:
        raise SigningError(f"{path}: too large for a key file")
    return data


def _password() -> bytes | None:
    for name in PASSWORD_VARIABLES:
        value = os.environ.get(name)
        if value:
            return value.encode()
    return None


def load_private_key(path: str) -> ec.EllipticCurvePrivateKey:
    """Read an ECDSA P-256 private key from a PEM file.

    Raises:
        SigningError: unreadable, encrypted without a password, cosign's
            encrypted format, or not a P-256 key.
    """
    data = _read(path)
    if b"ENCRYPTED SIGSTORE PRIVATE KEY" in data or b"ENCRYPTED COSIGN PRIVATE KEY" in data:
        raise SigningError(f"{path}: cosign's encrypted key format is not supported: export it with "
                           "`openssl pkcs8` from a PEM key, or give the PKCS#8 key cosign was imported from")
    try:
        key = serialization.load_pem_private_key(data, password=_password())
    except TypeError:
        raise SigningError(f"{path}: the key is encrypted: set MCT_KEY_PASSWORD") from None
    except ValueError as error:
        raise SigningError(f"{path}: not a PEM private key ({error})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise SigningError(f"{path}: not an ECDSA P-256 key (cosign's format needs one)")
    return key


def load_public_key(path: str) -> ec.EllipticCurvePublicKey:
    """Read an ECDSA P-256 public key (PEM ``PUBLIC KEY``); a private key gives its public half.

    Raises:
        SigningError: unreadable or not a P-256 key.
    """
    data = _read(path)
    if b"PRIVATE KEY" in data:
        return load_private_key(path).public_key()
    return load_public_key_bytes(data, path)


def load_public_key_bytes(data: bytes, label: str = "public key") -> ec.EllipticCurvePublicKey:
    """Parse an ECDSA P-256 public key (PEM ``PUBLIC KEY``); ``label`` names it in errors.

    Raises:
        SigningError: not a PEM P-256 public key.
    """
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as error:
        raise SigningError(f"{label}: not a PEM public key ({error})") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise SigningError(f"{label}: not an ECDSA P-256 public key")
    return key


def public_pem(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> bytes:
    """The public key as PEM ``PUBLIC KEY`` (SubjectPublicKeyInfo), as ``cosign public-key`` prints it."""
    public = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def sign(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    """ECDSA-P256-SHA256 of ``data``, DER, deterministic (RFC 6979)."""
    return key.sign(data, ec.ECDSA(hashes.SHA256(), deterministic_signing=True))


def verify(key: ec.EllipticCurvePublicKey, data: bytes, signature: bytes) -> bool:
    """Whether ``signature`` (DER) is ``key``'s ECDSA-SHA256 signature of ``data``."""
    try:
        key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return False
    return True
