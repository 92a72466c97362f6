"""SCons no-op runs: what they skip, counted (scanner answers kept on disk, archives not re-read)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, copy_closure, ldd_files
from test_scons import TOOL_DIR, ok, scons

from microcontainer_tool.assembly.inputs import remembered_inputs


def counted(result: list[str]) -> tuple[list[int], object]:
    calls = [0]

    def compute() -> list[str]:
        calls[0] += 1
        return list(result)

    return calls, compute


def test_kept_answer_is_reused_until_something_it_depends_on_changes(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "usr/lib").mkdir(parents=True)
    (root / "etc").mkdir()
    lib = root / "usr/lib/libx.so"
    lib.write_bytes(b"\x7fELF one")
    record = str(tmp_path / "scans/x.json")
    calls, compute = counted([str(lib)])

    def ask(key: str = "k", where: str | None = record) -> list[str]:
        return remembered_inputs(where, key, compute, lambda: str(root))  # type: ignore[arg-type]

    assert ask() == [str(lib)] and calls == [1]
    assert ask() == [str(lib)] and calls == [1]  # kept
    assert ask("other key") and calls == [2]  # the spec or project files changed
    assert ask("other key") and calls == [2]
    lib.write_bytes(b"\x7fELF two")  # an input changed
    ask("other key")
    assert calls == [3]
    (root / "usr/lib/libnew.so").write_bytes(b"\x7fELF")  # its directory changed
    ask("other key")
    assert calls == [4]
    (root / "etc/ld.so.cache").write_bytes(b"cache")  # the loader's cache appeared
    ask("other key")
    assert calls == [5]
    ask("other key")
    assert calls == [5]
    ask("other key", where=None)  # nothing kept without a record
    assert calls == [6]
    Path(record).write_text("{not json")  # a broken record is only a miss
    assert ask("other key") == [str(lib)] and calls == [7]


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    sysroot = tmp_path / "sysroot"
    copy_closure(sysroot, ldd_files("/usr/bin/true"))
    root = tmp_path / "project"
    root.mkdir()
    (root / "SConstruct").write_text(
        f"env = Environment(tools=['default', 'microimage'], toolpath=[{str(TOOL_DIR)!r}])\n"
        f"Alias('image', env.MicroImage('img', FROM={str(sysroot)!r}, PATHS=['/usr/bin/true'],"
        " CMD=['/usr/bin/true']))\n")
    ok(scons(root, "image"))
    return root


def test_no_op_keeps_the_scan_and_does_not_read_the_archive(project: Path, tmp_path: Path) -> None:
    scans = list((project / ".mct-cache/scans").glob("*.json"))
    assert len(scans) == 1
    before = scans[0].stat().st_mtime_ns
    ok(scons(project, "image"))  # a no-op run: the kept scan holds
    assert scans[0].stat().st_mtime_ns == before
    log = tmp_path / "trace"
    env = {k: v for k, v in os.environ.items() if k not in ("SCONSFLAGS", "MCT_SCONS_CACHEDIR")}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.run(["strace", "-f", "-qq", "-e", "trace=openat", "-o", str(log), sys.executable,
                           "-m", "SCons", "-q", "image"], cwd=project, env=env, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    opened = {os.path.basename(path) for path in re.findall(r'openat\(AT_FDCWD, "([^"]+)"', log.read_text())}
    assert ".sconsign.dblite" in opened and "SConstruct" in opened  # the trace saw SCons work
    assert "img.tar" not in opened  # its timestamp is the recorded one: not hashed


def test_touched_archive_is_judged_by_content(project: Path) -> None:
    archive = project / "img.tar"
    before = (project / "img/index.json").stat().st_mtime_ns
    os.utime(archive)  # another timestamp, same bytes: the content decides, the layout is not synced again
    out = ok(scons(project, "image"))
    assert "OCI layout" not in out and "MicroImage" not in out, out
    assert (project / "img/index.json").stat().st_mtime_ns == before
