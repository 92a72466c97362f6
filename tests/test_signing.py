"""Signing and provenance: cosign signatures, containers simple signing, in-toto/SLSA attestations.

The judges are independent of our code wherever one runs here: Debian's skopeo
(sigstore verification is disabled in Debian's build, simple signing is not)
pulls from a real ``docker-registry`` with a ``signedBy`` policy over the
lookaside store we wrote; the cosign format is checked with ``openssl dgst
-verify`` over the payload blob as the registry serves it (the check cosign's
own EXAMPLES.md gives), and our payload bytes against a signature cosign made
(sigstore-rs's test vector). Our ``verify`` must agree with them: it accepts
the right key, refuses a wrong key, a re-tagged manifest (another image under
the signed tag, with the first image's signature copied to it) and an
unsigned image.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import assert_one_line_error, p256_keys, run_cli
from registry_env import Env, running_registries

from microcontainer_tool.errors import SigningError
from microcontainer_tool.model.tree import Entry, EntryKind, FileTree, InlineContent, Provenance
from microcontainer_tool.oci import model as oci
from microcontainer_tool.oci.layout import write_tree_image
from microcontainer_tool.oci.referrers import referrers
from microcontainer_tool.registry.reference import Reference
from microcontainer_tool.signing import attest, cosign, keys, simplesign
from microcontainer_tool.signing.keys import parse_key_spec

EPOCH = 1700000000
SIG_TYPE = "application/vnd.dev.cosign.artifact.sig.v1+json"

# sigstore-rs (src/crypto/verification_key.rs, tests): a signature cosign made, its key and payload.
VECTOR_KEY = """-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAENptdY/l3nB0yqkXLBWkZWQwo6+cu
OSWS1X9vPavpiQOoTTGC0xX57OojUadxF1cdQmrsiReWg2Wn4FneJfa8xw==
-----END PUBLIC KEY-----
"""
VECTOR_SIGNATURE = ("MEUCIQD6q/COgzOyW0YH1Dk+CCYSt4uAhm3FDHUwvPI55zwnlwIgE0ZK58ZOWpZw8YVmBapJhBqCfdPekIkn"
                    "imuO0xH8Jh8=")
VECTOR_REFERENCE = "registry-testing.svc.lan/busybox"
VECTOR_DIGEST = "sha256:f3cfc9d0dbf931d3db4685ec659b7ac68e2a578219da4aae65427886e649b06b"

SPEC = """from: /
paths: [/usr/bin/true]
cmd: [/usr/bin/true]
"""


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    yield from running_registries(tmp_path_factory)


@pytest.fixture(scope="module")
def pem(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two ECDSA P-256 key pairs made by openssl, as cosign users make them."""
    return p256_keys(tmp_path_factory.mktemp("keys"), "right", "wrong")


class Gpg:
    """A temporary GNUPGHOME with two signing keys, each exported to its own public keyring."""

    def __init__(self, root: Path) -> None:
        self.home = root / "gnupg"
        self.home.mkdir(mode=0o700)
        self.env = {**os.environ, "GNUPGHOME": str(self.home)}
        self.fingerprints: dict[str, str] = {}
        self.keyrings: dict[str, Path] = {}
        for name in ("right", "wrong"):
            subprocess.run(["gpg", "--batch", "--passphrase", "", "--quick-gen-key",
                            f"MCT {name} <{name}@example.invalid>", "ed25519", "sign", "never"],
                           env=self.env, check=True, capture_output=True)
            listing = subprocess.run(["gpg", "--batch", "--with-colons", "--list-keys",
                                      f"{name}@example.invalid"], env=self.env, check=True,
                                     capture_output=True, text=True).stdout
            fpr = next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))
            self.fingerprints[name] = fpr
            keyring = root / f"{name}.gpg"
            keyring.write_bytes(subprocess.run(["gpg", "--batch", "--export", fpr], env=self.env, check=True,
                                               capture_output=True).stdout)
            self.keyrings[name] = keyring


@pytest.fixture(scope="module")
def gpg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gpg]:
    keyring = Gpg(tmp_path_factory.mktemp("gpg"))
    old = os.environ.get("GNUPGHOME")
    os.environ["GNUPGHOME"] = str(keyring.home)  # our library calls gpg in this process
    try:
        yield keyring
    finally:
        subprocess.run(["gpgconf", "--kill", "gpg-agent"], env=keyring.env, capture_output=True)
        if old is None:
            os.environ.pop("GNUPGHOME", None)
        else:
            os.environ["GNUPGHOME"] = old


def _image(out: Path, text: bytes) -> str:
    """A small OCI layout (one file), as the referrer tests make them."""
    tree = FileTree()
    tree.add(Entry("/etc/data", EntryKind.FILE, 0o644, InlineContent(text), provenance=(Provenance("test"),)))
    tree.add_parents(Provenance("parent"))

    def config(layer: Any) -> dict[str, Any]:
        return oci.image_config(architecture="amd64", diff_ids=[layer.diff_id], created=EPOCH, cmd=["/x"])

    return write_tree_image(str(out), None, tree, "gzip", EPOCH, config, "latest", "img").manifest_digest


def _build(workdir: Path, out: str, *args: str, env: dict[str, str] | None = None) -> str:
    (workdir / "microimage.yaml").write_text(SPEC)
    proc = run_cli("build", "-o", out, "-q", *args, cwd=workdir, env=env)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def _blob(layout: Path, digest: str) -> bytes:
    return (layout / "blobs/sha256" / digest.split(":", 1)[1]).read_bytes()


def _openssl_verify(pub: Path, data: bytes, der: bytes, workdir: Path) -> bool:
    (workdir / "data").write_bytes(data)
    (workdir / "sig.der").write_bytes(der)
    proc = subprocess.run(["openssl", "dgst", "-sha256", "-verify", str(pub), "-signature",
                           str(workdir / "sig.der"), str(workdir / "data")], capture_output=True, text=True)
    assert proc.returncode in (0, 1), proc.stderr
    return proc.returncode == 0 and "Verified OK" in proc.stdout


def _http_get(url: str, accept: str | None = None) -> bytes:
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.read()


def _skopeo_raw(ref: str) -> dict[str, Any]:
    proc = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _cosign_independent(host: str, repo: str, digest: str, pub: Path, workdir: Path) -> str:
    """Judge a pushed cosign signature without our code: skopeo for the ``.sig`` manifest, HTTP for
    the payload blob, openssl for the signature. ``"ok"``, or which check failed."""
    manifest = _skopeo_raw(f"{host}/{repo}:sha256-{digest.split(':', 1)[1]}.sig")
    layers = [item for item in manifest["layers"]
              if item["mediaType"] == "application/vnd.dev.cosign.simplesigning.v1+json"]
    if not layers:
        return "no signature layer"
    problems = []
    for layer in layers:
        data = _http_get(f"http://{host}/v2/{repo}/blobs/{layer['digest']}")
        assert "sha256:" + hashlib.sha256(data).hexdigest() == layer["digest"]
        der = base64.b64decode(layer["annotations"]["dev.cosignproject.cosign/signature"])
        if not _openssl_verify(pub, data, der, workdir):
            problems.append("openssl: bad signature")
            continue
        signed = json.loads(data)["critical"]["image"]["docker-manifest-digest"]
        if signed != digest:
            problems.append(f"payload names {signed}")
            continue
        return "ok"
    return "; ".join(problems)


def _policy(path: Path, host: str, keyring: Path) -> Path:
    path.write_text(json.dumps({"default": [{"type": "reject"}], "transports": {"docker": {host: [
        {"type": "signedBy", "keyType": "GPGKeys", "keyPath": str(keyring)}]}}}))
    return path


def _skopeo_pull(policy: Path, registries_d: Path, ref: str, out: Path,
                 gpg: Gpg) -> subprocess.CompletedProcess:
    return subprocess.run(["skopeo", "--policy", str(policy), "--registries.d", str(registries_d), "copy",
                           "--remove-signatures", "--src-tls-verify=false", f"docker://{ref}",
                           f"oci:{out}:x"], capture_output=True, text=True, env=gpg.env)


# --- the cosign format, unit level ---------------------------------------------------------------


def test_the_payload_is_byte_for_byte_what_cosign_signed() -> None:
    """sigstore-rs's vector: a signature cosign made verifies over the payload we write."""
    data = cosign.payload(VECTOR_REFERENCE, VECTOR_DIGEST)
    assert data == (b'{"critical":{"identity":{"docker-reference":"registry-testing.svc.lan/busybox"},'
                    b'"image":{"docker-manifest-digest":"' + VECTOR_DIGEST.encode() + b'"},'
                    b'"type":"cosign container image signature"},"optional":null}')
    public = keys.load_public_key_bytes(VECTOR_KEY.encode())
    assert cosign.check(public, data, VECTOR_SIGNATURE, VECTOR_DIGEST) is None
    other = "sha256:" + "0" * 64
    assert cosign.check(public, data, VECTOR_SIGNATURE, other) == \
        f"the signature is for {VECTOR_DIGEST}, not {other}"
    assert cosign.check(public, cosign.payload(VECTOR_REFERENCE, other), VECTOR_SIGNATURE, other) == \
        "the signature does not verify with the key"


def test_signatures_are_deterministic_and_openssl_verifies_them(pem: dict[str, Path], tmp_path: Path) -> None:
    key = keys.load_private_key(str(pem["right"]))
    one = cosign.sign_digest(key, "example.com/app", VECTOR_DIGEST)
    two = cosign.sign_digest(key, "example.com/app", VECTOR_DIGEST)
    assert one == two  # RFC 6979
    der = base64.b64decode(one.signature)
    assert _openssl_verify(pem["right.pub"], one.payload, der, tmp_path)
    assert not _openssl_verify(pem["wrong.pub"], one.payload, der, tmp_path)
    config = json.loads(cosign.tag_config([one.layer]))
    assert config["rootfs"] == {"type": "layers", "diff_ids": [one.layer.digest]}


def test_keys_that_cannot_sign_are_one_line_errors(pem: dict[str, Path], tmp_path: Path) -> None:
    encrypted = tmp_path / "cosign.key"
    encrypted.write_text("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\nAAAA\n"
                         "-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n")
    with pytest.raises(SigningError, match="cosign's encrypted key format"):
        keys.load_private_key(str(encrypted))
    rsa = tmp_path / "rsa.key"
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out",
                    str(rsa)], check=True, capture_output=True)
    with pytest.raises(SigningError, match="not an ECDSA P-256 key"):
        keys.load_private_key(str(rsa))
    with pytest.raises(SigningError, match="not a GPG key id"):
        parse_key_spec("gpg:xyz")
    (tmp_path / "microimage.yaml").write_text(SPEC)
    proc = run_cli("build", "-o", str(tmp_path / "img"), "--sign", "gpg:" + "A" * 40, cwd=tmp_path)
    assert_one_line_error(proc, "push --sign gpg:")
    assert proc.returncode == 2 and not (tmp_path / "img").exists()
    proc = run_cli("build", "-o", str(tmp_path / "img.tar.gz"), "--attest", cwd=tmp_path)
    assert_one_line_error(proc, "cannot carry referrers")


# --- local images: build --attest --sign, sign, verify -------------------------------------------


def test_build_attests_and_signs_the_image_its_sbom_and_statement(pem: dict[str, Path],
                                                                  tmp_path: Path) -> None:
    digest = _build(tmp_path, "app", "--sbom", "--attest", "--sign", str(pem["right"]))
    layout = tmp_path / "app"
    found = {getattr(d, "artifact_type", ""): d for d in referrers(str(layout), digest)}
    assert set(found) == {"application/vnd.cyclonedx+json", attest.STATEMENT_MEDIA_TYPE, SIG_TYPE}

    # the image signature: openssl verifies the payload, which names the image
    sig_manifest = json.loads(_blob(layout, found[SIG_TYPE].digest))
    [layer] = sig_manifest["layers"]
    assert layer["mediaType"] == "application/vnd.dev.cosign.simplesigning.v1+json"
    payload = _blob(layout, layer["digest"])
    der = base64.b64decode(layer["annotations"]["dev.cosignproject.cosign/signature"])
    assert _openssl_verify(pem["right.pub"], payload, der, tmp_path)
    assert json.loads(payload)["critical"]["image"]["docker-manifest-digest"] == digest

    # the SBOM and the statement have signatures of their own
    for kind in ("application/vnd.cyclonedx+json", attest.STATEMENT_MEDIA_TYPE):
        [sig] = [d for d in referrers(str(layout), found[kind].digest) if d.artifact_type == SIG_TYPE]
        sig_layer = json.loads(_blob(layout, sig.digest))["layers"][0]
        signed = json.loads(_blob(layout, sig_layer["digest"]))["critical"]["image"]["docker-manifest-digest"]
        assert signed == found[kind].digest

    # the statement: a DSSE envelope over an in-toto Statement v1 with SLSA provenance v1
    statement_manifest = json.loads(_blob(layout, found[attest.STATEMENT_MEDIA_TYPE].digest))
    assert statement_manifest["annotations"] == {"in-toto.io/predicate-type": "https://slsa.dev/provenance/v1"}
    [env_layer] = statement_manifest["layers"]
    assert env_layer["mediaType"] == "application/vnd.dsse.envelope.v1+json"
    envelope = json.loads(_blob(layout, env_layer["digest"]))
    body = base64.b64decode(envelope["payload"])
    kind = envelope["payloadType"].encode()
    pae = b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(body), body)
    dsse_sig = base64.b64decode(envelope["signatures"][0]["sig"])
    assert _openssl_verify(pem["right.pub"], pae, dsse_sig, tmp_path)
    assert not _openssl_verify(pem["wrong.pub"], pae, dsse_sig, tmp_path)
    statement = json.loads(body)
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["predicateType"] == "https://slsa.dev/provenance/v1"
    assert statement["subject"][0]["digest"] == {"sha256": digest.split(":", 1)[1]}
    definition = statement["predicate"]["buildDefinition"]
    spec_sha = hashlib.sha256(SPEC.encode()).hexdigest()
    assert {"name": "microimage.yaml", "digest": {"sha256": spec_sha}} in definition["resolvedDependencies"]
    assert definition["externalParameters"]["compression"] == "gzip"
    assert definition["externalParameters"]["arch"] == "amd64"
    run = statement["predicate"]["runDetails"]
    assert run["builder"]["version"]["microcontainer-tool"]
    assert "metadata" not in run  # no timestamp unless SOURCE_DATE_EPOCH is given
    assert str(tmp_path) not in body.decode()

    # our verify: right key, wrong key
    ok = run_cli("verify", "app", "--key", str(pem["right.pub"]), cwd=tmp_path)
    assert ok.returncode == 0 and ok.stdout.startswith(f"verified: {digest}"), ok.stdout + ok.stderr
    bad = run_cli("verify", "app", "--key", str(pem["wrong.pub"]), cwd=tmp_path)
    assert bad.returncode == 1 and "does not verify with the key" in bad.stdout
    assert len(bad.stdout.splitlines()) == 1
    # --attestation: the signed statement must be there too
    both = run_cli("verify", "app", "--attestation", "--key", str(pem["right.pub"]), cwd=tmp_path)
    assert both.returncode == 0 and "provenance verified" in both.stdout, both.stdout + both.stderr
    _build(tmp_path, "signed-only", "--sign", str(pem["right"]))
    missing = run_cli("verify", "signed-only", "--attestation", "--key", str(pem["right.pub"]), cwd=tmp_path)
    assert missing.returncode == 1 and "no provenance statement" in missing.stdout
    _build(tmp_path, "unsigned-statement", "--attest")
    assert run_cli("sign", "unsigned-statement", "--key", str(pem["right"]), cwd=tmp_path).returncode == 0
    unsigned = run_cli("verify", "unsigned-statement", "--attestation", "--key", str(pem["right.pub"]),
                       cwd=tmp_path)
    assert unsigned.returncode == 1 and "statement is not signed" in unsigned.stdout


def test_same_inputs_same_signed_bytes(pem: dict[str, Path], tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    for workdir in (one, two):
        _build(workdir, "app.tar", "--attest", "--sign", str(pem["right"]))
    assert (one / "app.tar").read_bytes() == (two / "app.tar").read_bytes()
    stamped = _build(one, "stamped", "--attest", env={"SOURCE_DATE_EPOCH": str(EPOCH)})
    [statement] = [d for d in referrers(str(one / "stamped"), stamped)
                   if d.artifact_type == attest.STATEMENT_MEDIA_TYPE]
    body = json.loads(_blob(one / "stamped", json.loads(_blob(one / "stamped", statement.digest))["layers"][0]
                            ["digest"]))
    assert body["predicate"]["runDetails"]["metadata"]["startedOn"] == "2023-11-14T22:13:20Z"


def test_sign_and_verify_an_oci_archive_and_an_unsigned_layout(pem: dict[str, Path], tmp_path: Path) -> None:
    _build(tmp_path, "app.tar")
    unsigned = run_cli("verify", "app.tar", "--key", str(pem["right.pub"]), cwd=tmp_path)
    assert unsigned.returncode == 1 and "no cosign signature" in unsigned.stdout, unsigned.stdout
    signed = run_cli("sign", "app.tar", "--key", str(pem["right"]), "--identity", "registry.example/app",
                     cwd=tmp_path)
    assert signed.returncode == 0, signed.stderr
    assert run_cli("verify", "app.tar", "--key", str(pem["right.pub"]), cwd=tmp_path).returncode == 0
    assert run_cli("verify", "app.tar", "--key", str(pem["wrong.pub"]), cwd=tmp_path).returncode == 1
    # still an oci-archive the clients read
    proc = subprocess.run(["skopeo", "inspect", f"oci-archive:{tmp_path / 'app.tar'}"], capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr
    missing = run_cli("verify", "nothing-here", "--key", str(pem["right.pub"]), "--plain-http",
                      "--retries", "1", "--timeout", "2", cwd=tmp_path)
    assert missing.returncode == 2 and missing.stderr.startswith("microcontainer: error: ")


# --- registries: push --sign, both formats, judged by skopeo and openssl -------------------------


def test_push_signs_in_the_cosign_format(env: Env, pem: dict[str, Path], tmp_path: Path) -> None:
    host = env.open.host
    first = _image(tmp_path / "first", b"first\n")
    second = _image(tmp_path / "second", b"second\n")
    push = run_cli("push", "--plain-http", "--sign", str(pem["right"]), str(tmp_path / "first"),
                   f"{host}/team/cosign:1", cwd=tmp_path)
    assert push.returncode == 0, push.stderr
    assert f"team/cosign:sha256-{first.split(':', 1)[1]}.sig" in push.stdout

    # independent: skopeo + HTTP + openssl; the payload names the pushed digest
    assert _cosign_independent(host, "team/cosign", first, pem["right.pub"], tmp_path) == "ok"
    assert _cosign_independent(host, "team/cosign", first, pem["wrong.pub"], tmp_path) == \
        "openssl: bad signature"
    # and as an OCI 1.1 referrer (the referrers tag schema on distribution 2.8)
    listed = _skopeo_raw(f"{host}/team/cosign:sha256-{first.split(':', 1)[1]}")["manifests"]
    assert [e["artifactType"] for e in listed] == [SIG_TYPE]

    def verify(ref: str, key: Path) -> subprocess.CompletedProcess:
        return run_cli("verify", "--plain-http", f"{host}/{ref}", "--key", str(key), cwd=tmp_path)

    assert verify("team/cosign:1", pem["right.pub"]).returncode == 0
    assert verify(f"team/cosign@{first}", pem["right.pub"]).returncode == 0
    wrong = verify("team/cosign:1", pem["wrong.pub"])
    assert wrong.returncode == 1 and "does not verify with the key" in wrong.stdout

    # an unsigned image
    assert run_cli("push", "--plain-http", str(tmp_path / "second"), f"{host}/team/cosign:unsigned",
                   cwd=tmp_path).returncode == 0
    unsigned = verify("team/cosign:unsigned", pem["right.pub"])
    assert unsigned.returncode == 1 and "no cosign signature" in unsigned.stdout

    # re-tagged: the second image under the signed tag, with the first image's signature copied to it
    assert run_cli("push", "--plain-http", str(tmp_path / "second"), f"{host}/team/cosign:1",
                   cwd=tmp_path).returncode == 0
    copy = subprocess.run(["skopeo", "copy", "--src-tls-verify=false", "--dest-tls-verify=false",
                           f"docker://{host}/team/cosign:sha256-{first.split(':', 1)[1]}.sig",
                           f"docker://{host}/team/cosign:sha256-{second.split(':', 1)[1]}.sig"],
                          capture_output=True, text=True)
    assert copy.returncode == 0, copy.stderr
    assert _cosign_independent(host, "team/cosign", second, pem["right.pub"], tmp_path) == \
        f"payload names {first}"
    retagged = verify("team/cosign:1", pem["right.pub"])
    assert retagged.returncode == 1
    assert f"the signature is for {first}, not {second}" in retagged.stdout


def test_push_signs_with_gpg_for_a_signedby_policy(env: Env, gpg: Gpg, tmp_path: Path) -> None:
    host = env.open.host
    lookaside = tmp_path / "lookaside"
    registries_d = tmp_path / "registries.d"
    registries_d.mkdir()
    (registries_d / "local.yaml").write_text(f"docker:\n  {host}:\n    lookaside: file://{lookaside}\n")
    first = _image(tmp_path / "first", b"gpg first\n")
    second = _image(tmp_path / "second", b"gpg second\n")
    right, wrong = gpg.fingerprints["right"], gpg.fingerprints["wrong"]
    push = run_cli("push", "--plain-http", "--registries.d", str(registries_d), "--sign", f"gpg:{right}",
                   str(tmp_path / "first"), f"{host}/team/simple:1", cwd=tmp_path, env=gpg.env)
    assert push.returncode == 0, push.stderr
    signature = lookaside / "team" / f"simple@sha256={first.split(':', 1)[1]}" / "signature-1"
    assert signature.is_file()

    # the real client: skopeo with a signedBy policy, reading the lookaside store from registries.d
    right_policy = _policy(tmp_path / "right.json", host, gpg.keyrings["right"])
    wrong_policy = _policy(tmp_path / "wrong.json", host, gpg.keyrings["wrong"])
    ok = _skopeo_pull(right_policy, registries_d, f"{host}/team/simple:1", tmp_path / "pulled", gpg)
    assert ok.returncode == 0, ok.stderr
    refused = _skopeo_pull(wrong_policy, registries_d, f"{host}/team/simple:1", tmp_path / "no", gpg)
    assert refused.returncode != 0 and "signature" in refused.stderr.lower(), refused.stderr

    def verify(ref: str, fpr: str) -> subprocess.CompletedProcess:
        return run_cli("verify", "--plain-http", "--registries.d", str(registries_d), f"{host}/{ref}",
                       "--key", f"gpg:{fpr}", cwd=tmp_path, env=gpg.env)

    assert verify("team/simple:1", right).returncode == 0
    assert verify(f"team/simple@{first}", right).returncode == 0
    other = verify("team/simple:1", wrong)
    assert other.returncode == 1 and f"not {wrong}" in other.stdout, other.stdout

    # an unsigned image: skopeo refuses, so do we
    assert run_cli("push", "--plain-http", str(tmp_path / "second"), f"{host}/team/simple:unsigned",
                   cwd=tmp_path).returncode == 0
    assert _skopeo_pull(right_policy, registries_d, f"{host}/team/simple:unsigned", tmp_path / "u",
                        gpg).returncode != 0
    unsigned = verify("team/simple:unsigned", right)
    assert unsigned.returncode == 1 and "no simple signature" in unsigned.stdout

    # re-tagged: the second image under the signed tag, the first image's signature copied to it
    assert run_cli("push", "--plain-http", str(tmp_path / "second"), f"{host}/team/simple:1",
                   cwd=tmp_path).returncode == 0
    copied = lookaside / "team" / f"simple@sha256={second.split(':', 1)[1]}"
    copied.mkdir(parents=True)
    shutil.copy(signature, copied / "signature-1")
    retagged = _skopeo_pull(right_policy, registries_d, f"{host}/team/simple:1", tmp_path / "r", gpg)
    assert retagged.returncode != 0, retagged.stdout
    ours = verify("team/simple:1", right)
    assert ours.returncode == 1 and f"the signature is for {first}, not {second}" in ours.stdout


def test_sign_a_pushed_image_and_pushed_referrers_follow(env: Env, pem: dict[str, Path],
                                                         tmp_path: Path) -> None:
    """``sign REF`` signs what the registry holds; a layout signed at build pushes its signatures."""
    host = env.open.host
    digest = _build(tmp_path, "app", "--sbom", "--attest", "--sign", str(pem["right"]))
    push = run_cli("push", "--plain-http", "app", f"{host}/team/built:1", cwd=tmp_path)
    assert push.returncode == 0, push.stderr
    assert "referrers 5 pushed" in push.stdout  # SBOM, statement, and a signature of each and of the image
    assert run_cli("verify", "--plain-http", f"{host}/team/built:1", "--key", str(pem["right.pub"]),
                   cwd=tmp_path).returncode == 0  # the signature referrer (no .sig tag yet)
    sign = run_cli("sign", "--plain-http", f"{host}/team/built:1", "--key", str(pem["wrong"]), cwd=tmp_path)
    assert sign.returncode == 0, sign.stderr
    assert _cosign_independent(host, "team/built", digest, pem["wrong.pub"], tmp_path) == "ok"
    assert run_cli("verify", "--plain-http", f"{host}/team/built:1", "--key", str(pem["wrong.pub"]),
                   cwd=tmp_path).returncode == 0
    # a second key adds its signature to the .sig image; the first one stays
    again = run_cli("sign", "--plain-http", f"{host}/team/built:1", "--key", str(pem["right"]), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    layers = _skopeo_raw(f"{host}/team/built:sha256-{digest.split(':', 1)[1]}.sig")["layers"]
    assert len(layers) == 2
    for name in ("right.pub", "wrong.pub"):
        assert _cosign_independent(host, "team/built", digest, pem[name], tmp_path) == "ok"
    # --attestation: the statement was signed with the right key only
    attested = run_cli("verify", "--plain-http", "--attestation", f"{host}/team/built:1", "--key",
                       str(pem["right.pub"]), cwd=tmp_path)
    assert attested.returncode == 0 and "provenance verified" in attested.stdout, attested.stdout
    other = run_cli("verify", "--plain-http", "--attestation", f"{host}/team/built:1", "--key",
                    str(pem["wrong.pub"]), cwd=tmp_path)
    assert other.returncode == 1 and "attestation's signature does not verify" in other.stdout, other.stdout
    # pulled, the image keeps its signature referrers: it verifies as a layout
    pulled = run_cli("pull", "--plain-http", f"{host}/team/built:1", "-o", "pulled", cwd=tmp_path)
    assert pulled.returncode == 0, pulled.stderr
    assert run_cli("verify", "pulled", "--key", str(pem["right.pub"]), cwd=tmp_path).returncode == 0


def test_scons_attests_and_signs(pem: dict[str, Path], tmp_path: Path) -> None:
    """``MCT_ATTEST`` and ``MCT_SIGN_KEY``: the archive and the synced layout carry both."""
    tool_dir = Path(__file__).resolve().parent.parent / "microcontainer_tool" / "site_tools"
    (tmp_path / "SConstruct").write_text(
        f"env = Environment(tools=['default', 'microimage'], toolpath=[{str(tool_dir)!r}],\n"
        f"                  MCT_ATTEST=True, MCT_SIGN_KEY={str(pem['right'])!r})\n"
        "env.MicroImage('img', FROM='/', PATHS=['/usr/bin/true'], CMD=['/usr/bin/true'])\n")
    environ = {k: v for k, v in os.environ.items() if k not in ("SCONSFLAGS", "SOURCE_DATE_EPOCH")}
    environ["PYTHONPATH"] = str(tool_dir.parent.parent) + os.pathsep + environ.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-m", "SCons"], cwd=tmp_path, env=environ, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for image in ("img.tar", "img"):
        ok = run_cli("verify", image, "--key", str(pem["right.pub"]), cwd=tmp_path)
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert run_cli("verify", image, "--key", str(pem["wrong.pub"]), cwd=tmp_path).returncode == 1
    digest = json.loads((tmp_path / "img" / "index.json").read_text())["manifests"][0]["digest"]
    kinds = {d.artifact_type for d in referrers(str(tmp_path / "img"), digest)}
    assert kinds == {attest.STATEMENT_MEDIA_TYPE, SIG_TYPE}
    rerun = subprocess.run([sys.executable, "-m", "SCons", "-q"], cwd=tmp_path, env=environ,
                           capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout  # up to date: signing does not rebuild


# --- registries.d --------------------------------------------------------------------------------


def test_lookaside_locations_follow_registries_d(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(
        "default-docker:\n  lookaside: file:///srv/default\n"
        "docker:\n  registry.example:\n    lookaside: file:///srv/host\n"
        "  registry.example/team:\n    lookaside: file:///srv/team\n    lookaside-staging: file:///srv/staging\n")
    (tmp_path / "b.yaml").write_text("docker:\n  registry.example/old:\n    sigstore: file:///srv/old\n")
    (tmp_path / "ignored.yml").write_text("default-docker: {lookaside: file:///nowhere}\n")
    digest = "sha256:" + "ab" * 32

    def where(text: str, write: bool) -> str:
        return simplesign.signature_dir(Reference.parse(text), digest, write, str(tmp_path))

    assert where("registry.example/team/app:1", False) == f"/srv/team/team/app@sha256={'ab' * 32}"
    assert where("registry.example/team/app:1", True) == f"/srv/staging/team/app@sha256={'ab' * 32}"
    assert where("registry.example/other/app", True) == f"/srv/host/other/app@sha256={'ab' * 32}"
    assert where("registry.example/old/app", False) == f"/srv/old/old/app@sha256={'ab' * 32}"
    assert where("elsewhere.example/x", False) == f"/srv/default/x@sha256={'ab' * 32}"
    (tmp_path / "c.yaml").write_text("docker:\n  web.example:\n    lookaside: https://web.example/sigs\n")
    with pytest.raises(SigningError, match="only file:// stores"):
        where("web.example/x", True)
