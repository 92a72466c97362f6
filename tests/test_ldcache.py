"""ld.so.conf / ld.so.cache reading and writing, checked against glibc itself."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from functools import cmp_to_key
from pathlib import Path

import pytest

from microcontainer_tool.closure import ldcache
from microcontainer_tool.closure.elf import read_elf
from microcontainer_tool.closure.ldcache import CacheEntry
from microcontainer_tool.errors import SourceError
from microcontainer_tool.sources.sysroot import SysRoot

HOST_LDSO = "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
HOST_LIBC = "/lib/x86_64-linux-gnu/libc.so.6"


def host_ldconfig_p(cache: str | None = None) -> list[tuple[str, str]]:
    """(soname, path) pairs that ``ldconfig -p`` prints, in order."""
    ldconfig = shutil.which("ldconfig") or "/sbin/ldconfig"
    if not os.path.exists(ldconfig):
        pytest.skip("needs ldconfig")
    args = [ldconfig, *(["-C", cache] if cache else []), "-p"]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    return [(line.split(" (")[0].strip(), line.split(" => ")[1]) for line in out.splitlines()[1:]
            if "=>" in line]


@pytest.mark.skipif(not os.path.exists("/etc/ld.so.cache"), reason="host has no ld.so.cache")
def test_reader_matches_ldconfig_p_on_host_cache() -> None:
    entries = ldcache.read_ld_cache(SysRoot("/"))
    assert entries is not None and len(entries) > 10
    assert [(e.soname, e.path) for e in entries] == host_ldconfig_p()


@pytest.mark.skipif(not os.path.exists("/etc/ld.so.cache"), reason="host has no ld.so.cache")
def test_sort_order_equals_ldconfig() -> None:
    entries = ldcache.read_ld_cache(SysRoot("/"))
    assert entries is not None
    shuffled = list(reversed(entries))
    rebuilt = ldcache.parse_ld_cache(ldcache.build_ld_cache(shuffled))
    assert rebuilt == entries  # ldconfig's order, recovered from any input order


def test_build_is_deterministic_and_readable_by_ldconfig(tmp_path: Path) -> None:
    entries = [CacheEntry("libz.so.1", "/opt/z/libz.so.1", 0x303),
               CacheEntry("libfoo.so.10", "/opt/f/libfoo.so.10", 0x303),
               CacheEntry("libfoo.so.9", "/opt/f/libfoo.so.9", 0x303),
               CacheEntry("libfoo.so.9", "/opt/g/glibc-hwcaps/x86-64-v3/libfoo.so.9", 0x303,
                          ldcache.HWCAP_EXTENSION),
               CacheEntry("libbar.so", "/opt/b/libbar-1.so", 0x303)]
    data = ldcache.build_ld_cache(entries)
    assert data == ldcache.build_ld_cache(reversed(entries + entries))
    assert data.startswith(b"glibc-ld.so.cache1.1")
    parsed = ldcache.parse_ld_cache(data)
    assert [e.soname for e in parsed] == ["libz.so.1", "libfoo.so.10", "libfoo.so.9", "libfoo.so.9",
                                          "libbar.so"]
    assert ldcache.is_hwcaps_entry(parsed[2]) and not ldcache.is_hwcaps_entry(parsed[3])
    (tmp_path / "cache").write_bytes(data)
    assert host_ldconfig_p(str(tmp_path / "cache")) == [(e.soname, e.path) for e in parsed]


def test_libcmp() -> None:
    assert ldcache.libcmp("libfoo.so.10", "libfoo.so.9") > 0
    assert ldcache.libcmp("libfoo.so.9", "libfoo.so.10") < 0
    assert ldcache.libcmp("libfoo.so.01", "libfoo.so.1") == 0
    assert ldcache.libcmp("liba.so", "libb.so") < 0
    assert ldcache.libcmp("lib1", "liba") > 0
    assert ldcache.libcmp("libx.so", "libx.so.1") < 0


def test_corrupt_cache_is_source_error(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    good = ldcache.build_ld_cache([CacheEntry("libz.so.1", "/lib/libz.so.1", 0x303)])
    for bad in (b"garbage", good[:30], good[:60], b"ld.so-1.7.0" + b"\xff" * 8):
        (tmp_path / "etc/ld.so.cache").write_bytes(bad)
        with pytest.raises(SourceError) as err:
            ldcache.read_ld_cache(SysRoot(str(tmp_path)))
        assert "\n" not in str(err.value)
    (tmp_path / "etc/ld.so.cache").unlink()
    assert ldcache.read_ld_cache(SysRoot(str(tmp_path))) is None


def test_old_format_with_new_appended() -> None:
    """An ``ld.so-1.7.0`` header followed by the new format: the new part is read."""
    new = ldcache.build_ld_cache([CacheEntry("libz.so.1", "/lib/libz.so.1", 0x303)])
    old_strings = b"libz.so.1\0/lib/libz.so.1\0"
    header = b"ld.so-1.7.0" + b"\0" + struct.pack("<I", 1)
    entries = struct.pack("<iII", 1, 0, 10)
    body = header + entries
    pad = b"\0" * (((len(body) + 7) & ~7) - len(body))
    # New-format offsets are relative to the new header, which starts the old string table.
    data = body + pad + new + old_strings
    parsed = ldcache.parse_ld_cache(data)
    assert parsed == [CacheEntry("libz.so.1", "/lib/libz.so.1", 0x303, 0)]
    old_only = body + b"libz.so.1\0/lib/libz.so.1\0"
    assert ldcache.parse_ld_cache(old_only) == [CacheEntry("libz.so.1", "/lib/libz.so.1", 1, 0)]


def test_read_ld_so_conf(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    (etc / "ld.so.conf.d").mkdir(parents=True)
    (etc / "ld.so.conf").write_text(
        "# comment\n/usr/local/lib  \ninclude ld.so.conf.d/*.conf\n/opt/x/ # trailing\n"
        "hwcap 1 foo\n/usr/local/lib\nrelative/dir\n/opt/typed=libc6\n")
    (etc / "ld.so.conf.d/b.conf").write_text("/opt/b\n")
    (etc / "ld.so.conf.d/a.conf").write_text("/opt/a\ninclude /etc/more/*.conf\n")
    (etc / "ld.so.conf.d/ignored.txt").write_text("/opt/ignored\n")
    (etc / "more").mkdir()
    (etc / "more/m.conf").write_text("/opt/m\n")
    (etc / "ld.so.conf.d/loop.conf").write_text("include /etc/ld.so.conf.d/loop.conf\n")
    with pytest.raises(SourceError, match="nest"):
        ldcache.read_ld_so_conf(SysRoot(str(tmp_path)))
    (etc / "ld.so.conf.d/loop.conf").unlink()
    assert ldcache.read_ld_so_conf(SysRoot(str(tmp_path))) == [
        "/usr/local/lib", "/opt/a", "/opt/m", "/opt/b", "/opt/x", "/opt/typed"]
    assert ldcache.read_ld_so_conf(SysRoot(str(tmp_path / "etc"))) == []


def test_host_ld_so_conf_agrees_with_ldconfig_verbose() -> None:
    """The dirs ldconfig -v scans (minus its built-in system dirs) are ours, in order."""
    ldconfig = shutil.which("ldconfig") or "/sbin/ldconfig"
    if not os.path.exists(ldconfig) or not os.path.exists("/etc/ld.so.conf"):
        pytest.skip("needs ldconfig and /etc/ld.so.conf")
    out = subprocess.run([ldconfig, "-v", "-N", "-X"], capture_output=True, text=True).stdout
    scanned = [line.split(":")[0] for line in out.splitlines() if line and not line.startswith("\t")]
    ours = ldcache.read_ld_so_conf(SysRoot("/"))
    # ldconfig also drops a directory it already scanned under another name
    # (merged /usr); do the same before comparing.
    unique: list[str] = []
    for directory in ours:
        if os.path.isdir(directory) and all(not os.path.samefile(directory, d) for d in unique):
            unique.append(directory)
    assert [d for d in scanned if d in ours] == unique


@pytest.mark.skipif(shutil.which("gcc") is None or not os.path.exists(HOST_LDSO), reason="needs gcc, glibc")
def test_glibc_uses_generated_cache(tmp_path: Path) -> None:
    """A library only in /opt/mylib runs under chroot with our cache, and not without it."""
    if os.geteuid() != 0:
        pytest.skip("needs root for chroot")
    root = tmp_path / "root"
    (root / "usr/lib/x86_64-linux-gnu").mkdir(parents=True)
    (root / "lib").symlink_to("usr/lib")
    (root / "lib64").mkdir()
    (root / "lib64/ld-linux-x86-64.so.2").symlink_to("/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
    shutil.copy(HOST_LDSO, root / "usr/lib/x86_64-linux-gnu/")
    shutil.copy(HOST_LIBC, root / "usr/lib/x86_64-linux-gnu/")
    (root / "opt/mylib").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "etc/ld.so.conf").write_text("/opt/mylib\n")
    (tmp_path / "my.c").write_text("int answer(void) { return 42; }\n")
    (tmp_path / "main.c").write_text("int answer(void); int main(void) { return answer(); }\n")
    lib = root / "opt/mylib/libmy.so.1.0"
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(lib), str(tmp_path / "my.c"),
                    "-Wl,-soname,libmy.so.1"],
                   check=True)
    (root / "opt/mylib/libmy.so.1").symlink_to("libmy.so.1.0")
    subprocess.run(["gcc", "-o", str(root / "prog"), str(tmp_path / "main.c"), str(lib)], check=True)

    def run() -> int:
        return subprocess.run(["/prog"], env={}, preexec_fn=lambda: (os.chroot(str(root)), os.chdir("/")),
                              capture_output=True).returncode

    assert run() == 127  # libmy.so.1 not found without a cache
    sysroot = SysRoot(str(root))
    objects = {"/opt/mylib/libmy.so.1.0": read_elf(str(lib)),
               "/usr/lib/x86_64-linux-gnu/libc.so.6": read_elf(HOST_LIBC)}
    entries = ldcache.cache_entries_for(objects, ldcache.read_ld_so_conf(sysroot), sysroot)
    assert entries == [CacheEntry("libmy.so.1", "/opt/mylib/libmy.so.1", 0x303, 0)]
    (root / "etc/ld.so.cache").write_bytes(ldcache.build_ld_cache(entries))
    assert run() == 42


def test_cache_entries_for_dirs_and_hwcaps(tmp_path: Path) -> None:
    info = read_elf(HOST_LIBC) if os.path.exists(HOST_LIBC) else None
    if info is None:
        pytest.skip("needs the host libc")
    objects = {"/opt/a/libc.so.6": info, "/opt/a/glibc-hwcaps/x86-64-v3/libc.so.6": info,
               "/opt/b/libc.so.6": info, "/opt/c/libc-2.36.so": info}
    entries = ldcache.cache_entries_for(objects, ["/opt/b", "/opt/a", "/opt/c", "/opt/none"])
    assert sorted(entries, key=cmp_to_key(ldcache._entry_cmp)) == entries
    assert [(e.path, e.hwcap) for e in entries] == [
        ("/opt/a/glibc-hwcaps/x86-64-v3/libc.so.6", ldcache.HWCAP_EXTENSION),
        ("/opt/b/libc.so.6", 0)]
    assert all(e.flags == 0x303 for e in entries)
