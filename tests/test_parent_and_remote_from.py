"""``parent:`` base images and ``from:``/``parent:`` registry references, against a real registry."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import assert_one_line_error, have, run_cli, runc_run
from registry_env import Registry

needs_registry = pytest.mark.skipif(not have("docker-registry", "skopeo"),
                                    reason="needs docker-registry and skopeo")


def spec_dir(path: Path, text: str) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "microimage.yaml").write_text(text)
    return path


def inspect(image: Path | str) -> dict:
    proc = run_cli("inspect", "--json", str(image))
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def build(spec: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    proc = run_cli("build", "-c", str(spec), "-o", str(out), "--cache-dir", str(out.parent / "cache"), *extra)
    assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A base image with /usr/bin/true and its libraries (libc), as an OCI layout tagged 1."""
    work = tmp_path_factory.mktemp("base")
    spec = spec_dir(work / "spec", "paths: [/usr/bin/true]\nenv: [PATH=/usr/bin, LANG=C]\ncmd: [true]\n")
    assert run_cli("build", "-c", str(spec), "-o", str(work / "img"), "-t", "1").returncode == 0
    return work / "img"


def test_parent_layers_are_kept_and_shared_files_left_out(base: Path, tmp_path: Path) -> None:
    child = spec_dir(tmp_path / "child", f"parent: {base}:1\npaths: [/usr/bin/false]\n")
    proc = build(child, tmp_path / "out")
    assert "left out of the layer" in proc.stderr
    parent_info, info = inspect(base), inspect(tmp_path / "out")
    assert info["manifest"]["layers"][:1] == parent_info["manifest"]["layers"]
    diff_ids = info["config"]["rootfs"]["diff_ids"]
    assert len(diff_ids) == 2 and diff_ids[0] == parent_info["config"]["rootfs"]["diff_ids"][0]
    assert len(info["config"]["history"]) == 2
    assert "PATH=/usr/bin" in info["config"]["config"]["Env"]  # inherited, as README says
    assert "LANG=C" in info["config"]["config"]["Env"]  # as Dockerfile FROM: the whole Env
    assert info["config"]["config"]["Cmd"] == ["true"]  # and the Cmd the spec does not set
    # our layer: false, but not the libc the parent has byte for byte
    top = _layer_paths(tmp_path / "out", 1)
    assert "/usr/bin/false" in top and "/usr/bin/true" not in top
    assert not any(p.endswith("/libc.so.6") for p in top), sorted(top)
    if have("oci-image-tool"):
        subprocess.run(["oci-image-tool", "validate", "--type", "image", "--ref", "name=latest",
                        str(tmp_path / "out")], check=True, capture_output=True)
    proc = run_cli("why", str(tmp_path / "out"), "/usr/bin/true")
    assert_one_line_error(proc, "not in this image's own layer", "parent")
    assert run_cli("why", str(tmp_path / "out"), "/usr/bin/false").stdout.startswith(
        "/usr/bin/false <- paths: /usr/bin/false")
    assert runc_run(tmp_path / "out", "latest", tmp_path, args=["/usr/bin/false"]).returncode == 1
    assert runc_run(tmp_path / "out", "latest", tmp_path, args=["/usr/bin/true"]).returncode == 0


def _layer_paths(layout: Path, number: int) -> set[str]:
    """Paths in layer ``number`` of the layout's only image (listed with tar)."""
    index = json.loads((layout / "index.json").read_text())
    manifest_hex = index["manifests"][0]["digest"].split(":")[1]
    manifest = json.loads((layout / "blobs/sha256" / manifest_hex).read_text())
    blob = layout / "blobs/sha256" / manifest["layers"][number]["digest"].split(":")[1]
    names = subprocess.run(["tar", "-tzf", str(blob)], check=True, capture_output=True, text=True).stdout
    return {"/" + n.strip("/").removeprefix("./") for n in names.split() if n.strip("/.")}


def test_parent_from_a_docker_archive_keeps_digests(base: Path, tmp_path: Path) -> None:
    archive = tmp_path / "base-docker.tar"
    spec = spec_dir(tmp_path / "base", "paths: [/usr/bin/true]\n")
    assert run_cli("build", "-c", str(spec), "-o", str(archive), "--format", "docker-archive").returncode == 0
    child = spec_dir(tmp_path / "child", f"parent: {archive}\npaths: [/usr/bin/false]\n")
    build(child, tmp_path / "out.tar")
    base_layers = inspect(archive)["manifest"]["layers"]
    layers = inspect(tmp_path / "out.tar")["manifest"]["layers"]
    assert [(d["digest"], d["size"]) for d in layers[:1]] == [(d["digest"], d["size"]) for d in base_layers]
    assert all(d["mediaType"].startswith("application/vnd.oci.image.layer.v1.tar") for d in layers)


def test_parent_build_is_reproducible(base: Path, tmp_path: Path) -> None:
    child = spec_dir(tmp_path / "child", f"parent: {base}:1\npaths: [/usr/bin/false]\n")
    one = run_cli("build", "-c", str(child), "-o", str(tmp_path / "one.tar"), "-q", "--name", "child",
                  "--cache-dir", str(tmp_path / "c1"))
    two = run_cli("build", "-c", str(child), "-o", str(tmp_path / "two.tar"), "-q", "--name", "child",
                  "--cache-dir", str(tmp_path / "c2"))
    assert one.returncode == 0 and one.stdout == two.stdout
    assert (tmp_path / "one.tar").read_bytes() == (tmp_path / "two.tar").read_bytes()


def test_parent_must_be_an_image(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    spec = spec_dir(tmp_path / "s", f"parent: {tmp_path / 'plain'}\npaths: [/usr/bin/false]\n")
    proc = run_cli("build", "-c", str(spec), "-o", str(tmp_path / "o"))
    assert_one_line_error(proc, "not an image")
    spec = spec_dir(tmp_path / "t", "parent: nothing-here\npaths: [/usr/bin/false]\n")
    assert_one_line_error(run_cli("build", "-c", str(spec), "-o", str(tmp_path / "o")), "no such image")
    assert not (tmp_path / "o").exists()


# --- registry references ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    if not have("docker-registry", "skopeo"):
        pytest.skip("needs docker-registry and skopeo")
    reg = Registry(tmp_path_factory.mktemp("reg"), "open", None)
    try:
        yield reg
    finally:
        reg.stop()


@pytest.fixture(scope="module")
def fat(tmp_path_factory: pytest.TempPathFactory, registry: Registry) -> tuple[Path, str]:
    """A fat image built locally and copied to the registry with skopeo; returns (layout, digest)."""
    work = tmp_path_factory.mktemp("fat")
    spec = spec_dir(work / "spec", "paths: [/usr/bin/cat, /usr/bin/ls, /usr/bin/true]\n"
                                   "env: [PATH=/usr/bin]\n")
    assert run_cli("build", "-c", str(spec), "-o", str(work / "img")).returncode == 0
    subprocess.run(["skopeo", "copy", "--dest-tls-verify=false", f"oci:{work / 'img'}:latest",
                    f"docker://{registry.host}/fat:1"], check=True, capture_output=True)
    digest = json.loads(subprocess.run(["skopeo", "inspect", "--tls-verify=false",
                                        f"docker://{registry.host}/fat:1"],
                                       check=True, capture_output=True, text=True).stdout)["Digest"]
    return work / "img", digest


@needs_registry
def test_from_a_registry_reference(registry: Registry, fat: tuple[Path, str], tmp_path: Path) -> None:
    layout, digest = fat
    local = spec_dir(tmp_path / "local", f"from: {layout}\npaths: [/usr/bin/cat]\n")
    build(local, tmp_path / "local.tar")
    remote = spec_dir(tmp_path / "remote", f"from: {registry.host}/fat:1\npaths: [/usr/bin/cat]\n")
    proc = run_cli("build", "-c", str(remote), "-o", str(tmp_path / "remote.tar"))
    assert_one_line_error(proc, "--plain-http")  # HTTPS by default
    build(remote, tmp_path / "remote.tar", "--plain-http")
    def files(image: Path) -> list:
        return [f for f in inspect(image)["files"] if not f["path"].endswith("provenance.json")]

    assert files(tmp_path / "remote.tar") == files(tmp_path / "local.tar")
    why = run_cli("why", str(tmp_path / "remote.tar"), "/usr/bin/cat")
    assert why.returncode == 0 and f"{registry.host}/fat:1@sha256:" in why.stdout
    # an http:// URL says plain HTTP itself; docker:// and a digest pin work too
    url = spec_dir(tmp_path / "url", f"from: http://{registry.host}/fat:1\npaths: [/usr/bin/cat]\n")
    build(url, tmp_path / "url.tar")
    pinned = spec_dir(tmp_path / "pinned",
                      f"from: docker://{registry.host}/fat@{digest}\npaths: [/usr/bin/cat]\n")
    build(pinned, tmp_path / "pinned.tar", "--plain-http")
    assert files(tmp_path / "pinned.tar") == files(tmp_path / "remote.tar")


@needs_registry
def test_offline_needs_a_cached_digest_pin(fat: tuple[Path, str], tmp_path: Path) -> None:
    layout, digest = fat
    # a registry that is stopped after the first build
    reg = Registry(tmp_path, "short-lived", None)
    try:
        subprocess.run(["skopeo", "copy", "--dest-tls-verify=false", f"oci:{layout}:latest",
                        f"docker://{reg.host}/fat:1"], check=True, capture_output=True)
        pinned = spec_dir(tmp_path / "pinned", f"from: {reg.host}/fat:1@{digest}\npaths: [/usr/bin/cat]\n")
        build(pinned, tmp_path / "one.tar", "--plain-http", "--name", "pinned")
    finally:
        reg.stop()
    build(pinned, tmp_path / "two.tar", "--offline", "--name", "pinned")  # no network: from the cache
    assert (tmp_path / "one.tar").read_bytes() == (tmp_path / "two.tar").read_bytes()
    tagged = spec_dir(tmp_path / "tagged", f"from: {reg.host}/fat:1\npaths: [/usr/bin/cat]\n")
    proc = run_cli("build", "-c", str(tagged), "-o", str(tmp_path / "three.tar"), "--offline",
                   "--cache-dir", str(tmp_path / "cache"))
    assert_one_line_error(proc, "--offline", "pin it by digest")
    proc = run_cli("build", "-c", str(tagged), "-o", str(tmp_path / "three.tar"), "--plain-http",
                   "--cache-dir", str(tmp_path / "cache"))
    assert_one_line_error(proc, reg.host)  # nothing listens now: one line, no traceback
    assert not (tmp_path / "three.tar").exists()


@needs_registry
def test_parent_from_a_registry_and_push(registry: Registry, base: Path, tmp_path: Path) -> None:
    subprocess.run(["skopeo", "copy", "--dest-tls-verify=false", f"oci:{base}:1",
                    f"docker://{registry.host}/base:1"], check=True, capture_output=True)
    child = spec_dir(tmp_path / "child", f"parent: http://{registry.host}/base:1\npaths: [/usr/bin/false]\n")
    build(child, tmp_path / "out")
    push = run_cli("push", "--plain-http", "-q", str(tmp_path / "out"), f"{registry.host}/child:1")
    assert push.returncode == 0, push.stderr
    remote = json.loads(subprocess.run(["skopeo", "inspect", "--tls-verify=false",
                                        f"docker://{registry.host}/child:1"],
                                       check=True, capture_output=True, text=True).stdout)
    assert remote["Digest"] == push.stdout.strip()
    assert remote["Layers"][0] == inspect(base)["manifest"]["layers"][0]["digest"]
    assert len(remote["Layers"]) == 2


@pytest.mark.skipif(not have("umoci"), reason="needs umoci to retag a parent's architecture")
def test_parent_of_another_architecture_is_refused(base: Path, tmp_path: Path) -> None:
    import shutil

    other = tmp_path / "arm"
    shutil.copytree(base, other)
    subprocess.run(["umoci", "config", "--image", f"{other}:1", "--tag", "arm", "--architecture", "arm64"],
                   check=True, capture_output=True)
    child = spec_dir(tmp_path / "child", f"parent: {other}:arm\npaths: [/usr/bin/false]\n")
    proc = run_cli("build", "-c", str(child), "-o", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "c"))
    assert_one_line_error(proc, "parent", "arm64", "amd64")
    assert not (tmp_path / "out").exists()
