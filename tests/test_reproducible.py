"""Same inputs, same bytes: builds that differ in everything irrelevant are identical."""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

import pytest
from conftest import copy_closure, ldd_files, run_cli

FORMATS = {"layout": "", "archive": ".tar", "smith": ".tar.gz", "docker": "-d.tar"}


def make_sysroot(dest: Path, files: list[str], seed: int, owner: int | None) -> None:
    """A sysroot of host files, created in a shuffled order, with random mtimes and an owner."""
    rng = random.Random(seed)
    order = list(files)
    rng.shuffle(order)
    copy_closure(dest, order)
    stamp = rng.randint(10**8, 2 * 10**9)
    for dirpath, dirnames, filenames in os.walk(dest):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            os.utime(path, (stamp, stamp), follow_symlinks=False)
            if owner is not None:
                os.lchown(path, owner, owner)


def sha(path: Path) -> str:
    if path.is_dir():
        digest = hashlib.sha256()
        for dirpath, dirnames, filenames in sorted(os.walk(path)):
            dirnames.sort()
            for name in sorted(filenames):
                full = Path(dirpath) / name
                digest.update(str(full.relative_to(path)).encode() + b"\0" + full.read_bytes())
        return digest.hexdigest()
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_all(work: Path, sysroot: Path, umask: int, env: dict) -> dict[str, str]:
    spec = work / "spec"
    spec.mkdir(parents=True)
    (spec / "microimage.yaml").write_text(
        f"from: {sysroot}\npaths: [/usr/bin/cat, /usr/bin/ls]\ncmd: [/usr/bin/ls, /]\n"
        "labels: {a: b, c: d}\nenv: {Z: '1', A: '2'}\n"
    )
    (spec / "rootfs/read").mkdir(parents=True)
    (spec / "rootfs/read/data").write_text("Hello World!\n")
    digests = {}
    for name, suffix in FORMATS.items():
        out = work / "out" / f"img{suffix}"
        extra = ["--format", "docker-archive"] if name == "docker" else []
        proc = run_cli("build", "-o", str(out), *extra, cwd=spec, env=env, umask=umask)
        assert proc.returncode == 0, proc.stderr
        digests[name] = sha(out)
    return digests


@pytest.mark.skipif(os.geteuid() != 0, reason="changing input ownership needs root")
def test_builds_differing_in_everything_irrelevant_are_identical(tmp_path):
    files = sorted(set(ldd_files("/usr/bin/cat") + ldd_files("/usr/bin/ls")))
    root_a, root_b = tmp_path / "a" / "root", tmp_path / "elsewhere" / "b" / "sysroot"
    make_sysroot(root_a, files, seed=1, owner=None)
    make_sysroot(root_b, files, seed=2, owner=4321)
    (root_b / "usr" / "bin" / "cat").chmod(0o4755)  # setuid on the input: dropped anyway
    first = build_all(tmp_path / "one", root_a, 0o022,
                      {"TZ": "UTC", "LC_ALL": "C", "SOURCE_DATE_EPOCH": "1700000000"})
    second = build_all(tmp_path / "two" / "deeper", root_b, 0o077,
                       {"TZ": "Asia/Kathmandu", "LC_ALL": "C.UTF-8", "SOURCE_DATE_EPOCH": "1700000000"})
    assert first == second
    third = build_all(tmp_path / "three", root_a, 0o022, {"SOURCE_DATE_EPOCH": "1700000001"})
    assert third["layout"] != first["layout"]


def test_rebuild_is_byte_identical_and_atomic(tmp_path):
    spec = tmp_path / "spec"
    spec.mkdir()
    (spec / "microimage.yaml").write_text("paths: [/usr/bin/true]\ncmd: [/usr/bin/true]\n")
    out = tmp_path / "img.tar"
    assert run_cli("build", "-c", str(spec), "-o", str(out)).returncode == 0
    before = out.read_bytes()
    assert run_cli("build", "-c", str(spec), "-o", str(out)).returncode == 0
    assert out.read_bytes() == before
    # a failing build leaves the previous output intact and no debris
    (spec / "microimage.yaml").write_text("paths: [/usr/bin/true, /does/not/exist]\n")
    proc = run_cli("build", "-c", str(spec), "-o", str(out))
    assert proc.returncode != 0
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img.tar", "spec"]
