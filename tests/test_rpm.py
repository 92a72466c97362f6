"""RPM reading and extraction against real artefacts.

Fixtures are built with the host's ``rpmbuild`` (gzip, xz, zstd, bzip2 and
uncompressed payloads); the oracle is ``rpm`` itself (``rpm -qp``) and
``rpm2cpio FILE | cpio -idm``. Malicious and "stripped" (large-file) payloads
are made by re-serializing a real package's cpio payload and re-computing its
digests and sizes, so they are *valid* packages: refusals cannot come from a
digest check. The 67 signed Rocky Linux 9 packages are read and extracted too.
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import stat
import struct
import subprocess
from pathlib import Path

import pytest
import zstandard
from conftest import SHARED_RPMS, needs_shared_rpms, require_shared_rpms
from rpmbuild_fixtures import build_rpm, elf_requires, have_rpmbuild

from microcontainer_tool.errors import DigestMismatchError, MicrocontainerError, RpmError
from microcontainer_tool.sources.rpm.cpio import ExtractedEntry, extract_rpm, safe_member_path
from microcontainer_tool.sources.rpm.header import rpm_installed_size, rpm_manifest_line
from microcontainer_tool.sources.rpm.package import Checksum, Dep
from microcontainer_tool.sources.rpm.payload import read_rpm

ROCKY = str(SHARED_RPMS)
PAYLOADS = ["zstd", "xz", "gzip", "bzip2", "none"]

needs_rpmbuild = pytest.mark.skipif(not have_rpmbuild(), reason="rpmbuild is not installed")
needs_cpio = pytest.mark.skipif(not (shutil.which("cpio") and shutil.which("rpm2cpio")),
                                reason="cpio and rpm2cpio are needed as the oracle")


def demo_rpm(workdir: Path, payload: str, name: str | None = None) -> Path:
    """A package with a dir, a symlink, a hardlink pair, a setuid file, a ghost and an ELF file."""
    return build_rpm(
        workdir, name or f"demo-{payload}", version="1.2.3", release="4.el9",
        files={
            "/usr/bin/ls": Path("/usr/bin/ls"),
            "/etc/demo.conf": b"hello\n",
            "/usr/bin/su2": b"#!/bin/sh\necho su\n",
            "/usr/share/demo/empty": b"",
            "/usr/share/demo/big.bin": os.urandom(3 << 20),
        },
        symlinks={"/usr/bin/dir": "ls", "/usr/share/demo/abs": "/etc/demo.conf"},
        hardlinks={"/etc/demo-hard.conf": "/etc/demo.conf"},
        modes={"/usr/bin/su2": 0o4755, "/etc/demo.conf": 0o640},
        ghosts=["/var/log/demo.log"],
        dirs=["/var/lib/demo", "/usr/share/demo"],
        requires=["(a or b)", "c >= 1:1.2-3", "d = 5"], requires_pre=["shadow-utils"],
        provides=["demo-cap = 5"], conflicts=["con < 1"], obsoletes=["old-demo"],
        recommends=["rec"], supplements=["sup"], suggests=["sug"], enhances=["enh"],
        epoch=2 if payload == "xz" else None, payload=payload,
        url="https://example.invalid/demo", vendor="Example Vendor", license="MIT AND BSD",
    )


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if not have_rpmbuild():
        pytest.skip("rpmbuild is not installed")
    work = tmp_path_factory.mktemp("rpms")
    return {payload: demo_rpm(work, payload) for payload in PAYLOADS}


# --------------------------------------------------------------------------- helpers


def one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text and text, repr(text)
    assert "Traceback" not in text
    return text


def rpm_query(path: Path | str, fmt: str) -> str:
    return subprocess.run(["rpm", "-qp", "--nosignature", "--nodigest", "--qf", fmt, str(path)],
                          check=True, capture_output=True, text=True).stdout


def cpio_extract(rpm: Path | str, dest: Path) -> None:
    dest.mkdir(parents=True)
    rpm2cpio = subprocess.Popen(["rpm2cpio", str(rpm)], stdout=subprocess.PIPE)
    subprocess.run(["cpio", "-idm", "--quiet", "--no-absolute-filenames"], stdin=rpm2cpio.stdout,
                   cwd=dest, check=True, capture_output=True)
    rpm2cpio.stdout.close()
    assert rpm2cpio.wait() == 0


def cpio_names(rpm: Path | str) -> set[str]:
    """Member names of the payload as GNU cpio lists them, as image paths."""
    out = subprocess.run(f"rpm2cpio '{rpm}' | cpio -it --quiet", shell=True, check=True,
                         capture_output=True).stdout.decode("utf-8", "surrogateescape")
    names = set()
    for line in out.splitlines():
        name = line.removeprefix("./")
        names.add("/" + name if name not in (".", "") else "/")
    return names


def snapshot(root: Path) -> dict[str, tuple]:
    """Everything below ``root``: kind, perms (files), link target, content hash, inode."""
    tree: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            rel = "/" + os.path.relpath(full, root)
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                tree[rel] = ("symlink", os.readlink(full))
            elif stat.S_ISDIR(st.st_mode):
                tree[rel] = ("dir",)
            else:
                digest = hashlib.sha256(Path(full).read_bytes()).hexdigest()
                tree[rel] = ("file", st.st_mode & 0o777, digest, st.st_ino)
    return tree


def link_groups(tree: dict[str, tuple]) -> set[frozenset[str]]:
    groups: dict[int, set[str]] = {}
    for path, value in tree.items():
        if value[0] == "file":
            groups.setdefault(value[3], set()).add(path)
    return {frozenset(g) for g in groups.values() if len(g) > 1}


def without_inodes(tree: dict[str, tuple]) -> dict[str, tuple]:
    return {k: v[:3] for k, v in tree.items()}


# ---- a minimal, independent rpm/cpio rewriter to craft valid malicious packages


def _header_end(blob: bytes, start: int) -> int:
    nindex, hsize = struct.unpack(">II", blob[start + 8:start + 16])
    return start + 16 + 16 * nindex + hsize


def _tag_data(blob: bytes, start: int, tag: int) -> tuple[int, int, int] | None:
    """(absolute data offset, type, count) of ``tag`` in the header at ``start``."""
    nindex, _ = struct.unpack(">II", blob[start + 8:start + 16])
    store = start + 16 + 16 * nindex
    for i in range(nindex):
        t, kind, offset, count = struct.unpack(">iIiI", blob[start + 16 + 16 * i:start + 32 + 16 * i])
        if t == tag:
            return store + offset, kind, count
    return None


def rewrite_payload(src: Path, dst: Path, payload: bytes) -> Path:
    """Copy an unsigned, uncompressed-payload rpm with a new payload; fix digests and sizes."""
    data = bytearray(src.read_bytes())
    sig_end = _header_end(data, 96)
    hdr_start = sig_end + (-sig_end) % 8
    hdr_end = _header_end(data, hdr_start)
    head = data[:hdr_end]

    def put_hex(start: int, tag: int, value: str) -> None:
        where = _tag_data(head, start, tag)
        if where is not None:
            offset = where[0]
            assert head[offset + len(value)] == 0
            head[offset:offset + len(value)] = value.encode()

    def put_int(start: int, tag: int, value: int) -> None:
        where = _tag_data(head, start, tag)
        if where is not None:
            head[where[0]:where[0] + 4] = struct.pack(">I", value)

    put_hex(hdr_start, 5092, hashlib.sha256(payload).hexdigest())   # PAYLOADDIGEST
    put_hex(hdr_start, 5097, hashlib.sha256(payload).hexdigest())   # PAYLOADDIGESTALT
    header = bytes(head[hdr_start:hdr_end])
    put_hex(96, 273, hashlib.sha256(header).hexdigest())
    put_hex(96, 269, hashlib.sha1(header).hexdigest())
    put_int(96, 1000, len(header) + len(payload))
    put_int(96, 1007, len(payload))
    md5 = _tag_data(head, 96, 1004)
    if md5 is not None:
        head[md5[0]:md5[0] + 16] = hashlib.md5(header + payload).digest()
    dst.write_bytes(bytes(head) + payload)
    return dst


def payload_of(rpm: Path) -> bytes:
    data = rpm.read_bytes()
    sig_end = _header_end(data, 96)
    return data[_header_end(data, sig_end + (-sig_end) % 8):]


def parse_newc(archive: bytes) -> list[dict]:
    members, pos = [], 0
    while True:
        assert archive[pos:pos + 6] == b"070701"
        fields = [int(archive[pos + 6 + 8 * i:pos + 14 + 8 * i], 16) for i in range(13)]
        namesize, filesize = fields[11], fields[6]
        name = archive[pos + 110:pos + 110 + namesize - 1]
        pos += 110 + namesize
        pos += (-pos) % 4
        body = archive[pos:pos + filesize]
        pos += filesize + (-filesize) % 4
        if name == b"TRAILER!!!":
            return members
        members.append({"name": name, "fields": fields, "data": body})


def write_newc(members: list[dict]) -> bytes:
    out = bytearray()
    for member in [*members, {"name": b"TRAILER!!!", "fields": [0, 0, 0, 0, 1] + [0] * 8, "data": b""}]:
        fields = list(member["fields"])
        fields[6] = len(member["data"])
        fields[11] = len(member["name"]) + 1
        out += b"070701" + b"".join(b"%08x" % f for f in fields) + member["name"] + b"\0"
        out += b"\0" * ((-len(out)) % 4)
        out += member["data"] + b"\0" * ((-len(member["data"])) % 4)
    return bytes(out)


# --------------------------------------------------------------------------- read_rpm


@needs_rpmbuild
@pytest.mark.parametrize("payload", PAYLOADS)
def test_read_rpm_fields(fixtures: dict[str, Path], payload: str) -> None:
    path = fixtures[payload]
    info = read_rpm(str(path))
    assert (info.name, info.version, info.release, info.arch) == (f"demo-{payload}", "1.2.3",
                                                                 "4.el9", "x86_64")
    assert info.epoch == (2 if payload == "xz" else 0)
    assert info.summary == f"test package demo-{payload}"
    assert info.license == "MIT AND BSD"
    assert info.url == "https://example.invalid/demo"
    assert info.vendor == "Example Vendor"
    assert info.sourcerpm == f"demo-{payload}-1.2.3-4.el9.src.rpm"
    assert info.buildtime == 1700000000
    assert info.location == str(path) and info.repo == "@local"
    assert info.size == path.stat().st_size
    assert info.checksum == Checksum("sha256", hashlib.sha256(path.read_bytes()).hexdigest())
    reqs = set(info.requires)
    assert Dep("(a or b)") in reqs
    assert Dep("c", "GE", 1, "1.2", "3") in reqs
    assert Dep("d", "EQ", None, "5") in reqs
    assert Dep("shadow-utils", pre=True) in reqs
    assert Dep("libc.so.6()(64bit)") in reqs and Dep("rtld(GNU_HASH)") in reqs
    assert Dep("/bin/sh") in reqs  # from the script's shebang
    assert not any(d.name.startswith("rpmlib(") for d in reqs)
    epoch = 2 if payload == "xz" else None
    assert Dep(f"demo-{payload}", "EQ", epoch, "1.2.3", "4.el9") in info.provides
    assert Dep("demo-cap", "EQ", None, "5") in info.provides
    assert info.conflicts == (Dep("con", "LT", None, "1"),)
    assert info.obsoletes == (Dep("old-demo"),)
    assert info.recommends == (Dep("rec"),)
    assert info.supplements == (Dep("sup"),)
    assert info.suggests == (Dep("sug"),)
    assert info.enhances == (Dep("enh"),)
    assert info.files == tuple(sorted([
        "/etc/demo-hard.conf", "/etc/demo.conf", "/usr/bin/dir", "/usr/bin/ls", "/usr/bin/su2",
        "/usr/share/demo", "/usr/share/demo/abs", "/usr/share/demo/big.bin",
        "/usr/share/demo/empty", "/var/lib/demo", "/var/log/demo.log"]))
    assert info.files == tuple(rpm_query(path, "[%{FILENAMES}\n]").split())


@needs_rpmbuild
def test_read_rpm_deps_match_rpm(fixtures: dict[str, Path]) -> None:
    """Every requirement rpm lists (minus rpmlib()) is read, with its operator and EVR."""
    path = fixtures["zstd"]
    info = read_rpm(str(path))
    ours = {str(d) for d in info.requires}
    theirs = {line.strip() for line in subprocess.run(
        ["rpm", "-qp", "--requires", str(path)], capture_output=True, text=True, check=True
    ).stdout.splitlines() if not line.startswith("rpmlib(")}
    assert ours == theirs


def test_manifest_line() -> None:
    from microcontainer_tool.sources.rpm.package import PackageInfo

    info = PackageInfo("curl", 0, "7.76.1", "34.el9", "x86_64", vendor="Rocky Enterprise Software Foundation",
                       buildtime=1700000000, sourcerpm="curl-7.76.1-34.el9.src.rpm")
    line = rpm_manifest_line(info, 123456)
    assert line == ("curl\t7.76.1-34.el9\t0\t1700000000\tRocky Enterprise Software Foundation\t(none)"
                    "\t123456\tx86_64\t0\tcurl-7.76.1-34.el9.src.rpm")
    fields = line.split("\t")
    assert len(fields) == 10 and len(fields[1].split("-")) == 2  # what Trivy and Syft require
    with_epoch = rpm_manifest_line(PackageInfo("x", 3, "1", "2", "noarch", vendor="a\tb"), 7)
    assert with_epoch == "x\t1-2\t0\t0\ta b\t3\t7\tnoarch\t3\t(none)"


@needs_shared_rpms
def test_manifest_line_matches_rpm_qf() -> None:
    """Our line equals ``rpm -qp --qf`` with the manifest's format, INSTALLTIME aside."""
    fmt = ("%{NAME}\\t%{VERSION}-%{RELEASE}\\t0\\t%{BUILDTIME}\\t%{VENDOR}\\t%{EPOCH}\\t%{SIZE}"
           "\\t%{ARCH}\\t%{EPOCHNUM}\\t%{SOURCERPM}\\n")
    for name in ("curl-7.76.1-34.el9.x86_64.rpm", "tzdata-2025c-1.el9.noarch.rpm"):
        path = os.path.join(ROCKY, name)
        info = read_rpm(path)
        assert rpm_manifest_line(info, rpm_installed_size(path)) + "\n" == rpm_query(path, fmt)
        assert rpm_manifest_line(info) + "\n" == rpm_query(path, fmt)  # size from info.location


# --------------------------------------------------------------------------- extraction


@needs_rpmbuild
@needs_cpio
@pytest.mark.parametrize("payload", PAYLOADS)
def test_extract_matches_cpio(fixtures: dict[str, Path], payload: str, tmp_path: Path) -> None:
    path = fixtures[payload]
    entries = extract_rpm(str(path), str(tmp_path / "ours"))
    cpio_extract(path, tmp_path / "cpio")
    ours, theirs = snapshot(tmp_path / "ours"), snapshot(tmp_path / "cpio")
    assert without_inodes(ours) == without_inodes(theirs)
    assert link_groups(ours) == link_groups(theirs) == {frozenset({"/etc/demo.conf",
                                                                   "/etc/demo-hard.conf"})}

    by_path = {e.path: e for e in entries}
    assert [e.path for e in entries] == sorted(by_path)
    assert set(by_path) == set(read_rpm(str(path)).files)
    su2 = by_path["/usr/bin/su2"]
    assert su2.kind == "file" and su2.mode == stat.S_IFREG | 0o4755  # reported ...
    assert os.lstat(tmp_path / "ours/usr/bin/su2").st_mode & 0o7777 == 0o755  # ... never on disk
    assert os.lstat(tmp_path / "ours/etc/demo.conf").st_mode & 0o7777 == 0o640
    assert by_path["/var/log/demo.log"].kind == "ghost"
    assert not (tmp_path / "ours/var/log/demo.log").exists()
    assert (by_path["/usr/bin/dir"].kind, by_path["/usr/bin/dir"].linkname) == ("symlink", "ls")
    assert by_path["/usr/share/demo/abs"].linkname == "/etc/demo.conf"
    assert by_path["/var/lib/demo"] == ExtractedEntry("/var/lib/demo", "dir", stat.S_IFDIR | 0o755, 0)
    pair = {by_path["/etc/demo.conf"].kind, by_path["/etc/demo-hard.conf"].kind}
    assert pair == {"file", "hardlink"}
    hard = next(e for e in entries if e.kind == "hardlink")
    assert hard.linkname in ("/etc/demo.conf", "/etc/demo-hard.conf") and hard.linkname != hard.path
    ls = by_path["/usr/bin/ls"]
    assert ls.digest == hashlib.sha256(Path("/usr/bin/ls").read_bytes()).hexdigest()
    assert ls.size == os.path.getsize("/usr/bin/ls")
    for directory in ("usr", "usr/share/demo", "var/lib/demo"):
        assert os.lstat(tmp_path / "ours" / directory).st_mode & 0o7777 == 0o755


@needs_rpmbuild
def test_extract_over_existing_tree_replaces_files(fixtures: dict[str, Path], tmp_path: Path) -> None:
    dest = tmp_path / "root"
    first = extract_rpm(str(fixtures["zstd"]), str(dest))
    (dest / "usr/bin/ls").chmod(0o600)
    second = extract_rpm(str(fixtures["gzip"]), str(dest))  # same files, other package
    assert [(e.path, e.kind) for e in first] == [(e.path, e.kind) for e in second]
    assert (dest / "usr/bin/ls").stat().st_mode & 0o777 == 0o755
    assert os.readlink(dest / "usr/bin/dir") == "ls"


@needs_rpmbuild
def test_verify_file_digests(fixtures: dict[str, Path], tmp_path: Path) -> None:
    """The per-file digest path (used for packages without a payload digest) works and bites."""
    path = fixtures["none"]
    entries = extract_rpm(str(path), str(tmp_path / "ok"), verify_file_digests=True)
    assert any(e.digest for e in entries)
    data = bytearray(path.read_bytes())
    spot = data.index(b"echo su\n")
    data[spot] ^= 0x20
    bad = tmp_path / "bad.rpm"
    bad.write_bytes(bytes(data))
    with pytest.raises(RpmError) as err:
        extract_rpm(str(bad), str(tmp_path / "bad"), verify_file_digests=True)
    assert "/usr/bin/su2" in one_line(err) and "digest" in str(err.value)
    with pytest.raises(RpmError) as err:  # by default: the payload digest catches it
        extract_rpm(str(bad), str(tmp_path / "bad2"))
    assert "payload sha256 digest mismatch" in one_line(err)


# --------------------------------------------------------------------------- bad input


@needs_rpmbuild
def test_corrupt_and_truncated(fixtures: dict[str, Path], tmp_path: Path) -> None:
    good = fixtures["zstd"].read_bytes()
    sig_end = _header_end(good, 96)
    hdr_start = sig_end + (-sig_end) % 8
    payload_start = _header_end(good, hdr_start)
    cases: dict[str, bytes] = {
        "empty": b"",
        "lead": good[:50],
        "signature": good[:200],
        "header": good[:hdr_start + 100],
        "payload-half": good[:(payload_start + len(good)) // 2],
        "payload-last-byte": good[:-1],
        "trailing": good + b"x",
        "not-rpm": b"\x7fELF" + good[4:],
    }
    for offset in (hdr_start + 40, payload_start - 10, payload_start + 8, len(good) - 30):
        flipped = bytearray(good)
        flipped[offset] ^= 0x55
        cases[f"flip@{offset - payload_start}"] = bytes(flipped)
    # A corrupt index entry: rpm_rs would panic on it; we must not even get there.
    bad_index = bytearray(good)
    bad_index[hdr_start + 16 + 16 + 8:hdr_start + 16 + 16 + 12] = struct.pack(">i", -16777216)
    cases["bad-index"] = bytes(bad_index)
    for name, data in cases.items():
        path = tmp_path / f"{name}.rpm"
        path.write_bytes(data)
        with pytest.raises(RpmError) as err:
            read_rpm(str(path))
        one_line(err)
        with pytest.raises(RpmError) as err:
            extract_rpm(str(path), str(tmp_path / f"out-{name}"))
        one_line(err)
    with pytest.raises(RpmError) as err:
        read_rpm(str(tmp_path / "missing.rpm"))
    assert "missing.rpm" in one_line(err)


@needs_rpmbuild
def test_corrupt_messages(fixtures: dict[str, Path], tmp_path: Path) -> None:
    good = fixtures["zstd"].read_bytes()
    sig_end = _header_end(good, 96)
    hdr_start = sig_end + (-sig_end) % 8
    path = tmp_path / "x.rpm"
    flipped = bytearray(good)
    flipped[_header_end(good, hdr_start) - 5] ^= 1
    path.write_bytes(bytes(flipped))
    with pytest.raises(RpmError, match="header sha256 digest mismatch"):
        read_rpm(str(path))
    path.write_bytes(good[:-100])
    with pytest.raises(RpmError, match="truncated|corrupt payload"):
        extract_rpm(str(path), str(tmp_path / "t"))
    with pytest.raises(RpmError, match="truncated"):
        read_rpm(str(path))


@needs_rpmbuild
def test_expected_checksum(fixtures: dict[str, Path], tmp_path: Path) -> None:
    path = fixtures["xz"]
    good = hashlib.sha256(path.read_bytes()).hexdigest()
    extract_rpm(str(path), str(tmp_path / "ok"), expected=Checksum("sha256", good))
    with pytest.raises(DigestMismatchError) as err:
        extract_rpm(str(path), str(tmp_path / "bad"), expected=Checksum("sha256", "0" * 64))
    assert good in one_line(err)
    assert not (tmp_path / "bad").exists()  # checked before anything is written
    sha1 = hashlib.sha1(path.read_bytes()).hexdigest()
    extract_rpm(str(path), str(tmp_path / "sha"), expected=Checksum("sha", sha1))
    with pytest.raises(RpmError):
        extract_rpm(str(path), str(tmp_path / "x"), expected=Checksum("crc99", "00"))


@needs_rpmbuild
def test_source_rpm_refused(tmp_path: Path) -> None:
    topdir = tmp_path / "top"
    spec = tmp_path / "s.spec"
    spec.write_text("Name: s\nVersion: 1\nRelease: 1\nSummary: s\nLicense: MIT\n%description\ns\n")
    subprocess.run(["rpmbuild", "-bs", "--quiet", "--define", f"_topdir {topdir}", str(spec)],
                   check=True, capture_output=True)
    srpm = next(topdir.glob("SRPMS/*.src.rpm"))
    with pytest.raises(RpmError, match="source package") as err:
        read_rpm(str(srpm))
    one_line(err)


def test_safe_member_path() -> None:
    assert safe_member_path("./usr/bin/x") == "/usr/bin/x"
    assert safe_member_path("usr//bin/./x") == "/usr/bin/x"
    assert safe_member_path("./") == "/"
    for bad in ("../x", "./a/../../x", "a/..", "/abs", "//abs", "", "a\0b", "./" + "a/" * 2100):
        with pytest.raises(RpmError):
            safe_member_path(bad)


@needs_rpmbuild
@pytest.mark.parametrize("evil", [b"../escaped", b"./a/../../escaped", b"/tmp-abs-escaped",
                                  b"./etc/not-in-header"])
def test_malicious_member_names_refused(fixtures: dict[str, Path], tmp_path: Path,
                                        evil: bytes) -> None:
    """A *valid* package (digests recomputed) whose payload names escape: refused, nothing written."""
    members = parse_newc(payload_of(fixtures["none"]))
    victim = next(m for m in members if m["name"] == b"./usr/bin/su2")
    victim["name"] = evil
    crafted = rewrite_payload(fixtures["none"], tmp_path / "evil.rpm", write_newc(members))
    read_rpm(str(crafted))  # the package itself is consistent: digests and sizes match
    dest = tmp_path / "a" / "b" / "dest"
    with pytest.raises(RpmError) as err:
        extract_rpm(str(crafted), str(dest))
    text = one_line(err)
    assert "digest" not in text
    assert ("'..'" in text or "absolute" in text or "not in the header" in text)
    assert not list(tmp_path.rglob("escaped")) and not list(tmp_path.rglob("tmp-abs-escaped"))


@needs_rpmbuild
def test_payload_disagreeing_with_header(fixtures: dict[str, Path], tmp_path: Path) -> None:
    """The header is authoritative: ghosts in a payload (old rpm) are skipped; sizes must agree."""
    src = fixtures["none"]
    members = parse_newc(payload_of(src))
    conf = next(m for m in members if m["name"] == b"./usr/bin/su2")
    ghost = {"name": b"./var/log/demo.log", "fields": list(conf["fields"]), "data": b"old rpm\n"}
    with_ghost = sorted([*members, ghost], key=lambda m: m["name"])
    crafted = rewrite_payload(src, tmp_path / "ghost.rpm", write_newc(with_ghost))
    entries = extract_rpm(str(crafted), str(tmp_path / "g"))
    assert {e.path: e.kind for e in entries}["/var/log/demo.log"] == "ghost"
    assert not (tmp_path / "g/var/log/demo.log").exists()
    assert (tmp_path / "g/usr/bin/su2").read_bytes() == b"#!/bin/sh\necho su\n"

    conf["data"] = b"#!/bin/sh\n"
    crafted = rewrite_payload(src, tmp_path / "short.rpm", write_newc(members))
    with pytest.raises(RpmError, match="payload has 10 bytes, the header says 18") as err:
        extract_rpm(str(crafted), str(tmp_path / "s"))
    one_line(err)


@needs_rpmbuild
def test_symlink_escape_refused(tmp_path: Path) -> None:
    """A symlink from one package must not carry another package's files out of ``dest``."""
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "d1" / "d2" / "dest"
    up = "../" * 12
    evil_link = build_rpm(tmp_path, "evil-link", arch="noarch",
                          symlinks={"/opt/esc": up + str(outside).lstrip("/")})
    abs_link = build_rpm(tmp_path, "abs-link", arch="noarch", symlinks={"/opt/abs": "/srv"})
    victim = build_rpm(tmp_path, "victim", arch="noarch",
                       files={"/opt/esc/pwned": b"x\n", "/opt/esc/sub/deeper": b"y\n"})
    abs_victim = build_rpm(tmp_path, "abs-victim", arch="noarch", files={"/opt/abs/inside": b"z\n"})
    extract_rpm(str(evil_link), str(dest))
    assert os.readlink(dest / "opt/esc").startswith("../")
    with pytest.raises(RpmError) as err:
        extract_rpm(str(victim), str(dest))
    assert "outside the destination" in one_line(err)
    assert list(outside.iterdir()) == []
    # an absolute target means the image's root, i.e. inside dest
    extract_rpm(str(abs_link), str(dest))
    extract_rpm(str(abs_victim), str(dest))
    assert (dest / "srv/inside").read_bytes() == b"z\n"
    assert os.readlink(dest / "opt/abs") == "/srv"
    # a symlink at a member's own path is replaced, never followed
    target = outside / "target"
    target.write_bytes(b"keep")
    os.symlink(target, dest / "opt/victim-file")
    plain = build_rpm(tmp_path, "plain", arch="noarch", files={"/opt/victim-file": b"new\n"})
    extract_rpm(str(plain), str(dest))
    assert target.read_bytes() == b"keep"
    assert not (dest / "opt/victim-file").is_symlink()
    assert (dest / "opt/victim-file").read_bytes() == b"new\n"


@needs_rpmbuild
def test_directory_in_the_way(fixtures: dict[str, Path], tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    (dest / "usr/bin/ls").mkdir(parents=True)
    with pytest.raises(RpmError, match="directory is in the way") as err:
        extract_rpm(str(fixtures["zstd"]), str(dest))
    one_line(err)


@pytest.mark.parametrize("source", ["fixture", "filesystem-3.16-5.el9.x86_64.rpm",
                                    "glibc-common-2.34-231.el9_7.2.x86_64.rpm"])
def test_stripped_large_file_format(fixtures: dict[str, Path], tmp_path: Path, source: str) -> None:
    """rpm's header-driven ``07070X`` payload (files >= 4 GiB) extracts like newc.

    The stripped archive is written from the header exactly as rpm's
    ``rpmfiArchiveWriteHeader`` does: one ``07070X`` + file index per payload
    file, data on regular files (last member of a hardlink set only) and
    symlinks (their target), padding to 4, then a newc trailer.
    """
    if source == "fixture":
        src = fixtures["none"]
    else:
        src = require_shared_rpms() / source
    payload = payload_of(src)
    if payload.startswith(b"\x28\xb5\x2f\xfd"):
        payload = zstandard.ZstdDecompressor().stream_reader(payload).read()
    members = {m["name"]: m for m in parse_newc(payload)}
    names = rpm_query(src, "[%{FILENAMES}\n]").split("\n")[:-1]
    flags = [int(x) for x in rpm_query(src, "[%{FILEFLAGS}\n]").split()]
    out = bytearray()
    for index, (name, flag) in enumerate(zip(names, flags, strict=True)):
        if flag & 64:  # ghost
            continue
        member = members[b"." + name.encode()]
        out += b"07070X" + b"%08x" % index + b"\0\0"
        out += member["data"] + b"\0" * ((-len(member["data"])) % 4)
    stripped = bytes(out) + write_newc([])
    crafted = rewrite_payload(src, tmp_path / "stripped.rpm", stripped)
    ours = extract_rpm(str(crafted), str(tmp_path / "stripped"))
    reference = extract_rpm(str(src), str(tmp_path / "newc"))
    assert ours == reference
    a, b = snapshot(tmp_path / "stripped"), snapshot(tmp_path / "newc")
    assert without_inodes(a) == without_inodes(b) and link_groups(a) == link_groups(b)


# --------------------------------------------------------------------------- libc fixture


@needs_rpmbuild
def test_libc_fixture_provides_what_binaries_need(tmp_path: Path) -> None:
    app = read_rpm(str(build_rpm(tmp_path, "app", files={"/usr/bin/ls": Path("/usr/bin/ls")})))
    libc = read_rpm(str(build_rpm(tmp_path, "fakelibc", provides=elf_requires(Path("/usr/bin/ls")),
                                  autoreqprov=False)))
    provided = {d.name for d in libc.provides}
    assert "rtld(GNU_HASH)" in provided
    assert {d.name for d in app.requires} <= provided


# --------------------------------------------------------------------------- Rocky Linux 9


@needs_shared_rpms
@needs_cpio
def test_rocky_packages(tmp_path: Path) -> None:
    rpms = sorted(glob.glob(os.path.join(ROCKY, "*.rpm")))
    assert len(rpms) == 67
    files_union: set[str] = set()
    cpio_union: set[str] = set()
    ghost_union: set[str] = set()
    rootfs = tmp_path / "rootfs"
    qf = "%{NAME}|%{EPOCHNUM}|%{VERSION}|%{RELEASE}|%{ARCH}|%{SOURCERPM}|%{LICENSE}\\n"
    expected = subprocess.run(["rpm", "-qp", "--nosignature", "--qf", qf, *rpms], check=True,
                              capture_output=True, text=True).stdout.splitlines()
    for rpm, line in zip(rpms, expected, strict=True):
        info = read_rpm(rpm)
        assert "|".join([info.name, str(info.epoch), info.version, info.release, info.arch,
                         info.sourcerpm, info.license]) == line
        assert info.vendor == "Rocky Enterprise Software Foundation"
        entries = extract_rpm(rpm, str(rootfs))  # all into one tree, as an image build does
        assert [e.path for e in entries] == sorted(info.files) == list(info.files)
        ghosts = {e.path for e in entries if e.kind == "ghost"}
        names = cpio_names(rpm)
        assert names == set(info.files) - ghosts, rpm
        files_union |= set(info.files)
        cpio_union |= names
        ghost_union |= ghosts
    assert files_union == cpio_union | ghost_union
    # libgcc ships /lib64/libgcc_s.so.1: it must land in usr/lib64 through filesystem's symlink
    assert os.readlink(rootfs / "lib64") == "usr/lib64"
    assert (rootfs / "usr/lib64/libgcc_s.so.1").is_symlink()
    assert not any(os.lstat(os.path.join(d, f)).st_mode & 0o7000
                   for d, _, fs in os.walk(rootfs) for f in fs)


@needs_shared_rpms
@needs_cpio
@pytest.mark.parametrize("name", ["glibc-2.34-231.el9_7.2.x86_64.rpm",
                                  "coreutils-8.32-39.el9.x86_64.rpm",
                                  "filesystem-3.16-5.el9.x86_64.rpm",
                                  "shadow-utils-4.9-15.el9.x86_64.rpm",
                                  "ca-certificates-2025.2.80_v9.0.305-91.el9.noarch.rpm"])
def test_rocky_extract_matches_cpio(name: str, tmp_path: Path) -> None:
    rpm = os.path.join(ROCKY, name)
    entries = extract_rpm(rpm, str(tmp_path / "ours"))
    cpio_extract(Path(rpm), tmp_path / "cpio")
    ours, theirs = snapshot(tmp_path / "ours"), snapshot(tmp_path / "cpio")
    assert without_inodes(ours) == without_inodes(theirs)
    assert link_groups(ours) == link_groups(theirs)
    listed = rpm_query(rpm, "[%{FILENAMES}\t%{FILEMODES}\n]").splitlines()
    assert {(e.path, e.mode) for e in entries} == {(p, int(m)) for p, m in
                                                    (x.split("\t") for x in listed)}


def test_errors_are_microcontainer_errors() -> None:
    assert issubclass(RpmError, MicrocontainerError)
    with pytest.raises(RpmError) as err:
        extract_rpm("/nonexistent/x.rpm", "/tmp/never")
    one_line(err)
