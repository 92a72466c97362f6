"""The dpkg database of a Debian sysroot: ownership, shared directories, merged /usr, status.d."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from conftest import copy_closure, have, ldd_files, run_cli

from microcontainer_tool.model.provenance import read_record
from microcontainer_tool.sources.dpkg import DpkgDatabase, parse_stanzas
from microcontainer_tool.sources.sysroot import SysRoot

STATUS = """\
Package: libc6
Status: install ok installed
Architecture: amd64
Source: glibc
Version: 2.36-9+deb12u4
Description: GNU C Library
 multi-line
 description

Package: coreutils
Status: install ok installed
Architecture: amd64
Version: 9.1-1
Description: GNU core utilities

Package: removed-thing
Status: deinstall ok config-files
Architecture: amd64
Version: 1.0

Package: tzdata
Status: install ok installed
Architecture: all
Version: 1:2024a-0+deb12u1
"""

DEP5 = """\
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: coreutils

Files: *
License: GPL-3+

Files: debian/*
License: GPL-2+
"""


def make_root(root: Path) -> None:
    """A merged-/usr sysroot with /usr/bin/true and its libraries, and a dpkg database claiming them."""
    files = ldd_files("/usr/bin/true")  # as the loader names them: /lib/..., /lib64/...
    # the files at their /usr paths, then the merged-/usr links /lib -> usr/lib, /lib64 -> usr/lib64
    copy_closure(root, [os.path.realpath(f) for f in files])
    for path in files:  # the loader's own names, as links (their targets resolve inside the root)
        usr = root / "usr" / path.lstrip("/")
        if not usr.exists():
            usr.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(os.path.realpath(path), usr)
    info = root / "var/lib/dpkg/info"
    info.mkdir(parents=True)
    (root / "var/lib/dpkg/status").write_text(STATUS)
    libs = [f for f in files if f != "/usr/bin/true"]
    # libc6 lists its libraries the pre-merge way (/lib/...), as Debian 12 does; /usr is shared
    listed = ["/.", "/usr", "/lib", "/lib64"] + libs
    (info / "libc6:amd64.list").write_text("\n".join(listed) + "\n")
    (info / "coreutils.list").write_text("/.\n/usr\n/usr/bin\n/usr/bin/true\n/usr/share\n/usr/share/doc\n"
                                         "/usr/share/doc/coreutils\n")
    (info / "tzdata.list").write_text("/.\n/usr\n/usr/share\n")
    (root / "usr/share/doc/coreutils").mkdir(parents=True)
    (root / "usr/share/doc/coreutils/copyright").write_text(DEP5)
    (root / "etc").mkdir(exist_ok=True)
    (root / "etc/os-release").write_text('ID=debian\nVERSION_ID="12"\n')


@pytest.fixture
def root(tmp_path: Path) -> Path:
    if not os.path.islink("/lib"):
        pytest.skip("needs a merged-/usr host")
    make_root(tmp_path / "root")
    return tmp_path / "root"


def test_status_is_parsed_and_only_installed_packages_count(root: Path) -> None:
    db = DpkgDatabase.open(SysRoot(str(root)))
    assert db is not None
    assert sorted(db.packages) == ["coreutils:amd64", "libc6:amd64", "tzdata"]
    libc = db.packages["libc6:amd64"]
    assert (libc.version, libc.source, libc.id) == ("2.36-9+deb12u4", "glibc", "deb:libc6:amd64")
    assert db.by_id("deb:tzdata:all").version == "1:2024a-0+deb12u1"
    assert parse_stanzas(libc.stanza)[0]["Description"] == "GNU C Library\n multi-line\n description"
    assert db.purl(libc) == "pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=amd64&distro=debian-12"
    assert db.purl(db.packages["tzdata"]).startswith("pkg:deb/debian/tzdata@1%3A2024a-0%2Bdeb12u1?arch=all")
    assert db.license(db.packages["coreutils:amd64"]) == "GPL-3+"
    assert db.license(libc) == ""  # no copyright file


def test_owners_through_merged_usr_and_shared_directories(root: Path) -> None:
    db = DpkgDatabase.open(SysRoot(str(root)))
    assert db is not None
    libc_so = next(p for p in ldd_files("/usr/bin/true") if p.endswith("libc.so.6"))
    canonical = os.path.realpath(libc_so)
    owners = db.owners(["/usr/bin/true", canonical, "/usr", "/lib", "/usr/share", "/nowhere"])
    assert owners["/usr/bin/true"].name == "coreutils"
    assert owners[canonical].name == "libc6"  # listed as /lib/..., found through /lib -> usr/lib
    assert "/usr" not in owners and "/usr/share" not in owners  # listed by several packages
    assert "/nowhere" not in owners
    # a second query in the same process uses the full index and says the same
    expected = {p: owners[p] for p in ("/usr/bin/true", canonical)}
    assert db.owners(["/usr/bin/true", canonical, "/usr"]) == expected


def test_build_records_packages_and_writes_status_d(root: Path, tmp_path: Path) -> None:
    spec = tmp_path / "spec"
    spec.mkdir()
    (spec / "microimage.yaml").write_text(f"from: {root}\npaths: [/usr/bin/true]\ncmd: [/usr/bin/true]\n")
    out = tmp_path / "img"
    proc = run_cli("build", "-c", str(spec), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    record = read_record(str(out))
    assert sorted(record["packages"]) == ["deb:coreutils:amd64", "deb:libc6:amd64"]
    assert record["packages"]["deb:coreutils:amd64"]["license"] == "GPL-3+"
    assert record["files"]["/usr/bin/true"]["source"] == "deb:coreutils:amd64"
    files = {f["path"]: f for f in json.loads(run_cli("inspect", "--json", str(out)).stdout)["files"]}
    assert {"/var/lib/dpkg/status.d/coreutils", "/var/lib/dpkg/status.d/libc6"} <= set(files)
    assert not any("tzdata" in p or p == "/var/lib/dpkg/status" for p in files)
    if have("umoci"):
        bundle = tmp_path / "bundle"
        subprocess.run(["umoci", "unpack", "--rootless", "--image", f"{out}:latest", str(bundle)], check=True,
                       capture_output=True)
        stanza = (bundle / "rootfs/var/lib/dpkg/status.d/libc6").read_text()
        assert stanza == STATUS.split("\n\n")[0] + "\n"
