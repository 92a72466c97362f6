"""smith.yaml files that work unchanged: smith's spec forms (README, "Coming from smith")."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import assert_one_line_error, run_cli, runc_run


def spec_dir(path: Path, text: str, name: str = "smith.yaml") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / name).write_text(text)
    return path


def build(spec: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    proc = run_cli("build", "-c", str(spec), "-o", str(out), "--cache-dir", str(out.parent / "cache"), *extra)
    assert proc.returncode == 0, proc.stderr
    return proc


def inspect(image: Path | str) -> dict:
    proc = run_cli("inspect", "--json", str(image))
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Our own smith-format ``img.tar.gz`` and oci-archive ``img.tar`` (cat and echo), tagged v1."""
    work = tmp_path_factory.mktemp("images")
    spec = spec_dir(work / "base", "paths: [/usr/bin/cat, /usr/bin/echo]\n", "microimage.yaml")
    for name in ("img.tar.gz", "img.tar"):
        proc = run_cli("build", "-c", str(spec), "-o", str(work / name), "-t", "v1")
        assert proc.returncode == 0, proc.stderr
    return work


@pytest.mark.parametrize("package", ["img.tar.gz:v1", "img.tar:v1", "img.tar.gz"])
def test_package_naming_an_image_archive(images: Path, tmp_path: Path, package: str) -> None:
    spec = spec_dir(images / f"spec-{package.replace(':', '-')}",
                    f"package: ../{package}\npaths: [/usr/bin/cat]\nentrypoint: [/usr/bin/cat]\n")
    out = tmp_path / "out"
    build(spec, out)
    files = {f["path"] for f in inspect(out)["files"]}
    assert "/usr/bin/cat" in files and "/usr/bin/echo" not in files
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "hello").write_text("from the smith image\n")
    proc = runc_run(out, "latest", tmp_path, args=["/usr/bin/cat", "/write/hello"],
                    write_dir=str(tmp_path / "w"))
    assert proc.returncode == 0 and proc.stdout == "from the smith image\n", proc.stderr


def test_package_image_tag_must_exist(images: Path, tmp_path: Path) -> None:
    spec = spec_dir(tmp_path / "s", f"package: {images}/img.tar.gz:nope\npaths: [/usr/bin/cat]\n")
    proc = run_cli("build", "-c", str(spec), "-o", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "c"))
    assert_one_line_error(proc, "no image tagged 'nope'", "v1")
    (tmp_path / "s" / "smith.yaml").write_text("package: missing.tgz:v1\npaths: [/usr/bin/cat]\n")
    proc = run_cli("build", "-c", str(tmp_path / "s"), "-o", str(tmp_path / "out"),
                   "--cache-dir", str(tmp_path / "c"))
    assert_one_line_error(proc, "missing.tgz:v1: no such image archive")


def test_from_and_parent_take_archive_colon_tag(images: Path, tmp_path: Path) -> None:
    spec = spec_dir(tmp_path / "s", f"from: {images}/img.tar.gz:v1\nparent: {images}/img.tar:v1\n"
                                    "paths: [/usr/bin/cat]\n")
    build(spec, tmp_path / "out")
    info = inspect(tmp_path / "out")
    assert len(info["config"]["rootfs"]["diff_ids"]) == 2
