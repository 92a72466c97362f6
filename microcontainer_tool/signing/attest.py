"""Provenance attestations: an in-toto Statement v1 with a SLSA provenance v1 predicate, and DSSE.

The statement is made from what the build already records -- the spec (its
file's SHA-256 and its canonical form's), the lock with every RPM's checksum,
the digests of the ``from:``/``parent:`` images (from the image's own
provenance record), the tool's version and the build parameters -- and names
the image manifest as its subject. It holds no time and no host path unless
asked (``SOURCE_DATE_EPOCH`` given: ``runDetails.metadata`` carries it):
the same inputs give the same bytes (canonical JSON).

Unsigned, it is attached as an artifact of type :data:`STATEMENT_MEDIA_TYPE`;
signed, its layer is a DSSE envelope (:data:`DSSE_MEDIA_TYPE`, payload type
``application/vnd.in-toto+json``) whose ECDSA signature is over the DSSE
pre-authentication encoding. The deterministic ECDSA of :mod:`.keys` keeps the
envelope reproducible too.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from microcontainer_tool import __version__, jsontext
from microcontainer_tool.model.provenance import read_record
from microcontainer_tool.oci import model as oci
from microcontainer_tool.oci.model import canonical_json
from microcontainer_tool.signing import keys
from microcontainer_tool.spec.imagespec import ImageSpec

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
SLSA_PROVENANCE = "https://slsa.dev/provenance/v1"
STATEMENT_MEDIA_TYPE = "application/vnd.in-toto+json"
DSSE_MEDIA_TYPE = "application/vnd.dsse.envelope.v1+json"
PREDICATE_ANNOTATION = "in-toto.io/predicate-type"
BUILD_TYPE = "urn:microcontainer-tool:build:v1"
BUILDER_ID = "urn:microcontainer-tool:builder"
MAX_ENVELOPE = 64 << 20


@dataclass(frozen=True)
class BuildInputs:
    """What went into a build, for its provenance statement.

    Attributes:
        spec_name: the spec file's base name (``microimage.yaml``), or ``""`` (SCons keywords).
        spec_file_digest: ``sha256:`` of the spec file's bytes, or ``""``.
        spec_canonical_digest: ``sha256:`` of the spec's canonical JSON form.
        packages: the lock's packages: ``(nevra, url, checksum type, checksum, repo)``.
        lock_inputs_digest: the lock's ``inputs_digest``, or ``""``.
        images: ``(role, id)`` of source images: ``from``/``parent`` and how the
            provenance record names them (``REF@sha256:…`` or an image ID).
        parameters: the build parameters (format, compression, tag, name, arch...).
        epoch: ``SOURCE_DATE_EPOCH`` when the user gave it, else ``None``.
    """

    spec_name: str
    spec_file_digest: str
    spec_canonical_digest: str
    packages: Sequence[tuple[str, str, str, str, str]] = ()
    lock_inputs_digest: str = ""
    images: Sequence[tuple[str, str]] = ()
    parameters: Mapping[str, Any] = field(default_factory=dict)
    epoch: int | None = None


def _digest_set(digest: str) -> dict[str, str]:
    algorithm, _, value = digest.partition(":")
    return {algorithm: value}


def provenance_predicate(inputs: BuildInputs) -> dict[str, Any]:
    """The SLSA provenance v1 predicate of a build."""
    spec: dict[str, Any] = {"canonicalDigest": _digest_set(inputs.spec_canonical_digest)}
    if inputs.spec_name:
        spec["name"] = inputs.spec_name
    if inputs.spec_file_digest:
        spec["digest"] = _digest_set(inputs.spec_file_digest)
    external: dict[str, Any] = {"spec": spec, **{k: v for k, v in inputs.parameters.items()}}
    dependencies: list[dict[str, Any]] = []
    if inputs.spec_name and inputs.spec_file_digest:
        dependencies.append({"name": inputs.spec_name, "digest": _digest_set(inputs.spec_file_digest)})
    for role, image_id in inputs.images:
        ref, _, digest = image_id.rpartition("@")
        entry: dict[str, Any] = {"name": role, "digest": _digest_set(digest or image_id)}
        if ref:
            entry["uri"] = f"docker://{ref}"
        dependencies.append(entry)
    for nevra, url, kind, checksum, repo in inputs.packages:
        entry = {"name": nevra, "digest": {kind: checksum}, "annotations": {"repo": repo}}
        if url:
            entry["uri"] = url
        dependencies.append(entry)
    internal: dict[str, Any] = {}
    if inputs.lock_inputs_digest:
        internal["lockInputsDigest"] = inputs.lock_inputs_digest
    definition: dict[str, Any] = {"buildType": BUILD_TYPE, "externalParameters": external,
                                  "resolvedDependencies": dependencies}
    if internal:
        definition["internalParameters"] = internal
    run: dict[str, Any] = {"builder": {"id": BUILDER_ID, "version": {"microcontainer-tool": __version__}}}
    if inputs.epoch is not None:
        stamp = oci.rfc3339(inputs.epoch)
        run["metadata"] = {"startedOn": stamp, "finishedOn": stamp}
    return {"buildDefinition": definition, "runDetails": run}


def statement(subject_name: str, digest: str, predicate_type: str, predicate: Mapping[str, Any]) -> bytes:
    """An in-toto Statement v1 about one image manifest (canonical JSON)."""
    subject = {"name": subject_name, "digest": _digest_set(oci.check_digest(digest))}
    return canonical_json({"_type": STATEMENT_TYPE, "subject": [subject],
                           "predicateType": predicate_type, "predicate": dict(predicate)})


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding: what the signature covers."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def envelope(key: ec.EllipticCurvePrivateKey, payload: bytes,
             payload_type: str = STATEMENT_MEDIA_TYPE) -> bytes:
    """A DSSE envelope of ``payload`` signed with ``key`` (canonical JSON)."""
    signature = keys.sign(key, pae(payload_type, payload))
    return canonical_json({"payloadType": payload_type,
                           "payload": base64.b64encode(payload).decode("ascii"),
                           "signatures": [{"keyid": "", "sig": base64.b64encode(signature).decode("ascii")}]})


def open_envelope(public: ec.EllipticCurvePublicKey, data: bytes) -> tuple[bytes, str]:
    """Check a DSSE envelope: ``(payload, "")`` if ``public`` signed it, else ``(b"", why not)``."""
    try:
        body = jsontext.loads(data, MAX_ENVELOPE)
        payload_type = body["payloadType"]
        payload = base64.b64decode(body["payload"], validate=True)
        signatures = [base64.b64decode(s["sig"], validate=True) for s in body["signatures"]]
    except (ValueError, KeyError, TypeError, binascii.Error):
        return b"", "not a DSSE envelope"
    if not isinstance(payload_type, str):
        return b"", "not a DSSE envelope"
    if not any(keys.verify(public, pae(payload_type, payload), sig) for sig in signatures):
        return b"", "the attestation's signature does not verify with the key"
    return payload, ""


def spec_digests(source: str, canonical: Mapping[str, Any]) -> tuple[str, str, str]:
    """``(file name, file digest, canonical digest)`` of a spec (no file: ``""`` for the first two)."""
    canonical_digest = oci.sha256_digest(canonical_json(dict(canonical)))
    if not source or not os.path.isfile(source):
        return "", "", canonical_digest
    with open(source, "rb") as handle:
        file_digest = "sha256:" + hashlib.sha256(handle.read()).hexdigest()
    return os.path.basename(source), file_digest, canonical_digest


def build_inputs(spec: ImageSpec, image: str, parameters: Mapping[str, Any],
                 epoch: int | None) -> BuildInputs:
    """Gather a build's inputs: the spec, its lock (RPM specs), and the source images the image records.

    Args:
        spec: the spec the image was built from.
        image: the built image (its provenance record names the source images).
        parameters: the build parameters (no host paths).
        epoch: ``SOURCE_DATE_EPOCH`` when the user gave it, else ``None``.

    Raises:
        SourceError: the lock is unreadable.
        LayoutError: the image or its provenance record is unreadable.
    """
    name, file_digest, canonical_digest = spec_digests(spec.source, spec.canonical())
    packages: list[tuple[str, str, str, str, str]] = []
    lock_digest = ""
    if spec.packages:
        from microcontainer_tool.sources.rpm.lock import read_lock
        from microcontainer_tool.sources.rpm.root import lock_path

        if os.path.exists(lock_path(spec)):
            lock = read_lock(lock_path(spec))
            lock_digest = lock.inputs_digest
            packages = [(p.nevra, p.url, p.checksum_type, p.checksum, p.repo)
                        for p in lock.packages]
    record = read_record(image)
    raw = record.get("image")
    about: dict[str, Any] = raw if isinstance(raw, dict) else {}
    images = [(role, str(about[key])) for role, key in (("from", "from_image"), ("parent", "parent"))
              if about.get(key)]
    params = dict(parameters)
    if about.get("arch"):
        params.setdefault("arch", about["arch"])
    return BuildInputs(name, file_digest, canonical_digest, packages, lock_digest, images, params, epoch)


def check_attestation(public: ec.EllipticCurvePublicKey, data: bytes, layer_media_type: str,
                      digest: str) -> str | None:
    """Check an attached statement: ``None`` if ``public`` signed SLSA provenance about ``digest``.

    Otherwise why not, in one line.
    """
    if layer_media_type != DSSE_MEDIA_TYPE:
        return "the provenance statement is not signed (build with --attest --sign KEY)"
    payload, problem = open_envelope(public, data)
    if problem:
        return problem
    try:
        body = jsontext.loads(payload, MAX_ENVELOPE)
    except ValueError:
        return "the attestation's payload is not JSON"
    if not isinstance(body, dict) or body.get("_type") != STATEMENT_TYPE:
        return "the attestation is not an in-toto Statement v1"
    if body.get("predicateType") != SLSA_PROVENANCE:
        return f"the attestation's predicate is {body.get('predicateType')}, not {SLSA_PROVENANCE}"
    algorithm, _, value = oci.check_digest(digest).partition(":")
    raw = body.get("subject")
    subjects: list[Any] = raw if isinstance(raw, list) else []
    if not any(isinstance(s, dict) and isinstance(s.get("digest"), dict)
               and s["digest"].get(algorithm) == value for s in subjects):
        return f"the provenance statement is not about {digest}"
    return None
