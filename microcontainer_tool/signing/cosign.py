"""cosign's signature format: the simple-signing payload, its ECDSA signature, and where both are kept.

What cosign 2.x writes for ``cosign sign --key`` and reads for ``cosign verify --key``:

- the **payload**, a JSON document naming the signed manifest digest
  (``{"critical":{"identity":{"docker-reference":REPO},"image":{"docker-manifest-digest":DIGEST},
  "type":"cosign container image signature"},"optional":null}``, byte for byte as Go's
  ``json.Marshal`` writes it), stored as a blob of media type
  :data:`SIMPLESIGNING_MEDIA_TYPE`;
- the **signature**: ECDSA P-256 over SHA-256 of the payload bytes, DER,
  base64, in the layer annotation :data:`SIGNATURE_ANNOTATION`;
- the **signature image** under the tag ``sha256-<hex>.sig`` (:func:`signature_tag`):
  an OCI manifest whose layers are the payloads, with a Docker-style config
  listing them as ``diff_ids`` (:func:`tag_manifest`) -- what cosign, Kyverno
  and the sigstore policy-controller read;
- and, as an OCI 1.1 referrer of the image, an artifact of type
  :data:`SIGNATURE_ARTIFACT_TYPE` with the same layer (:func:`referrer_layer`;
  cosign's ``--registry-referrers-mode=oci-1-1`` form).

No transparency log entry and no certificate are made: verifiers pass
``--insecure-ignore-tlog`` (cosign 2.x) and the public key.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from microcontainer_tool.oci import model as oci
from microcontainer_tool.oci.model import Descriptor
from microcontainer_tool.registry.reference import DOCKER_HUB, Reference
from microcontainer_tool.signing import keys
from microcontainer_tool.signing.claims import check_claim

SIMPLESIGNING_MEDIA_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
SIGNATURE_ARTIFACT_TYPE = "application/vnd.dev.cosign.artifact.sig.v1+json"
PAYLOAD_TYPE = "cosign container image signature"
MAX_PAYLOAD = 1 << 20
_GO_ZERO_TIME = "0001-01-01T00:00:00Z"


def docker_reference(ref: Reference) -> str:
    """The repository as cosign's payload names it (go-containerregistry's ``Repository.Name()``)."""
    registry = "index.docker.io" if ref.registry == DOCKER_HUB else ref.registry
    return f"{registry}/{ref.repository}"


def payload(reference: str, digest: str) -> bytes:
    """The simple-signing payload for ``digest``, as cosign marshals it."""
    body = {"critical": {"identity": {"docker-reference": reference},
                         "image": {"docker-manifest-digest": oci.check_digest(digest)},
                         "type": PAYLOAD_TYPE},
            "optional": None}
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class Signature:
    """One cosign signature.

    Attributes:
        payload: the payload bytes (the blob).
        signature: the base64 DER signature (the annotation's value).
    """

    payload: bytes
    signature: str

    @property
    def layer(self) -> Descriptor:
        """The payload's layer descriptor, with the signature annotation."""
        return Descriptor(SIMPLESIGNING_MEDIA_TYPE, oci.sha256_digest(self.payload), len(self.payload),
                          {SIGNATURE_ANNOTATION: self.signature})


def sign_digest(key: ec.EllipticCurvePrivateKey, reference: str, digest: str) -> Signature:
    """Sign the manifest ``digest`` of the repository ``reference``."""
    data = payload(reference, digest)
    return Signature(data, base64.b64encode(keys.sign(key, data)).decode("ascii"))


def signature_tag(digest: str) -> str:
    """cosign's tag for the signatures of ``digest``: ``sha256-<hex>.sig``."""
    algorithm, _, hexpart = oci.check_digest(digest).partition(":")
    return f"{algorithm}-{hexpart}.sig"


def tag_config(layers: Sequence[Descriptor]) -> bytes:
    """The config of a signature image, as go-containerregistry's ``mutate.Append`` writes it."""
    body = {"architecture": "", "created": _GO_ZERO_TIME,
            "history": [{"created": _GO_ZERO_TIME} for _ in layers], "os": "",
            "rootfs": {"type": "layers", "diff_ids": [d.digest for d in layers]}, "config": {}}
    return json.dumps(body, separators=(",", ":")).encode()


def tag_manifest(layers: Sequence[Descriptor]) -> tuple[bytes, bytes]:
    """The signature image for the ``.sig`` tag: ``(manifest bytes, config bytes)``."""
    config = tag_config(layers)
    manifest = {"schemaVersion": 2, "mediaType": oci.MEDIA_TYPE_MANIFEST,
                "config": {"mediaType": oci.MEDIA_TYPE_CONFIG, "size": len(config),
                           "digest": oci.sha256_digest(config)},
                "layers": [d.to_dict() for d in layers]}
    return oci.canonical_json(manifest), config


def layers_of(manifest: Mapping[str, Any]) -> list[Descriptor]:
    """The simple-signing layers of a signature image or referrer (others are skipped)."""
    out = []
    for item in manifest.get("layers") or []:
        if isinstance(item, dict) and item.get("mediaType") == SIMPLESIGNING_MEDIA_TYPE:
            try:
                out.append(Descriptor.from_dict(item))
            except (KeyError, TypeError, ValueError, AttributeError):
                continue
    return out


def check(public: ec.EllipticCurvePublicKey, data: bytes, signature: str, digest: str) -> str | None:
    """Check one signature: ``None`` if it is ``public``'s and names ``digest``, else why not (one line)."""
    try:
        raw = base64.b64decode("".join(signature.split()), validate=True)  # cosign accepts wrapped base64
    except (binascii.Error, ValueError):
        return "the signature annotation is not base64"
    if not keys.verify(public, data, raw):
        return "the signature does not verify with the key"
    return check_claim(data, MAX_PAYLOAD, PAYLOAD_TYPE, digest, "signed payload")[1]
