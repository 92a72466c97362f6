"""Artifacts attached to images as OCI 1.1 referrers: layouts, rebuilds, GC, push, pull, ``build --sbom``.

The layout tests use arbitrary bytes (the attach layer does not care what an
artifact holds); umoci, skopeo and oci-image-tool must still read a layout
with a referrer; the registry tests push to Debian's ``docker-registry``
(distribution 2.8: no referrers API, so the referrers tag schema is used) and
check the result with skopeo.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import have, run_cli
from scanners import syft_scan

from microcontainer_tool.errors import LayoutError
from microcontainer_tool.model.tree import Entry, EntryKind, FileTree, InlineContent, Provenance
from microcontainer_tool.oci import model as oci
from microcontainer_tool.oci.imageview import open_image
from microcontainer_tool.oci.layout import sync_layout_from_archive, write_tree_image
from microcontainer_tool.oci.referrers import (
    EMPTY_DESCRIPTOR,
    EMPTY_JSON,
    MEDIA_TYPE_EMPTY,
    REFERRERS_ANNOTATION,
    attach,
    referrers,
    referrers_tag,
    surviving_referrers,
)
from microcontainer_tool.oci.store import LayoutStore
from microcontainer_tool.registry.transfer import pull, push

CDX = "application/vnd.cyclonedx+json"
SPDX = "application/spdx+json"
EPOCH = 1700000000


def _tree(text: bytes) -> FileTree:
    tree = FileTree()
    why = (Provenance("test"),)
    tree.add(Entry("/etc/data", EntryKind.FILE, 0o644, InlineContent(text), provenance=why))
    tree.add_parents(Provenance("parent"))
    return tree


def _config(layer: Any) -> dict[str, Any]:
    return oci.image_config(architecture="amd64", diff_ids=[layer.diff_id], created=EPOCH, cmd=["/bin/x"])


def _build(out: Path, text: bytes = b"one\n", fmt: str | None = None) -> str:
    result = write_tree_image(str(out), fmt, _tree(text), "gzip", EPOCH, _config, "latest", "img")
    return result.manifest_digest


def _index(layout: Path) -> list[dict[str, Any]]:
    return json.loads((layout / "index.json").read_bytes())["manifests"]


def _nested(layout: Path) -> list[dict[str, Any]]:
    """The referrers index of the layout's one image (named by its ``index.json`` entry)."""
    [entry] = _index(layout)
    index = json.loads(_blob(layout, entry["annotations"][REFERRERS_ANNOTATION]))
    assert index["mediaType"] == oci.MEDIA_TYPE_INDEX and index["schemaVersion"] == 2
    return index["manifests"]


def _blob(layout: Path, digest: str) -> bytes:
    return (layout / "blobs/sha256" / digest.split(":", 1)[1]).read_bytes()


def _blobs(layout: Path) -> set[str]:
    return {"sha256:" + n for n in os.listdir(layout / "blobs/sha256")}


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture()
def layout(tmp_path: Path) -> tuple[Path, str]:
    out = tmp_path / "img"
    return out, _build(out)


# --- attach and referrers -----------------------------------------------------------------------


def test_attach_writes_an_oci_1_1_artifact_manifest(layout: tuple[Path, str]) -> None:
    out, subject = layout
    desc = attach(str(out), subject, b"sbom bytes", CDX, {"x.note": "hi"}, epoch=EPOCH, title="sbom.cdx.json")
    data = _blob(out, desc.digest)
    assert data == oci.canonical_json(json.loads(data))  # canonical JSON
    manifest = json.loads(data)
    subject_entry = _index(out)[0]
    assert manifest == {
        "schemaVersion": 2,
        "mediaType": oci.MEDIA_TYPE_MANIFEST,
        "artifactType": CDX,
        "config": {"mediaType": MEDIA_TYPE_EMPTY, "size": 2,
                   "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"},
        "layers": [{"mediaType": CDX, "digest": oci.sha256_digest(b"sbom bytes"), "size": 10,
                    "annotations": {"org.opencontainers.image.title": "sbom.cdx.json"}}],
        "subject": {"mediaType": oci.MEDIA_TYPE_MANIFEST, "digest": subject, "size": subject_entry["size"]},
        "annotations": {"x.note": "hi", "org.opencontainers.image.created": "2023-11-14T22:13:20Z"},
    }
    assert _blob(out, EMPTY_DESCRIPTOR.digest) == EMPTY_JSON == b"{}"
    assert _blob(out, oci.sha256_digest(b"sbom bytes")) == b"sbom bytes"
    # index.json lists the image only; its entry names the referrers index (an OCI image index)
    [entry] = _index(out)
    assert entry["digest"] == subject and entry["annotations"][oci.ANNOTATION_REF_NAME] == "latest"
    assert _nested(out) == [{"mediaType": oci.MEDIA_TYPE_MANIFEST, "digest": desc.digest, "size": len(data),
                             "artifactType": CDX, "annotations": manifest["annotations"]}]
    assert referrers(str(out), subject) == [desc]
    assert referrers(str(out), desc.digest) == []


def test_attach_without_epoch_has_no_created_annotation(layout: tuple[Path, str]) -> None:
    out, subject = layout
    desc = attach(str(out), subject, b"x", CDX)
    assert "annotations" not in json.loads(_blob(out, desc.digest))
    assert "annotations" not in _nested(out)[0]


def test_attach_is_deterministic_and_idempotent(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    subject = _build(one)
    assert _build(two) == subject
    first = attach(str(one), subject, b"data", CDX, epoch=0)
    before = _tree_bytes(one)
    again = attach(str(one), subject, b"data", CDX, epoch=0)
    assert again == first and _tree_bytes(one) == before
    attach(str(two), subject, b"data", CDX, epoch=0)
    assert _tree_bytes(two) == before


def test_same_artifact_type_replaces_and_its_blobs_go(layout: tuple[Path, str]) -> None:
    out, subject = layout
    old = attach(str(out), subject, b"old sbom", CDX)
    spdx = attach(str(out), subject, b"spdx sbom", SPDX)
    new = attach(str(out), subject, b"new sbom", CDX)
    assert new != old
    assert {d.digest for d in referrers(str(out), subject)} == {spdx.digest, new.digest}
    blobs = _blobs(out)
    assert old.digest not in blobs and oci.sha256_digest(b"old sbom") not in blobs
    assert EMPTY_DESCRIPTOR.digest in blobs  # still the config of the others
    assert oci.sha256_digest(b"spdx sbom") in blobs and oci.sha256_digest(b"new sbom") in blobs


def test_index_order_does_not_depend_on_attach_order(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    subject = _build(one)
    _build(two)
    attach(str(one), subject, b"a", CDX)
    attach(str(one), subject, b"b", SPDX)
    attach(str(two), subject, b"b", SPDX)
    attach(str(two), subject, b"a", CDX)
    assert (one / "index.json").read_bytes() == (two / "index.json").read_bytes()
    assert _index(one)[0]["digest"] == subject


def test_a_referrer_of_a_referrer(layout: tuple[Path, str]) -> None:
    out, subject = layout
    sbom = attach(str(out), subject, b"sbom", CDX)
    sig = attach(str(out), sbom.digest, b"signature", "application/vnd.example.sig")
    assert referrers(str(out), sbom.digest) == [sig]
    assert json.loads(_blob(out, sig.digest))["subject"]["digest"] == sbom.digest


def test_referrers_listed_in_index_json_are_read_and_moved_to_the_referrers_index(
        layout: tuple[Path, str]) -> None:
    """The OCI 1.1 form other tools write (referrer manifests in ``index.json``) is read, then rewritten."""
    out, subject = layout
    sbom = attach(str(out), subject, b"sbom", CDX)
    [entry] = _index(out)
    nested = _nested(out)
    del entry["annotations"][REFERRERS_ANNOTATION]
    (out / "index.json").write_bytes(oci.canonical_json(
        {"schemaVersion": 2, "mediaType": oci.MEDIA_TYPE_INDEX, "manifests": [entry, *nested]}))
    os.unlink(out / "blobs/sha256" / hashlib.sha256(oci.canonical_json(
        {"schemaVersion": 2, "mediaType": oci.MEDIA_TYPE_INDEX, "manifests": nested})).hexdigest())
    assert referrers(str(out), subject) == [sbom]
    with open_image(str(out)) as view:
        assert view.manifest_digest == subject
    spdx = attach(str(out), subject, b"spdx", SPDX)
    assert [e["digest"] for e in _index(out)] == [subject]
    assert {e["digest"] for e in _nested(out)} == {sbom.digest, spdx.digest}
    assert {d.digest for d in referrers(str(out), subject)} == {sbom.digest, spdx.digest}


def test_attach_refuses_bad_input(layout: tuple[Path, str], tmp_path: Path) -> None:
    out, subject = layout
    with pytest.raises(LayoutError, match="no manifest"):
        attach(str(out), "sha256:" + "0" * 64, b"x", CDX)
    with pytest.raises(LayoutError, match="artifact type"):
        attach(str(out), subject, b"x", "not a media type")
    with pytest.raises(LayoutError, match="malformed digest"):
        attach(str(out), "sha256:xyz", b"x", CDX)
    (tmp_path / "empty").mkdir()
    with pytest.raises(LayoutError, match="not an OCI image layout"):
        attach(str(tmp_path / "empty"), subject, b"x", CDX)
    assert os.listdir(tmp_path / "empty") == []


# --- the rest of the tool with referrers in the index -------------------------------------------


def test_open_image_skips_referrers(layout: tuple[Path, str]) -> None:
    out, subject = layout
    attach(str(out), subject, b"x", CDX)
    attach(str(out), subject, b"y", SPDX)
    with open_image(str(out)) as view:
        assert view.manifest_digest == subject
    with open_image(f"{out}:latest") as view:
        assert view.manifest_digest == subject
    proc = run_cli("inspect", str(out))
    assert proc.returncode == 0, proc.stderr
    assert f"manifest  {subject}" in proc.stdout


def test_rebuild_keeps_referrers_of_the_same_image(layout: tuple[Path, str]) -> None:
    out, subject = layout
    desc = attach(str(out), subject, b"sbom", CDX)
    before = _tree_bytes(out)
    assert _build(out) == subject
    assert _tree_bytes(out) == before
    assert referrers(str(out), subject) == [desc]


def test_rebuild_of_a_changed_image_drops_stale_referrers_and_their_blobs(layout: tuple[Path, str]) -> None:
    out, subject = layout
    sbom = attach(str(out), subject, b"stale sbom", CDX)
    sig = attach(str(out), sbom.digest, b"stale sig", "application/vnd.example.sig")
    new = _build(out, b"two\n")
    assert new != subject
    assert [e["digest"] for e in _index(out)] == [new]
    blobs = _blobs(out)
    for gone in (sbom.digest, sig.digest, oci.sha256_digest(b"stale sbom"), oci.sha256_digest(b"stale sig"),
                 EMPTY_DESCRIPTOR.digest, subject):
        assert gone not in blobs
    with open_image(str(out)) as view:
        assert view.manifest_digest == new
        for number in range(len(view.layers)):
            view.verify_blob(view.layers[number])


def test_gc_keeps_the_blobs_of_kept_referrers_and_chains(layout: tuple[Path, str]) -> None:
    out, subject = layout
    sbom = attach(str(out), subject, b"sbom", CDX)
    sig = attach(str(out), sbom.digest, b"sig", "application/vnd.example.sig")
    orphan = LayoutStore(str(out)).put_blob(b"orphan")
    kept, blobs = surviving_referrers(str(out), [subject])
    # Referrers are ordered by (subject digest, artifact type, digest): which
    # comes first depends on the digests' values, not on the chain.
    order = sorted([(subject, CDX, sbom.digest), (sbom.digest, "application/vnd.example.sig", sig.digest)])
    assert [e.desc.digest for e in kept] == [digest for _subject, _type, digest in order]
    assert set(blobs) == {sbom.digest, sig.digest, EMPTY_DESCRIPTOR.digest, oci.sha256_digest(b"sbom"),
                          oci.sha256_digest(b"sig")}
    assert surviving_referrers(str(out), ["sha256:" + "1" * 64]) == ([], [])
    _build(out)
    assert orphan.digest not in _blobs(out)
    assert set(blobs) <= _blobs(out)
    assert [e["digest"] for e in _index(out)] == [subject]
    assert {e["digest"] for e in _nested(out)} == {sbom.digest, sig.digest}  # the chain, transitively
    assert referrers(str(out), subject) == [sbom] and referrers(str(out), sbom.digest) == [sig]


def test_a_referrer_with_a_missing_blob_is_dropped_on_rebuild(layout: tuple[Path, str]) -> None:
    out, subject = layout
    attach(str(out), subject, b"sbom", CDX)
    os.unlink(out / "blobs/sha256" / oci.sha256_digest(b"sbom").split(":")[1])
    _build(out)
    assert [e["digest"] for e in _index(out)] == [subject]


def test_scons_sync_keeps_referrers_of_the_archived_image(tmp_path: Path) -> None:
    out = tmp_path / "img"
    archive = tmp_path / "img.tar"
    subject = _build(archive)
    assert sync_layout_from_archive(str(archive), str(out)) == subject
    desc = attach(str(out), subject, b"sbom", CDX)
    assert sync_layout_from_archive(str(archive), str(out)) == subject
    assert referrers(str(out), subject) == [desc]
    assert oci.sha256_digest(b"sbom") in _blobs(out)
    changed = _build(archive, b"changed\n")
    assert sync_layout_from_archive(str(archive), str(out)) == changed
    assert [e["digest"] for e in _index(out)] == [changed]
    assert desc.digest not in _blobs(out) and oci.sha256_digest(b"sbom") not in _blobs(out)


@pytest.mark.skipif(not have("umoci", "skopeo", "oci-image-tool"),
                    reason="needs umoci, skopeo, oci-image-tool")
def test_external_tools_read_a_layout_with_referrers(layout: tuple[Path, str], tmp_path: Path) -> None:
    out, subject = layout
    sbom = attach(str(out), subject, b'{"bomFormat":"CycloneDX"}', CDX, epoch=0)
    _check_tools(out, subject, tmp_path / "one")
    # more referrers, and a referrer of a referrer: umoci and skopeo still read the image
    attach(str(out), subject, b'{"spdxVersion":"SPDX-2.3"}', SPDX, epoch=0)
    attach(str(out), sbom.digest, b"sig", "application/vnd.example.sig")
    _check_tools(out, subject, tmp_path / "three")


def _check_tools(out: Path, subject: str, work: Path) -> None:
    """umoci unpacks, skopeo inspects, oci-image-tool validates and syft scans the layout.

    Without a tag or ref too: ``index.json`` lists the image only (its referrers
    are in the index blob its entry names). oci-image-tool 1.0.0-rc1 calls the
    type ``image`` (``--type imageLayout`` is "unimplemented"; ``image``
    autodetects a layout) and validates every entry when given no ref.
    """
    def ok(*args: str) -> str:
        proc = subprocess.run(list(args), capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, f"{args}: {proc.stderr}"
        return proc.stdout

    work.mkdir(parents=True, exist_ok=True)
    ok("umoci", "unpack", "--image", f"{out}:latest", str(work / "bundle"))
    assert (work / "bundle/rootfs").is_dir()
    assert json.loads(ok("skopeo", "inspect", f"oci:{out}:latest"))["Digest"] == subject
    assert json.loads(ok("skopeo", "inspect", f"oci:{out}"))["Digest"] == subject
    assert "Validation succeeded" in ok("oci-image-tool", "validate", "--type", "image", "--ref",
                                        "name=latest", str(out))
    assert "Validation succeeded" in ok("oci-image-tool", "validate", "--type", "image", str(out))
    document = syft_scan(f"oci-dir:{out}", work / "syft")
    assert document["source"]["metadata"]["manifestDigest"] == subject


# --- build --sbom ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def spec_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("spec")
    (work / "microimage.yaml").write_text("paths: [/usr/bin/true]\ncmd: [/usr/bin/true]\n")
    return work


def _cli_build(spec_dir: Path, out: Path, *extra: str, env: dict[str, str] | None = None) -> str:
    proc = run_cli("build", "-c", str(spec_dir / "microimage.yaml"), "-o", str(out), *extra, env=env)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_build_sbom_into_a_layout(spec_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "img"
    stdout = _cli_build(spec_dir, out, "--sbom", env={"SOURCE_DATE_EPOCH": "0"})
    side = tmp_path / "img.cdx.json"
    assert side.is_file() and f"sbom     {side}, attached as sha256:" in stdout
    with open_image(str(out)) as view:
        subject = view.manifest_digest
    [desc] = referrers(str(out), subject)
    manifest = json.loads(_blob(out, desc.digest))
    assert manifest["artifactType"] == CDX
    assert manifest["annotations"] == {"org.opencontainers.image.created": "1970-01-01T00:00:00Z"}
    assert _blob(out, manifest["layers"][0]["digest"]) == side.read_bytes()
    assert manifest["layers"][0]["annotations"] == {"org.opencontainers.image.title": "sbom.cdx.json"}
    json.loads(side.read_bytes())
    # rebuilding with the same inputs changes nothing; spdx is attached beside cyclonedx
    before = _tree_bytes(out)
    _cli_build(spec_dir, out, "--sbom", "cyclonedx", env={"SOURCE_DATE_EPOCH": "0"})
    assert _tree_bytes(out) == before
    if have("umoci", "skopeo", "oci-image-tool"):
        _check_tools(out, subject, tmp_path / "tools")
    _cli_build(spec_dir, out, "--sbom", "spdx", env={"SOURCE_DATE_EPOCH": "0"})
    assert (tmp_path / "img.spdx.json").is_file()
    assert sorted(d.artifact_type for d in referrers(str(out), subject)) == [SPDX, CDX]  # type: ignore[attr-defined]
    assert not [n for n in os.listdir(tmp_path) if ".tmp-" in n]
    proc = run_cli("inspect", str(out))
    assert proc.returncode == 0 and subject in proc.stdout, proc.stderr


def test_build_sbom_into_archives_writes_only_the_side_file(spec_dir: Path, tmp_path: Path) -> None:
    archives = (("img.tar", ()), ("img.tar.gz", ()), ("img-docker.tar", ("--format", "docker-archive")))
    for name, extra in archives:
        out = tmp_path / name
        stdout = _cli_build(spec_dir, out, "--sbom", "spdx", *extra)
        side = tmp_path / f"{name}.spdx.json"
        assert side.is_file() and f"sbom     {side}\n" in stdout
        json.loads(side.read_bytes())
        if name.endswith(".tar") and "docker" not in name:
            with tarfile.open(out) as tar:
                index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
            assert len(index["manifests"]) == 1


# --- registries -----------------------------------------------------------------------------------


need_registry = pytest.mark.skipif(not have("docker-registry", "skopeo"),
                                   reason="needs docker-registry and skopeo")


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    if not have("docker-registry", "skopeo"):
        pytest.skip("needs docker-registry and skopeo")
    from registry_env import Registry

    reg = Registry(tmp_path_factory.mktemp("registry"), "open", None)
    try:
        yield reg
    finally:
        reg.stop()


def _skopeo_raw(ref: str) -> dict[str, Any]:
    proc = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@need_registry
def test_push_sends_referrers_with_the_tag_schema(registry: Any, layout: tuple[Path, str],
                                                  tmp_path: Path) -> None:
    out, subject = layout
    sbom = attach(str(out), subject, b'{"sbom":1}', CDX, epoch=0)
    spdx = attach(str(out), subject, b'{"spdx":1}', SPDX, epoch=0)
    sig = attach(str(out), sbom.digest, b"sig", "application/vnd.example.sig")  # the SBOM's: pushed too
    with registry.client() as client:
        first = push(str(out), registry.ref("ref/app:v1"), client)
        assert first.digest == subject and first.referrers == 3
        assert first.uploaded == 2 + 4  # config and layer; empty config, two SBOMs and the SBOM's signature
        fallback = _skopeo_raw(f"{registry.host}/ref/app:{referrers_tag(subject)}")
        assert fallback["mediaType"] == oci.MEDIA_TYPE_INDEX
        listed = {e["digest"]: e for e in fallback["manifests"]}
        assert set(listed) == {sbom.digest, spdx.digest} and sig.digest not in listed
        assert listed[sbom.digest]["artifactType"] == CDX
        of_sbom = _skopeo_raw(f"{registry.host}/ref/app:{referrers_tag(sbom.digest)}")["manifests"]
        assert [e["digest"] for e in of_sbom] == [sig.digest]
        created = {"org.opencontainers.image.created": "1970-01-01T00:00:00Z"}
        assert listed[sbom.digest]["annotations"] == created
        artifact = _skopeo_raw(f"{registry.host}/ref/app@{sbom.digest}")
        assert artifact["subject"] == {"mediaType": oci.MEDIA_TYPE_MANIFEST, "digest": subject,
                                       "size": _index(out)[0]["size"]}
        assert artifact["artifactType"] == CDX
        again = push(str(out), registry.ref("ref/app:v1"), client)
        assert (again.uploaded, again.referrers, again.skipped) == (0, 3, 6)
        assert _skopeo_raw(f"{registry.host}/ref/app:{referrers_tag(subject)}") == fallback
        # a new artifact is merged into the existing list
        other = attach(str(out), subject, b"other", "application/vnd.example.other")
        third = push(str(out), registry.ref("ref/app:v1"), client)
        assert (third.uploaded, third.referrers) == (1, 4)
        merged = _skopeo_raw(f"{registry.host}/ref/app:{referrers_tag(subject)}")
        assert [e["digest"] for e in merged["manifests"]] == [e["digest"] for e in fallback["manifests"]] + [
            other.digest]

        # pull brings them back, verified, and the pulled layout is a good layout
        pulled = tmp_path / "pulled"
        assert pull(registry.ref("ref/app:v1"), str(pulled), client) == subject
        assert {d.digest for d in referrers(str(pulled), subject)} == {sbom.digest, spdx.digest, other.digest}
        assert [d.digest for d in referrers(str(pulled), sbom.digest)] == [sig.digest]  # a referrer's, too
        assert _blob(pulled, oci.sha256_digest(b'{"sbom":1}')) == b'{"sbom":1}'
        with open_image(str(pulled)) as view:
            assert view.manifest_digest == subject
        assert pull(registry.ref("ref/app:v1"), str(tmp_path / "pulled.tar"), client) == subject
        with tarfile.open(tmp_path / "pulled.tar") as tar:
            names = tar.getnames()
        assert f"blobs/sha256/{sbom.hex}" in names
        assert f"blobs/sha256/{oci.sha256_digest(b'other')[7:]}" in names


@need_registry
def test_push_without_referrers_and_docker_media_types(registry: Any, layout: tuple[Path, str]) -> None:
    out, subject = layout
    with registry.client() as client:
        plain = push(str(out), registry.ref("ref/plain:v1"), client)
        assert plain.referrers == 0
        attach(str(out), subject, b"x", CDX)
        docker = push(str(out), registry.ref("ref/docker:v1"), client, docker_media_types=True)
        assert docker.digest != subject and docker.referrers == 0  # the subject is not what was pushed
        assert referrers_tag(docker.digest) not in client.tags("ref/docker")


@need_registry
def test_cli_push_prints_the_referrers(registry: Any, layout: tuple[Path, str]) -> None:
    out, subject = layout
    attach(str(out), subject, b"x", CDX)
    proc = run_cli("push", "--plain-http", str(out), f"{registry.host}/ref/cli:v1")
    assert proc.returncode == 0, proc.stderr
    assert "referrers 1 pushed" in proc.stdout


class _Response:
    def __init__(self, status: int, body: bytes = b"") -> None:
        self.status_code = status
        self.content = body

    def __enter__(self) -> _Response:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


class _FakeClient:
    """Just enough of RegistryClient for push_referrers: a registry whose referrers API answers ``api``."""

    registry = "fake.example"
    base_url = "https://fake.example"

    def __init__(self, api: int) -> None:
        self.api = api
        self.gets: list[str] = []
        self.puts: list[tuple[str, str]] = []

    def _send(self, method: str, url: str, scopes: list[str], **kwargs: Any) -> _Response:
        self.gets.append(url)
        if "/referrers/" in url:
            body = oci.canonical_json(oci.index([])) if self.api == 200 else b"<html>"
            return _Response(self.api, body)
        return _Response(404)

    def _fail(self, what: str, response: _Response) -> Exception:
        return RuntimeError(what)

    def put_manifest(self, repo: str, ref: str, data: bytes, media_type: str) -> str:
        self.puts.append((ref, media_type))
        return oci.sha256_digest(data)


@pytest.mark.parametrize("api", [200, 404, 405, 400])
def test_the_tag_schema_only_without_the_referrers_api(api: int, layout: tuple[Path, str]) -> None:
    from microcontainer_tool.registry.referrers import push_referrers

    out, subject = layout
    desc = attach(str(out), subject, b"x", CDX)
    client = _FakeClient(api)
    sent: list[str] = []
    result = push_referrers(client, "repo", str(out), subject, lambda d, path: sent.append(d.digest))
    assert sorted(sent) == sorted([EMPTY_DESCRIPTOR.digest, oci.sha256_digest(b"x")])
    assert client.puts[0] == (desc.digest, oci.MEDIA_TYPE_MANIFEST)
    assert result.pushed == 1 and result.api == (api == 200)
    if api == 200:
        assert len(client.puts) == 1 and not result.tag_updated
    else:
        assert client.puts[1] == (referrers_tag(subject), oci.MEDIA_TYPE_INDEX) and result.tag_updated
