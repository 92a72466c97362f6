"""Tests of the layout store and the output formats, checked with real tools.

oci-image-tool, umoci and skopeo read what we write; tests skip only when a
tool is not installed.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest
from test_layer import LONG_NAME, UNICODE_NAME, sample_tree

from microcontainer_tool.errors import DigestMismatchError, LayoutError, SourceError
from microcontainer_tool.model.tree import FileTree, HostFile
from microcontainer_tool.oci import model as oci
from microcontainer_tool.oci.layer import LayerInfo, write_layer
from microcontainer_tool.oci.layout import (
    FORMATS,
    ImageResult,
    format_for_path,
    image_name,
    split_reference,
    write_image,
    write_tree_image,
)
from microcontainer_tool.oci.store import LayoutStore

TAG = "v1.2"
NAME = "example.com/team/app"
EPOCH = 1700000000
OUTPUTS = {"oci": "img", "oci-archive": "img.tar", "smith": "img.tar.gz", "docker-archive": "img-docker.tar"}


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed")
    return path


def run(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(args), capture_output=True, text=True, timeout=120, **kwargs)
    assert result.returncode == 0, f"{args[0]} failed: {result.stderr.strip()}"
    return result


def make_config(layer: LayerInfo) -> dict[str, Any]:
    return oci.image_config(architecture="amd64", diff_ids=[layer.diff_id], created=EPOCH,
                            entrypoint=["/bin/app"], env=["PATH=/usr/bin:/bin"], user="65534:65534")


def build(tree: FileTree, out: Path, fmt: str | None = None, compression: str = "gzip") -> ImageResult:
    return write_tree_image(str(out), fmt, tree, compression, EPOCH, make_config, TAG, NAME)


@pytest.fixture()
def tree(tmp_path: Path) -> FileTree:
    return sample_tree(tmp_path / "host")


@pytest.fixture()
def out_dir(tmp_path: Path) -> Path:
    path = tmp_path / "out"
    path.mkdir()
    return path


def validate_layout(path: Path) -> None:
    need("oci-image-tool")
    result = run("oci-image-tool", "validate", "--type", "image", "--ref", f"name={TAG}", str(path))
    assert "Validation succeeded" in result.stdout + result.stderr


def check_unpacked(rootfs: Path) -> None:
    """What umoci (or tar) unpacked is exactly the sample tree."""
    assert os.stat(rootfs / "bin/app").st_mode & 0o7777 == 0o755
    assert os.stat(rootfs / "lib/libfoo.so.1").st_mode & 0o7777 == 0o644
    assert os.stat(rootfs / "usr/bin").st_mode & 0o7777 == 0o755
    assert os.readlink(rootfs / "lib/libfoo.so") == "libfoo.so.1"
    one, two = os.stat(rootfs / "usr/bin/one"), os.stat(rootfs / "usr/bin/two")
    assert one.st_ino == two.st_ino and one.st_nlink == 2
    assert (rootfs / "usr/bin/one").read_bytes() == b"#!/bin/sh\necho one\n"
    assert (rootfs / UNICODE_NAME).read_text() == "non-ASCII name\n"
    assert (rootfs / LONG_NAME).read_bytes() == b"long path\n"
    assert (rootfs / "etc/passwd").read_bytes() == b"root:x:0:0::/:/bin/sh\n"
    assert os.path.getsize(rootfs / "usr/bin/big") == 2_700_000
    assert os.stat(rootfs / "bin/app").st_uid == 0


def umoci_unpack(layout: Path, bundle: Path) -> Path:
    need("umoci")
    args = ["umoci", "unpack", "--image", f"{layout}:{TAG}", str(bundle)]
    if os.geteuid() != 0:
        args.insert(2, "--rootless")
    run(*args)
    return bundle / "rootfs"


def snapshot(path: Path) -> dict[str, bytes]:
    """Every file under (or at) ``path``: relative name -> bytes."""
    if path.is_file():
        return {"": path.read_bytes()}
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_format_for_path() -> None:
    assert format_for_path("out") == "oci"
    assert format_for_path("out/") == "oci"
    assert format_for_path("img.v1") == "oci"
    assert format_for_path("img.tar") == "oci-archive"
    assert format_for_path("IMG.TAR") == "oci-archive"
    assert format_for_path("img.tar.gz") == "smith"
    assert format_for_path("img.tgz") == "smith"
    assert format_for_path("img.tar", "docker-archive") == "docker-archive"
    assert set(FORMATS) == {"oci", "oci-archive", "smith", "docker-archive"}
    with pytest.raises(LayoutError):
        format_for_path("x", "tarball")


def test_oci_layout_validates_unpacks_and_inspects(tree: FileTree, out_dir: Path) -> None:
    layout = out_dir / "img"
    result = build(tree, layout)
    assert result.format == "oci"
    validate_layout(layout)
    assert json.loads((layout / "oci-layout").read_bytes()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((layout / "index.json").read_bytes())
    assert index == {
        "schemaVersion": 2,
        "mediaType": oci.MEDIA_TYPE_INDEX,
        "manifests": [{
            "mediaType": oci.MEDIA_TYPE_MANIFEST,
            "digest": result.manifest_digest,
            "size": result.manifest_size,
            "annotations": {oci.ANNOTATION_REF_NAME: TAG,
                            oci.ANNOTATION_CONTAINERD_NAME: "example.com/team/app:v1.2"},
            "platform": {"architecture": "amd64", "os": "linux"},
        }],
    }
    for blob in (layout / "blobs/sha256").iterdir():
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name
    assert sorted(p.name for p in (layout / "blobs/sha256").iterdir()) == sorted(
        d.split(":")[1] for d in (result.manifest_digest, result.config_digest, result.layer.digest))
    check_unpacked(umoci_unpack(layout, out_dir / "bundle"))
    need("skopeo")
    info = json.loads(run("skopeo", "inspect", f"oci:{layout}:{TAG}").stdout)
    assert info["Digest"] == result.manifest_digest
    assert info["Architecture"] == "amd64" and info["Os"] == "linux"
    assert info["Layers"] == [result.layer.digest]
    assert info["Created"] == "2023-11-14T22:13:20Z"


def test_oci_archive(tree: FileTree, out_dir: Path) -> None:
    archive = out_dir / "img.tar"
    result = build(tree, archive)
    assert result.format == "oci-archive"
    need("tar")
    listing = run("tar", "tvf", str(archive), env={**os.environ, "TZ": "UTC"}).stdout.splitlines()
    names = [line.split()[-1] for line in listing]
    assert names == sorted(names, key=lambda n: tuple(n.rstrip("/").split("/")))
    assert names[:2] == ["blobs/", "blobs/sha256/"] and names[-2:] == ["index.json", "oci-layout"]
    assert all(" 0/0 " in line and "1970-01-01 00:00" in line for line in listing)
    assert all(line.startswith(("-rw-r--r--", "drwxr-xr-x")) for line in listing)
    extracted = out_dir / "x"
    extracted.mkdir()
    run("tar", "xf", str(archive), "-C", str(extracted))
    validate_layout(extracted)
    need("skopeo")
    info = json.loads(run("skopeo", "inspect", f"oci-archive:{archive}:{TAG}").stdout)
    assert info["Digest"] == result.manifest_digest


def test_smith_tar_gz(tree: FileTree, out_dir: Path) -> None:
    archive = out_dir / "img.tgz"
    result = build(tree, archive)
    assert result.format == "smith"
    data = archive.read_bytes()
    assert data[:10] == b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    plain = gzip.decompress(data)
    (out_dir / "plain.tar").write_bytes(plain)
    with tarfile.open(out_dir / "plain.tar") as tar:
        assert {m.uname for m in tar} == {""} and {m.mtime for m in tar} == {0}
    need("tar")
    extracted = out_dir / "x"
    extracted.mkdir()
    run("tar", "xzf", str(archive), "-C", str(extracted))
    validate_layout(extracted)
    check_unpacked(umoci_unpack(extracted, out_dir / "bundle"))
    index = json.loads((extracted / "index.json").read_bytes())
    assert index["manifests"][0]["digest"] == result.manifest_digest


def test_docker_archive(tree: FileTree, out_dir: Path) -> None:
    archive = out_dir / "img-docker.tar"
    result = build(tree, archive, "docker-archive")
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        repositories = json.load(tar.extractfile("repositories"))  # type: ignore[arg-type]
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
    assert {"oci-layout", "index.json", "manifest.json", "repositories"} <= set(names)
    config_hex, layer_hex = result.config_digest.split(":")[1], result.layer.digest.split(":")[1]
    assert manifest == [{"Config": f"blobs/sha256/{config_hex}", "RepoTags": [f"{NAME}:{TAG}"],
                         "Layers": [f"blobs/sha256/{layer_hex}"]}]
    assert repositories == {NAME: {TAG: layer_hex}}
    assert index["manifests"][0]["annotations"] == {
        oci.ANNOTATION_REF_NAME: TAG, oci.ANNOTATION_CONTAINERD_NAME: f"{NAME}:{TAG}"}
    need("skopeo")
    info = json.loads(run("skopeo", "inspect", f"docker-archive:{archive}").stdout)
    assert info["Layers"] == [result.layer.diff_id]  # skopeo presents docker-archive layers uncompressed
    assert info["Architecture"] == "amd64"
    copy = out_dir / "copy"
    run("skopeo", "copy", f"docker-archive:{archive}", f"oci:{copy}:{TAG}")
    check_unpacked(umoci_unpack(copy, out_dir / "bundle"))


def test_docker_load_if_daemon(tree: FileTree, out_dir: Path) -> None:
    docker = need("docker")
    if subprocess.run([docker, "info"], capture_output=True, timeout=30).returncode != 0:
        pytest.skip("no docker daemon reachable")
    archive = out_dir / "img-docker.tar"
    result = build(tree, archive, "docker-archive")
    loaded = run(docker, "load", "-i", str(archive))
    assert f"{NAME}:{TAG}" in loaded.stdout
    image = json.loads(run(docker, "image", "inspect", f"{NAME}:{TAG}").stdout)[0]
    assert image["RootFS"]["Layers"] == [result.layer.diff_id]
    run(docker, "rmi", f"{NAME}:{TAG}")


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_is_reproducible(tmp_path: Path, fmt: str, monkeypatch: pytest.MonkeyPatch) -> None:
    first_dir, second_dir = tmp_path / "one", tmp_path / "two"
    first_dir.mkdir()
    second_dir.mkdir()
    first = build(sample_tree(tmp_path / "host-a", mtime=1_000_000_000), first_dir / OUTPUTS[fmt], fmt)
    old_umask = os.umask(0o027)
    try:
        monkeypatch.setenv("TZ", "Asia/Kathmandu")
        time.tzset()
        monkeypatch.chdir(second_dir)
        second = build(sample_tree(tmp_path / "host-b", mtime=1_555_555_555), Path(OUTPUTS[fmt]), fmt)
    finally:
        os.umask(old_umask)
        monkeypatch.undo()
        time.tzset()
    assert first.manifest_digest == second.manifest_digest
    assert first.layer == second.layer
    assert snapshot(first_dir / OUTPUTS[fmt]) == snapshot(second_dir / OUTPUTS[fmt])


def test_compressions_give_distinct_layers_same_diff_id(tree: FileTree, out_dir: Path) -> None:
    results = {c: build(tree, out_dir / f"img-{c}", compression=c) for c in ("gzip", "zstd", "none")}
    assert len({r.layer.diff_id for r in results.values()}) == 1
    assert len({r.layer.digest for r in results.values()}) == 3
    assert results["zstd"].layer.media_type.endswith("+zstd")
    validate_layout(out_dir / "img-none")


@pytest.mark.parametrize("fmt", FORMATS)
def test_failed_build_keeps_previous_output(tmp_path: Path, fmt: str) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / OUTPUTS[fmt]
    good = build(sample_tree(tmp_path / "host-a"), out, fmt)
    before = snapshot(out)
    listing = sorted(os.listdir(out_dir))

    broken = sample_tree(tmp_path / "host-b")
    entry = broken.get("/usr/bin/big")
    assert entry is not None and isinstance(entry.content, HostFile)
    os.unlink(entry.content.path)
    with pytest.raises(SourceError) as info:
        build(broken, out, fmt)
    assert "\n" not in str(info.value)
    assert snapshot(out) == before
    assert sorted(os.listdir(out_dir)) == listing

    # a layer blob that does not match its LayerInfo fails in write_image
    blob = tmp_path / "layer"
    with open(blob, "wb") as sink:
        layer = write_layer(sample_tree(tmp_path / "host-c"), sink, "gzip", 0)
    with open(blob, "ab") as sink:
        sink.write(b"junk")
    with pytest.raises(DigestMismatchError):
        write_image(str(out), fmt, str(blob), layer, make_config(layer), TAG, NAME)
    assert snapshot(out) == before
    assert sorted(os.listdir(out_dir)) == listing

    # a successful rebuild replaces the output and leaves nothing else behind
    again = build(sample_tree(tmp_path / "host-d"), out, fmt)
    assert again.manifest_digest == good.manifest_digest
    assert sorted(os.listdir(out_dir)) == listing


def test_existing_layout_is_replaced(tree: FileTree, out_dir: Path) -> None:
    layout = out_dir / "img"
    build(tree, layout, compression="zstd")
    stale = set(os.listdir(layout / "blobs/sha256"))
    result = build(tree, layout, compression="gzip")
    blobs = set(os.listdir(layout / "blobs/sha256"))
    digests = (result.manifest_digest, result.config_digest, result.layer.digest)
    assert blobs == {d.split(":")[1] for d in digests}
    assert stale != blobs
    assert os.listdir(out_dir) == ["img"]
    validate_layout(layout)


def test_foreign_directory_is_not_clobbered(tree: FileTree, out_dir: Path) -> None:
    target = out_dir / "precious"
    target.mkdir()
    (target / "thesis.txt").write_text("do not delete")
    with pytest.raises(LayoutError) as info:
        build(tree, target)
    assert "not an OCI layout" in str(info.value) and "\n" not in str(info.value)
    assert (target / "thesis.txt").read_text() == "do not delete"
    assert sorted(os.listdir(out_dir)) == ["precious"]
    # an empty directory may be used
    empty = out_dir / "empty"
    empty.mkdir()
    build(tree, empty)
    validate_layout(empty)


def test_wrong_kind_of_existing_target(tree: FileTree, out_dir: Path) -> None:
    (out_dir / "file").write_text("x")
    with pytest.raises(LayoutError):
        build(tree, out_dir / "file", "oci")
    (out_dir / "dir.tar").mkdir()
    with pytest.raises(LayoutError):
        build(tree, out_dir / "dir.tar")
    with pytest.raises(LayoutError):
        build(tree, out_dir / "missing-parent" / "img")
    assert sorted(os.listdir(out_dir)) == ["dir.tar", "file"]


@pytest.mark.parametrize("fmt", ["docker-archive", "oci-archive"])
@pytest.mark.parametrize(
    "tag,name", [("bad tag", "app"), ("v1", "Upper/Case"), (".v1", "app"), ("v1", "a//b")])
def test_invalid_tag_or_name(tree: FileTree, out_dir: Path, tag: str, name: str, fmt: str) -> None:
    with pytest.raises(LayoutError):
        write_tree_image(str(out_dir / "x.tar"), fmt, tree, "gzip", 0, make_config, tag, name)
    assert os.listdir(out_dir) == []


def test_split_reference_and_image_name() -> None:
    assert split_reference(None, None) == (None, "latest")
    assert split_reference(None, "v2") == (None, "v2")
    assert split_reference("app", None) == ("app", "latest")
    assert split_reference("app:1.0", None) == ("app", "1.0")
    assert split_reference("app:1.0", "1.0") == ("app", "1.0")
    assert split_reference("localhost:5000/team/app", None) == ("localhost:5000/team/app", "latest")
    assert split_reference("localhost:5000/team/app:v3", None) == ("localhost:5000/team/app", "v3")
    for name, tag in [("app:1.0", "2.0"), ("app@sha256:" + "0" * 64, None), ("App", None), ("app:", None),
                      ("app", "bad tag")]:
        with pytest.raises(LayoutError):
            split_reference(name, tag)
    assert image_name("app", "1.0") == "docker.io/library/app:1.0"
    assert image_name("team/app", "1.0") == "docker.io/team/app:1.0"
    assert image_name("localhost/app", "1.0") == "localhost/app:1.0"
    assert image_name("example.com:5000/app", "1.0") == "example.com:5000/app:1.0"


def test_store_put_blob_is_idempotent_and_atomic(tmp_path: Path) -> None:
    store = LayoutStore(str(tmp_path / "layout"))
    first = store.put_blob(b"hello", "text/plain")
    assert first.digest == "sha256:" + hashlib.sha256(b"hello").hexdigest() and first.size == 5
    with open(tmp_path / "src", "wb") as handle:
        handle.write(b"hello")
    with open(tmp_path / "src", "rb") as handle:
        second = store.put_blob(handle)
    assert second.digest == first.digest
    assert os.listdir(tmp_path / "layout/blobs/sha256") == [first.hex]
    with pytest.raises(DigestMismatchError):
        store.put_blob(b"other", expected_digest=first.digest)
    assert os.listdir(tmp_path / "layout/blobs/sha256") == [first.hex]
    config = store.put_json({"b": 1, "a": "é"}, oci.MEDIA_TYPE_CONFIG)
    assert open(store.blob_path(config.digest), "rb").read() == '{"a":"é","b":1}'.encode()
    index = store.write_index([first.with_annotations({oci.ANNOTATION_REF_NAME: "t"})])
    assert json.loads((tmp_path / "layout/index.json").read_bytes()) == index
    assert (tmp_path / "layout/oci-layout").read_bytes() == b'{"imageLayoutVersion":"1.0.0"}'
    assert sorted(os.listdir(tmp_path / "layout")) == ["blobs", "index.json", "oci-layout"]


def test_image_config_and_canonical_json() -> None:
    config = oci.image_config(architecture="arm64", variant="v8", diff_ids=["sha256:" + "a" * 64],
                              created=86400, user="1000:1000", env={"PATH": "/bin", "LANG": "C.UTF-8"},
                              entrypoint=["/app"], cmd=[], workdir="/srv", labels={"k": "v"},
                              ports=["80", "53/udp"], volumes=["/data"])
    assert config == {
        "created": "1970-01-02T00:00:00Z", "architecture": "arm64", "variant": "v8", "os": "linux",
        "config": {"User": "1000:1000", "Env": ["PATH=/bin", "LANG=C.UTF-8"], "Entrypoint": ["/app"],
                   "WorkingDir": "/srv", "Labels": {"k": "v"}, "ExposedPorts": {"80/tcp": {}, "53/udp": {}},
                   "Volumes": {"/data": {}}},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "a" * 64]},
        "history": [{"created": "1970-01-02T00:00:00Z", "created_by": "microcontainer-tool"}],
    }
    bare = oci.image_config(architecture="amd64", diff_ids=[])
    assert "config" not in bare and bare["created"] == "1970-01-01T00:00:00Z"
    assert oci.canonical_json({"b": [1, "é"], "a": {}}) == '{"a":{},"b":[1,"é"]}'.encode()
    with pytest.raises(LayoutError):
        oci.image_config(architecture="amd64", diff_ids=["md5:x"])
