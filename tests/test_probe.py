"""``build --probe``: real images from ``/``, run read-only under runc, traced by the host's strace.

Needs root, runc and strace (as every runtime test); owners are Debian's dpkg
database of this machine (``dpkg -S`` says the same).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, have, run_cli

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not have("runc", "strace", "iconv"),
                                reason="root, runc and strace needed")

GCONV = "/usr/lib/x86_64-linux-gnu/gconv"
ICONV = "iconv -f UTF-8 -t EUC-JP /read/in.txt"


def _dpkg_owner(path: str) -> str:
    out = subprocess.run(["dpkg", "-S", path], capture_output=True, text=True, check=True).stdout
    return out.split(":", 1)[0]


@pytest.fixture
def read_dir(tmp_path: Path) -> str:
    directory = tmp_path / "read"
    directory.mkdir()
    (directory / "in.txt").write_text("hello\n", encoding="ascii")  # output bytes stay text
    return str(directory)


def _spec(tmp_path: Path, text: str) -> str:
    spec = tmp_path / "microimage.yaml"
    spec.write_text(text)
    return str(spec)


def _build(tmp_path: Path, spec: str, *args: str) -> subprocess.CompletedProcess:
    return run_cli("build", "-c", spec, "-o", str(tmp_path / "img"), "-q",
                   "--cache-dir", str(tmp_path / "cache"), *args)


def test_iconv_without_gconv_names_the_modules_and_libc6(tmp_path: Path, read_dir: str) -> None:
    spec = _spec(tmp_path, f"from: /\npaths: [/usr/bin/iconv]\nexcludes: [{GCONV}]\n")
    proc = _build(tmp_path, spec, "--probe", ICONV, "--probe-read", read_dir)
    assert proc.returncode == 1, proc.stderr
    assert "failed to start conversion processing" in proc.stderr  # the program's own message
    owner = _dpkg_owner(f"{GCONV}/gconv-modules.cache")
    assert owner == "libc6"
    lines = proc.stderr.splitlines()
    row = next(line for line in lines if line.startswith(f"microcontainer:   {GCONV}/gconv-modules.cache "))
    assert f"({owner})" in row and f"paths: [- {GCONV}/gconv-modules.cache]" in row
    assert any(line.startswith(f"microcontainer:   {GCONV}/gconv-modules ") for line in lines)
    assert f"microcontainer:     - {GCONV}/gconv-modules.d" in lines  # listed: proposed whole
    assert lines[-1].startswith("microcontainer: error: probe `iconv") and "exit status 1" in lines[-1]
    assert "was written" in lines[-1]
    # the image is written (a failed probe does not delete a correct build) and stdout is the digest only
    assert (tmp_path / "img" / "index.json").is_file()
    assert proc.stdout.strip().startswith("sha256:") and len(proc.stdout.splitlines()) == 1
    # --probe-warn: the same report, exit 0
    warned = _build(tmp_path, spec, "--probe", ICONV, "--probe-read", read_dir, "--probe-warn")
    assert warned.returncode == 0, warned.stderr
    assert f"{GCONV}/gconv-modules.cache" in warned.stderr
    assert "microcontainer: warning: probe `iconv" in warned.stderr


def test_following_the_reports_ends_in_a_passing_probe(tmp_path: Path, read_dir: str) -> None:
    # auto_packs off: the gconv pack would bring every module at once (tests/test_packs.py)
    base = f"from: /\nauto_packs: false\npaths:\n  - /usr/bin/iconv\n  - {GCONV}/gconv-modules\n" \
           f"  - {GCONV}/gconv-modules.cache\n  - {GCONV}/gconv-modules.d\n"
    proc = _build(tmp_path, _spec(tmp_path, base), "--probe", ICONV, "--probe-read", read_dir)
    assert proc.returncode == 1
    # the next layer of the onion: the converter module, proposed as a library
    assert f"libs: [- {GCONV}/EUC-JP.so]" in proc.stderr
    assert "(libc6)" in proc.stderr
    proc = _build(tmp_path, _spec(tmp_path, base + f"libs: [{GCONV}/EUC-JP.so]\n"),
                  "--probe", ICONV, "--probe-read", read_dir)
    assert proc.returncode == 0, proc.stderr
    assert "exit status 0" in proc.stderr and "not in the image" not in proc.stderr


def test_an_excluded_file_is_reported_with_package_and_spec_line(tmp_path: Path) -> None:
    licenses = "/usr/share/common-licenses"
    spec = _spec(tmp_path, f"from: /\npaths: [/usr/bin/cat, {licenses}]\nexcludes: [{licenses}/GPL-2]\n")
    proc = _build(tmp_path, spec, "--probe", f"cat {licenses}/GPL-2")
    assert proc.returncode == 1
    owner = _dpkg_owner(f"{licenses}/GPL-2")
    assert owner == "base-files"
    row = next(line for line in proc.stderr.splitlines() if f"{licenses}/GPL-2 " in line)
    assert f"({owner})" in row and f"paths: [- {licenses}/GPL-2]" in row
    # a passing probe: cat of an included file
    passing = _build(tmp_path, spec, "--probe", f"cat {licenses}/MIT-or-not {licenses}/Apache-2.0")
    assert passing.returncode == 1  # the missing MIT file is in neither: cat fails, nothing to propose
    assert "not in the image" not in passing.stderr and "exit status 1" in passing.stderr
    passing = _build(tmp_path, spec, "--probe", f"cat {licenses}/Apache-2.0")
    assert passing.returncode == 0, passing.stderr
    assert "Apache License" in passing.stderr  # the program's output goes to stderr
    assert passing.stdout.strip().startswith("sha256:")


def test_probe_errors_are_one_line(tmp_path: Path) -> None:
    spec = _spec(tmp_path, "from: /\npaths: [/usr/bin/true]\n")
    proc = _build(tmp_path, spec, "--probe", "no-such-program")
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("microcontainer: error: ")
    proc = _build(tmp_path, spec, "--probe", "'unclosed")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "probe command" in proc.stderr
    assert _build(tmp_path, spec, "--probe", "/usr/bin/true").returncode == 0


def _scons(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("SCONSFLAGS", "MCT_SCONS_CACHEDIR")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "SCons", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_scons_mct_probe(tmp_path: Path) -> None:
    licenses = "/usr/share/common-licenses"
    tool_dir = REPO / "microcontainer_tool" / "site_tools"
    sconstruct = tmp_path / "SConstruct"

    def write(probe_warn: bool) -> None:
        sconstruct.write_text(
            f"env = Environment(tools=['default', 'microimage'], toolpath=[{str(tool_dir)!r}],\n"
            f"                  MCT_PROBE='cat {licenses}/GPL-2', MCT_PROBE_WARN={probe_warn})\n"
            f"env.MicroImage('img', PATHS=['/usr/bin/cat', {licenses!r}], EXCLUDES=['{licenses}/GPL-2'],"
            " CMD=['/usr/bin/cat'])\n")

    write(False)
    proc = _scons(tmp_path)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stdout + proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("scons: ***")]
    assert len(errors) == 1 and "probe `cat" in errors[0], proc.stderr
    assert f"paths: [- {licenses}/GPL-2]" in proc.stdout and "(base-files)" in proc.stdout
    assert (tmp_path / "img.tar").is_file()  # written; not recorded as up to date
    assert _scons(tmp_path, "-q", "img.tar").returncode != 0
    write(True)
    proc = _scons(tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "microcontainer: warning: img.tar: probe `cat" in proc.stdout
    assert _scons(tmp_path, "-q", "img.tar").returncode == 0
