"""The layer cache: a config-only change reuses the compressed layer untouched."""

from __future__ import annotations

import json
import os

from conftest import run_cli


def test_config_change_reuses_layer(tmp_path):
    spec = tmp_path / "spec"
    spec.mkdir()
    (spec / "microimage.yaml").write_text("paths: [/usr/bin/true]\ncmd: [/usr/bin/true]\n")
    cache = tmp_path / "cache"
    out = tmp_path / "img"
    first = run_cli("build", "-c", str(spec), "-o", str(out), "--layer-cache", str(cache), "-q")
    assert first.returncode == 0, first.stderr
    [blob] = [p for p in (cache / "layers").iterdir() if p.suffix == ".blob"]
    index = json.loads((out / "index.json").read_text())
    manifest = json.loads((out / "blobs/sha256" / index["manifests"][0]["digest"][7:]).read_text())
    layer_hex = manifest["layers"][0]["digest"][7:]
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (out / "blobs/sha256").iterdir()}
    cached = (blob.stat().st_ino, blob.stat().st_mtime_ns)

    (spec / "microimage.yaml").write_text("paths: [/usr/bin/true]\ncmd: [/usr/bin/true, --version]\n")
    second = run_cli("build", "-c", str(spec), "-o", str(out), "--layer-cache", str(cache), "-q")
    assert second.returncode == 0, second.stderr
    assert second.stdout != first.stdout  # a new manifest
    assert (blob.stat().st_ino, blob.stat().st_mtime_ns) == cached
    after = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (out / "blobs/sha256").iterdir()}
    assert layer_hex in before and layer_hex in after
    kept = set(before) & set(after)
    assert len(kept) == 1  # the layer blob: same file, same mtime
    assert all(before[name] == after[name] for name in kept)
    assert len(after) == 3  # layer, new config, new manifest: the old ones were collected
    assert not any(name.startswith(".") for name in os.listdir(out / "blobs/sha256"))


def test_cache_output_equals_uncached(tmp_path):
    spec = tmp_path / "spec"
    spec.mkdir()
    (spec / "microimage.yaml").write_text("paths: [/usr/bin/true]\n")
    # one --name: the image's name (default: the output's stem) is in index.json
    plain = run_cli("build", "-c", str(spec), "-o", str(tmp_path / "a.tar"), "-q", "--name", "img")
    cached = run_cli("build", "-c", str(spec), "-o", str(tmp_path / "b.tar"), "-q", "--name", "img",
                     "--layer-cache", str(tmp_path / "cache"))
    again = run_cli("build", "-c", str(spec), "-o", str(tmp_path / "c.tar"), "-q", "--name", "img",
                    "--layer-cache", str(tmp_path / "cache"))
    assert plain.stdout == cached.stdout == again.stdout
    a, b, c = ((tmp_path / name).read_bytes() for name in ("a.tar", "b.tar", "c.tar"))
    assert a == b == c


def test_tree_digest_sees_hardlinks(tmp_path):
    from microcontainer_tool.model.tree import Entry, EntryKind, FileTree, HostFile

    one = tmp_path / "one"
    one.write_text("same")
    linked = tmp_path / "linked"
    os.link(one, linked)
    copy = tmp_path / "copy"
    copy.write_text("same")

    def tree(second: str) -> FileTree:
        result = FileTree()
        for path, host in (("/a", one), ("/b", tmp_path / second)):
            st = os.stat(host)
            identity = (st.st_dev, st.st_ino) if st.st_nlink > 1 else None
            result.add(Entry(path, EntryKind.FILE, 0o644, HostFile(str(host), st.st_size, identity)))
        return result

    assert tree("linked").digest() != tree("copy").digest()
    assert tree("linked").digest() == tree("linked").digest()
