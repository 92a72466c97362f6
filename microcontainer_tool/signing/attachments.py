"""Signatures and attestations put where clients look for them: in layouts and archives, and in registries.

Local images (an OCI layout, an oci-archive): a cosign signature is an OCI 1.1
referrer of the image (artifact type
:data:`~.cosign.SIGNATURE_ARTIFACT_TYPE`, the payload as its layer with the
signature annotation); a provenance statement is a referrer of type
:data:`~.attest.STATEMENT_MEDIA_TYPE` (its layer a DSSE envelope when signed).
Signing an image signs its other referrers (an SBOM) the same way: each gets a
signature referrer of its own. ``push`` sends them all with the image.

Registries: a cosign signature goes up as the signature image under
``sha256-<hex>.sig`` (merged with the signatures already there from other
keys) and as a referrer (the referrers API, else the referrers tag). A GPG
signature goes to the lookaside store (:mod:`.simplesign`); the registry is not
written to.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from microcontainer_tool.errors import LayoutError, RegistryError, SigningError, SpecError
from microcontainer_tool.oci import model as oci
from microcontainer_tool.oci.blobs import parse_json_object
from microcontainer_tool.oci.imageview import open_image
from microcontainer_tool.oci.layout import docker_reference as full_name
from microcontainer_tool.oci.model import Descriptor, canonical_json
from microcontainer_tool.oci.referrers import EMPTY_JSON, MAX_MANIFEST, artifact_manifest, attach, referrers
from microcontainer_tool.registry.auth import pull_scope
from microcontainer_tool.registry.reference import Reference
from microcontainer_tool.registry.referrers import publish_referrers, registry_descriptor
from microcontainer_tool.signing import attest, cosign, keys, simplesign
from microcontainer_tool.signing.keys import KeySpec
from microcontainer_tool.signing.localimage import layout_of
from microcontainer_tool.spec.imagespec import ImageSpec

UNSIGNED_TYPES = (cosign.SIGNATURE_ARTIFACT_TYPE,)
"""Referrers that signing an image does not sign (signatures themselves)."""


def cosign_key(spec: KeySpec) -> ec.EllipticCurvePrivateKey:
    """The private key of a cosign-format key spec.

    Raises:
        SigningError: a ``gpg:`` key, or the file cannot be used.
    """
    if spec.kind != "cosign":
        raise SigningError(f"{spec}: a GPG signature names a registry reference and goes to its lookaside "
                           "store: sign the pushed image (push --sign gpg:FPR, or sign REF)")
    return keys.load_private_key(spec.value)


# --- local images --------------------------------------------------------------------------------


def image_identity(view_index: Mapping[str, Any], manifest_digest: str, path: str) -> str:
    """The repository a local image's signature names.

    Its ``io.containerd.image.name`` without the tag, else its file name.
    """
    for entry in view_index.get("manifests") or []:
        if isinstance(entry, dict) and entry.get("digest") == manifest_digest:
            name = (entry.get("annotations") or {}).get(oci.ANNOTATION_CONTAINERD_NAME)
            if isinstance(name, str) and name:
                try:
                    ref = Reference.parse(name)
                except SpecError:
                    break  # a malformed name: the file name instead
                return cosign.docker_reference(ref)
    base = os.path.basename(os.path.normpath(path.split(":", 1)[0])) or "image"
    for suffix in (".tar", ".tgz", ".tar.gz"):
        base = base.removesuffix(suffix)
    return full_name("".join(c if c.isalnum() or c in "._-" else "-" for c in base.lower()).strip("._-")
                     or "image")


def _attach_signature(layout: str, subject: str, signature: cosign.Signature) -> Descriptor:
    return attach(layout, subject, signature.payload, cosign.SIGNATURE_ARTIFACT_TYPE,
                  layer_media_type=cosign.SIMPLESIGNING_MEDIA_TYPE,
                  layer_annotations={cosign.SIGNATURE_ANNOTATION: signature.signature})


@dataclass(frozen=True)
class LocalSigning:
    """What :func:`sign_local` did.

    Attributes:
        digest: the image manifest signed.
        identity: the repository the payloads name.
        referrers: the image's referrers (SBOMs...) signed too.
    """

    digest: str
    identity: str
    referrers: tuple[str, ...] = ()


def sign_local(path: str, spec: KeySpec, identity: str | None = None) -> LocalSigning:
    """Sign a local image (OCI layout ``DIR[:TAG]`` or oci-archive) and its referrers, cosign format.

    Args:
        path: the image.
        spec: a cosign-format key.
        identity: the repository the payload names (``registry/repo``); default
            :func:`image_identity`.

    Raises:
        SigningError: the key cannot be used.
        LayoutError: not a layout or oci-archive, or it cannot be written.
    """
    key = cosign_key(spec)
    with open_image(path) as view:
        digest = view.manifest_digest
        name = identity or image_identity(view.index, digest, path)
    signed: list[str] = []
    with layout_of(path, write=True) as layout:
        others = [d for d in referrers(layout, digest)
                  if getattr(d, "artifact_type", "") not in UNSIGNED_TYPES]
        _attach_signature(layout, digest, cosign.sign_digest(key, name, digest))
        for desc in others:
            _attach_signature(layout, desc.digest, cosign.sign_digest(key, name, desc.digest))
            signed.append(desc.digest)
    return LocalSigning(digest, name, tuple(signed))


def attest_local(path: str, subject_name: str, inputs: attest.BuildInputs, spec: KeySpec | None,
                 stamp: int | None = None) -> Descriptor:
    """Attach the provenance statement of a built image to it (DSSE-signed when a key is given).

    Args:
        path: the built image (an OCI layout or oci-archive).
        subject_name: how the statement names the image.
        inputs: the build's inputs.
        spec: a cosign-format key, or ``None`` for an unsigned statement.
        stamp: ``SOURCE_DATE_EPOCH``, if given: the artifact's ``created`` annotation.

    Returns:
        The attestation artifact's descriptor.

    Raises:
        SigningError: the key cannot be used.
        LayoutError: not a layout or oci-archive, or it cannot be written.
    """
    key = cosign_key(spec) if spec is not None else None
    with open_image(path) as view:
        digest = view.manifest_digest
    body = attest.statement(subject_name, digest, attest.SLSA_PROVENANCE, attest.provenance_predicate(inputs))
    data = attest.envelope(key, body) if key is not None else body
    with layout_of(path, write=True) as layout:
        return attach(layout, digest, data, attest.STATEMENT_MEDIA_TYPE,
                      {attest.PREDICATE_ANNOTATION: attest.SLSA_PROVENANCE}, epoch=stamp,
                      title="provenance.intoto.json" if key is None else "provenance.dsse.json",
                      layer_media_type=attest.DSSE_MEDIA_TYPE if key is not None else None)


# --- registries ----------------------------------------------------------------------------------


def get_optional_manifest(client: Any, repo: str, ref: str,
                          accept: tuple[str, ...] = (oci.MEDIA_TYPE_MANIFEST,)) -> tuple[bytes, str] | None:
    """A manifest by tag or digest, or ``None`` if the registry has none (404).

    Raises:
        RegistryError: any other failure.
    """
    # RegistryClient has no public HEAD for manifests; _send adds auth and retries
    # (as registry.referrers does).
    response = client._send("HEAD", client._url(repo, "manifests", ref), [pull_scope(repo)],
                            headers={"Accept": ", ".join(accept)})
    response.close()
    if response.status_code == 404:
        return None
    data, media_type, _digest = client.get_manifest(repo, ref, accept=accept)
    return data, media_type


def _put_blob(client: Any, repo: str, data: bytes) -> None:
    digest = oci.sha256_digest(data)
    if not client.blob_exists(repo, digest, push=True):
        client.upload_blob(repo, data, digest, len(data))


@dataclass(frozen=True)
class RemoteSigning:
    """What :func:`sign_remote` did.

    Attributes:
        digest: the manifest signed.
        where: the signature tag (cosign) or the lookaside file (GPG).
        referrer: the signature referrer's digest (cosign), else ``""``.
    """

    digest: str
    where: str
    referrer: str = ""


def _merged_tag_layers(client: Any, repo: str, tag: str, ours: Descriptor) -> list[Descriptor]:
    """The ``.sig`` image's layers: those already there (other keys, other payloads), then ours."""
    found = get_optional_manifest(client, repo, tag, accept=(oci.MEDIA_TYPE_MANIFEST, oci.DOCKER_MANIFEST))
    layers: list[Descriptor] = []
    if found is not None:
        try:
            manifest = parse_json_object(found[0], f"{client.registry}/{repo}:{tag}")
        except LayoutError:
            manifest = {}  # an unreadable signature image is replaced
        layers = [d for d in cosign.layers_of(manifest)
                  if not (d.digest == ours.digest and d.annotations == ours.annotations)]
    return layers + [ours]


def sign_remote(client: Any, ref: Reference, digest: str, spec: KeySpec,
                registries_d: str | None = None) -> RemoteSigning:
    """Sign the manifest ``digest`` of ``ref``'s repository and store the signature where clients look.

    cosign keys: the ``.sig`` tag and a referrer; ``gpg:`` keys: the lookaside store.

    Raises:
        SigningError: the key cannot be used, gpg fails, the store cannot be written.
        RegistryError: the registry refuses or fails.
    """
    digest = oci.check_digest(digest)
    if spec.kind == "gpg":
        path = simplesign.write_signature(ref, digest, spec.value, registries_d)
        return RemoteSigning(digest, path)
    key = keys.load_private_key(spec.value)
    signature = cosign.sign_digest(key, cosign.docker_reference(ref), digest)
    repo = ref.repository
    _put_blob(client, repo, signature.payload)
    tag = cosign.signature_tag(digest)
    manifest_bytes, config = cosign.tag_manifest(_merged_tag_layers(client, repo, tag, signature.layer))
    _put_blob(client, repo, config)
    client.put_manifest(repo, tag, manifest_bytes, oci.MEDIA_TYPE_MANIFEST)
    subject_data, subject_type, _ = client.get_manifest(repo, digest)
    subject = Descriptor(subject_type, digest, len(subject_data))
    manifest = artifact_manifest(subject, signature.layer, cosign.SIGNATURE_ARTIFACT_TYPE)
    data = canonical_json(manifest)
    _put_blob(client, repo, EMPTY_JSON)
    referrer = client.put_manifest(repo, oci.sha256_digest(data), data, oci.MEDIA_TYPE_MANIFEST)
    publish_referrers(client, repo, digest, [registry_descriptor(manifest, Descriptor(
        oci.MEDIA_TYPE_MANIFEST, referrer, len(data)))])
    return RemoteSigning(digest, f"{ref.name}:{tag}", referrer)


def fetch_blob(client: Any, repo: str, desc: Descriptor, limit: int = MAX_MANIFEST) -> bytes:
    """Download one small blob, verified.

    Raises:
        RegistryError: too large, missing, or the transfer fails.
        DigestMismatchError: it does not match its digest.
    """
    if desc.size > limit:
        raise RegistryError(f"{client.registry}: blob {desc.digest} in {repo} is larger than {limit} bytes")
    with tempfile.TemporaryDirectory(prefix="mct-blob-") as scratch:
        path = os.path.join(scratch, "blob")
        client.get_blob(repo, desc.digest, path, desc.size)
        with open(path, "rb") as handle:
            return handle.read()



def attest_and_sign(path: str, spec: ImageSpec, parameters: Mapping[str, Any], *, attestation: bool,
                    key: str | None, epoch: int | None) -> list[str]:
    """After a build: attach its provenance statement and/or sign it (and its SBOM), as asked.

    Args:
        path: the built image (an OCI layout or oci-archive).
        spec: its spec.
        parameters: the build parameters for the statement.
        attestation: attach the provenance statement (DSSE-signed with ``key``).
        key: a cosign-format private key: sign the image and its referrers.
        epoch: ``SOURCE_DATE_EPOCH`` when the user gave it, else ``None``.

    Returns:
        One line per thing done, for the user.

    Raises:
        SigningError: the key cannot be used (a ``gpg:`` key: GPG signatures need a registry).
        LayoutError: the image is not a layout or oci-archive, or cannot be written.
    """
    spec_key = keys.parse_key_spec(key) if key else None
    if spec_key is not None:
        cosign_key(spec_key)  # fail before anything is written
    lines = []
    if attestation:
        with open_image(path) as view:
            name = image_identity(view.index, view.manifest_digest, path)
        inputs = attest.build_inputs(spec, path, parameters, epoch)
        desc = attest_local(path, name, inputs, spec_key, epoch)
        lines.append(f"provenance attached as {desc.digest}" + (" (DSSE, signed)" if spec_key else ""))
    if spec_key is not None:
        done = sign_local(path, spec_key)
        lines.append(f"signed {done.digest} as {done.identity}"
                     + (f" and its {len(done.referrers)} referrers (SBOM, provenance)"
                        if done.referrers else ""))
    return lines
