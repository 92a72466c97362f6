"""Large trees: each input file read once, a compact provenance record that stays exact,
and the fast tar header path byte-identical to :mod:`tarfile` (counts and bytes, never timings)."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from conftest import run_cli

from microcontainer_tool.assembly.assemble import assemble
from microcontainer_tool.errors import LayoutError
from microcontainer_tool.model.provenance import RECORD_PATH, SCHEMA, parse_record, read_record
from microcontainer_tool.model.tree import sort_key
from microcontainer_tool.oci.layer import member_header, normalized_info
from microcontainer_tool.sources.hostcontent import SMALL_FILE
from microcontainer_tool.spec.imagespec import load_spec

DIRS, PER_DIR, SIZE = 20, 100, 100


def many_files(root: Path) -> int:
    """``DIRS`` directories of ``PER_DIR`` files of ``SIZE`` bytes under ``root/data``; their total bytes."""
    for d in range(DIRS):
        directory = root / "data" / f"d{d:02d}"
        directory.mkdir(parents=True)
        for f in range(PER_DIR):
            line = f"{d:02d}/{f:03d} ".encode()  # 7 bytes
            (directory / f"f{f:03d}").write_bytes(line * (SIZE // 7) + b"x" * (SIZE % 7))
    return DIRS * PER_DIR * SIZE


def write_spec(directory: Path, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "microimage.yaml").write_text(text)
    return directory


@pytest.fixture(scope="module")
def tree_image(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, int]:
    """An image of many small files with a few exceptions: an excluded file, a project file in the
    same directory, a big file; returns (spec dir, image, bytes of the small files)."""
    work = tmp_path_factory.mktemp("trees")
    total = many_files(work / "root")
    (work / "root/data/big").write_bytes(bytes(range(256)) * (SMALL_FILE // 256 + 10))
    spec = write_spec(work / "spec", "from: ../root\npaths: [/data]\narch: amd64\n"
                                     "excludes: [/data/d03/f007]\nfiles: {/data/d05/extra: extra}\n")
    (spec / "extra").write_text("project file\n")
    proc = run_cli("build", "-c", str(spec), "-o", str(work / "img"))
    assert proc.returncode == 0, proc.stderr
    return spec, work / "img", total


def record_bytes(image: Path, tmp: Path) -> bytes:
    """The raw provenance record in the image's layer (the largest blob)."""
    layer = max((image / "blobs/sha256").iterdir(), key=lambda p: p.stat().st_size)
    with tarfile.open(layer, "r:gz") as tar:
        member = tar.extractfile(RECORD_PATH.lstrip("/"))
        assert member is not None
        return member.read()


def test_record_is_small(tree_image: tuple[Path, Path, int], tmp_path: Path) -> None:
    """Provenance costs at most 5 % of the image's file bytes (it cost more than the files before)."""
    _spec, image, total = tree_image
    data = record_bytes(image, tmp_path)
    assert json.loads(data)["schema"] == SCHEMA
    assert len(data) <= 0.05 * total, len(data)


def test_record_is_exact(tree_image: tuple[Path, Path, int]) -> None:
    """Expanded against its layer, the record gives every entry the reasons the build gave it."""
    spec, image, _total = tree_image
    tree = assemble(load_spec(str(spec / "microimage.yaml"))).tree
    expected = {}
    for entry in tree:
        source = next((p.source for p in entry.provenance if p.source), "")
        expected[entry.path] = {"kind": entry.kind.value, "source": source, "package": None,
                                "why": [p.to_json() for p in entry.provenance]}
    files = dict(read_record(str(image))["files"])
    del files["/var/lib/microcontainer"], files["/var/lib"], files["/var"]  # the record's own directories
    assert files == expected
    assert files["/data/d05/extra"]["why"] == [{"kind": "files", "selector": "/data/d05/extra"}]
    assert "/data/d03/f007" not in files and "/data/d03/f008" in files


def test_why_stays_exact(tree_image: tuple[Path, Path, int]) -> None:
    _spec, image, _total = tree_image
    proc = run_cli("why", str(image), "/data/d07/f042")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["/data/d07/f042 <- paths: /data", "source: dir"]
    proc = run_cli("why", str(image), "/data/d05/extra")
    assert proc.stdout.splitlines()[0] == "/data/d05/extra <- files: /data/d05/extra", proc.stderr
    for absent in ("/data/d03/f007", "/data/d07/f999", "/data/d99/f000"):
        proc = run_cli("why", str(image), absent)
        assert proc.returncode != 0 and "not in the image" in proc.stderr, (absent, proc.stderr)


def test_sbom_and_diff_read_the_compact_record(tree_image: tuple[Path, Path, int], tmp_path: Path) -> None:
    _spec, image, _total = tree_image
    proc = run_cli("sbom", "--format", "spdx", "-o", str(tmp_path / "s.json"), str(image))
    assert proc.returncode == 0, proc.stderr
    names = {f["fileName"] for f in json.loads((tmp_path / "s.json").read_text())["files"]}
    # one excluded; the project file, the big file and the record added
    assert "./data/d07/f042" in names and len(names) == DIRS * PER_DIR + 2
    proc = run_cli("diff", str(image), str(image))
    assert proc.returncode == 0, proc.stderr


def test_record_not_covering_an_entry_is_refused() -> None:
    record = json.dumps({"schema": SCHEMA, "image": {}, "packages": {}, "reasons": [
        {"source": "dir", "package": None, "why": [{"kind": "paths", "selector": "/a"}]}],
        "dirs": {"/a": 0}, "files": {}}).encode()
    expanded = parse_record(record, "img", {"/a/x": "file", "/a/y": "hardlink"})
    assert expanded["files"]["/a/y"]["kind"] == "file"
    with pytest.raises(LayoutError, match="does not account for /b/x"):
        parse_record(record, "img", {"/a/x": "file", "/b/x": "file"})


def test_schema_1_records_still_read() -> None:
    old = {"schema": "microcontainer-provenance/1", "image": {"arch": "amd64"}, "packages": {},
           "files": {"/x": {"kind": "file", "source": "dir", "package": None, "why": [{"kind": "paths"}]}}}
    assert parse_record(json.dumps(old).encode(), "img", {}) == old


def test_each_input_file_is_opened_once(tree_image: tuple[Path, Path, int], tmp_path: Path) -> None:
    """ELF check, layer cache key and tar member come from one read of each small file."""
    spec, _image, _total = tree_image
    log = tmp_path / "trace"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    proc = subprocess.run(["strace", "-f", "-qq", "-e", "trace=openat", "-o", str(log),
                           sys.executable, "-m", "microcontainer_tool",
                           "build", "-c", str(spec), "-o", str(tmp_path / "img"),
                           "--layer-cache", str(tmp_path / "lc")], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    root = str(spec.parent / "root")
    opens: dict[str, int] = {}
    for line in log.read_text().splitlines():
        match = re.search(r'openat\(AT_FDCWD, "([^"]+)", ([A-Z_|]+)', line)
        if match and match.group(1).startswith(root + "/data/") and "O_DIRECTORY" not in match.group(2):
            opens[match.group(1)] = opens.get(match.group(1), 0) + 1
    small = {path: count for path, count in opens.items() if not path.endswith("/big")}
    assert len(small) == DIRS * PER_DIR - 1  # every small file was read (one is excluded)
    assert set(small.values()) == {1}
    # a file over SMALL_FILE is not kept in memory: its ELF header, its hash (the layer cache key), the stream
    assert opens[root + "/data/big"] == 3


@pytest.mark.parametrize("name", ["a", "usr/bin/x", "d" * 99, "d" * 100, "d" * 101, "dir/", "é", "a b\x7f"])
@pytest.mark.parametrize("kind", [tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE])
def test_member_header_is_tarfiles(name: str, kind: bytes) -> None:
    """The fast ustar path gives exactly tarfile's PAX_FORMAT bytes; the rest falls back to it."""
    rng = random.Random(f"{name}{kind!r}")
    for _ in range(20):
        mode = rng.choice([0o644, 0o755, 0o1777, 0o777])
        size = rng.choice([0, 1, 100, 8 ** 11 - 1, 8 ** 11, 1 << 40]) if kind == tarfile.REGTYPE else 0
        link = rng.choice(["", "target", "t" * 100, "t" * 101, "ü"]) if kind in (tarfile.SYMTYPE,
                                                                               tarfile.LNKTYPE) else ""
        mtime = rng.choice([0, 1700000000, 8 ** 11 - 1, 8 ** 11])
        uid = rng.choice([0, 10, 8 ** 7 - 1, 8 ** 7])
        expected = normalized_info(name, kind, mode, mtime, size=size, linkname=link, uid=uid, gid=uid)
        assert member_header(name, kind, mode, mtime, size, link, uid, uid) == \
            expected.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def test_sort_key_orders_by_components() -> None:
    rng = random.Random(7)
    parts = ["a", "a-b", "a.b", "ab", "b", "\u00e9", "A", "a0"]
    paths = {"/" + "/".join(rng.choice(parts) for _ in range(rng.randint(1, 4))) for _ in range(500)}
    assert sorted(paths, key=sort_key) == sorted(paths, key=lambda p: tuple(p.split("/")))
