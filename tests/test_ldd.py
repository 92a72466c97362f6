"""The closure resolver on a fake sysroot of gcc-built programs and libraries.

The fake root holds the host's ld.so and libc (merged-usr layout), so every
scenario is also checked against the real glibc loader, run inside the root
with ``chroot ROOT /lib64/ld-linux-x86-64.so.2 --list PROG`` (root only).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from microcontainer_tool.closure import ldcache
from microcontainer_tool.closure.ldd import Closure, Dependency, LibraryResolver
from microcontainer_tool.errors import ElfError, PathEscapeError, SourceError
from microcontainer_tool.sources.sysroot import SysRoot

HOST_LDSO = "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
HOST_LIBC = "/lib/x86_64-linux-gnu/libc.so.6"
MULTIARCH = "/usr/lib/x86_64-linux-gnu"
QEMU = shutil.which("qemu-x86_64-static")
PLATFORM_DIRS = ("x86_64", "haswell", "xeon_phi")

pytestmark = pytest.mark.skipif(
    shutil.which("gcc") is None or not os.path.exists(HOST_LDSO), reason="needs gcc and an x86-64 glibc host"
)


def gcc(*args: str) -> None:
    """Run gcc; fail the test with its message if it fails."""
    proc = subprocess.run(["gcc", *args], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def build_lib(root: Path, image_path: str, soname: str, needs: tuple[str, ...] = (),
              flags: tuple[str, ...] = (), symbol: str = "f") -> None:
    """A shared library at ``image_path`` in ``root``, needing ``needs`` (image paths)."""
    out = root / image_path.lstrip("/")
    out.parent.mkdir(parents=True, exist_ok=True)
    src = out.parent / f".{out.name}.c"
    src.write_text(f"int {symbol}_{abs(hash(image_path)) % 10000}(void) {{ return 1; }}\n")
    gcc("-shared", "-fPIC", "-o", str(out), str(src), f"-Wl,-soname,{soname}", "-Wl,--no-as-needed",
        *[str(root / n.lstrip("/")) for n in needs], *flags)
    src.unlink()


def build_prog(root: Path, image_path: str, needs: tuple[str, ...] = (), flags: tuple[str, ...] = ()) -> None:
    """A PIE program at ``image_path`` in ``root`` linked against ``needs`` (image paths)."""
    out = root / image_path.lstrip("/")
    out.parent.mkdir(parents=True, exist_ok=True)
    src = out.parent / f".{out.name}.c"
    src.write_text("int main(void) { return 0; }\n")
    gcc("-o", str(out), str(src), "-Wl,--no-as-needed", "-Wl,--allow-shlib-undefined",
        *[str(root / n.lstrip("/")) for n in needs], *flags)
    src.unlink()


def patch_machine(path: Path, machine: int) -> None:
    """Rewrite e_machine of a little-endian ELF file in place."""
    data = bytearray(path.read_bytes())
    data[18:20] = machine.to_bytes(2, "little")
    path.write_bytes(bytes(data))


def make_base_root(root: Path) -> None:
    """A merged-usr root with the host's ld.so and libc, no ld.so.cache."""
    (root / "usr/lib/x86_64-linux-gnu").mkdir(parents=True)
    (root / "lib").symlink_to("usr/lib")
    (root / "lib64").mkdir()
    (root / "lib64/ld-linux-x86-64.so.2").symlink_to("/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
    shutil.copy(HOST_LDSO, root / "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
    shutil.copy(HOST_LIBC, root / "usr/lib/x86_64-linux-gnu/libc.so.6")
    (root / "etc/ld.so.conf.d").mkdir(parents=True)
    (root / "etc/ld.so.conf").write_text("# test\ninclude ld.so.conf.d/*.conf\n")


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fake sysroot with every scenario's programs and libraries."""
    top = tmp_path_factory.mktemp("sysroot") / "root"
    make_base_root(top)
    rp, rnp = "-Wl,--disable-new-dtags", "-Wl,--enable-new-dtags"
    # libb: only in /opt/a, through a symlink named after its soname.
    build_lib(top, "/opt/a/libb.so.1.0", "libb.so.1")
    (top / "opt/a/libb.so.1").symlink_to("libb.so.1.0")
    build_lib(top, "/opt/lib/liba.so.1", "liba.so.1", needs=("/opt/a/libb.so.1",))
    build_prog(top, "/opt/bin/prog_rpath", ("/opt/lib/liba.so.1",), (rp, "-Wl,-rpath,/opt/lib:/opt/a"))
    build_prog(top, "/opt/bin/prog_runpath", ("/opt/lib/liba.so.1",), (rnp, "-Wl,-rpath,/opt/lib:/opt/a"))
    # $ORIGIN in the program and in a library.
    build_lib(top, "/opt/lib/libo.so.1", "libo.so.1", needs=("/opt/a/libb.so.1",),
              flags=(rnp, "-Wl,-rpath,$ORIGIN/../a"))
    build_prog(top, "/opt/bin/prog_origin", ("/opt/lib/libo.so.1",), (rnp, "-Wl,-rpath,$ORIGIN/../lib"))
    # LD_LIBRARY_PATH: another liba.so.1 in /opt/env.
    build_lib(top, "/opt/env/liba.so.1", "liba.so.1", needs=("/opt/a/libb.so.1",), symbol="g")
    # A library reachable only through ld.so.conf (include + relative glob).
    build_lib(top, "/opt/conf/libconf.so.1", "libconf.so.1")
    (top / "etc/ld.so.conf.d/test.conf").write_text("/opt/conf/\n")
    build_prog(top, "/opt/bin/prog_conf", ("/opt/conf/libconf.so.1",))
    # glibc-hwcaps variant next to the base library.
    build_lib(top, "/opt/hw/libhw.so.1", "libhw.so.1")
    build_lib(top, "/opt/hw/glibc-hwcaps/x86-64-v3/libhw.so.1", "libhw.so.1", symbol="v3")
    build_prog(top, "/opt/bin/prog_hw", ("/opt/hw/libhw.so.1",), (rnp, "-Wl,-rpath,/opt/hw"))
    # Multilib: a 32-bit and a wrong-machine libb.so.1 come first in RPATH.
    multi32 = top / "opt/multi32"
    multi32.mkdir(parents=True)
    src = multi32 / "x.c"
    src.write_text("int b32(void) { return 1; }\n")
    proc = subprocess.run(["gcc", "-m32", "-shared", "-nostdlib", "-fPIC", "-o", str(multi32 / "libb.so.1"),
                           str(src), "-Wl,-soname,libb.so.1"], capture_output=True, text=True)
    src.unlink()
    if proc.returncode != 0:  # no 32-bit toolchain: flip the class byte of a copy instead
        data = bytearray((top / "opt/a/libb.so.1.0").read_bytes())
        data[4] = 1
        (multi32 / "libb.so.1").write_bytes(bytes(data))
    (top / "opt/multim").mkdir()
    shutil.copy(top / "opt/a/libb.so.1.0", top / "opt/multim/libb.so.1")
    patch_machine(top / "opt/multim/libb.so.1", 183)  # EM_AARCH64
    build_prog(top, "/opt/bin/prog_multi", ("/opt/a/libb.so.1",),
               (rp, "-Wl,-rpath,/opt/multi32:/opt/multim:/opt/a"))
    # A non-ELF candidate: ld.so stops with "file too short", we skip it.
    (top / "opt/notelf").mkdir()
    (top / "opt/notelf/libb.so.1").write_text("/* GNU ld script */\n")
    build_prog(top, "/opt/bin/prog_notelf", ("/opt/a/libb.so.1",), (rp, "-Wl,-rpath,/opt/notelf:/opt/a"))
    # $LIB and $PLATFORM: libplat in each platform dir ld.so may pick (x86_64 on
    # AMD and older Intel, haswell on AVX2 Intel, xeon_phi), libfb only for
    # haswell and in a fallback dir that every other CPU reaches.
    build_lib(top, "/opt/lib/x86_64-linux-gnu/liblibtok.so.1", "liblibtok.so.1")
    for platform in PLATFORM_DIRS:
        build_lib(top, f"/opt/{platform}/libplat.so.1", "libplat.so.1", symbol=platform)
    build_lib(top, "/opt/haswell/libfb.so.1", "libfb.so.1", symbol="haswell")
    build_lib(top, "/opt/fallback/libfb.so.1", "libfb.so.1")
    build_prog(top, "/opt/bin/prog_dst", ("/opt/lib/x86_64-linux-gnu/liblibtok.so.1",
                                          "/opt/x86_64/libplat.so.1", "/opt/fallback/libfb.so.1"),
               (rnp, "-Wl,-rpath,/opt/$LIB:/opt/${PLATFORM}:/opt/fallback"))
    # A missing library deep in the chain.
    build_lib(top, "/opt/gone/libgone.so.1", "libgone.so.1")
    build_lib(top, "/opt/lib/libneedsgone.so.1", "libneedsgone.so.1", needs=("/opt/gone/libgone.so.1",))
    build_prog(top, "/opt/bin/prog_missing", ("/opt/lib/libneedsgone.so.1",), (rnp, "-Wl,-rpath,/opt/lib"))
    shutil.rmtree(top / "opt/gone")
    # DF_1_NODEFLIB: a library in a default dir is not found.
    build_lib(top, "/usr/lib/libdef.so.1", "libdef.so.1")
    build_prog(top, "/opt/bin/prog_nodeflib", ("/usr/lib/libdef.so.1",), ("-Wl,-z,nodefaultlib",))
    build_prog(top, "/opt/bin/prog_deflib", ("/usr/lib/libdef.so.1",))
    # A DT_NEEDED with a slash.
    build_lib(top, "/opt/direct/libdirect.so", "/opt/direct/libdirect.so")
    build_prog(top, "/opt/bin/prog_direct", ("/opt/direct/libdirect.so",))
    # Loader-chain RPATH: the program's RPATH serves a library's needs, a
    # library with RUNPATH does not use any RPATH.
    build_lib(top, "/opt/lib/librunp.so.1", "librunp.so.1", needs=("/opt/a/libb.so.1",),
              flags=(rnp, "-Wl,-rpath,/nonexistent"))
    build_prog(top, "/opt/bin/prog_chain", ("/opt/lib/librunp.so.1",), (rp, "-Wl,-rpath,/opt/lib:/opt/a"))
    (top / "opt/bin/script").write_text("#!/bin/sh\necho hi\n")
    return top


def image_set(resolver: LibraryResolver, path: str) -> set[str]:
    """Our closure of ``path`` as canonical image paths + ``missing:NAME``."""
    closure = resolver.closure([path])
    return set(closure.libraries()) | {f"missing:{d.name}" for d in closure.missing()}


def real_ldso(root: Path, prog: str, env: dict[str, str] | None = None, cpu: str | None = None) -> set[str]:
    """What the real glibc loader lists for ``prog`` inside ``root`` (needs root).

    Args:
        cpu: a QEMU CPU model: run the loader under ``qemu-x86_64-static -cpu
            CPU`` (copied into ``root`` for the run), so it answers as on that
            CPU; ``None``: natively, on this host's CPU.
    """
    if os.geteuid() != 0:
        pytest.skip("the real-ld.so oracle needs root (chroot)")
    command = ["/lib64/ld-linux-x86-64.so.2", prog]
    qemu = root / "qemu-x86_64-static"
    if cpu is not None:
        if QEMU is None:
            pytest.skip("needs qemu-x86_64-static (apt-get install qemu-user-static)")
        shutil.copy(QEMU, qemu)
        command = ["/qemu-x86_64-static", "-cpu", cpu, *command]
    # What ldd does (LD_TRACE_LOADED_OBJECTS=1 ld.so PROG), inside the root.
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=60,
                              env={"LD_TRACE_LOADED_OBJECTS": "1", **(env or {})},
                              preexec_fn=lambda: (os.chroot(str(root)), os.chdir("/")))
    finally:
        qemu.unlink(missing_ok=True)
    sysroot = SysRoot(str(root))
    result: set[str] = set()
    for line in proc.stdout.splitlines():
        line = line.strip()
        if not line or line.startswith("linux-vdso"):
            continue
        if "=>" in line:
            name, target = (p.strip() for p in line.split("=>", 1))
            if target.startswith("not found"):
                result.add(f"missing:{name}")
                continue
            line = target
        resolved = sysroot.resolve(line.rsplit(" (0x", 1)[0].strip())
        assert resolved is not None, line
        result.add(resolved.path)
    assert result, proc.stdout + proc.stderr
    # ld.so lists itself only when an object needs it by name; a program
    # always needs its interpreter.
    result.add(f"{MULTIARCH}/ld-linux-x86-64.so.2")
    return result


def edge(closure: Closure, name: str) -> Dependency:
    """The first edge needing ``name``."""
    return next(d for d in closure.edges if d.name == name)


# prog_conf is left out: without an ld.so.cache ld.so ignores ld.so.conf, while
# the resolver reads the conf dirs (what ldconfig would cache; the image gets a
# generated cache). test_ld_so_conf_... compares it once the cache exists.
# prog_dst is left out too: its $PLATFORM closure is every CPU's (test_platform_...).
PROGS = ["prog_rpath", "prog_runpath", "prog_origin", "prog_multi",
         "prog_missing", "prog_nodeflib", "prog_deflib", "prog_direct", "prog_chain"]


@pytest.mark.parametrize("prog", PROGS)
def test_closure_equals_real_ldso(root: Path, prog: str) -> None:
    """Each scenario resolves exactly like glibc's ld.so run in the root."""
    resolver = LibraryResolver(SysRoot(str(root)))
    assert image_set(resolver, f"/opt/bin/{prog}") == real_ldso(root, f"/opt/bin/{prog}")


def test_rpath_is_inherited_runpath_is_not(root: Path) -> None:
    resolver = LibraryResolver(SysRoot(str(root)))
    with_rpath = resolver.closure(["/opt/bin/prog_rpath"])
    libb = edge(with_rpath, "libb.so.1")
    assert (libb.needer, libb.path, libb.rule) == ("/opt/lib/liba.so.1", "/opt/a/libb.so.1.0", "RPATH")
    assert libb.links == (("/opt/a/libb.so.1", "libb.so.1.0"),)
    assert libb.search_dir == "/opt/a"
    with_runpath = resolver.closure(["/opt/bin/prog_runpath"])
    assert edge(with_runpath, "liba.so.1").rule == "RUNPATH"
    assert [d.name for d in with_runpath.missing()] == ["libb.so.1"]


def test_runpath_object_ignores_loader_rpath(root: Path) -> None:
    closure = LibraryResolver(SysRoot(str(root))).closure(["/opt/bin/prog_chain"])
    assert edge(closure, "librunp.so.1").rule == "RPATH"
    assert edge(closure, "libb.so.1").path is None


def test_origin_expands_to_the_carrier_dir(root: Path) -> None:
    closure = LibraryResolver(SysRoot(str(root))).closure(["/opt/bin/prog_origin"])
    assert edge(closure, "libo.so.1").path == "/opt/lib/libo.so.1"
    libb = edge(closure, "libb.so.1")
    assert (libb.needer, libb.rule, libb.path) == ("/opt/lib/libo.so.1", "RUNPATH", "/opt/a/libb.so.1.0")


def test_library_path_between_rpath_and_runpath(root: Path) -> None:
    resolver = LibraryResolver(SysRoot(str(root)), library_path=["/opt/env"])
    runpath = resolver.closure(["/opt/bin/prog_runpath"])
    assert (edge(runpath, "liba.so.1").path, edge(runpath, "liba.so.1").rule) == (
        "/opt/env/liba.so.1", "LD_LIBRARY_PATH")
    rpath = resolver.closure(["/opt/bin/prog_rpath"])
    assert edge(rpath, "liba.so.1").path == "/opt/lib/liba.so.1"
    expected = real_ldso(root, "/opt/bin/prog_runpath", {"LD_LIBRARY_PATH": "/opt/env"})
    assert image_set(resolver, "/opt/bin/prog_runpath") == expected


def test_ld_so_conf_without_cache_and_with_generated_cache(root: Path, tmp_path: Path) -> None:
    sysroot = SysRoot(str(root))
    closure = LibraryResolver(sysroot).closure(["/opt/bin/prog_conf"])
    conf = edge(closure, "libconf.so.1")
    assert (conf.path, conf.rule, conf.search_dir) == ("/opt/conf/libconf.so.1", "ld.so.cache", "/opt/conf")
    copy = tmp_path / "root"
    shutil.copytree(root, copy, symlinks=True)
    entries = ldcache.cache_entries_for(closure.objects, ldcache.read_ld_so_conf(SysRoot(str(copy))),
                                        SysRoot(str(copy)))
    (copy / "etc/ld.so.cache").write_bytes(ldcache.build_ld_cache(entries))
    shutil.rmtree(copy / "etc/ld.so.conf.d")
    cached = LibraryResolver(SysRoot(str(copy))).closure(["/opt/bin/prog_conf"])
    assert edge(cached, "libconf.so.1").path == "/opt/conf/libconf.so.1"
    assert edge(cached, "libconf.so.1").rule == "ld.so.cache"
    assert image_set(LibraryResolver(SysRoot(str(copy))), "/opt/bin/prog_conf") == real_ldso(
        copy, "/opt/bin/prog_conf")


def test_wrong_class_machine_and_non_elf_candidates_are_skipped(root: Path) -> None:
    resolver = LibraryResolver(SysRoot(str(root)))
    for prog in ("/opt/bin/prog_multi", "/opt/bin/prog_notelf"):
        libb = edge(resolver.closure([prog]), "libb.so.1")
        assert (libb.path, libb.search_dir) == ("/opt/a/libb.so.1.0", "/opt/a")


def test_lib_and_platform_tokens(root: Path) -> None:
    closure = LibraryResolver(SysRoot(str(root))).closure(["/opt/bin/prog_dst"])
    assert edge(closure, "liblibtok.so.1").path == "/opt/lib/x86_64-linux-gnu/liblibtok.so.1"
    assert edge(closure, "libplat.so.1").path == "/opt/x86_64/libplat.so.1"
    # Every platform dir that has the library is in the closure, each edge
    # recording the $PLATFORM value it was found with.
    assert [(d.path, d.rule, d.search_dir) for d in closure.edges if d.name == "libplat.so.1"] == [
        (f"/opt/{p}/libplat.so.1", f"RUNPATH ($PLATFORM={p})", f"/opt/{p}") for p in PLATFORM_DIRS]
    assert [(d.path, d.rule, d.search_dir) for d in closure.edges if d.name == "libfb.so.1"] == [
        ("/opt/fallback/libfb.so.1", "RUNPATH ($PLATFORM=x86_64)", "/opt/fallback"),
        ("/opt/haswell/libfb.so.1", "RUNPATH ($PLATFORM=haswell)", "/opt/haswell")]
    # A name that finds the same file for every value has no $PLATFORM tag.
    assert edge(closure, "liblibtok.so.1").rule == "RUNPATH"


def test_platform_values_follow_the_machine(tmp_path: Path) -> None:
    """An aarch64 object's $PLATFORM is ``aarch64`` only: x86-64 platform dirs are not its."""
    top = tmp_path / "root"
    platforms = ("aarch64", "x86_64", "haswell")
    for platform in platforms:
        build_lib(top, f"/opt/{platform}/libp.so.1", "libp.so.1", symbol=platform)
    build_lib(top, "/opt/lib/libroot.so.1", "libroot.so.1", needs=("/opt/aarch64/libp.so.1",),
              flags=("-Wl,--enable-new-dtags", "-Wl,-rpath,/opt/$PLATFORM"))
    for path in ["lib/libroot.so.1", *(f"{platform}/libp.so.1" for platform in platforms)]:
        patch_machine(top / "opt" / path, 183)  # EM_AARCH64
    closure = LibraryResolver(SysRoot(str(top))).closure(["/opt/lib/libroot.so.1"])
    assert [(d.path, d.rule) for d in closure.edges if d.name == "libp.so.1"] == [
        ("/opt/aarch64/libp.so.1", "RUNPATH")]


@pytest.mark.parametrize("cpu", [None, "Nehalem", "Haswell-v4"])
def test_platform_closure_holds_what_each_cpu_loads(root: Path, cpu: str | None) -> None:
    """glibc 2.36 expands $PLATFORM to haswell on AVX2 Intel CPUs, x86_64 elsewhere.

    The real loader runs natively (this host's answer) and under QEMU as an
    Intel Haswell (``haswell``) and an Intel Nehalem (``x86_64``), so both
    branches are exercised whatever CPU runs the tests.
    """
    real = real_ldso(root, "/opt/bin/prog_dst", cpu=cpu)
    ours = image_set(LibraryResolver(SysRoot(str(root))), "/opt/bin/prog_dst")
    assert real <= ours
    if cpu == "Haswell-v4":
        assert {"/opt/haswell/libplat.so.1", "/opt/haswell/libfb.so.1"} <= real
    elif cpu == "Nehalem":
        assert {"/opt/x86_64/libplat.so.1", "/opt/fallback/libfb.so.1"} <= real
    # Nothing else: the libraries every CPU would load, from every platform dir.
    platform_libs = {f"/opt/{p}/libplat.so.1" for p in PLATFORM_DIRS} | {
        "/opt/haswell/libfb.so.1", "/opt/fallback/libfb.so.1"}
    assert ours == (real - {lib for lib in real if "libplat" in lib or "libfb" in lib}) | platform_libs


def test_hwcaps_variants_all_included(root: Path) -> None:
    closure = LibraryResolver(SysRoot(str(root))).closure(["/opt/bin/prog_hw"])
    edges = [d for d in closure.edges if d.name == "libhw.so.1"]
    assert [(d.path, d.rule, d.search_dir) for d in edges] == [
        ("/opt/hw/libhw.so.1", "RUNPATH", "/opt/hw"),
        ("/opt/hw/glibc-hwcaps/x86-64-v3/libhw.so.1", "RUNPATH (glibc-hwcaps)", "/opt/hw"),
    ]
    real = real_ldso(root, "/opt/bin/prog_hw")
    ours = image_set(LibraryResolver(SysRoot(str(root))), "/opt/bin/prog_hw")
    assert real <= ours and len(ours - real) == 1  # ld.so picks one variant; we keep both


def test_nodeflib(root: Path) -> None:
    resolver = LibraryResolver(SysRoot(str(root)))
    assert {d.name for d in resolver.closure(["/opt/bin/prog_nodeflib"]).missing()} == {
        "libdef.so.1", "libc.so.6"}
    found = edge(resolver.closure(["/opt/bin/prog_deflib"]), "libdef.so.1")
    # /lib (-> usr/lib) is searched before /usr/lib: found there, through the link.
    assert (found.path, found.rule, found.search_dir, found.links) == (
        "/usr/lib/libdef.so.1", "default dirs", "/lib", (("/lib", "usr/lib"),))


def test_interpreter_edge_links_and_soname_match(root: Path) -> None:
    closure = LibraryResolver(SysRoot(str(root))).closure(["/opt/bin/prog_rpath"])
    interp = closure.edges[0]
    assert (interp.needer, interp.name, interp.rule) == (
        "/opt/bin/prog_rpath", "/lib64/ld-linux-x86-64.so.2", "interpreter")
    assert interp.path == f"{MULTIARCH}/ld-linux-x86-64.so.2"
    assert interp.links == (("/lib64/ld-linux-x86-64.so.2", "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"),
                            ("/lib", "usr/lib"))
    libc_needs = [d for d in closure.edges if d.needer.endswith("libc.so.6")]
    assert [(d.name, d.path, d.rule) for d in libc_needs] == [
        ("ld-linux-x86-64.so.2", f"{MULTIARCH}/ld-linux-x86-64.so.2", "interpreter")]
    libc = edge(closure, "libc.so.6")
    assert (libc.path, libc.rule, libc.search_dir, libc.links) == (
        f"{MULTIARCH}/libc.so.6", "default dirs", "/lib/x86_64-linux-gnu", (("/lib", "usr/lib"),))
    assert closure.objects[interp.path].soname == "ld-linux-x86-64.so.2"


def test_direct_path_needed(root: Path) -> None:
    closure = LibraryResolver(SysRoot(str(root))).closure(["/opt/bin/prog_direct"])
    direct = next(d for d in closure.edges if "libdirect" in d.name)
    assert (direct.path, direct.rule) == ("/opt/direct/libdirect.so", "direct path")


def test_missing_chain_and_message(root: Path) -> None:
    resolver = LibraryResolver(SysRoot(str(root)))
    closure = resolver.closure(["/opt/bin/prog_missing"])
    assert [(d.needer, d.name, d.path) for d in closure.missing()] == [
        ("/opt/lib/libneedsgone.so.1", "libgone.so.1", None)]
    assert closure.chain("/opt/lib/libneedsgone.so.1") == ["/opt/bin/prog_missing",
                                                           "/opt/lib/libneedsgone.so.1"]
    message = resolver.format_missing(closure)
    assert message == "libgone.so.1 not found (needed by /opt/lib/libneedsgone.so.1 <- /opt/bin/prog_missing)"
    assert "\n" not in message


def test_default_dirs_read_from_the_interpreter(root: Path, tmp_path: Path) -> None:
    help_text = subprocess.run([HOST_LDSO, "--help"], capture_output=True, text=True).stdout
    system = tuple(line.split()[0] for line in help_text.splitlines() if "(system search path)" in line)
    resolver = LibraryResolver(SysRoot(str(root)))
    assert resolver.default_dirs("/lib64/ld-linux-x86-64.so.2") == system
    assert resolver.default_dirs(None) == system
    bare = tmp_path / "bare"
    (bare / "usr/lib64").mkdir(parents=True)
    assert LibraryResolver(SysRoot(str(bare))).default_dirs(None) == ("/lib64", "/usr/lib64")
    (bare / "usr/lib/x86_64-linux-gnu").mkdir(parents=True)
    assert LibraryResolver(SysRoot(str(bare))).default_dirs(None)[0] == "/lib/x86_64-linux-gnu"


def test_multiple_roots_are_separate_programs(root: Path) -> None:
    closure = LibraryResolver(SysRoot(str(root))).closure(
        ["/opt/bin/prog_rpath", "/opt/bin/prog_runpath", "/opt/bin/script", "/opt/bin/prog_rpath"])
    assert closure.roots == ("/opt/bin/prog_rpath", "/opt/bin/prog_runpath")
    found = [d for d in closure.edges if d.name == "libb.so.1"]
    assert {(d.needer, d.path) for d in found} == {("/opt/lib/liba.so.1", "/opt/a/libb.so.1.0"),
                                                   ("/opt/lib/liba.so.1", None)}
    assert "/opt/a/libb.so.1.0" in closure.libraries()
    assert all(path not in closure.libraries() for path in closure.roots)


def test_find_library(root: Path) -> None:
    resolver = LibraryResolver(SysRoot(str(root)))
    dep = resolver.find_library("libb.so.1", "/opt/bin/prog_rpath")
    assert (dep.needer, dep.path, dep.rule) == ("/opt/bin/prog_rpath", "/opt/a/libb.so.1.0", "RPATH")
    assert resolver.find_library("libconf.so.1").path == "/opt/conf/libconf.so.1"
    assert resolver.find_library("libnope.so.9").path is None


def test_errors(root: Path, tmp_path: Path) -> None:
    copy = tmp_path / "root"
    shutil.copytree(root, copy, symlinks=True)
    data = (copy / "opt/lib/liba.so.1").read_bytes()
    (copy / "opt/lib/liba.so.1").write_bytes(data[:200])
    resolver = LibraryResolver(SysRoot(str(copy)))
    with pytest.raises(ElfError, match="liba.so.1"):
        resolver.closure(["/opt/bin/prog_rpath"])
    with pytest.raises(SourceError, match="no such file"):
        resolver.closure(["/opt/bin/nothere"])
    (copy / "opt/a/libb.so.1").unlink()
    (copy / "opt/a/libb.so.1").symlink_to("../../../../../../../etc/passwd")
    (copy / "opt/lib/liba.so.1").write_bytes(data)
    with pytest.raises(PathEscapeError):
        LibraryResolver(SysRoot(str(copy))).closure(["/opt/bin/prog_rpath"])
