"""Push and pull against real registries (Debian's ``docker-registry``, distribution 2.8).

A session fixture starts three registries on 127.0.0.1, each with its own
storage directory and a free port: one open, one with htpasswd (bcrypt) basic
auth, one with token auth served by a small token server in this file (JWTs
signed RS256 with ``openssl``, the self-signed certificate in the ``x5c``
header, trusted by the registry through ``rootcertbundle``). ``skopeo`` is the
independent oracle for what was pushed.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import logging
import os
import secrets
import shutil
import stat
import subprocess
import sys
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import assert_one_line_error, have, run_cli
from registry_env import SERVICE, USER, Env, free_port, running_registries

from microcontainer_tool.errors import DigestMismatchError, LayoutError, RegistryError, SpecError
from microcontainer_tool.oci import model as oci
from microcontainer_tool.oci.imageview import open_image
from microcontainer_tool.registry.auth import Credentials, load_credentials, normalize_scopes, parse_challenge
from microcontainer_tool.registry.client import RegistryClient
from microcontainer_tool.registry.reference import Reference
from microcontainer_tool.registry.transfer import pull, push, to_docker_manifest, tty_progress

# Each test needs only what it uses: the ``env`` registries need docker-registry, htpasswd and openssl;
# skopeo, the independent oracle, is needed only where a test asks it.
needs_skopeo = pytest.mark.skipif(not have("skopeo"), reason="needs skopeo")


@pytest.fixture(scope="session")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    yield from running_registries(tmp_path_factory)


@pytest.fixture(scope="session")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-layer image of /usr/bin/true built with our CLI (an OCI layout)."""
    work = tmp_path_factory.mktemp("image")
    (work / "microimage.yaml").write_text("paths: [/usr/bin/true]\n")
    proc = run_cli("build", "-c", str(work / "microimage.yaml"), "-o", str(work / "img"))
    assert proc.returncode == 0, proc.stderr
    return work / "img"


def _manifest_file(layout: Path) -> bytes:
    index = json.loads((layout / "index.json").read_bytes())
    digest = index["manifests"][0]["digest"]
    return (layout / "blobs/sha256" / digest.split(":")[1]).read_bytes()


def _skopeo(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=60, check=False)


def _inspect(ref: str, raw: bool = False) -> Any:
    proc = _skopeo("inspect", *(["--raw"] if raw else []), "--tls-verify=false", f"docker://{ref}")
    assert proc.returncode == 0, proc.stderr
    return proc.stdout if raw else json.loads(proc.stdout)


class Counter:
    """Counts the HTTP requests a real ``requests.Session`` sends, by method."""

    def __init__(self) -> None:
        self.session = requests.Session()
        self.calls: list[tuple[str, str]] = []
        self.session.hooks["response"].append(self._hook)

    def _hook(self, response: requests.Response, *args: object, **kwargs: object) -> None:
        self.calls.append((response.request.method or "", urllib.parse.urlsplit(response.request.url).path))

    def count(self, method: str, part: str = "") -> int:
        return sum(1 for m, path in self.calls if m == method and part in path)


# --- push -----------------------------------------------------------------------------------------


@needs_skopeo
def test_push_digest_is_ours_and_skopeo_reads_it(env: Env, image: Path) -> None:
    ref = env.open.ref("push/true:v1")
    with env.open.client() as client:
        result = push(str(image), ref, client)
    ours = _manifest_file(image)
    assert result.digest == oci.sha256_digest(ours) == str(result)
    assert (result.uploaded, result.skipped, result.mounted) == (2, 0, 0)
    assert str(result.reference) == f"{env.open.host}/push/true:v1@{result.digest}"
    info = _inspect(str(ref))
    assert info["Digest"] == result.digest
    assert _inspect(str(ref), raw=True).encode() == ours  # our exact bytes


def test_push_twice_uploads_no_blob(env: Env, image: Path) -> None:
    ref = env.open.ref("push/twice:v1")
    counter = Counter()
    with env.open.client(session=counter.session) as client:
        first = push(str(image), ref, client)
        before = len(counter.calls)
        second = push(str(image), ref, client)
    assert first.uploaded == 2 and first.bytes_uploaded > 0
    assert (second.uploaded, second.skipped, second.bytes_uploaded) == (0, 2, 0)
    assert second.digest == first.digest
    later = counter.calls[before:]
    assert [m for m, _ in later if m in ("POST", "PATCH")] == []
    assert [m for m, p in later if m == "PUT" and "/blobs/" in p] == []
    assert sorted(m for m, _ in later) == ["HEAD", "HEAD", "PUT"]  # two HEADs and the manifest


@needs_skopeo
def test_push_docker_media_types(env: Env, image: Path) -> None:
    ref = env.open.ref("push/docker:v1")
    with env.open.client() as client:
        result = push(str(image), ref, client, docker_media_types=True)
    raw = _inspect(str(ref), raw=True)
    manifest = json.loads(raw)
    assert manifest["mediaType"] == oci.DOCKER_MANIFEST
    assert manifest["config"]["mediaType"] == oci.DOCKER_CONFIG
    assert manifest["layers"][0]["mediaType"] == oci.DOCKER_LAYER_GZIP
    assert result.digest == oci.sha256_digest(raw.encode()) == _inspect(str(ref))["Digest"]
    assert result.digest != oci.sha256_digest(_manifest_file(image))  # the printed digest is the pushed one
    assert result.media_type == oci.DOCKER_MANIFEST


@needs_skopeo
def test_push_archives_and_by_digest(env: Env, image: Path, tmp_path: Path) -> None:
    with env.open.client() as client:
        out = tmp_path / "img.tar"
        run = run_cli("build", "-c", str(image.parent / "microimage.yaml"), "-o", str(out))
        assert run.returncode == 0, run.stderr
        digest = push(str(out), env.open.ref("push/archive:v1"), client).digest
        assert digest == oci.sha256_digest(_manifest_file(image))
        # by digest only: stored under its digest, no tag
        pinned = push(str(image), env.open.ref(f"push/pinned@{digest}"), client)
        assert pinned.digest == digest
        with pytest.raises(RegistryError, match="the image's manifest is"):
            push(str(image), env.open.ref("push/pinned@sha256:" + "0" * 64), client)
        docker_archive = tmp_path / "img.docker.tar"
        run = run_cli("build", "-c", str(image.parent / "microimage.yaml"), "-o", str(docker_archive),
                      "--format", "docker-archive", "--name", "true")
        assert run.returncode == 0, run.stderr
        assert push(str(docker_archive), env.open.ref("push/docker-archive:v1"), client).digest == digest
    # a repository without tags: skopeo's non-raw inspect would list tags
    raw = _inspect(str(env.open.ref(f"push/pinned@{digest}")), raw=True)
    assert oci.sha256_digest(raw.encode()) == digest


@needs_skopeo
def test_chunked_upload(env: Env, image: Path, tmp_path: Path) -> None:
    counter = Counter()
    data = os.urandom(200 * 1024 + 7)
    digest = oci.sha256_digest(data)
    blob = tmp_path / "blob"
    blob.write_bytes(data)
    with env.open.client(session=counter.session, chunk_size=64 * 1024) as client:
        client.upload_blob("chunked/blob", str(blob), digest, len(data))
        assert counter.count("PATCH") == 4  # 3 x 64 KiB + 7 bytes
        assert counter.count("PUT", "/blobs/uploads/") == 1
        assert client.blob_exists("chunked/blob", digest)
        client.get_blob("chunked/blob", digest, str(tmp_path / "back"), len(data))
        assert (tmp_path / "back").read_bytes() == data
        # a whole image through the chunked path; skopeo verifies every blob it copies
        ref = env.open.ref("chunked/image:v1")
        result = push(str(image), ref, client)
        assert counter.count("PATCH") > 4 + 10
    copy = _skopeo("copy", "--src-tls-verify=false", f"docker://{ref}", f"oci:{tmp_path / 'copy'}:v1")
    assert copy.returncode == 0, copy.stderr
    assert _manifest_file(tmp_path / "copy") == _manifest_file(image)
    assert result.digest == oci.sha256_digest(_manifest_file(image))


def test_upload_wrong_content_is_refused(env: Env, tmp_path: Path) -> None:
    data = b"some content"
    wrong = oci.sha256_digest(b"other content")
    with env.open.client(chunk_size=5) as client:
        for chunked in (False, True):
            client.chunk_size = 5 if chunked else 1 << 20
            with pytest.raises((DigestMismatchError, RegistryError)) as info:
                client.upload_blob("bad/upload", data, wrong, len(data))
            assert "\n" not in str(info.value)
            assert not client.blob_exists("bad/upload", wrong)
            with pytest.raises(DigestMismatchError, match="ends after 12 of 20 bytes|ends at 12 bytes"):
                client.upload_blob("bad/upload", data, oci.sha256_digest(data), 20)


@needs_skopeo
def test_cross_repository_mount(env: Env, image: Path) -> None:
    with env.open.client() as client:
        push(str(image), env.open.ref("mount/source:v1"), client)
        result = push(str(image), env.open.ref("mount/target:v1"), client, mount_from="mount/source")
        assert (result.uploaded, result.skipped, result.mounted) == (0, 0, 2)
        # a source without the blobs: the mount fails quietly and the blobs are uploaded
        other = push(str(image), env.open.ref("mount/third:v1"), client, mount_from="mount/empty")
        assert (other.uploaded, other.mounted) == (2, 0)
    assert _inspect(str(env.open.ref("mount/target:v1")))["Digest"] == result.digest


# --- pull -----------------------------------------------------------------------------------------


@needs_skopeo
def test_pull_what_skopeo_pushed(env: Env, image: Path, tmp_path: Path) -> None:
    for fmt, media_type in (("v2s2", oci.DOCKER_MANIFEST), ("oci", oci.MEDIA_TYPE_MANIFEST)):
        target = f"{env.open.host}/skopeo/{fmt}:t"
        proc = _skopeo("copy", "--dest-tls-verify=false", "--format", fmt, f"oci:{image}:latest",
                       f"docker://{target}")
        assert proc.returncode == 0, proc.stderr
        expected = _inspect(target)["Digest"]
        with env.open.client() as client:
            digest = pull(Reference.parse(target), str(tmp_path / fmt), client)
        assert digest == expected
        with open_image(str(tmp_path / fmt)) as view:
            assert view.manifest_digest == digest
            assert view.manifest["mediaType"] == media_type
            assert any(f.path == "/usr/bin/true" for f in view.iter_files())  # layers verified too
            assert view.index["manifests"][0]["annotations"][oci.ANNOTATION_REF_NAME] == "t"


def test_pull_oci_archive_and_by_digest(env: Env, image: Path, tmp_path: Path) -> None:
    with env.open.client() as client:
        digest = push(str(image), env.open.ref("pull/img:v1"), client).digest
        assert pull(env.open.ref("pull/img:v1"), str(tmp_path / "img.tar"), client) == digest
        assert pull(env.open.ref(f"pull/img@{digest}"), str(tmp_path / "bydigest"), client) == digest
        # an existing layout is replaced, anything else is refused
        assert pull(env.open.ref("pull/img:v1"), str(tmp_path / "bydigest"), client) == digest
        (tmp_path / "notalayout").mkdir()
        (tmp_path / "notalayout" / "keep").write_text("x")
        with pytest.raises(LayoutError, match="not an OCI layout"):
            pull(env.open.ref("pull/img:v1"), str(tmp_path / "notalayout"), client)
        with pytest.raises(RegistryError, match="MANIFEST_UNKNOWN") as info:
            pull(env.open.ref("pull/img:nosuchtag"), str(tmp_path / "none"), client)
        assert "\n" not in str(info.value)
    with open_image(str(tmp_path / "img.tar")) as view:
        assert view.manifest_digest == digest
        list(view.iter_files())
    with open_image(str(tmp_path / "bydigest")) as view:
        assert view.manifest_digest == digest
    assert (tmp_path / "notalayout" / "keep").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bydigest", "img.tar", "notalayout"]  # no debris


def _arm64_variant(client: RegistryClient, repo: str, tag: str, tmp_path: Path) -> tuple[str, str]:
    """Store a copy of ``repo:tag`` whose config says arm64; return (amd64 digest, arm64 digest)."""
    data, media_type, digest = client.get_manifest(repo, tag)
    manifest = json.loads(data)
    client.get_blob(repo, manifest["config"]["digest"], str(tmp_path / "config"))
    config = json.loads((tmp_path / "config").read_bytes())
    config.update(architecture="arm64", variant="v8")
    config_bytes = oci.canonical_json(config)
    client.upload_blob(repo, config_bytes, oci.sha256_digest(config_bytes), len(config_bytes))
    manifest["config"] = {"mediaType": oci.MEDIA_TYPE_CONFIG, "digest": oci.sha256_digest(config_bytes),
                          "size": len(config_bytes)}
    arm_bytes = oci.canonical_json(manifest)
    arm = client.put_manifest(repo, oci.sha256_digest(arm_bytes), arm_bytes, media_type)
    index = {"schemaVersion": 2, "mediaType": oci.MEDIA_TYPE_INDEX, "manifests": [
        {"mediaType": media_type, "digest": digest, "size": len(data),
         "platform": {"os": "linux", "architecture": "amd64"}},
        {"mediaType": media_type, "digest": arm, "size": len(arm_bytes),
         "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}}]}
    client.put_manifest(repo, "multi", oci.canonical_json(index), oci.MEDIA_TYPE_INDEX)
    return digest, arm


@needs_skopeo
def test_pull_index_and_docker_manifest_list(env: Env, image: Path, tmp_path: Path) -> None:
    with env.open.client() as client:
        push(str(image), env.open.ref("multi/img:amd64"), client)
        amd, arm = _arm64_variant(client, "multi/img", "amd64", tmp_path)
        # skopeo turns our OCI index into a Docker manifest list of Docker manifests
        proc = _skopeo("copy", "--all", "--format", "v2s2", "--src-tls-verify=false",
                       "--dest-tls-verify=false",
                       f"docker://{env.open.host}/multi/img:multi", f"docker://{env.open.host}/multi/list:v1")
        assert proc.returncode == 0, proc.stderr
        listing = json.loads(_inspect(f"{env.open.host}/multi/list:v1", raw=True))
        assert listing["mediaType"] == oci.DOCKER_MANIFEST_LIST
        by_arch = {m["platform"]["architecture"]: m["digest"] for m in listing["manifests"]}
        cases = [("multi/img:multi", "linux/arm64", arm), ("multi/img:multi", "linux/amd64", amd),
                 ("multi/img:multi", "linux/arm64/v8", arm),
                 ("multi/list:v1", "linux/arm64", by_arch["arm64"]),
                 ("multi/list:v1", "linux/amd64", by_arch["amd64"])]
        for number, (name, platform, expected) in enumerate(cases):
            out = tmp_path / f"out{number}"
            assert pull(env.open.ref(name), str(out), client, platform) == expected
            with open_image(str(out)) as view:
                assert view.manifest_digest == expected
                assert view.config["architecture"] == platform.split("/")[1]
                assert view.index["manifests"][0]["platform"]["architecture"] == platform.split("/")[1]
        with pytest.raises(RegistryError, match=r"no image for platform linux/s390x \(available: "
                                                r"linux/amd64, linux/arm64/v8\)"):
            pull(env.open.ref("multi/img:multi"), str(tmp_path / "none"), client, "linux/s390x")
        with pytest.raises(RegistryError, match="invalid platform"):
            pull(env.open.ref("multi/img:multi"), str(tmp_path / "none"), client, "amd64")
        if os.uname().machine == "x86_64":  # the default is this machine's platform
            assert pull(env.open.ref("multi/img:multi"), str(tmp_path / "default"), client) == amd
    assert not (tmp_path / "none").exists()


def test_pull_rejects_corrupted_blob(env: Env, tmp_path: Path) -> None:
    """A blob corrupted in the registry's storage is refused and nothing is written."""
    repo = "corrupt/img"
    layer = os.urandom(100_000)  # unique content: the registry's blob store is shared by all repos
    layer_digest = oci.sha256_digest(layer)
    config = oci.canonical_json(oci.image_config(architecture="amd64", diff_ids=[layer_digest]))
    with env.open.client() as client:
        client.upload_blob(repo, layer, layer_digest, len(layer))
        client.upload_blob(repo, config, oci.sha256_digest(config), len(config))
        manifest = oci.canonical_json(oci.manifest(
            oci.Descriptor(oci.MEDIA_TYPE_CONFIG, oci.sha256_digest(config), len(config)),
            [oci.Descriptor(oci.MEDIA_TYPE_LAYER, layer_digest, len(layer))]))
        client.put_manifest(repo, "v1", manifest, oci.MEDIA_TYPE_MANIFEST)
        data_path = env.open.blob_data_path(layer_digest)
        assert data_path.read_bytes() == layer
        corrupted = bytearray(layer)
        corrupted[50_000] ^= 0xFF  # same size: only the digest can tell
        data_path.write_bytes(bytes(corrupted))
        out = tmp_path / "out"
        for target in (out, tmp_path / "out.tar"):
            with pytest.raises(DigestMismatchError, match=layer_digest) as info:
                pull(env.open.ref(f"{repo}:v1"), str(target), client)
            assert "\n" not in str(info.value)
        with pytest.raises(DigestMismatchError):
            client.get_blob(repo, layer_digest, str(tmp_path / "blob"))
    assert list(tmp_path.iterdir()) == []  # nothing written, no temporary debris


# --- errors, retries, progress ------------------------------------------------------------------


class FlakyServer:
    """Answers ``/v2/`` with 503 for the first ``failures`` requests, then 200."""

    def __init__(self, failures: int) -> None:
        self.hits = 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                server.hits += 1
                failing = server.hits <= failures
                body = b'{"errors":[{"code":"UNAVAILABLE","message":"try\\nlater"}]}' if failing else b"{}"
                self.send_response(503 if failing else 200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_retries_are_bounded() -> None:
    flaky = FlakyServer(failures=2)
    try:
        RegistryClient(flaky.host, plain_http=True, retries=3, backoff=0.01).ping()
        assert flaky.hits == 3
        flaky.hits = 0
        with pytest.raises(RegistryError) as info:
            RegistryClient(flaky.host, plain_http=True, retries=1, backoff=0.01).ping()
        assert flaky.hits == 2
        assert str(info.value) == f"{flaky.host}: GET /v2/: HTTP 503 UNAVAILABLE: try later"
    finally:
        flaky.stop()
    port = free_port()  # nothing listens there
    with pytest.raises(RegistryError) as info:
        RegistryClient(f"127.0.0.1:{port}", plain_http=True, retries=2, backoff=0.01, timeout=2).ping()
    assert str(info.value) == f"127.0.0.1:{port}: GET failed after 3 attempts: connection refused"


def test_tls_is_verified_unless_insecure(env: Env, image: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(RegistryError) as info:
        RegistryClient(env.tls.host, retries=0).ping()
    assert str(info.value) == (f"{env.tls.host}: TLS certificate verification failed"
                               " (--insecure skips verification)")
    with RegistryClient(env.tls.host, insecure=True) as client:
        assert push(str(image), Reference.parse(f"{env.tls.host}/tls/img:v1"), client).uploaded == 2
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(env.tls_cert))  # a trusted certificate verifies
    with RegistryClient(env.tls.host) as client:
        client.ping()
    # HTTPS to a plain HTTP registry, and plain HTTP to an HTTPS one: clean one-line errors
    with pytest.raises(RegistryError, match="TLS handshake failed") as info:
        RegistryClient(env.open.host, retries=0).ping()
    with pytest.raises(RegistryError, match="HTTP 400") as info:
        RegistryClient(env.tls.host, plain_http=True, retries=0).ping()
    assert "\n" not in str(info.value)


def test_progress_only_on_a_tty(tmp_path: Path) -> None:
    with open(tmp_path / "log", "w") as plain:
        assert tty_progress(plain) is None
    master, slave = os.openpty()
    with os.fdopen(slave, "w") as tty, os.fdopen(master, "rb", buffering=0) as reader:
        report = tty_progress(tty, min_size=10)
        assert report is not None
        report("sha256:" + "a" * 64, 5, 5)  # below min_size: silent
        report("sha256:" + "b" * 64, 20 << 20, 20 << 20)
        assert b"20/20 MiB 100%" in reader.read(200)


def test_to_docker_manifest_refuses_zstd() -> None:
    manifest = oci.manifest(oci.Descriptor(oci.MEDIA_TYPE_CONFIG, "sha256:" + "1" * 64, 1),
                            [oci.Descriptor(oci.MEDIA_TYPE_LAYER_ZSTD, "sha256:" + "2" * 64, 2)])
    with pytest.raises(LayoutError, match="zstd"):
        to_docker_manifest(manifest)


# --- authentication -------------------------------------------------------------------------------


def test_basic_auth(env: Env, image: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    ref = env.basic.ref("basic/img:v1")
    with env.basic.client(auth=env.creds()) as client:
        digest = push(str(image), ref, client).digest
        assert pull(ref, str(tmp_path / "out"), client) == digest
    wrong = "wrong-" + secrets.token_hex(8)
    for creds, who in ((env.creds(wrong), "the credentials from the test"), (None, "anonymous access")):
        with env.basic.client(auth=creds) as client, pytest.raises(RegistryError) as info:
            push(str(image), ref, client)
        message = str(info.value)
        assert "\n" not in message
        assert f"authentication failed with {who}" in message
        assert wrong not in message and env.password not in message
        assert wrong not in repr(info.value) and wrong not in repr(creds)
    logged = caplog.text + "".join(str(r.args) for r in caplog.records)
    for secret in (env.password, wrong, base64.b64encode(f"{USER}:{env.password}".encode()).decode()):
        assert secret not in logged


def test_token_auth_scopes_are_cached(env: Env, image: Path, tmp_path: Path,
                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    tokens = env.tokens
    start = len(tokens.requests)
    push_a = ("repository:tok/a:pull,push",)
    with env.token.client(auth=env.creds()) as client:
        first = push(str(image), env.token.ref("tok/a:v1"), client)
        second = push(str(image), env.token.ref("tok/a:v2"), client)
        assert (first.uploaded, second.uploaded, second.skipped) == (2, 0, 2)
        assert tokens.scope_requests()[start:] == [push_a]  # one token for two pushes
        # a cross-repository mount needs pull on the source too: one more token
        mounted = push(str(image), env.token.ref("tok/b:v1"), client, mount_from="tok/a")
        assert mounted.mounted == 2
        assert tokens.scope_requests()[start + 1:] == [
            ("repository:tok/b:pull,push",), ("repository:tok/a:pull", "repository:tok/b:pull,push")]
        assert pull(env.token.ref("tok/a:v1"), str(tmp_path / "a"), client) == first.digest
        assert len(tokens.requests) == start + 3  # the push token covers the pull
        assert client.auth.token_fetches == 3
    with env.token.client(auth=env.creds()) as client:
        assert pull(env.token.ref("tok/b:v1"), str(tmp_path / "b"), client) == first.digest
        assert pull(env.token.ref("tok/b:v1"), str(tmp_path / "b"), client) == first.digest
    assert tokens.scope_requests()[start + 3:] == [("repository:tok/b:pull",)]
    assert all(r["user"] == USER and r["service"] == SERVICE for r in tokens.requests[start:])
    assert env.password not in caplog.text


def test_token_auth_refusals_hide_secrets(env: Env, image: Path) -> None:
    wrong = "wrong-" + secrets.token_hex(8)
    with env.token.client(auth=env.creds(wrong)) as client, pytest.raises(RegistryError) as info:
        push(str(image), env.token.ref("tok/denied:v1"), client)
    message = str(info.value)
    assert "\n" not in message and wrong not in message and env.password not in message
    assert "token service 127.0.0.1:" in message and "refused the credentials from the test" in message
    # anonymous: a token without access; the registry refuses it
    with env.token.client() as client, pytest.raises(RegistryError) as info:
        push(str(image), env.token.ref("tok/denied:v1"), client)
    assert "authentication failed with anonymous access" in str(info.value)


def test_docker_config_auths(env: Env, image: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    encoded = base64.b64encode(f"{USER}:{env.password}".encode()).decode()
    config_dir = tmp_path / "docker"
    config_dir.mkdir()
    (config_dir / "config.json").write_text(json.dumps({"auths": {
        "other.example:5000": {"auth": base64.b64encode(b"bob:nope").decode()},
        f"http://{env.basic.host}/v2/": {"auth": encoded}}}))
    creds = load_credentials(env.basic.host, docker_config=str(config_dir))
    assert (creds.username, creds.password) == (USER, env.password)
    assert env.password not in repr(creds) and encoded not in repr(creds)
    monkeypatch.setenv("DOCKER_CONFIG", str(config_dir))
    from_env = load_credentials(env.basic.host)
    assert from_env == creds
    with env.basic.client(auth=from_env) as client:
        push(str(image), env.basic.ref("cfg/img:v1"), client)
    assert load_credentials("127.0.0.1:1") == Credentials()  # no entry: anonymous
    assert load_credentials("x.io", username="u", password="p").source == "--username"
    with pytest.raises(SpecError):
        load_credentials("x.io", username="u")
    (config_dir / "config.json").write_text('{"auths": {"a": {"auth": "' + env.password + '"}')
    with pytest.raises(RegistryError) as info:
        load_credentials(env.basic.host)
    assert env.password not in str(info.value) and "not valid JSON" in str(info.value)
    (config_dir / "config.json").write_text(json.dumps({"auths": {env.basic.host: {"auth": "%%%"}}}))
    with pytest.raises(RegistryError, match="malformed base64"):
        load_credentials(env.basic.host)


def _helper(bin_dir: Path, log: Path, server: str, password: str) -> None:
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / "docker-credential-test"
    script.write_text(f"""#!{sys.executable}
import json, sys
assert sys.argv[1:] == ["get"], sys.argv
server = sys.stdin.read()
open({str(log)!r}, "a").write(server + "\\n")
if server != {server!r}:
    print("credentials not found in native keychain")
    sys.exit(1)
print(json.dumps({{"ServerURL": server, "Username": {USER!r}, "Secret": {password!r}}}))
""")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)


def test_credential_helpers(env: Env, image: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "asked"
    _helper(tmp_path / "bin", log, env.token.host, env.password)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    config = tmp_path / "config.json"
    for key, value in (("credHelpers", {env.token.host: "test"}), ("credsStore", "test")):
        config.write_text(json.dumps({key: value, "auths": {env.token.host: {}}}))
        creds = load_credentials(env.token.host, docker_config=str(config))
        assert (creds.username, creds.password) == (USER, env.password)
        assert creds.source == "credential helper docker-credential-test"
        with env.token.client(auth=creds) as client:
            push(str(image), env.token.ref(f"helper/{key.lower()}:v1"), client)
    # the store has nothing for another registry; Docker Hub is asked for by its config key
    assert load_credentials("registry-1.docker.io", docker_config=str(config)) == Credentials()
    assert log.read_text().splitlines() == [env.token.host, env.token.host, "https://index.docker.io/v1/"]
    config.write_text(json.dumps({"credHelpers": {env.token.host: "missing"}}))
    with pytest.raises(RegistryError, match="docker-credential-missing is not on PATH"):
        load_credentials(env.token.host, docker_config=str(config))


def test_challenge_parsing() -> None:
    scheme, params = parse_challenge('Bearer realm="https://auth.example/token",service="reg",'
                                     'scope="repository:a/b:pull,push repository:c:pull",error="x\\"y"')
    assert scheme == "bearer"
    assert params == {"realm": "https://auth.example/token", "service": "reg",
                      "scope": "repository:a/b:pull,push repository:c:pull", "error": 'x"y'}
    assert parse_challenge('Basic realm="r"') == ("basic", {"realm": "r"})
    assert normalize_scopes(["repository:a:push", "repository:a:pull repository:b:pull", ""]) == (
        "repository:a:pull,push", "repository:b:pull")


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_push_verifies_local_blobs(env: Env, image: Path, tmp_path: Path) -> None:
    copy = tmp_path / "img"
    shutil.copytree(image, copy)
    with open_image(str(copy)) as view:
        layer = view.layers[0]
    blob = copy / "blobs/sha256" / layer.hex
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    with env.open.client() as client, pytest.raises(DigestMismatchError, match="local content") as info:
        push(str(copy), env.open.ref("localbad/img:v1"), client)
    assert "\n" not in str(info.value)
    with env.open.client() as client:
        assert not client.blob_exists("localbad/img", layer.digest)
        assert not client.blob_exists("localbad/img", _sha(bytes(data)))
        with pytest.raises(RegistryError, match="MANIFEST_UNKNOWN"):
            client.get_manifest("localbad/img", "v1")


def test_cli_push_then_pull(env: Env, image: Path, tmp_path: Path) -> None:
    """`microcontainer push` prints the digest build printed; `pull` gets the same image back."""
    built = json.loads(run_cli("inspect", "--json", str(image)).stdout)["manifest_digest"]
    ref = f"{env.open.host}/cli/true:v1"
    proc = run_cli("push", str(image), ref, "--plain-http", "-q")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == built
    again = run_cli("push", str(image), ref, "--plain-http")
    assert again.returncode == 0 and "0 uploaded" in again.stdout, again.stdout
    out = tmp_path / "pulled"
    proc = run_cli("pull", ref, "-o", str(out), "--plain-http")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(run_cli("inspect", "--json", str(out)).stdout)["manifest_digest"] == built
    refused = run_cli("pull", f"{env.basic.host}/cli/true:v1", "-o", str(tmp_path / "x"), "--plain-http")
    assert_one_line_error(refused)
    assert not (tmp_path / "x").exists()
