"""``microcontainer verify``: is this image signed by this key?

A cosign public key (PEM) is checked against the image's cosign signatures:
in a local image (OCI layout, oci-archive) its signature referrers; in a
registry the signature image under ``sha256-<hex>.sig`` and the signature
referrers. A signature counts when the ECDSA signature of its payload verifies
with the key *and* the payload names the image's manifest digest -- a
signature copied onto another manifest (a re-tagged image) does not.

``gpg:FINGERPRINT`` is checked against the containers simple signatures of a
registry image in its lookaside store (:mod:`.simplesign`): gpg must find a
valid signature by that key over an atomic container signature naming the
manifest digest and, for an image named by tag, exactly that reference.

The answer is a :class:`Verdict`; only errors (unreadable image, registry
down, gpg missing) raise.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from microcontainer_tool.errors import LayoutError, SigningError
from microcontainer_tool.oci import model as oci
from microcontainer_tool.oci.blobs import parse_json_object
from microcontainer_tool.oci.imageview import open_image
from microcontainer_tool.oci.model import Descriptor
from microcontainer_tool.oci.referrers import MAX_MANIFEST, referrers
from microcontainer_tool.oci.store import LayoutStore
from microcontainer_tool.registry.client import MANIFEST_ACCEPT
from microcontainer_tool.registry.reference import Reference
from microcontainer_tool.registry.referrers import fetch_referrers
from microcontainer_tool.signing import attest, cosign, keys, simplesign
from microcontainer_tool.signing.attachments import fetch_blob, get_optional_manifest
from microcontainer_tool.signing.keys import KeySpec
from microcontainer_tool.signing.localimage import layout_of


@dataclass(frozen=True)
class Verdict:
    """The answer of a verification.

    Attributes:
        verified: a valid signature by the key names the image.
        digest: the image's manifest digest.
        message: one line: what verified, or which check failed.
    """

    verified: bool
    digest: str
    message: str


def _judge(digest: str, checked: list[tuple[str, str | None]], none_found: str) -> Verdict:
    """The verdict from ``(where, problem or None)`` for every signature found."""
    for where, problem in checked:
        if problem is None:
            return Verdict(True, digest, f"{digest}: signature verified ({where})")
    if not checked:
        return Verdict(False, digest, f"{digest}: {none_found}")
    where, problem = checked[0]
    more = f" (and {len(checked) - 1} more signatures, none valid)" if len(checked) > 1 else ""
    return Verdict(False, digest, f"{digest}: {problem} ({where}){more}")


def _check_layers(public: ec.EllipticCurvePublicKey, digest: str, layers: list[Descriptor],
                  read: Any, where: str) -> list[tuple[str, str | None]]:
    out: list[tuple[str, str | None]] = []
    for layer in layers:
        signature = (layer.annotations or {}).get(cosign.SIGNATURE_ANNOTATION)
        if not signature:
            out.append((where, "a signature layer without the signature annotation"))
            continue
        out.append((where, cosign.check(public, read(layer), signature, digest)))
    return out


def _with_attestation(verdict: Verdict, checked: list[tuple[str, str | None]]) -> Verdict:
    """The signature's verdict, further requiring a valid signed provenance statement among ``checked``."""
    if not verdict.verified:
        return verdict
    for where, problem in checked:
        if problem is None:
            return Verdict(True, verdict.digest, f"{verdict.message}; provenance verified ({where})")
    if not checked:
        return Verdict(False, verdict.digest, f"{verdict.digest}: no provenance statement (build --attest)")
    where, problem = checked[0]
    return Verdict(False, verdict.digest, f"{verdict.digest}: {problem} ({where})")


def _attestations(public: ec.EllipticCurvePublicKey, digest: str, manifest: dict[str, Any], read: Any,
                  where: str) -> list[tuple[str, str | None]]:
    out: list[tuple[str, str | None]] = []
    for item in manifest.get("layers") or []:
        if isinstance(item, dict):
            layer = Descriptor.from_dict(item)
            out.append((where, attest.check_attestation(public, read(layer, attest.MAX_ENVELOPE),
                                                        layer.media_type, digest)))
    return out


def verify_local(path: str, spec: KeySpec, attestation: bool = False) -> Verdict:
    """Verify a local image (OCI layout ``DIR[:TAG]`` or oci-archive) with a cosign public key.

    With ``attestation``, a provenance statement signed with the key (DSSE)
    and naming the image must be attached too.

    Raises:
        SigningError: a ``gpg:`` key (GPG signatures live in a registry's lookaside store), or a bad key file.
        LayoutError: the image is unreadable.
    """
    if spec.kind != "cosign":
        raise SigningError(f"{path}: GPG simple signatures are kept for registry images (in the lookaside "
                           "store); verify the pushed image by its reference")
    public = keys.load_public_key(spec.value)
    with open_image(path) as view:
        digest = view.manifest_digest
    checked: list[tuple[str, str | None]] = []
    statements: list[tuple[str, str | None]] = []
    with layout_of(path, write=False) as layout:
        store = LayoutStore(layout)

        def read(layer: Descriptor, limit: int = cosign.MAX_PAYLOAD) -> bytes:
            with open(store.blob_path(layer.digest), "rb") as handle:
                data = handle.read(limit + 1)
            if oci.sha256_digest(data) != layer.digest:
                raise LayoutError(f"{path}: blob {layer.digest} does not match its digest")
            return data

        for desc in referrers(layout, digest):
            kind = getattr(desc, "artifact_type", "")
            if kind == cosign.SIGNATURE_ARTIFACT_TYPE:
                manifest = store.read_json(desc, path, MAX_MANIFEST)
                checked += _check_layers(public, digest, cosign.layers_of(manifest), read,
                                         f"referrer {desc.digest}")
            elif kind == attest.STATEMENT_MEDIA_TYPE and attestation:
                manifest = store.read_json(desc, path, MAX_MANIFEST)
                statements += _attestations(public, digest, manifest, read, f"referrer {desc.digest}")
    verdict = _judge(digest, checked, f"no cosign signature in {path}")
    return _with_attestation(verdict, statements) if attestation else verdict


def resolve(client: Any, ref: Reference) -> str:
    """The manifest digest ``ref`` names in its registry (a digest is checked against the content).

    Raises:
        RegistryError: no such image, or the registry fails.
    """
    _data, _media_type, digest = client.get_manifest(ref.repository, ref.reference, accept=MANIFEST_ACCEPT)
    return digest


def verify_remote(client: Any, ref: Reference, spec: KeySpec, registries_d: str | None = None,
                  attestation: bool = False) -> Verdict:
    """Verify a registry image: cosign signatures (``.sig`` tag, referrers) or GPG simple signatures.

    With ``attestation`` (cosign keys), a provenance statement signed with the
    key and naming the image must be among its referrers too.

    Raises:
        SigningError: a bad key file, an unreadable lookaside configuration, gpg missing.
        RegistryError: the image cannot be found or the registry fails.
    """
    digest = resolve(client, ref)
    repo = ref.repository
    checked: list[tuple[str, str | None]] = []
    if spec.kind == "gpg":
        if attestation:
            raise SigningError("provenance statements are signed with PEM keys (DSSE): verify them with the "
                               "public key, not gpg:FINGERPRINT")
        for path, data in simplesign.read_signatures(ref, digest, registries_d):
            checked.append((path, simplesign.check(simplesign.gpg_open(data), spec.value, digest, ref)))
        where = simplesign.signature_dir(ref, digest, False, registries_d)
        return _judge(digest, checked, f"no simple signature in the lookaside store ({where})")
    public = keys.load_public_key(spec.value)

    def read(layer: Descriptor, limit: int = cosign.MAX_PAYLOAD) -> bytes:
        return fetch_blob(client, repo, layer, limit)

    tag = cosign.signature_tag(digest)
    found = get_optional_manifest(client, repo, tag, accept=(oci.MEDIA_TYPE_MANIFEST, oci.DOCKER_MANIFEST))
    if found is not None:
        manifest = parse_json_object(found[0], f"{ref.name}:{tag}")
        checked += _check_layers(public, digest, cosign.layers_of(manifest), read, f"{ref.name}:{tag}")
    statements: list[tuple[str, str | None]] = []
    if attestation or not any(problem is None for _, problem in checked):
        with tempfile.TemporaryDirectory(prefix="mct-verify-") as scratch:
            store = LayoutStore(scratch)
            for entry in fetch_referrers(client, repo, digest, store):
                if entry.artifact_type == cosign.SIGNATURE_ARTIFACT_TYPE:
                    manifest = store.read_json(entry.desc, ref.name, MAX_MANIFEST)
                    checked += _check_layers(public, digest, cosign.layers_of(manifest), read,
                                             f"referrer {entry.desc.digest}")
                elif entry.artifact_type == attest.STATEMENT_MEDIA_TYPE and attestation:
                    manifest = store.read_json(entry.desc, ref.name, MAX_MANIFEST)
                    statements += _attestations(public, digest, manifest, read,
                                                f"referrer {entry.desc.digest}")
    verdict = _judge(digest, checked, f"no cosign signature in {ref.name} (no {tag}, no signature referrer)")
    return _with_attestation(verdict, statements) if attestation else verdict
