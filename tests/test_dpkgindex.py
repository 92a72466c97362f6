"""The on-disk index of a host dpkg database: same answers as the database, rebuilt whenever it changes."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
from conftest import run_cli
from test_dpkg import make_root

from microcontainer_tool.model.provenance import read_record
from microcontainer_tool.sources import dpkg, dpkgindex
from microcontainer_tool.sources.dpkg import DpkgDatabase
from microcontainer_tool.sources.sysroot import SysRoot

WANTED = ["/usr/bin/true", "/usr", "/lib", "/usr/share", "/nowhere"]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    if not os.path.islink("/lib"):
        pytest.skip("needs a merged-/usr host")
    make_root(tmp_path / "root")
    return tmp_path / "root"


def open_fresh(root: Path, cache: Path | None) -> DpkgDatabase:
    """Open as a new process would (nothing remembered in this one)."""
    dpkg._MEMO.clear()
    db = DpkgDatabase.open(SysRoot(str(root)), str(cache) if cache is not None else None)
    assert db is not None
    return db


def answers(db: DpkgDatabase, paths: list[str]) -> dict[str, str]:
    return {path: package.id for path, package in db.owners(paths).items()}


def libc_path() -> str:
    return os.path.realpath("/lib/x86_64-linux-gnu/libc.so.6") if os.path.exists(
        "/lib/x86_64-linux-gnu/libc.so.6") else os.path.realpath("/lib64/libc.so.6")


def test_index_gives_the_databases_answers_without_reading_lists(root: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    wanted = WANTED + [libc_path()]
    plain = open_fresh(root, None)
    expected = answers(plain, wanted)
    assert expected["/usr/bin/true"] == "deb:coreutils:amd64"
    assert expected[libc_path()] == "deb:libc6:amd64"  # listed as /lib/..., found through the /lib link
    index_file = dpkgindex.index_path(str(cache), SysRoot(str(root)))
    assert not os.path.exists(index_file)
    first = open_fresh(root, cache)  # reads the database and writes the index
    assert os.path.exists(index_file)
    assert answers(first, wanted) == expected
    second = open_fresh(root, cache)  # from the index
    assert second._files is not None and second._files._disk is not None
    assert answers(second, wanted) == expected
    assert second._files._lists is None  # no file list was read
    assert list(second.packages) == list(plain.packages)  # same packages, same order, same stanzas
    assert second.packages == plain.packages


def test_a_changed_list_or_status_rebuilds_the_index(root: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    info = root / "var/lib/dpkg/info"
    assert answers(open_fresh(root, cache), ["/usr/bin/true"]) == {"/usr/bin/true": "deb:coreutils:amd64"}
    assert open_fresh(root, cache)._files._lists is None  # type: ignore[union-attr]
    # tzdata now lists /usr/bin/true too (the list edited in place): shared, so no owner
    with open(info / "tzdata.list", "a") as handle:
        handle.write("/usr/bin/true\n")
    changed = open_fresh(root, cache)
    assert answers(changed, ["/usr/bin/true"]) == {}
    assert changed._files._lists is not None  # type: ignore[union-attr]  (the lists were read again)
    assert answers(open_fresh(root, cache), ["/usr/bin/true"]) == {}  # and the new index says so too
    # a new list file: a package that did not list anything before
    (info / "tzdata.list").write_text("/.\n/usr\n/usr/share\n")
    (info / "extra.list").write_text("/usr/share/extra\n")
    assert answers(open_fresh(root, cache), ["/usr/bin/true"]) == {"/usr/bin/true": "deb:coreutils:amd64"}
    # coreutils removed in the status file: not installed, so it owns nothing and is no package
    status = root / "var/lib/dpkg/status"
    status.write_text(status.read_text().replace("Package: coreutils\nStatus: install ok installed",
                                                 "Package: coreutils\nStatus: deinstall ok config-files"))
    removed = open_fresh(root, cache)
    assert "coreutils:amd64" not in removed.packages
    assert answers(removed, ["/usr/bin/true"]) == {}


def test_a_corrupt_index_is_rebuilt(root: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    open_fresh(root, cache)
    index_file = Path(dpkgindex.index_path(str(cache), SysRoot(str(root))))
    index_file.write_bytes(b"not a database" * 100)
    db = open_fresh(root, cache)
    assert answers(db, ["/usr/bin/true"]) == {"/usr/bin/true": "deb:coreutils:amd64"}
    with sqlite3.connect(index_file) as check:  # a valid index again
        assert check.execute("SELECT key FROM files WHERE path = ?", (b"/usr/bin/true",)).fetchone() == (
            "coreutils:amd64",)


def test_a_symlinked_database_is_not_indexed(root: Path, tmp_path: Path) -> None:
    real = tmp_path / "elsewhere"
    (root / "var/lib/dpkg").rename(real)
    (root / "var/lib/dpkg").symlink_to(real)
    assert dpkgindex.signature(SysRoot(str(root)), dpkg.STATUS, dpkg.INFO_DIR) is None


def test_build_uses_the_index_and_sees_database_changes(root: Path, tmp_path: Path) -> None:
    spec = tmp_path / "spec"
    spec.mkdir()
    (spec / "microimage.yaml").write_text(f"from: {root}\npaths: [/usr/bin/true]\ncmd: [/usr/bin/true]\n")
    env = {"MCT_CACHE_DIR": str(tmp_path / "cache")}
    outputs = []
    for name in ("first", "second"):  # the same file name: the image's default name comes from it
        (tmp_path / name).mkdir()
        out = tmp_path / name / "img.tar"
        proc = run_cli("build", "-c", str(spec), "-o", str(out), "--format", "oci-archive", env=env)
        assert proc.returncode == 0, proc.stderr
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1]
    assert os.path.exists(dpkgindex.index_path(str(tmp_path / "cache"), SysRoot(str(root))))
    record = read_record(str(tmp_path / "second" / "img.tar"))
    assert record["files"]["/usr/bin/true"]["source"] == "deb:coreutils:amd64"
    (root / "var/lib/dpkg/info/coreutils.list").write_text("/.\n/usr\n/usr/share\n")  # no longer lists it
    out = tmp_path / "third.tar"
    proc = run_cli("build", "-c", str(spec), "-o", str(out), "--format", "oci-archive", env=env)
    assert proc.returncode == 0, proc.stderr
    assert read_record(str(out))["files"]["/usr/bin/true"].get("source") != "deb:coreutils:amd64"
