"""read_elf and oci_platform on real gcc-built and host files."""

from __future__ import annotations

import glob
import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from microcontainer_tool.closure.elf import ElfInfo, oci_platform, read_elf
from microcontainer_tool.errors import ElfError

needs_gcc = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")


def gcc(*args: str) -> None:
    proc = subprocess.run(["gcc", *args], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A library with SONAME/RPATH and programs with RPATH, RUNPATH, nodefaultlib."""
    top = tmp_path_factory.mktemp("elf")
    if shutil.which("gcc") is None:
        pytest.skip("needs gcc")
    (top / "lib.c").write_text("int f(void) { return 1; }\n")
    (top / "main.c").write_text("int f(void); int main(void) { return f(); }\n")
    gcc("-shared", "-fPIC", "-o", str(top / "libx.so.1"), str(top / "lib.c"), "-Wl,-soname,libx.so.1",
        "-Wl,--disable-new-dtags", "-Wl,-rpath,$ORIGIN/a:/b")
    gcc("-o", str(top / "prog_rpath"), str(top / "main.c"), "-Wl,--no-as-needed", str(top / "libx.so.1"),
        "-lm", "-Wl,--disable-new-dtags", "-Wl,-rpath,/r1:/r2")
    gcc("-o", str(top / "prog_runpath"), str(top / "main.c"), str(top / "libx.so.1"),
        "-Wl,--enable-new-dtags", "-Wl,-rpath,$ORIGIN/../lib", "-Wl,-z,nodefaultlib")
    return top


def test_program_facts(built: Path) -> None:
    info = read_elf(str(built / "prog_rpath"))
    assert info is not None
    assert (info.elf_class, info.little_endian, info.machine) == (64, True, "EM_X86_64")
    assert info.is_program and info.interpreter == "/lib64/ld-linux-x86-64.so.2"
    assert info.needed == ("libx.so.1", "libm.so.6", "libc.so.6")
    assert (info.rpath, info.runpath, info.soname, info.nodeflib) == (("/r1", "/r2"), (), None, False)


def test_runpath_and_nodeflib(built: Path) -> None:
    info = read_elf(str(built / "prog_runpath"))
    assert info is not None
    assert (info.rpath, info.runpath, info.nodeflib) == ((), ("$ORIGIN/../lib",), True)


def test_library_facts(built: Path) -> None:
    info = read_elf(str(built / "libx.so.1"))
    assert info == ElfInfo(64, True, "EM_X86_64", False, None, (), ("$ORIGIN/a", "/b"), (), "libx.so.1",
                           False)


def test_stripped_section_headers_do_not_matter(built: Path, tmp_path: Path) -> None:
    data = bytearray((built / "prog_rpath").read_bytes())
    struct.pack_into("<Q", data, 0x28, 0)       # e_shoff
    struct.pack_into("<HHH", data, 0x3C, 0, 0, 0)  # e_shnum, e_shstrndx...
    (tmp_path / "noshdr").write_bytes(bytes(data))
    assert read_elf(str(tmp_path / "noshdr")) == read_elf(str(built / "prog_rpath"))


def test_not_elf_is_none(tmp_path: Path) -> None:
    (tmp_path / "script").write_text("#!/bin/sh\n")
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "short").write_bytes(b"\x7fEL")
    for name in ("script", "empty", "short"):
        assert read_elf(str(tmp_path / name)) is None


@pytest.mark.parametrize("cut", [5, 20, 63, 200, 1000, 3000])
def test_truncated_is_elf_error(built: Path, tmp_path: Path, cut: int) -> None:
    (tmp_path / "cut").write_bytes((built / "prog_rpath").read_bytes()[:cut])
    with pytest.raises(ElfError) as err:
        read_elf(str(tmp_path / "cut"))
    assert "\n" not in str(err.value) and "cut" in str(err.value)


@pytest.mark.parametrize("offset,value", [(4, b"\x07"), (5, b"\x09"), (0x20, b"\xff" * 8),
                                          (0x36, b"\x01\x00"), (0x38, b"\xff\x7f")])
def test_corrupt_headers_are_elf_error(built: Path, tmp_path: Path, offset: int, value: bytes) -> None:
    data = bytearray((built / "prog_rpath").read_bytes())
    data[offset:offset + len(value)] = value
    (tmp_path / "bad").write_bytes(bytes(data))
    with pytest.raises(ElfError):
        read_elf(str(tmp_path / "bad"))


def test_corrupt_dynamic_strings_are_elf_error(built: Path, tmp_path: Path) -> None:
    """Point every DT_NEEDED string offset far outside DT_STRTAB."""
    data = bytearray((built / "prog_rpath").read_bytes())
    phoff, phentsize, phnum = struct.unpack_from("<Q", data, 0x20)[0], *struct.unpack_from("<HH", data, 0x36)
    for index in range(phnum):
        p_type, _flags, p_offset, _v, _p, p_filesz = struct.unpack_from("<IIQQQQ", data,
                                                                        phoff + index * phentsize)
        if p_type == 2:
            for at in range(p_offset, p_offset + p_filesz, 16):
                if struct.unpack_from("<q", data, at)[0] == 1:
                    struct.pack_into("<Q", data, at + 8, 0x7FFFFFFF)
    (tmp_path / "bad").write_bytes(bytes(data))
    with pytest.raises(ElfError, match="string offset"):
        read_elf(str(tmp_path / "bad"))


def test_unreadable_is_elf_error(tmp_path: Path) -> None:
    with pytest.raises(ElfError):
        read_elf(str(tmp_path / "missing"))


def test_oci_platform(built: Path, tmp_path: Path) -> None:
    info = read_elf(str(built / "prog_rpath"))
    assert info is not None and oci_platform(info) == ("amd64", None)
    data = bytearray((built / "prog_rpath").read_bytes())
    data[18:20] = (183).to_bytes(2, "little")  # EM_AARCH64
    (tmp_path / "arm64").write_bytes(bytes(data))
    arm = read_elf(str(tmp_path / "arm64"))
    assert arm is not None and arm.machine == "EM_AARCH64" and oci_platform(arm) == ("arm64", "v8")
    data[18:20] = (0x1234).to_bytes(2, "little")
    (tmp_path / "odd").write_bytes(bytes(data))
    odd = read_elf(str(tmp_path / "odd"))
    assert odd is not None
    with pytest.raises(ElfError, match="no OCI platform"):
        oci_platform(odd)
    assert oci_platform(ElfInfo(32, True, "EM_ARM", True, None, (), (), (), None, False)) == ("arm", "v7")
    assert oci_platform(ElfInfo(32, True, "EM_386", True, None, (), (), (), None, False)) == ("386", None)
    assert oci_platform(ElfInfo(64, False, "EM_S390", True, None, (), (), (), None, False)) == ("s390x", None)


@needs_gcc
def test_32_bit_library(tmp_path: Path) -> None:
    (tmp_path / "x.c").write_text("int g(void) { return 2; }\n")
    proc = subprocess.run(["gcc", "-m32", "-shared", "-nostdlib", "-fPIC", "-o", str(tmp_path / "lib32.so"),
                           str(tmp_path / "x.c"), "-Wl,-soname,lib32.so"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr  # -nostdlib: plain gcc makes it, no multilib needed
    info = read_elf(str(tmp_path / "lib32.so"))
    assert info is not None
    assert (info.elf_class, info.machine, info.soname) == (32, "EM_386", "lib32.so")


def test_host_files_parse() -> None:
    """Every host program parses (``bench/ldd_agreement.py`` times read_elf per file)."""
    files = [f for f in sorted(glob.glob("/usr/bin/*")) if os.path.isfile(f) and not os.path.islink(f)][:300]
    infos = [read_elf(f) for f in files]
    assert any(i is not None and i.is_program for i in infos)
    for path, info in zip(files, infos, strict=True):
        with open(path, "rb") as file:
            is_elf = file.read(4) == b"\x7fELF"
        assert (info is not None) == is_elf, path


def test_common_machine_names_agree_with_pyelftools():
    from elftools.elf.enums import ENUM_E_MACHINE

    from microcontainer_tool.closure import elf

    for number, name in elf._COMMON_MACHINES.items():
        assert ENUM_E_MACHINE[name] == number
    assert elf.machine_name(0xBEEF) == "EM_UNKNOWN_0xbeef"
