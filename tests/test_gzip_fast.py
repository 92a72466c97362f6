"""``build --compression gzip-fast``: the tar and diff_id of ``gzip``, other layer bytes, read by umoci."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import copy_closure, ldd_files, run_cli


def _layer(layout: Path) -> dict:
    index = json.loads((layout / "index.json").read_text())
    digest = index["manifests"][0]["digest"].split(":", 1)[1]
    manifest = json.loads((layout / "blobs/sha256" / digest).read_text())
    config = json.loads((layout / "blobs/sha256" / manifest["config"]["digest"].split(":", 1)[1]).read_text())
    return {**manifest["layers"][0], "diff_id": config["rootfs"]["diff_ids"][0]}


def test_gzip_fast_layer_has_the_same_tar_and_is_read_by_umoci(tmp_path: Path) -> None:
    root = tmp_path / "root"
    copy_closure(root, ldd_files("/bin/ls"))
    spec = tmp_path / "spec"
    spec.mkdir()
    (spec / "microimage.yaml").write_text(f"from: {root}\npaths: [/bin/ls]\ncmd: [/bin/ls]\n")
    layers = {}
    for kind in ("gzip", "gzip-fast"):
        out = tmp_path / kind
        proc = run_cli("build", "-c", str(spec), "-o", str(out), "--compression", kind, "-q")
        assert proc.returncode == 0, proc.stderr
        layers[kind] = _layer(out)
    assert layers["gzip-fast"]["diff_id"] == layers["gzip"]["diff_id"]
    assert layers["gzip-fast"]["digest"] != layers["gzip"]["digest"]
    assert layers["gzip-fast"]["size"] > layers["gzip"]["size"]
    assert layers["gzip-fast"]["mediaType"] == layers["gzip"]["mediaType"]
    if shutil.which("umoci") is None:
        pytest.skip("needs umoci (apt-get install umoci)")
    bundle = tmp_path / "bundle"
    proc = subprocess.run(["umoci", "unpack", "--rootless", "--image", f"{tmp_path / 'gzip-fast'}:latest",
                           str(bundle)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (bundle / "rootfs/bin/ls").read_bytes() == (root / "bin/ls").read_bytes()
