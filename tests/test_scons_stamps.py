"""An image archive's kept content signature (``$MCT_CACHEDIR/stamps/``) never hides a rebuilt archive.

SCons's own ``content-timestamp`` decider compares whole seconds: an archive
rebuilt within the second of the version its layout recorded would count as
unchanged, and the layout would keep the old image. These tests rebuild the
archive with exactly the old one's mtime and check that the layout follows.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from conftest import copy_closure, ldd_files
from test_scons import TOOL_DIR, ok, scons

from microcontainer_tool.hostfs.stamps import keep_signature, kept_signature


def _manifest_digest(layout: Path) -> str:
    index = json.loads((layout / "index.json").read_text())
    return str(index["manifests"][0]["digest"])


def _archive_manifest_digest(archive: Path) -> str:
    import tarfile

    with tarfile.open(archive) as tar:
        handle = tar.extractfile("index.json")
        assert handle is not None
        return str(json.loads(handle.read())["manifests"][0]["digest"])


def test_a_layout_follows_an_archive_rebuilt_with_the_same_mtime(tmp_path: Path) -> None:
    project = tmp_path / "project"
    copy_closure(project / "root", ldd_files("/bin/true"))
    spec = project / "microimage.yaml"
    spec.write_text("from: ./root\npaths: [/bin/true]\ncmd: [/bin/true]\n")
    (project / "SConstruct").write_text(
        f"env = Environment(tools=['default', 'microimage'], toolpath=[{str(TOOL_DIR)!r}])\n"
        "env.MicroImage('build/img', 'microimage.yaml')\n")
    ok(scons(project, "build/img"))
    layout, archive = project / "build/img", project / "build/img.tar"
    first = _manifest_digest(layout)
    assert first == _archive_manifest_digest(archive)
    old = archive.stat()
    spec.write_text("from: ./root\npaths: [/bin/true]\ncmd: [/bin/true, again]\n")
    ok(scons(project, "build/img.tar"))  # the archive only: the layout still records the old one
    os.utime(archive, ns=(old.st_atime_ns, old.st_mtime_ns))  # rebuilt "within the same second"
    assert archive.stat().st_mtime_ns == old.st_mtime_ns and archive.stat().st_ino != old.st_ino
    second = _archive_manifest_digest(archive)
    assert second != first
    ok(scons(project, "build/img"))
    assert _manifest_digest(layout) == second


def test_a_no_op_run_reads_the_kept_signature(tmp_path: Path) -> None:
    project = tmp_path / "project"
    copy_closure(project / "root", ldd_files("/bin/true"))
    (project / "microimage.yaml").write_text("from: ./root\npaths: [/bin/true]\ncmd: [/bin/true]\n")
    (project / "SConstruct").write_text(
        f"env = Environment(tools=['default', 'microimage'], toolpath=[{str(TOOL_DIR)!r}])\n"
        "env.MicroImage('build/img', 'microimage.yaml')\n")
    ok(scons(project, "build/img"))
    stamps = list((project / ".mct-cache/stamps").glob("*.json"))
    assert len(stamps) == 1
    kept = json.loads(stamps[0].read_text())
    archive = project / "build/img.tar"
    assert kept["stat"] == [archive.stat().st_ino, archive.stat().st_size, archive.stat().st_mtime_ns]
    before = stamps[0].stat().st_mtime_ns
    assert "MicroImage" not in ok(scons(project, "build/img"))
    assert stamps[0].stat().st_mtime_ns == before  # reused, not computed and written again


def test_a_stamp_is_for_one_file_only(tmp_path: Path) -> None:
    path, stamp = tmp_path / "out.tar", tmp_path / "stamps" / "out.json"
    path.write_bytes(b"one")
    keep_signature(str(stamp), str(path), "sig-one")
    assert kept_signature(str(stamp), str(path)) == "sig-one"
    old = path.stat()
    replacement = tmp_path / "out.tar.new"
    replacement.write_bytes(b"two")  # the same size
    os.utime(replacement, ns=(old.st_atime_ns, old.st_mtime_ns))  # and the same mtime
    os.replace(replacement, path)
    assert kept_signature(str(stamp), str(path)) is None
    path.unlink()
    assert kept_signature(str(stamp), str(path)) is None
