"""SCons with package and image inputs: the lock, local .rpm files and source images are tracked."""

from __future__ import annotations

import shutil
from pathlib import Path

from conftest import SHARED_RPMS, make_repo, needs_shared_rpms, run_cli
from test_scons import TOOL_DIR, ok, scons

needs_rpms = needs_shared_rpms


def project(root: Path, spec_text: str, sources: str = "'microimage.yaml'") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "microimage.yaml").write_text(spec_text)
    (root / "SConstruct").write_text(
        f"env = Environment(tools=['default', 'microimage'], toolpath=[{str(TOOL_DIR)!r}])\n"
        f"Alias('image', env.MicroImage('out/img', [{sources}]))\n"
    )
    return root


@needs_rpms
def test_repo_image_no_op_never_fetches_and_relock_rebuilds(tmp_path):
    repo = make_repo(tmp_path / "repo", sorted(SHARED_RPMS.glob("*.rpm")))
    root = project(tmp_path / "proj", f"packages: [zlib]\nrepos: [{{baseurl: 'file://{repo}'}}]\n"
                                      "paths: [/usr/lib64/libz.so.1]\n")
    proc = scons(root, "image")
    assert proc.returncode != 0 and "microcontainer lock" in proc.stderr  # SCons never resolves
    assert "Traceback" not in proc.stderr
    assert run_cli("lock", "-c", str(root), "--cache-dir", str(root / ".mct-cache")).returncode == 0
    ok(scons(root, "image"))
    assert (root / "out" / "img" / "index.json").exists()
    # a no-op needs no repository at all
    shutil.move(str(repo), str(tmp_path / "gone"))
    assert scons(root, "-q", "image").returncode == 0
    shutil.move(str(tmp_path / "gone"), str(repo))
    # a lock that names other packages rebuilds the image (here: weak deps on, same spec otherwise)
    lock = root / "microimage.lock"
    before = lock.read_bytes()
    (root / "microimage.yaml").write_text(f"packages: [zlib, tzdata]\nrepos: [{{baseurl: 'file://{repo}'}}]\n"
                                          "paths: [/usr/lib64/libz.so.1, /usr/share/zoneinfo/UTC]\n")
    assert run_cli("lock", "-c", str(root), "--cache-dir", str(root / ".mct-cache")).returncode == 0
    assert lock.read_bytes() != before
    output = ok(scons(root, "image"))
    assert "MicroImage out/img.tar" in output
    assert scons(root, "-q", "image").returncode == 0


@needs_rpms
def test_changed_local_rpm_is_tracked(tmp_path):
    source = next(SHARED_RPMS.glob("tzdata-*.rpm"))
    root = project(tmp_path / "proj", "packages: [tzdata.rpm]\npaths: [/usr/share/zoneinfo/UTC]\n")
    shutil.copy(source, root / "tzdata.rpm")
    assert run_cli("lock", "-c", str(root), "--cache-dir", str(root / ".mct-cache")).returncode == 0
    ok(scons(root, "image"))
    assert scons(root, "-q", "image").returncode == 0
    # another package file under the same name: SCons sees it, the lock no longer matches
    data = bytearray(source.read_bytes())
    data[-10] ^= 0x01
    (root / "tzdata.rpm").write_bytes(bytes(data))
    assert scons(root, "-q", "image").returncode != 0  # out of date
    proc = scons(root, "image")
    assert proc.returncode != 0
    assert "changed since it was locked" in proc.stderr or "out of date" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_microized_image_tracks_its_source_image(tmp_path):
    fat_spec = tmp_path / "fat"
    fat_spec.mkdir()
    (fat_spec / "microimage.yaml").write_text("paths: [/usr/bin/cat, /usr/bin/true]\n")
    root = project(tmp_path / "proj", "from: fat.tar\npaths: [/usr/bin/true]\ncmd: [/usr/bin/true]\n")
    assert run_cli("build", "-c", str(fat_spec), "-o", str(root / "fat.tar")).returncode == 0
    ok(scons(root, "image"))
    assert scons(root, "-q", "image").returncode == 0
    (fat_spec / "microimage.yaml").write_text("paths: [/usr/bin/cat, /usr/bin/true]\nlabels: {v: '2'}\n")
    assert run_cli("build", "-c", str(fat_spec), "-o", str(root / "fat.tar")).returncode == 0
    assert scons(root, "-q", "image").returncode != 0  # a new source image: rebuild
