"""Portable debug toolboxes: dynamically linked programs that run from ``/dev/crashcart`` in any root.

A program such as ``strace`` or ``gdb`` looks for its loader (``PT_INTERP``) and
libraries in the root it runs in -- inside a container, the container's root,
which does not have them. :func:`build_toolbox` takes the programs of a
:class:`~.toolboxspec.ToolboxSpec` from a sysroot (the host's ``/`` by default,
another directory, or an image) with their ELF closure, found by
:class:`~microcontainer_tool.closure.ldd.LibraryResolver` inside that sysroot,
and lays them out as::

    bin/busybox, bin/APPLET -> busybox   the static busybox (also the wrappers' shell)
    bin/PROGRAM                          a wrapper script (or the program, if static)
    libexec/PROGRAM                      the program itself
    lib/NAME                             every library by the name it is needed as, and the loader
    root/PATH                            run-time files at their sysroot paths (packs, gdb's
                                         data directory, the Python standard library)

Each wrapper runs its program through the toolbox's own loader, never the
container's, with the toolbox's libraries (the container is not patched)::

    #!/dev/crashcart/bin/busybox sh
    exec /dev/crashcart/lib/ld-linux-x86-64.so.2 --library-path /dev/crashcart/lib \\
        --argv0 "$0" /dev/crashcart/libexec/strace "$@"

``--library-path`` applies to that process only (unlike ``LD_LIBRARY_PATH`` it is
not inherited), so what ``strace`` or ``gdb`` starts uses the container's own
libraries. ``--argv0`` (glibc >= 2.33) lets the program see its own name.
Run-time files: the packs of :mod:`~microcontainer_tool.assembly.packs` the
closure calls for (``gconv`` for ``gdb``, ``ssl`` for programs with ``libcrypto``,
plus the spec's ``packs``) with ``GCONV_PATH``/``SSL_CERT_FILE``/``OPENSSL_CONF``/
``OPENSSL_MODULES``/``TZDIR`` pointing at them; a program linked with
``libpython`` gets the Python standard library (``PYTHONHOME``); ``gdb`` gets its
data directory (``--data-directory``) and ``libthread_db``.

Limits: ``/proc/self/exe`` of a wrapped program is the loader; a program's
absolute ``DT_RPATH`` is searched (in the container) before the toolbox's
libraries; the wrappers' environment variables reach what the program starts.

The toolbox is built once into ``CACHE/toolbox/tools-<digest>``, the digest
being a SHA-256 over every file's content, mode and place, and the wrappers.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
import shutil
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field

from microcontainer_tool.assembly import packs
from microcontainer_tool.closure.elf import ElfInfo, read_elf, undefined_symbols
from microcontainer_tool.closure.ldd import RULE_INTERP, Closure, LibraryResolver
from microcontainer_tool.errors import ElfError, RunError, SourceError
from microcontainer_tool.runtime.bundle import make_bundle
from microcontainer_tool.runtime.toolbox import (
    CRASHCART,
    busybox_applets,
    busybox_toolbox,
    cached_toolbox,
    static_busybox,
)
from microcontainer_tool.runtime.toolboxspec import (
    SPEC_SUFFIXES,
    ToolboxSpec,
    load_toolbox_spec,
    parse_program_list,
)
from microcontainer_tool.sources.sysroot import SysRoot, join_link

FORMAT = 1
"""Layout version, part of the digest."""

PROGRAM_DIRS = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
"""Where a program name is looked up in the toolbox's sysroot, in order."""

DEFAULT_PROGRAMS = ("strace",)
"""Programs of the default toolbox (besides busybox), when the host has them."""

OPTIONAL_PROGRAMS = ("gdb", "tcpdump", "lsof")
"""Programs the default toolbox adds when the host has them."""

PYTHON_EXCLUDES = frozenset({"test", "idlelib", "tkinter", "turtledemo", "lib2to3", "ensurepip", "pydoc_data",
                             "site-packages", "dist-packages", "config-*"})
"""Standard library subdirectories left out of a toolbox's Python (tests, GUIs, installers, the
static library); a trailing ``*`` matches a prefix."""

_PYTHON = re.compile(r"^libpython(\d+\.\d+)")
_ARGV0_GLIBC = (2, 33)


@dataclass
class _Plan:
    """Everything a toolbox holds: toolbox path -> source, and generated texts."""

    files: dict[str, str] = field(default_factory=dict)  # dest -> canonical sysroot path
    texts: dict[str, str] = field(default_factory=dict)  # dest -> wrapper script
    links: dict[str, str] = field(default_factory=dict)  # dest -> symlink target
    env: dict[str, str] = field(default_factory=dict)  # variables every wrapper sets
    args: dict[str, list[str]] = field(default_factory=dict)  # program -> leading arguments

    def add_file(self, dest: str, source: str) -> None:
        self.files.setdefault(dest, source)


def default_spec() -> ToolboxSpec | None:
    """The default toolbox: strace, and gdb/tcpdump/lsof, those the host has (None: none of them)."""
    host = SysRoot("/")
    programs = tuple(name for name in DEFAULT_PROGRAMS + OPTIONAL_PROGRAMS if _find_program(host, name))
    return ToolboxSpec(programs) if programs else None


def is_program_list(value: str) -> bool:
    """Whether ``--toolbox VALUE`` is a program list rather than a directory, spec or image.

    A list has a comma, or is one name or absolute path; an existing directory,
    ``*.yaml`` file or non-ELF file (an image archive) is not one.
    """
    if "," in value:
        return True
    if os.path.isdir(value) or (value.endswith(SPEC_SUFFIXES) and os.path.isfile(value)):
        return False
    if os.path.isfile(value):
        if not value.startswith("/"):
            return False
        try:
            return read_elf(value) is not None
        except ElfError:
            return False
    return "/" not in value or value.startswith("/")


def resolve_toolbox(value: str | None, cache_dir: str, toolbox_root: str | None = None) -> str:
    """The host directory to mount at ``/dev/crashcart`` for ``--toolbox VALUE``.

    Args:
        value: ``None`` (the default toolbox), a program list, a ``toolbox.yaml``,
            a directory of static tools, or an image.
        cache_dir: the tool's cache.
        toolbox_root: ``--toolbox-root``: the sysroot directory or image the
            programs are taken from (default ``/``).

    Raises:
        RunError, SourceError, SpecError: the toolbox cannot be built.
    """
    root, image = _root_or_image(toolbox_root)
    if value is None:
        spec = default_spec() if toolbox_root is None else None
        if toolbox_root is not None:
            raise RunError("--toolbox-root needs --toolbox PROGRAMS or a toolbox.yaml")
        return build_toolbox(spec, cache_dir) if spec is not None else busybox_toolbox(cache_dir)
    if value.endswith(SPEC_SUFFIXES) and os.path.isfile(value):
        return build_toolbox(load_toolbox_spec(value, root if toolbox_root else None, image), cache_dir)
    if is_program_list(value):
        return build_toolbox(parse_program_list(value, root or "/", image), cache_dir)
    if toolbox_root is not None:
        raise RunError("--toolbox-root needs --toolbox PROGRAMS or a toolbox.yaml")
    if os.path.isdir(value) and not os.path.isfile(os.path.join(value, "oci-layout")):
        return os.path.realpath(value)
    return make_bundle(value, cache_dir).rootfs


def _root_or_image(toolbox_root: str | None) -> tuple[str | None, str | None]:
    if toolbox_root is None:
        return None, None
    if os.path.isdir(toolbox_root) and not os.path.isfile(os.path.join(toolbox_root, "oci-layout")):
        return toolbox_root, None
    return None, toolbox_root


def build_toolbox(spec: ToolboxSpec, cache_dir: str) -> str:
    """Build (once) the portable toolbox of ``spec`` in the cache; return its directory.

    Raises:
        SourceError: a program is not in the sysroot, not ELF, or misses a library.
        RunError: no static busybox (the wrappers' shell), or the cache is not writable.
    """
    busybox = static_busybox()
    rootfs = make_bundle(spec.image, cache_dir).rootfs if spec.image else spec.root
    sysroot = SysRoot(rootfs)
    plan = _plan(spec, sysroot)
    digest = _digest(plan, sysroot, busybox)
    return cached_toolbox(cache_dir, f"tools-{digest[:16]}",
                          lambda temp: _write(temp, plan, sysroot, busybox), "the toolbox")


# --------------------------------------------------------------------------- planning


def _find_program(sysroot: SysRoot, program: str) -> str | None:
    """The canonical path of a program name or absolute path in the sysroot (a regular file)."""
    candidates = [program] if program.startswith("/") else [f"{d}/{program}" for d in PROGRAM_DIRS]
    for candidate in candidates:
        resolved = sysroot.resolve(candidate)
        if resolved is not None and stat.S_ISREG(resolved.st.st_mode) and resolved.st.st_mode & 0o111:
            return resolved.path
    return None


def _plan(spec: ToolboxSpec, sysroot: SysRoot) -> _Plan:
    plan = _Plan()
    programs: dict[str, tuple[str, ElfInfo]] = {}
    for program in spec.programs:
        path = _find_program(sysroot, program)
        if path is None:
            where = "" if program.startswith("/") else f" (looked in {':'.join(PROGRAM_DIRS)})"
            raise SourceError(f"toolbox program {program!r}: not found in {sysroot.label}{where}")
        info = read_elf(sysroot.host_path(path), path)
        if info is None:
            raise SourceError(f"toolbox program {path}: not an ELF program (scripts cannot be made portable)")
        name = posixpath.basename(program)
        if name == "busybox":
            raise SourceError("toolbox program 'busybox': the toolbox has its own (static) busybox")
        programs[name] = (path, info)
    resolver = LibraryResolver(sysroot)
    dynamic = {name: path for name, (path, info) in programs.items() if info.interpreter is not None}
    closure = resolver.closure(dynamic.values())
    missing = closure.missing()
    if missing:
        first = missing[0]
        raise SourceError(f"toolbox: {first.needer} needs {first.name}: not found in {sysroot.label}")
    _add_libraries(plan, closure)
    for name, (path, info) in programs.items():
        if info.interpreter is None:
            plan.add_file(f"bin/{name}", path)
        else:
            plan.add_file(f"libexec/{name}", path)
    extra_roots: list[str] = []
    _add_python(plan, sysroot, closure, extra_roots)
    if any(name.startswith("gdb") for name in dynamic):
        _add_gdb(plan, sysroot, resolver, dynamic, extra_roots)
    _add_packs(plan, sysroot, spec, closure, extra_roots)
    for item in spec.files:
        extra_roots.extend(_add_tree(plan, sysroot, item, frozenset(), required=True))
    # libraries of dlopen'ed modules (Python extensions, gconv modules): what exists is added
    extra = resolver.closure(root for root in extra_roots if root not in closure.objects)
    _add_libraries(plan, extra)
    glibc = _glibc(sysroot, closure)
    for name, path in dynamic.items():
        interpreter = _interpreter_dest(closure, path)
        plan.texts[f"bin/{name}"] = _wrapper(name, interpreter, plan, glibc)
    return plan


def _add_libraries(plan: _Plan, closure: Closure) -> None:
    """Every library of the closure at ``lib/<the name it is needed as>`` (base variants only)."""
    for edge in closure.edges:
        if edge.path is None or "(" in edge.rule:
            continue
        plan.add_file(f"lib/{posixpath.basename(edge.name)}", edge.path)


def _interpreter_dest(closure: Closure, program: str) -> str:
    for edge in closure.edges:
        if edge.needer == program and edge.rule == RULE_INTERP:
            return f"lib/{posixpath.basename(edge.name)}"
    raise SourceError(f"toolbox program {program}: its interpreter is not in the sysroot")


def _glibc(sysroot: SysRoot, closure: Closure) -> tuple[int, int] | None:
    libc = packs.libc_path(closure.objects)
    return packs.glibc_version(sysroot, libc) if libc is not None else None


def _add_python(plan: _Plan, sysroot: SysRoot, closure: Closure, extra_roots: list[str]) -> None:
    """A program linked with ``libpython`` gets the standard library and ``PYTHONHOME``."""
    versions = sorted({match.group(1) for info in closure.objects.values()
                       if (match := _PYTHON.match(info.soname or ""))})
    for version in versions:
        for prefix in ("/usr", "/usr/local"):
            for libdir in ("lib", "lib64"):
                stdlib = f"{prefix}/{libdir}/python{version}"
                resolved = sysroot.resolve(stdlib)
                if resolved is None or not stat.S_ISDIR(resolved.st.st_mode):
                    continue
                extra_roots.extend(_add_tree(plan, sysroot, stdlib, PYTHON_EXCLUDES,
                                             required=False))
                plan.env.setdefault("PYTHONHOME", f"{CRASHCART}/root{prefix}")
                break
            if "PYTHONHOME" in plan.env:
                break


def _add_gdb(plan: _Plan, sysroot: SysRoot, resolver: LibraryResolver, dynamic: dict[str, str],
             extra_roots: list[str]) -> None:
    """gdb's data directory (``--data-directory``) and ``libthread_db`` (thread debugging)."""
    data = sysroot.resolve("/usr/share/gdb")
    if data is not None and stat.S_ISDIR(data.st.st_mode):
        _add_tree(plan, sysroot, "/usr/share/gdb", frozenset(), required=False)
        for name in dynamic:
            if name.startswith("gdb"):
                plan.args[name] = [f"--data-directory={CRASHCART}/root/usr/share/gdb"]
    gdb = next(path for name, path in dynamic.items() if name.startswith("gdb"))
    found = resolver.find_library("libthread_db.so.1", gdb)
    if found.path is not None:
        plan.add_file("lib/libthread_db.so.1", found.path)
        extra_roots.append(found.path)


def _add_packs(plan: _Plan, sysroot: SysRoot, spec: ToolboxSpec, closure: Closure,
               extra_roots: list[str]) -> None:
    unknown = sorted(set(spec.packs) - set(packs.PACKS))
    if unknown:
        raise SourceError(f"toolbox: unknown pack {unknown[0]!r} (known: {', '.join(sorted(packs.PACKS))})")

    def imports(path: str) -> frozenset[str]:
        return undefined_symbols(sysroot.host_path(path), path)

    choices = packs.choose(spec.packs, True, closure.objects, imports, False, _glibc(sysroot, closure))
    for choice in choices:
        for path in packs.pack_paths(choice.name, sysroot, closure.objects, choice.name in spec.packs):
            extra_roots.extend(_add_tree(plan, sysroot, path, frozenset(), required=False))
            resolved = sysroot.resolve(path)
            canonical = resolved.path if resolved is not None else path
            here = f"{CRASHCART}/root{canonical}"
            if choice.name == "gconv" and posixpath.basename(canonical) == "gconv":
                plan.env.setdefault("GCONV_PATH", here)
            elif choice.name == "ssl" and path in packs.CA_BUNDLES and resolved is not None:
                plan.env.setdefault("SSL_CERT_FILE", here)
            elif choice.name == "ssl" and canonical.endswith("/openssl.cnf"):
                plan.env.setdefault("OPENSSL_CONF", here)
            elif choice.name == "ssl" and posixpath.basename(canonical) == "ossl-modules":
                plan.env.setdefault("OPENSSL_MODULES", here)
            elif choice.name == "tz" and canonical.endswith("/zoneinfo"):
                plan.env.setdefault("TZDIR", here)


def _add_tree(plan: _Plan, sysroot: SysRoot, image_path: str, excludes: frozenset[str],
              *, required: bool) -> list[str]:
    """Copy a sysroot file or directory (whole) under ``root/`` at its canonical path.

    Symlinks are followed inside the sysroot (an absolute target would point
    into the container's root); links to directories are skipped.

    Returns:
        The ELF files added (their libraries are added by the caller).
    """
    resolved = sysroot.resolve(image_path)
    if resolved is None:
        if required:
            raise SourceError(f"toolbox: {image_path}: not in {sysroot.label}")
        return []
    elves: list[str] = []
    if stat.S_ISREG(resolved.st.st_mode):
        plan.add_file(f"root{resolved.path}", resolved.path)
        return _elves([resolved.path], sysroot)
    if not stat.S_ISDIR(resolved.st.st_mode):
        return []
    base = resolved.path
    for directory, dirs, names in os.walk(sysroot.host_path(base)):
        relative = os.path.relpath(directory, sysroot.host_path(base))
        image_dir = base if relative == "." else posixpath.join(base, relative)
        dirs[:] = sorted(d for d in dirs if not _excluded(d, excludes))
        for name in sorted(names):
            entry = posixpath.join(image_dir, name)
            info = sysroot.lstat(entry)
            if info is None:
                continue
            if stat.S_ISLNK(info.st_mode):
                target = sysroot.resolve(join_link(entry, sysroot.readlink(entry)))
                if target is None or not stat.S_ISREG(target.st.st_mode):
                    continue
                plan.add_file(f"root{entry}", target.path)
                elves.append(target.path)
            elif stat.S_ISREG(info.st_mode):
                plan.add_file(f"root{entry}", entry)
                elves.append(entry)
    return _elves(elves, sysroot)


def _excluded(name: str, excludes: frozenset[str]) -> bool:
    return name in excludes or any(pattern.endswith("*") and name.startswith(pattern[:-1])
                                   for pattern in excludes)


def _elves(paths: Iterable[str], sysroot: SysRoot) -> list[str]:
    found = []
    for path in paths:
        if not path.endswith((".so", ".so.1", ".so.2")) and ".so." not in posixpath.basename(path):
            continue
        try:
            info = read_elf(sysroot.host_path(path), path)
        except ElfError:
            continue
        if info is not None:
            found.append(path)
    return found


def _wrapper(name: str, interpreter: str, plan: _Plan, glibc: tuple[int, int] | None) -> str:
    lines = ["#!" + CRASHCART + "/bin/busybox sh",
             f"# {name}: run by the toolbox's own loader with the toolbox's libraries (microcontainer debug)"]
    lines += [f"export {key}={_quote(value)}" for key, value in sorted(plan.env.items())]
    argv0 = ' --argv0 "$0"' if glibc is None or glibc >= _ARGV0_GLIBC else ""
    args = "".join(f" {_quote(arg)}" for arg in plan.args.get(name, []))
    lines.append(f"exec {CRASHCART}/{interpreter} --library-path {CRASHCART}/lib{argv0}"
                 f" {CRASHCART}/libexec/{_quote(name)}{args} \"$@\"")
    return "\n".join(lines) + "\n"


def _quote(text: str) -> str:
    if re.fullmatch(r"[A-Za-z0-9_./=:,+-]+", text):
        return text
    return "'" + text.replace("'", "'\\''") + "'"


# --------------------------------------------------------------------------- digest and writing


def _file_digest(host_path: str) -> str:
    with open(host_path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _digest(plan: _Plan, sysroot: SysRoot, busybox: str) -> str:
    entries: list[list[str]] = [["format", str(FORMAT)], ["busybox", _file_digest(busybox)]]
    for dest in sorted(plan.files):
        host = sysroot.host_path(plan.files[dest])
        mode = "755" if os.stat(host).st_mode & 0o111 or dest.startswith(("bin/", "libexec/")) else "644"
        entries.append([dest, mode, _file_digest(host)])
    for dest in sorted(plan.texts):
        entries.append([dest, "text", hashlib.sha256(plan.texts[dest].encode()).hexdigest()])
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()


def _write(temp: str, plan: _Plan, sysroot: SysRoot, busybox: str) -> None:
    bindir = os.path.join(temp, "bin")
    os.makedirs(bindir, 0o755)
    shutil.copyfile(busybox, os.path.join(bindir, "busybox"))
    os.chmod(os.path.join(bindir, "busybox"), 0o755)
    for applet in busybox_applets(busybox):
        os.symlink("busybox", os.path.join(bindir, applet))
    for dest in sorted(plan.files):
        target = os.path.join(temp, dest)
        os.makedirs(os.path.dirname(target), 0o755, exist_ok=True)
        if os.path.lexists(target):
            os.unlink(target)  # a program replaces busybox's applet of that name
        host = sysroot.host_path(plan.files[dest])
        shutil.copyfile(host, target)
        executable = os.stat(host).st_mode & 0o111 or dest.startswith(("bin/", "libexec/"))
        os.chmod(target, 0o755 if executable else 0o644)
    for dest, text in sorted(plan.texts.items()):
        target = os.path.join(temp, dest)
        if os.path.lexists(target):
            os.unlink(target)
        with open(target, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(target, 0o755)
    for directory, dirs, _names in os.walk(temp):
        for name in dirs:
            os.chmod(os.path.join(directory, name), 0o755)
