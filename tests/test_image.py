"""Tests of reading images back: every format, tag selection, verification, corrupt input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from test_layer import LONG_NAME, UNICODE_NAME
from test_layout import EPOCH, NAME, OUTPUTS, TAG, build, make_config, need, out_dir, run, tree

from microcontainer_tool.errors import DigestMismatchError, LayoutError
from microcontainer_tool.model.tree import EntryKind, FileTree
from microcontainer_tool.oci import model as oci
from microcontainer_tool.oci.imageview import FileInfo, open_image
from microcontainer_tool.oci.layer import write_layer
from microcontainer_tool.oci.layout import ImageResult, write_image

__all__ = ["out_dir", "tree"]  # fixtures shared with test_layout


def expected_files(tree: FileTree) -> list[FileInfo]:
    out = []
    for entry in tree:
        if entry.kind is EntryKind.DIR:
            out.append(FileInfo(entry.path, "dir", entry.mode, 0, ""))
        elif entry.kind is EntryKind.SYMLINK:
            out.append(FileInfo(entry.path, "symlink", entry.mode, 0, entry.linkname))
        elif entry.path == "/usr/bin/two":
            out.append(FileInfo(entry.path, "hardlink", entry.mode, 0, "/usr/bin/one"))
        else:
            out.append(FileInfo(entry.path, "file", entry.mode, entry.size, ""))
    return out


def one_line(error: pytest.ExceptionInfo[BaseException]) -> str:
    text = str(error.value)
    assert text and "\n" not in text and "Traceback" not in text
    return text


@pytest.mark.parametrize("fmt", list(OUTPUTS))
def test_open_every_format(tree: FileTree, out_dir: Path, fmt: str) -> None:
    out = out_dir / OUTPUTS[fmt]
    result = build(tree, out, fmt)
    with open_image(str(out)) as view:
        assert view.manifest_digest == result.manifest_digest
        assert view.manifest["config"]["digest"] == result.config_digest
        assert view.config == make_config(result.layer)
        assert [d.digest for d in view.layers] == [result.layer.digest]
        assert view.index["manifests"][0]["annotations"][oci.ANNOTATION_REF_NAME] == TAG
        files = list(view.iter_files())
    assert files == expected_files(tree)
    paths = {f.path for f in files}
    assert "/" + LONG_NAME in paths and "/" + UNICODE_NAME in paths


def test_dir_with_tag_suffix_and_explicit_tag(tree: FileTree, out_dir: Path) -> None:
    result = build(tree, out_dir / "img")
    assert open_image(f"{out_dir / 'img'}:{TAG}").manifest_digest == result.manifest_digest
    assert open_image(str(out_dir / "img"), TAG).manifest_digest == result.manifest_digest
    with pytest.raises(LayoutError) as info:
        open_image(f"{out_dir / 'img'}:nope")
    assert "no image tagged 'nope'" in one_line(info)


def test_docker_archive_by_repo_tag(tree: FileTree, out_dir: Path) -> None:
    result = build(tree, out_dir / "d.tar", "docker-archive")
    assert open_image(str(out_dir / "d.tar"), f"{NAME}:{TAG}").manifest_digest == result.manifest_digest


def test_zstd_and_uncompressed_layers(tree: FileTree, out_dir: Path) -> None:
    for compression in ("zstd", "none"):
        result = build(tree, out_dir / f"img-{compression}", compression=compression)
        view = open_image(str(out_dir / f"img-{compression}"))
        assert view.layers[0].media_type == result.layer.media_type
        assert list(view.iter_files()) == expected_files(tree)


def test_skopeo_written_images(tree: FileTree, out_dir: Path) -> None:
    """Images written by another tool: a legacy docker-archive and a two-tag layout."""
    need("skopeo")
    result = build(tree, out_dir / "img")
    legacy = out_dir / "legacy.tar"
    run("skopeo", "copy", f"oci:{out_dir / 'img'}:{TAG}", f"docker-archive:{legacy}:{NAME}:{TAG}")
    with tarfile.open(legacy) as tar:
        assert "index.json" not in tar.getnames()
    view = open_image(str(legacy))
    assert view.manifest["mediaType"] == oci.DOCKER_MANIFEST
    assert view.config["rootfs"]["diff_ids"] == [result.layer.diff_id]
    assert list(view.iter_files()) == expected_files(tree)
    assert open_image(str(legacy), TAG).config == view.config

    run("skopeo", "copy", f"oci:{out_dir / 'img'}:{TAG}", f"oci:{out_dir / 'img'}:other")
    with pytest.raises(LayoutError) as info:
        open_image(str(out_dir / "img"))
    assert "holds 2 images" in one_line(info)
    assert list(open_image(f"{out_dir / 'img'}:other").iter_files()) == expected_files(tree)


def _blob(layout: Path, digest: str) -> Path:
    return layout / "blobs/sha256" / digest.split(":")[1]


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_corrupt_layer_blob(tree: FileTree, out_dir: Path) -> None:
    result = build(tree, out_dir / "img")
    _flip(_blob(out_dir / "img", result.layer.digest), 5000)
    view = open_image(str(out_dir / "img"))  # JSON blobs are fine
    with pytest.raises(DigestMismatchError) as info:
        list(view.iter_files())
    assert result.layer.digest in one_line(info)


def test_corrupt_config_and_manifest(tree: FileTree, out_dir: Path) -> None:
    result = build(tree, out_dir / "img")
    shutil.copytree(out_dir / "img", out_dir / "img2")
    _flip(_blob(out_dir / "img", result.config_digest), 3)
    with pytest.raises(DigestMismatchError) as info:
        open_image(str(out_dir / "img"))
    one_line(info)
    _blob(out_dir / "img2", result.manifest_digest).write_bytes(b"{}")
    with pytest.raises(DigestMismatchError):
        open_image(str(out_dir / "img2"))


def test_wrong_diff_id_is_detected(tree: FileTree, tmp_path: Path, out_dir: Path) -> None:
    blob = tmp_path / "layer"
    with open(blob, "wb") as sink:
        layer = write_layer(tree, sink, "gzip", EPOCH)
    config = make_config(layer)
    config["rootfs"]["diff_ids"] = ["sha256:" + "0" * 64]
    write_image(str(out_dir / "img"), "oci", str(blob), layer, config, TAG, NAME)
    with pytest.raises(DigestMismatchError) as info:
        list(open_image(str(out_dir / "img")).iter_files())
    assert "unpacks to" in one_line(info)


@pytest.mark.parametrize(
    "damage", ["index-garbage", "index-shape", "no-oci-layout", "missing-blob", "bad-digest"])
def test_malformed_layouts(tree: FileTree, out_dir: Path, damage: str) -> None:
    result: ImageResult = build(tree, out_dir / "img")
    layout = out_dir / "img"
    if damage == "index-garbage":
        (layout / "index.json").write_bytes(b"\x00not json")
    elif damage == "index-shape":
        (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [{"digest": 3}]}))
    elif damage == "no-oci-layout":
        os.unlink(layout / "oci-layout")
    elif damage == "missing-blob":
        os.unlink(_blob(layout, result.layer.digest))
    else:
        index = json.loads((layout / "index.json").read_bytes())
        index["manifests"][0]["digest"] = "md5:abc"
        (layout / "index.json").write_text(json.dumps(index))
    with pytest.raises(LayoutError) as info:
        open_image(str(layout))
    one_line(info)


def test_malformed_archives(tree: FileTree, out_dir: Path) -> None:
    build(tree, out_dir / "img.tar")
    build(tree, out_dir / "img.tar.gz")
    data = (out_dir / "img.tar").read_bytes()
    (out_dir / "truncated.tar").write_bytes(data[:700])
    gz = (out_dir / "img.tar.gz").read_bytes()
    (out_dir / "truncated.tar.gz").write_bytes(gz[: len(gz) // 2])
    (out_dir / "random.bin").write_bytes(os.urandom(4096))
    (out_dir / "empty.tar").write_bytes(b"")
    with tarfile.open(out_dir / "other.tar", "w") as tar:
        tar.add(__file__, "hello.py")
    for name in ("truncated.tar", "truncated.tar.gz", "random.bin", "empty.tar", "other.tar", "missing.tar"):
        with pytest.raises(LayoutError) as info:
            open_image(str(out_dir / name))
        one_line(info)


def test_cli_inspect_has_no_traceback(tree: FileTree, out_dir: Path) -> None:
    """The inspect command (cli.py) reads through this module."""
    build(tree, out_dir / "img.tar.gz")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    ok = subprocess.run([sys.executable, "-m", "microcontainer_tool", "inspect", str(out_dir / "img.tar.gz")],
                        capture_output=True, text=True, env=env, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert "/usr/bin/two" in ok.stdout and "hardlink" in ok.stdout
    (out_dir / "bad.tar").write_bytes(b"junk" * 300)
    bad = subprocess.run([sys.executable, "-m", "microcontainer_tool", "inspect", str(out_dir / "bad.tar")],
                         capture_output=True, text=True, env=env, timeout=60)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr and len(bad.stderr.splitlines()) == 1
