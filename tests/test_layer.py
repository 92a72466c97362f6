"""Tests of the layer writer: normalized members, digests, hardlinks, reproducibility."""

from __future__ import annotations

import hashlib
import io
import os
import random
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

import pytest
from hostfiles import real_binaries

from microcontainer_tool.errors import LayoutError, SourceError
from microcontainer_tool.model.tree import (
    DIR_MODE,
    EXEC_MODE,
    FILE_MODE,
    Entry,
    EntryKind,
    FileTree,
    HostFile,
    InlineContent,
    Provenance,
)
from microcontainer_tool.oci.layer import LayerInfo, open_layer_stream, read_layer_members, write_layer

LONG_DIR = "usr/share/" + "d" * 70
LONG_NAME = LONG_DIR + "/" + "f" * 60 + ".txt"  # > 100 characters
UNICODE_NAME = "usr/share/données/café☕.txt"
EPOCH = 1700000000


def make_host_files(root: Path, mtime: int = 1_600_000_000, seed: int = 7) -> dict[str, Path]:
    """Create the sample host files under ``root``; return image path -> host path."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    files = {
        "/bin/app": rng.randbytes(300_000) + b"app" * 1000,
        "/lib/libfoo.so.1": b"\x7fELF" + rng.randbytes(50_000),
        "/usr/bin/big": rng.randbytes(1_500_000) + bytes(1_200_000),  # crosses 1 MiB blocks
        "/usr/bin/one": b"#!/bin/sh\necho one\n",
        "/etc/empty": b"",
        "/" + LONG_NAME: b"long path\n",
        "/" + UNICODE_NAME: b"non-ASCII name\n",
    }
    hosts: dict[str, Path] = {}
    for number, (image_path, data) in enumerate(sorted(files.items())):
        host = root / f"f{number}"
        host.write_bytes(data)
        os.utime(host, (mtime + number, mtime + number))
        hosts[image_path] = host
    # a hardlink pair on the host
    link = root / "f-hardlink"
    os.link(hosts["/usr/bin/one"], link)
    hosts["/usr/bin/two"] = link
    return hosts


def sample_tree(root: Path, mtime: int = 1_600_000_000) -> FileTree:
    """A small tree: exec file, library, hardlink pair, symlink, nested and odd names."""
    hosts = make_host_files(root, mtime)
    tree = FileTree()
    why = (Provenance("test"),)
    for image_path, host in hosts.items():
        st = os.stat(host)
        mode = EXEC_MODE if image_path.startswith(("/bin/", "/usr/bin/")) else FILE_MODE
        identity = (st.st_dev, st.st_ino) if st.st_nlink > 1 else None
        content = HostFile(str(host), st.st_size, identity)
        tree.add(Entry(image_path, EntryKind.FILE, mode, content, provenance=why))
    tree.add(Entry("/lib/libfoo.so", EntryKind.SYMLINK, 0o777, linkname="libfoo.so.1", provenance=why))
    tree.add(Entry("/etc/passwd", EntryKind.FILE, FILE_MODE, InlineContent(b"root:x:0:0::/:/bin/sh\n"),
                   provenance=why))
    tree.add(Entry("/tmp", EntryKind.DIR, 0o755, provenance=why))
    tree.add_parents(Provenance("parent"))
    return tree


def _write(tree: FileTree, compression: str = "gzip", mtime: int = EPOCH) -> tuple[bytes, LayerInfo]:
    sink = io.BytesIO()
    info = write_layer(tree, sink, compression, mtime)
    return sink.getvalue(), info


def _members(blob: bytes) -> list[tarfile.TarInfo]:
    return list(read_layer_members(io.BytesIO(blob)))


@pytest.fixture()
def tree(tmp_path: Path) -> FileTree:
    return sample_tree(tmp_path / "host")


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_digests_size_and_media_type(tree: FileTree, compression: str) -> None:
    blob, info = _write(tree, compression)
    assert info.size == len(blob)
    assert info.digest == "sha256:" + hashlib.sha256(blob).hexdigest()
    raw = open_layer_stream(io.BytesIO(blob)).read()
    assert info.diff_id == "sha256:" + hashlib.sha256(raw).hexdigest()
    assert len(raw) % tarfile.RECORDSIZE == 0
    suffix = {"gzip": "+gzip", "zstd": "+zstd", "none": ""}[compression]
    assert info.media_type == "application/vnd.oci.image.layer.v1.tar" + suffix
    if compression == "none":
        assert info.digest == info.diff_id


def test_same_diff_id_for_every_codec(tree: FileTree) -> None:
    assert len({_write(tree, c)[1].diff_id for c in ("gzip", "zstd", "none")}) == 1


def test_members_are_normalized(tree: FileTree) -> None:
    blob, _ = _write(tree)
    members = _members(blob)
    names = [m.name for m in members]
    expected = [p.lstrip("/") + ("/" if tree.get(p).kind is EntryKind.DIR else "")  # type: ignore[union-attr]
                for p in tree.paths()]
    # tarfile strips the trailing slash of directory names when reading
    assert names == [n.rstrip("/") for n in expected]
    for member in members:
        assert member.uid == 0 and member.gid == 0
        assert member.uname == "" and member.gname == ""
        assert member.mtime == EPOCH
        assert set(member.pax_headers) <= {"path", "linkpath"}
        assert not member.name.startswith(("/", "./"))
    by_name = {m.name: m for m in members}
    assert by_name["bin/app"].mode == EXEC_MODE and by_name["bin/app"].isreg()
    assert by_name["lib/libfoo.so.1"].mode == FILE_MODE
    assert by_name["usr"].isdir() and by_name["usr"].mode == DIR_MODE
    assert by_name["lib/libfoo.so"].issym() and by_name["lib/libfoo.so"].linkname == "libfoo.so.1"
    assert by_name[LONG_NAME].isreg() and by_name[LONG_NAME].pax_headers == {"path": LONG_NAME}
    assert by_name[UNICODE_NAME].isreg() and "path" in by_name[UNICODE_NAME].pax_headers
    assert by_name["etc/empty"].size == 0
    assert by_name["usr/bin/big"].size == 2_700_000


def test_raw_directory_names_end_with_slash(tree: FileTree) -> None:
    blob, _ = _write(tree, "none")
    raw_names = []
    offset = 0
    while offset < len(blob):
        block = blob[offset:offset + 512]
        if block == bytes(512):
            break
        info = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
        raw_names.append((block[:100].rstrip(b"\0").decode(), info.type))
        offset += 512 + (info.size + 511) // 512 * 512
    for name, kind in raw_names:
        if kind == tarfile.DIRTYPE:
            assert name.endswith("/")
        assert not name.startswith("/")


def test_hardlinks_point_to_first_in_tree_order(tree: FileTree) -> None:
    blob, _ = _write(tree)
    by_name = {m.name: m for m in _members(blob)}
    assert by_name["usr/bin/one"].isreg() and by_name["usr/bin/one"].size > 0
    assert by_name["usr/bin/two"].islnk() and by_name["usr/bin/two"].linkname == "usr/bin/one"
    assert by_name["usr/bin/two"].size == 0


def test_file_contents_roundtrip(tree: FileTree) -> None:
    blob, _ = _write(tree, "zstd")
    with tarfile.open(fileobj=open_layer_stream(io.BytesIO(blob)), mode="r|") as tar:
        for member in tar:
            if member.isreg():
                entry = tree.get("/" + member.name)
                assert entry is not None and entry.content is not None
                data = tar.extractfile(member).read()  # type: ignore[union-attr]
                assert data == entry.content.read()


def test_gnu_tar_lists_layer(tree: FileTree, tmp_path: Path) -> None:
    if shutil.which("tar") is None:
        pytest.skip("tar not installed")
    blob, _ = _write(tree, "gzip")
    path = tmp_path / "layer.tar.gz"
    path.write_bytes(blob)
    listing = subprocess.run(["tar", "tzvf", str(path)], capture_output=True, text=True, check=True,
                             env={**os.environ, "TZ": "UTC"})
    assert listing.stderr == ""
    lines = listing.stdout.splitlines()
    assert len(lines) == len(tree)
    assert any(line.startswith("hrwxr-xr-x 0/0") and "usr/bin/two link to usr/bin/one" in line
               for line in lines)
    assert any("lib/libfoo.so -> libfoo.so.1" in line for line in lines)
    assert any(LONG_NAME in line for line in lines)
    assert any(UNICODE_NAME in line for line in lines)
    assert all(" 0/0 " in line for line in lines)
    assert all("2023-11-14 22:13" in line for line in lines)  # EPOCH in UTC
    subprocess.run(["tar", "xzf", str(path), "-C", str(tmp_path)], check=True, capture_output=True)
    assert os.stat(tmp_path / "usr/bin/one").st_ino == os.stat(tmp_path / "usr/bin/two").st_ino
    assert (tmp_path / UNICODE_NAME).read_text() == "non-ASCII name\n"


def test_reproducible_across_host_conditions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tree_a = sample_tree(tmp_path / "a", mtime=1_000_000_000)
    first = {c: _write(tree_a, c) for c in ("gzip", "zstd", "none")}
    old_umask = os.umask(0o077)
    try:
        monkeypatch.setenv("TZ", "Pacific/Kiritimati")
        time.tzset()
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        monkeypatch.chdir(elsewhere)
        tree_b = sample_tree(tmp_path / "b", mtime=1_234_567_890)
        second = {c: _write(tree_b, c) for c in ("gzip", "zstd", "none")}
    finally:
        os.umask(old_umask)
        monkeypatch.undo()
        time.tzset()
    for compression in first:
        assert first[compression] == second[compression]


def test_epoch_is_stamped_exactly(tree: FileTree) -> None:
    for epoch in (0, 1, 2**33):
        blob, _ = _write(tree, "none", epoch)
        assert {m.mtime for m in _members(blob)} == {epoch}


def test_missing_host_file_is_source_error(tree: FileTree) -> None:
    entry = tree.get("/bin/app")
    assert entry is not None and isinstance(entry.content, HostFile)
    os.unlink(entry.content.path)
    with pytest.raises(SourceError) as info:
        _write(tree)
    assert entry.content.path in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("delta", [-1000, 5])
def test_changed_host_file_is_source_error(tree: FileTree, delta: int) -> None:
    entry = tree.get("/usr/bin/big")
    assert entry is not None and isinstance(entry.content, HostFile)
    data = Path(entry.content.path).read_bytes()
    Path(entry.content.path).write_bytes(data[:delta] if delta < 0 else data + b"x" * delta)
    with pytest.raises(SourceError) as info:
        _write(tree)
    assert "size changed" in str(info.value) and "\n" not in str(info.value)


def test_corrupt_layer_is_layout_error(tree: FileTree) -> None:
    blob, _ = _write(tree, "gzip")
    with pytest.raises(LayoutError) as info:
        _members(blob[: len(blob) // 2])
    assert "\n" not in str(info.value)
    with pytest.raises(LayoutError):
        _members(b"\x28\xb5\x2f\xfd" + b"garbage" * 100)


def test_bad_compression_or_epoch(tree: FileTree) -> None:
    with pytest.raises(LayoutError):
        _write(tree, "lz4")
    with pytest.raises(LayoutError):
        _write(tree, "gzip", -1)


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_real_binaries_layer_is_reproducible_and_complete(tmp_path: Path, compression: str) -> None:
    """Megabytes of real binaries: the same bytes twice, every file in the tar at its size.

    ``bench/layer_write.py`` measures write_layer's throughput on the same kind of tree.
    """
    tree, _ = real_binaries(19_000_000, "parent")
    sizes = {e.path.lstrip("/"): e.size for e in tree if e.kind is EntryKind.FILE}
    assert sum(sizes.values()) > 1_000_000
    infos = []
    for name in ("first", "second"):
        with open(tmp_path / name, "wb") as sink:
            infos.append(write_layer(tree, sink, compression, 0))
    assert infos[0] == infos[1]
    assert (tmp_path / "first").read_bytes() == (tmp_path / "second").read_bytes()
    with open(tmp_path / "first", "rb") as blob:
        members = {m.name: m.size for m in read_layer_members(blob) if m.isfile()}
    assert members == sizes
