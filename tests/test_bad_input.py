"""Every user mistake: one line, non-zero exit, no traceback, nothing written."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from conftest import assert_one_line_error, run_cli


def attempt(tmp_path: Path, spec_text: str, *words: str, setup=None) -> None:
    spec = tmp_path / "spec"
    spec.mkdir(exist_ok=True)
    (spec / "microimage.yaml").write_text(spec_text)
    if setup is not None:
        setup(spec)
    out = tmp_path / "out"
    proc = run_cli("build", "-c", str(spec), "-o", str(out))
    assert_one_line_error(proc, *words)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["spec"]


def test_bad_yaml(tmp_path):
    attempt(tmp_path, "paths: [/usr/bin/cat\n", "microimage.yaml:2", "invalid YAML")


def test_unknown_key(tmp_path):
    attempt(tmp_path, "paths: [/usr/bin/cat]\npathz: [/x]\n", "microimage.yaml:2", "unknown key 'pathz'")


def test_missing_path(tmp_path):
    attempt(tmp_path, "paths: [/usr/bin/cat, /no/such/file]\n", "microimage.yaml:1", "/no/such/file",
            "matches nothing")


def test_missing_project_file(tmp_path):
    attempt(tmp_path, "files: {/app/x: missing.bin}\n", "missing.bin", "No such file")


def test_corrupt_elf(tmp_path):
    def setup(spec: Path) -> None:
        data = open("/usr/bin/cat", "rb").read(200)  # a valid ELF header, then nothing
        (spec / "broken").write_bytes(data)
    attempt(tmp_path, "files: {/app/broken: broken}\n", "/app/broken", setup=setup)


def test_symlink_out_of_sysroot(tmp_path):
    root = tmp_path / "root"
    (root / "usr/bin").mkdir(parents=True)
    os.symlink("../../../../../etc/passwd", root / "usr/bin/evil")
    spec = tmp_path / "spec"
    spec.mkdir()
    (spec / "microimage.yaml").write_text(f"from: {root}\npaths: [/usr/bin/evil]\n")
    proc = run_cli("build", "-c", str(spec), "-o", str(tmp_path / "out"))
    assert_one_line_error(proc, "above the sysroot")
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod needs root")
def test_device_node(tmp_path):
    root = tmp_path / "root"
    (root / "dev").mkdir(parents=True)
    os.mknod(root / "dev" / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    spec = tmp_path / "spec"
    spec.mkdir()
    (spec / "microimage.yaml").write_text(f"from: {root}\npaths: [/dev]\n")
    proc = run_cli("build", "-c", str(spec), "-o", str(tmp_path / "out"))
    assert_one_line_error(proc, "/dev/null", "device node")
    assert not (tmp_path / "out").exists()


def test_fifo_in_overlay(tmp_path):
    def setup(spec: Path) -> None:
        (spec / "rootfs").mkdir()
        os.mkfifo(spec / "rootfs" / "pipe")
    attempt(tmp_path, "paths: [/usr/bin/cat]\n", "pipe", "fifo", setup=setup)


def test_missing_library(tmp_path):
    root = tmp_path / "root"
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/cat").write_bytes(open("/usr/bin/cat", "rb").read())
    spec = tmp_path / "spec"
    spec.mkdir()
    (spec / "microimage.yaml").write_text(f"from: {root}\npaths: [/usr/bin/cat]\n")
    proc = run_cli("build", "-c", str(spec), "-o", str(tmp_path / "out"))
    assert_one_line_error(proc, "not found", "/usr/bin/cat")
    proc = run_cli("build", "-c", str(spec), "-o", str(tmp_path / "out"), "--allow-missing")
    assert proc.returncode == 0, proc.stderr
    assert "warning" in proc.stderr


def test_cmd_not_in_image(tmp_path):
    attempt(tmp_path, "paths: [/usr/bin/cat]\ncmd: [/usr/bin/dog]\n", "microimage.yaml:2", "not in the image")


def test_unsupported_key(tmp_path):
    attempt(tmp_path, "package: coreutils\nmock: {deps: [gcc]}\npaths: [/usr/bin/cat]\n", "'mock.deps'",
            "is not supported")


def test_bad_source_date_epoch(tmp_path):
    spec = tmp_path / "spec"
    spec.mkdir()
    (spec / "microimage.yaml").write_text("paths: [/usr/bin/true]\n")
    proc = run_cli("build", "-c", str(spec), "-o", str(tmp_path / "o"),
                   env={"SOURCE_DATE_EPOCH": "yesterday"})
    assert_one_line_error(proc, "SOURCE_DATE_EPOCH")


def test_output_dir_that_is_not_a_layout_is_kept(tmp_path):
    spec = tmp_path / "spec"
    spec.mkdir()
    (spec / "microimage.yaml").write_text("paths: [/usr/bin/true]\n")
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.txt").write_text("do not delete")
    proc = run_cli("build", "-c", str(spec), "-o", str(precious))
    assert_one_line_error(proc)
    assert (precious / "thesis.txt").read_text() == "do not delete"


def test_inspect_garbage(tmp_path):
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not a tar at all" * 100)
    assert_one_line_error(run_cli("inspect", str(junk)))
    assert_one_line_error(run_cli("inspect", str(tmp_path / "absent")))


def test_deps_on_missing_file():
    assert_one_line_error(run_cli("deps", "/no/such/program"))
