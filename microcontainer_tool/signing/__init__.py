"""Signing and provenance: cosign signatures, containers simple signatures, in-toto/SLSA attestations.

``keys`` (key files, deterministic ECDSA), ``cosign`` (the payload and signature image format),
``simplesign`` (GPG atomic signatures, ``registries.d`` lookaside stores), ``attest`` (in-toto
Statement v1, SLSA provenance v1, DSSE), ``localimage`` (layouts and oci-archives edited in place),
``attachments`` (signatures and attestations put into images and registries), ``verify`` (checks).
"""
