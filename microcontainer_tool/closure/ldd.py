"""The run-time closure of ELF programs, found the way glibc's ``ld.so`` finds it.

Nothing is executed: every object is read with :func:`~.elf.read_elf` and every
path is resolved inside the sysroot (:meth:`SysRoot.resolve`), so an absolute
``DT_RUNPATH`` or symlink target means the sysroot's path, never the host's.

Rules (glibc 2.36 ``elf/dl-load.c`` ``_dl_map_object``, ``elf/dl-deps.c``):

* Each root is loaded in its own namespace, as its own program would be: a
  program's ``PT_INTERP`` is loaded first (edge rule ``"interpreter"``), then
  ``DT_NEEDED`` entries breadth-first (``_dl_map_object_deps``). The first
  object that loads a library is its *loader* (``l_loader``).
* A needed name that an object of the namespace already answers to (the name
  it was requested as, its path, its ``DT_SONAME``, or the same file) resolves
  to that object, whoever needs it later. Names not found are searched again
  for the next needer (ld.so's fake "not found" entries do not match).
* A name containing ``/`` is used as it is (rule ``"direct path"``); a relative
  one is taken relative to ``/`` (the container's usual working directory).
  The same goes for relative ``DT_RPATH``/``DT_RUNPATH`` entries.
* Otherwise the search order is: ``DT_RPATH`` of the needer, then of its
  loader, and so on up to the program, then the program's own ``DT_RPATH`` --
  all skipped if the needer has a ``DT_RUNPATH`` (an object with both ignores
  its ``DT_RPATH``; loaders in the chain that have a ``DT_RUNPATH`` thus add
  nothing but do not stop the walk) -> ``LD_LIBRARY_PATH`` (``library_path``)
  -> the needer's own ``DT_RUNPATH`` (not inherited) -> ``ld.so.cache`` (entries
  below the loader's system dirs are refused if the needer has
  ``DF_1_NODEFLIB``) -> the loader's default dirs (unless ``DF_1_NODEFLIB``).
* ``$ORIGIN``/``${ORIGIN}`` is the directory of the path the object carrying
  the tag was loaded as (search dir + name, or the cache's path -- not its
  realpath; ``..`` is then resolved physically like the kernel does). For a
  root it is the directory of its canonical path (``/proc/self/exe``).
  ``$LIB`` is the first default dir without its leading ``/``
  (``lib/x86_64-linux-gnu`` on Debian, ``lib64`` on Fedora: glibc's
  ``slibdir``). An element with a token that cannot be expanded is dropped, as
  ld.so does.
* ``$PLATFORM`` depends on the CPU the image runs on, not on the build host:
  the kernel's ``AT_PLATFORM`` (``x86_64``, ``aarch64``, ``v7l``, ``power9``,
  ``z13``...), which glibc 2.36 replaces on x86-64 Intel CPUs by ``haswell``
  (AVX2, FMA, BMI1/2, LZCNT, MOVBE, POPCNT) or ``xeon_phi`` (AVX512ER/PF),
  and on i386 by ``i686``/``i586`` (``sysdeps/x86/cpu-features.c``). When a
  needed name or a searched path has the token, the search is made once per
  value the machine can have (:data:`_PLATFORMS`) and every library found is
  part of the closure, so the image holds what each CPU's loader would load
  from every platform directory that exists. Those edges carry the suffix
  ``" ($PLATFORM=<value>)"`` (after any hwcaps suffix) when the values do not
  all find the same file; the first value that finds a library gives the main
  edge. A library found for some values only is not reported missing.
* The cache is the sysroot's ``/etc/ld.so.cache``; if the sysroot has none,
  the ``ld.so.conf`` directories are searched instead (what ldconfig would
  have put in the cache). Entries must carry the flags of the program's
  class/machine.
* Default dirs are read from the sysroot's interpreter, which stores them as
  contiguous NUL-separated strings (``"/lib/x86_64-linux-gnu/\\0/usr/lib/..."``);
  failing that: Debian multiarch dirs if present, else ``/lib64:/usr/lib64``
  (64-bit) or ``/lib:/usr/lib``.
* Candidates of another ELF class, byte order or machine, non-ELF files and
  non-files are skipped (ld.so skips the first kind and fails on the others;
  skipping lets a later directory answer).
* hwcaps: a build cannot know the run-time CPU, so when a searched directory
  (or the cache) has the library in ``glibc-hwcaps/<name>/`` subdirectories, or
  in glibc 2.36's legacy ``tls``/``$PLATFORM`` subdirectories, ALL variants
  present are part of the closure, plus the base library. The edge with the
  plain rule records the base one; each variant is an extra edge whose rule has
  the suffix ``" (glibc-hwcaps)"`` (or ``" (hwcaps)"`` for legacy dirs) and
  whose ``search_dir`` is the base directory. If only variants exist, the first
  in ld.so's priority order takes the place of the base one.
"""

from __future__ import annotations

import os
import posixpath
import re
import stat
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from microcontainer_tool.closure import ldcache
from microcontainer_tool.closure.elf import ElfInfo, machine_name, read_elf
from microcontainer_tool.errors import SourceError
from microcontainer_tool.sources.sysroot import Resolved, SysRoot

_T = TypeVar("_T")

RULE_INTERP = "interpreter"
RULE_DIRECT = "direct path"
RULE_RPATH = "RPATH"
RULE_RUNPATH = "RUNPATH"
RULE_ENV = "LD_LIBRARY_PATH"
RULE_CACHE = "ld.so.cache"
RULE_DEFAULT = "default dirs"
RULE_MISSING = "not found"
SUFFIX_HWCAPS = " (glibc-hwcaps)"
SUFFIX_LEGACY = " (hwcaps)"
SUFFIX_PLATFORM = " ($PLATFORM={})"

_DST = re.compile(r"\$(?:\{(ORIGIN|LIB|PLATFORM)\}|(ORIGIN|LIB|PLATFORM)(?![A-Za-z0-9_]))")
_SYSTEM_DIRS = re.compile(rb"(?:/[A-Za-z0-9_.+\-/]*lib[A-Za-z0-9_.+\-/]*/\x00){2,}")

# Standard PT_INTERP of each (machine, class, little endian): the loader used
# for roots without one (shared libraries).
_STANDARD_INTERP = {
    ("EM_X86_64", 64, True): "/lib64/ld-linux-x86-64.so.2",
    ("EM_X86_64", 32, True): "/libx32/ld-linux-x32.so.2",
    ("EM_386", 32, True): "/lib/ld-linux.so.2",
    ("EM_AARCH64", 64, True): "/lib/ld-linux-aarch64.so.1",
    ("EM_ARM", 32, True): "/lib/ld-linux-armhf.so.3",
    ("EM_PPC64", 64, True): "/lib64/ld64.so.2",
    ("EM_PPC64", 64, False): "/lib64/ld64.so.1",
    ("EM_S390", 64, False): "/lib/ld64.so.1",
    ("EM_RISCV", 64, True): "/lib/ld-linux-riscv64-lp64d.so.1",
    ("EM_LOONGARCH", 64, True): "/lib64/ld-linux-loongarch-lp64d.so.1",
}
_MULTIARCH = {
    ("EM_X86_64", 64): "x86_64-linux-gnu",
    ("EM_X86_64", 32): "x86_64-linux-gnux32",
    ("EM_386", 32): "i386-linux-gnu",
    ("EM_AARCH64", 64): "aarch64-linux-gnu",
    ("EM_ARM", 32): "arm-linux-gnueabihf",
    ("EM_PPC64", 64): "powerpc64le-linux-gnu",
    ("EM_S390", 64): "s390x-linux-gnu",
    ("EM_RISCV", 64): "riscv64-linux-gnu",
    ("EM_LOONGARCH", 64): "loongarch64-linux-gnu",
}
#: Every value ``$PLATFORM`` can take for (machine, little endian): the
#: kernel's ``AT_PLATFORM`` on the CPUs the machine covers, and what glibc puts
#: in its place. The first is the usual one; the order is the edges' order.
#: x86-64: glibc 2.36 ``dl_platform`` on Intel (``haswell``, ``xeon_phi``);
#: i386: the kernel's ``i386``..``i686``, glibc's ``i586``/``i686``; arm: the
#: kernel's ``v<arch><endian>``; powerpc/s390: the kernel's CPU names;
#: RISC-V has no ``AT_PLATFORM`` (the token cannot be expanded).
_PLATFORMS: dict[tuple[str, bool], tuple[str, ...]] = {
    ("EM_X86_64", True): ("x86_64", "haswell", "xeon_phi"),
    ("EM_386", True): ("i686", "i586", "i486", "i386"),
    ("EM_AARCH64", True): ("aarch64",),
    ("EM_AARCH64", False): ("aarch64_be",),
    ("EM_ARM", True): ("v7l", "v8l", "v6l", "v5l", "v4l"),
    ("EM_ARM", False): ("v7b", "v8b", "v6b", "v5b", "v4b"),
    ("EM_PPC64", True): ("power9", "power8", "power10", "power11"),
    ("EM_PPC64", False): ("power9", "power8", "power10", "power11", "power7", "power7+", "power6",
                          "power6x", "power5+", "power5", "ppc970", "power4", "ppc-cell-be"),
    ("EM_S390", False): ("z13", "z14", "z15", "z16", "zEC12", "z196", "z10", "z9-109", "z990", "z900"),
    ("EM_LOONGARCH", True): ("loongarch",),
}
#: Subdirectory names of glibc 2.36's legacy hwcaps search (any machine's).
_LEGACY_PLATFORMS = tuple(sorted({name for names in _PLATFORMS.values() for name in names}))


@dataclass(frozen=True)
class Dependency:
    """One edge of the closure.

    Attributes:
        needer: canonical image path of the object carrying the DT_NEEDED / PT_INTERP.
        name: the DT_NEEDED string, or the PT_INTERP string.
        path: canonical image path found (``None``: missing).
        rule: how it was found (see the module docstring), ``"not found"`` if missing.
        links: symlinks followed (image path, stored target), as :class:`Resolved.links`.
        search_dir: the image dir in which it was found (before symlink
            resolution), when found by a search.
    """

    needer: str
    name: str
    path: str | None
    rule: str
    links: tuple[tuple[str, str], ...] = ()
    search_dir: str | None = None


@dataclass
class Closure:
    """Every object the roots need at run time, and why."""

    roots: tuple[str, ...]
    objects: dict[str, ElfInfo]
    edges: list[Dependency]
    _parents_cache: tuple[int, dict[str, str]] | None = field(default=None, init=False, repr=False,
                                                               compare=False)

    def missing(self) -> list[Dependency]:
        """Edges whose library was not found, in edge order."""
        return [dep for dep in self.edges if dep.path is None]

    def chain(self, path: str) -> list[str]:
        """Shortest needer chain from a root to ``path`` (root first, ``path`` last)."""
        if path in self.roots:
            return [path]
        parents = self._parents()
        if path not in parents:
            return [path]
        return _walk_back(parents, path)

    def _parents(self) -> dict[str, str]:
        """Each reachable object's needer on a shortest path from the roots (one breadth-first walk).

        Kept until ``edges`` changes length (edges are only ever appended).
        """
        cached = self._parents_cache
        if cached is not None and cached[0] == len(self.edges):
            return cached[1]
        parents: dict[str, str] = {}
        queue = deque(self.roots)
        seen = set(self.roots)
        children: dict[str, list[str]] = {}
        for dep in self.edges:
            if dep.path is not None:
                children.setdefault(dep.needer, []).append(dep.path)
        while queue:
            current = queue.popleft()
            for child in children.get(current, ()):
                if child in seen:
                    continue
                seen.add(child)
                parents[child] = current
                queue.append(child)
        self._parents_cache = (len(self.edges), parents)
        return parents

    def libraries(self) -> list[str]:
        """Sorted canonical paths of everything pulled in (roots excluded)."""
        return sorted(set(self.objects) - set(self.roots))


def _walk_back(parents: dict[str, str], path: str) -> list[str]:
    result = [path]
    while result[-1] in parents:
        result.append(parents[result[-1]])
    result.reverse()
    return result


@dataclass(frozen=True)
class _Found:
    """A library file found at ``loaded_as`` (the path ld.so would open)."""

    loaded_as: str
    resolved: Resolved
    info: ElfInfo
    search_dir: str | None
    suffix: str = ""


@dataclass(frozen=True)
class _Hit:
    """What one ``$PLATFORM`` value's search found for a needed name."""

    platform: str | None
    name: str
    rule: str
    found: _Found
    variants: list[_Found]


@dataclass
class _Loaded:
    """An object loaded in a namespace."""

    path: str
    loaded_as: str
    info: ElfInfo
    loader: _Loaded | None
    edge: Dependency | None


@dataclass
class _Namespace:
    """The state of one program's load: its objects and the names they answer to."""

    main: _Loaded
    interpreter: str | None
    want: tuple[int, bool, str]
    by_name: dict[str, _Loaded] = field(default_factory=dict)
    by_path: dict[str, _Loaded] = field(default_factory=dict)
    by_soname: dict[str, _Loaded] = field(default_factory=dict)

    def add(self, loaded: _Loaded, names: Iterable[str]) -> None:
        """Register a newly loaded object and the names it answers to."""
        self.by_path.setdefault(loaded.path, loaded)
        for name in names:
            self.by_name.setdefault(name, loaded)
        if loaded.info.soname:
            self.by_soname.setdefault(loaded.info.soname, loaded)

    def match(self, name: str) -> _Loaded | None:
        """The loaded object answering to ``name`` (``_dl_name_match_p`` + SONAME)."""
        return self.by_name.get(name) or self.by_soname.get(name)


class LibraryResolver:
    """Finds libraries in a sysroot the way its ``ld.so`` would."""

    def __init__(self, sysroot: SysRoot, library_path: Sequence[str] = ()) -> None:
        """Create a resolver.

        Args:
            sysroot: the root (or layered view) all paths are resolved in.
            library_path: ``LD_LIBRARY_PATH``-like image directories.
        """
        self.sysroot = sysroot
        self.library_path = tuple(library_path)
        self._defaults: dict[tuple[str | None, tuple[int, bool, str] | None], tuple[str, ...]] = {}
        self._cache: dict[str, list[ldcache.CacheEntry]] | None = None
        self._cache_read = False
        self._conf_dirs: list[str] | None = None
        self._variants: dict[str, tuple[tuple[str, str], ...]] = {}
        self._probe: dict[tuple[str, tuple[int, bool, str]], _Found | None] = {}

    # -- public API ---------------------------------------------------------

    def closure(self, roots: Iterable[str]) -> Closure:
        """The closure of ``roots``: each loaded as its own program would be.

        Args:
            roots: image paths (may contain symlinks); non-ELF files are ignored.

        Returns:
            The closure; missing libraries are edges with ``path=None``.

        Raises:
            SourceError: a root does not exist in the sysroot.
            ElfError: an ELF file on the way is corrupt.
            PathEscapeError: a path or link escapes the sysroot.
        """
        canonical: list[str] = []
        objects: dict[str, ElfInfo] = {}
        edges: list[Dependency] = []
        seen_edges: set[Dependency] = set()
        for root in roots:
            resolved = self.sysroot.resolve(root)
            if resolved is None:
                raise SourceError(f"{root}: no such file in {self.sysroot.label}")
            if resolved.path in canonical or not stat.S_ISREG(resolved.st.st_mode):
                continue
            info = self._read(resolved)
            if info is None:
                continue
            canonical.append(resolved.path)
            objects[resolved.path] = info
            for dep, dep_info in self._load_program(resolved.path, info):
                if dep.path is not None and dep_info is not None:
                    objects.setdefault(dep.path, dep_info)
                if dep not in seen_edges:
                    seen_edges.add(dep)
                    edges.append(dep)
        return Closure(tuple(canonical), objects, edges)

    def find_library(self, name: str, program: str | None = None) -> Dependency:
        """Find ``name`` as if ``program`` (an image path, or ``None``) needed it.

        Returns:
            The edge found (``path=None`` if not found); the needer is the
            program's canonical path, or ``""`` without a program.
        """
        main: _Loaded | None = None
        if program is not None:
            resolved = self.sysroot.resolve(program)
            info = (self._read(resolved) if resolved is not None and stat.S_ISREG(resolved.st.st_mode)
                    else None)
            if resolved is not None and info is not None:
                main = _Loaded(resolved.path, resolved.path, info, None, None)
        if main is None:
            info = self._any_interpreter_info()
            if info is None:
                return Dependency("", name, None, RULE_MISSING)
            main = _Loaded("", "/", _without_paths(info), None, None)
        space = self._namespace(main)
        edges, _found = self._resolve(space, main, name)
        return edges[0]

    def default_dirs(self, interpreter: str | None) -> tuple[str, ...]:
        """The interpreter's compiled-in system dirs (no trailing slash).

        Args:
            interpreter: a PT_INTERP image path, or ``None`` for the sysroot's
                usual loader.
        """
        return self._default_dirs(interpreter, None)

    def format_missing(self, closure: Closure) -> str:
        """One line naming every missing library and who needs it."""
        parts: list[str] = []
        for dep in closure.missing():
            chain = " <- ".join(reversed(closure.chain(dep.needer))) if dep.needer else "the image"
            text = f"{dep.name} not found (needed by {chain})"
            if text not in parts:
                parts.append(text)
        return "; ".join(parts)

    # -- loading a program ------------------------------------------------------

    def _load_program(self, path: str, info: ElfInfo) -> list[tuple[Dependency, ElfInfo | None]]:
        """Breadth-first load of one root in its own namespace."""
        main = _Loaded(path, path, info, None, None)
        space = self._namespace(main)
        result: list[tuple[Dependency, ElfInfo | None]] = []
        queue: deque[_Loaded] = deque([main])
        if info.interpreter is not None:
            interp = self._load_interpreter(space, main)
            result.append((interp[0], interp[1].info if interp[1] else None))
            if interp[1] is not None:
                queue.append(interp[1])
        while queue:
            needer = queue.popleft()
            for name in needer.info.needed:
                edges, new = self._resolve(space, needer, name)
                for edge in edges:
                    result.append((edge, _new_info(new, edge)))
                queue.extend(new)
        return result

    def _namespace(self, main: _Loaded) -> _Namespace:
        info = main.info
        want = (info.elf_class, info.little_endian, info.machine)
        interpreter = info.interpreter or self._standard_interpreter(want)
        space = _Namespace(main, interpreter, want)
        if main.path:
            space.add(main, [main.path])
        return space

    def _load_interpreter(self, space: _Namespace, main: _Loaded) -> tuple[Dependency, _Loaded | None]:
        name = main.info.interpreter or ""
        resolved = self.sysroot.resolve(_absolute(name))
        info = self._read(resolved) if resolved is not None and stat.S_ISREG(resolved.st.st_mode) else None
        if resolved is None or info is None:
            return Dependency(main.path, name, None, RULE_MISSING), None
        edge = Dependency(main.path, name, resolved.path, RULE_INTERP, resolved.links, None)
        loaded = _Loaded(resolved.path, _absolute(name), info, None, edge)
        space.add(loaded, [name, _absolute(name)])
        return edge, loaded

    def _resolve(self, space: _Namespace, needer: _Loaded,
                 raw_name: str) -> tuple[list[Dependency], list[_Loaded]]:
        """Edges for one DT_NEEDED of ``needer`` and the objects newly loaded."""
        known = space.match(raw_name)
        if known is not None:
            return [_reuse(needer.path, raw_name, known)], []
        platforms = _platform_values(space.want)
        if len(platforms) > 1 and not self._uses_platform(space, needer, raw_name):
            platforms = platforms[:1]
        hits: list[_Hit] = []
        for platform in platforms:
            name = self._expand(raw_name, needer, space, platform)
            if name is None:
                continue
            variants: list[_Found] = []
            if "/" in name:
                rule, found = RULE_DIRECT, self._direct(name, space.want)
            else:
                rule, found, variants = self._search(space, needer, name, platform)
            if found is not None:
                hits.append(_Hit(platform, name, rule, found, variants))
        if not hits:
            return [Dependency(needer.path, raw_name, None, RULE_MISSING)], []
        # Tag each edge with its $PLATFORM value only when the values disagree.
        found_sets = {(hit.found.resolved.path, *(v.resolved.path for v in hit.variants)) for hit in hits}
        per_cpu = len(platforms) > 1 and (len(hits) < len(platforms) or len(found_sets) > 1)
        rule, found, name = hits[0].rule, hits[0].found, hits[0].name
        tag = SUFFIX_PLATFORM.format(hits[0].platform) if per_cpu else ""
        extras = [(hit.rule, variant, SUFFIX_PLATFORM.format(hit.platform))
                  for hit in hits[1:] for variant in (hit.found, *hit.variants)]
        same_file = space.by_path.get(found.resolved.path)
        if same_file is not None:
            space.by_name.setdefault(raw_name, same_file)
            edges, new = [_reuse(needer.path, raw_name, same_file)], []
        else:
            edge = Dependency(needer.path, raw_name, found.resolved.path, rule + found.suffix + tag,
                              found.resolved.links, found.search_dir)
            loaded = _Loaded(found.resolved.path, found.loaded_as, found.info, needer, edge)
            space.add(loaded, [raw_name, name, found.loaded_as])
            edges, new = [edge], [loaded]
            extras[:0] = [(rule, variant, tag) for variant in hits[0].variants]
        for extra_rule, variant, variant_tag in extras:
            if variant.resolved.path in space.by_path:
                continue
            extra = Dependency(needer.path, raw_name, variant.resolved.path,
                               extra_rule + variant.suffix + variant_tag, variant.resolved.links,
                               variant.search_dir)
            alt = _Loaded(variant.resolved.path, variant.loaded_as, variant.info, needer, extra)
            space.by_path.setdefault(alt.path, alt)
            edges.append(extra)
            new.append(alt)
        return edges, new

    def _uses_platform(self, space: _Namespace, needer: _Loaded, raw_name: str) -> bool:
        """Whether ``$PLATFORM`` is in the name or in a path its search may read."""
        texts = [raw_name, *self.library_path, *needer.info.runpath]
        if not needer.info.runpath:
            chain: _Loaded | None = needer
            while chain is not None:
                texts.extend(chain.info.rpath)
                chain = chain.loader
            texts.extend(space.main.info.rpath)
        return any("PLATFORM" in (match.group(1) or match.group(2)) for text in texts
                   for match in _DST.finditer(text))

    # -- the search -----------------------------------------------------------

    def _search(self, space: _Namespace, needer: _Loaded, name: str,
                platform: str | None) -> tuple[str, _Found | None, list[_Found]]:
        """ld.so's search for a name without ``/``: (rule, found, variants).

        ``platform`` is the value of ``$PLATFORM`` (``None``: it cannot be expanded).
        """
        def search(entries: Iterable[str], owner: _Loaded) -> tuple[_Found | None, list[_Found]]:
            return self._search_dirs(self._expand_dirs(entries, owner, space, platform), name, space.want)

        info = needer.info
        if not info.runpath:
            visited_main = False
            chain: _Loaded | None = needer
            while chain is not None:
                if chain.info.rpath:
                    hit = search(chain.info.rpath, chain)
                    if hit[0] is not None:
                        return (RULE_RPATH, *hit)
                    visited_main |= chain is space.main
                chain = chain.loader
            main = space.main
            if not visited_main and main.info.rpath:
                hit = search(main.info.rpath, main)
                if hit[0] is not None:
                    return (RULE_RPATH, *hit)
        if self.library_path:
            hit = search(self.library_path, space.main)
            if hit[0] is not None:
                return (RULE_ENV, *hit)
        if info.runpath:
            hit = search(info.runpath, needer)
            if hit[0] is not None:
                return (RULE_RUNPATH, *hit)
        hit = self._search_cache(space, needer, name)
        if hit[0] is not None:
            return (RULE_CACHE, *hit)
        if not info.nodeflib:
            dirs = self._default_dirs(space.interpreter, space.want)
            hit = self._search_dirs(dirs, name, space.want)
            if hit[0] is not None:
                return (RULE_DEFAULT, *hit)
        return RULE_MISSING, None, []

    def _search_dirs(self, dirs: Iterable[str], name: str,
                     want: tuple[int, bool, str]) -> tuple[_Found | None, list[_Found]]:
        """``open_path``: the first directory holding a usable ``name`` (and its variants)."""
        for directory in dirs:
            variants = [found for sub, suffix in self._variant_dirs(directory)
                        if (found := self._probe_file(f"{sub}/{name}", want, directory, suffix)) is not None]
            base = self._probe_file(_join(directory, name), want, directory, "")
            if base is not None:
                return base, variants
            if variants:
                return variants[0], variants[1:]
        return None, []

    def _search_cache(self, space: _Namespace, needer: _Loaded,
                      name: str) -> tuple[_Found | None, list[_Found]]:
        cache = self._cache_index()
        nodeflib = needer.info.nodeflib
        system = tuple(d.rstrip("/") + "/" for d in self._default_dirs(space.interpreter, space.want))
        if cache is None:
            dirs = [d for d in self._ld_so_conf() if not (nodeflib and d.rstrip("/") + "/" in system)]
            return self._search_dirs(dirs, name, space.want)
        accepted = _accepted_flags(space.main.info)
        base: _Found | None = None
        variants: list[_Found] = []
        for entry in cache.get(name, ()):
            if entry.flags not in accepted or (nodeflib and entry.path.startswith(system)):
                continue
            hwcaps = ldcache.hwcaps_subdir(entry.path) if ldcache.is_hwcaps_entry(entry) else None
            legacy = entry.hwcap != 0 and hwcaps is None
            if hwcaps is not None:
                search_dir = posixpath.dirname(posixpath.dirname(posixpath.dirname(entry.path)))
                suffix = SUFFIX_HWCAPS
            else:
                search_dir = posixpath.dirname(entry.path)
                suffix = SUFFIX_LEGACY if legacy else ""
            found = self._probe_file(entry.path, space.want, search_dir, suffix)
            if found is None:
                continue
            if suffix:
                variants.append(found)
            elif base is None:
                base = found
        if base is not None:
            return base, variants
        if variants:
            return variants[0], variants[1:]
        return None, []

    def _direct(self, name: str, want: tuple[int, bool, str]) -> _Found | None:
        return self._probe_file(_absolute(name), want, None, "")

    def _probe_file(self, path: str, want: tuple[int, bool, str], search_dir: str | None,
                    suffix: str) -> _Found | None:
        """The usable library at ``path`` (a compatible ELF regular file), memoized."""
        key = (path, want)
        if key in self._probe:
            found = self._probe[key]
            if found is None or (found.search_dir == search_dir and found.suffix == suffix):
                return found
            return _Found(found.loaded_as, found.resolved, found.info, search_dir, suffix)
        resolved = self.sysroot.resolve(path)
        found = None
        if resolved is not None and stat.S_ISREG(resolved.st.st_mode) and self._ident_matches(resolved, want):
            info = self._read(resolved)
            if info is not None and (info.elf_class, info.little_endian, info.machine) == want:
                found = _Found(path, resolved, info, search_dir, suffix)
        self._probe[key] = found
        return found

    def _ident_matches(self, resolved: Resolved, want: tuple[int, bool, str]) -> bool:
        """Whether the file's ELF identification fits (what ld.so checks before anything else).

        Candidates of another class, byte order or machine (or not ELF) are
        skipped without parsing them further, so a foreign file that this
        parser would find odd cannot stop the search.
        """
        try:
            with open(self.sysroot.host_path(resolved.path), "rb") as handle:
                head = handle.read(20)
        except OSError:
            return False
        if len(head) < 20 or head[:4] != b"\x7fELF":
            return False
        little = head[5] == 1
        machine = int.from_bytes(head[18:20], "little" if little else "big")
        return (head[4] == (1 if want[0] == 32 else 2) and little == want[1]
                and machine_name(machine) == want[2])

    def _variant_dirs(self, directory: str) -> tuple[tuple[str, str], ...]:
        """hwcaps subdirectories of ``directory`` that exist, in ld.so's priority order."""
        if directory in self._variants:
            return self._variants[directory]
        result: list[tuple[str, str]] = []
        hwcaps = _join(directory, ldcache.HWCAPS_DIR)
        resolved = self.sysroot.resolve(hwcaps)
        if resolved is not None and stat.S_ISDIR(resolved.st.st_mode):
            names = sorted(self.sysroot.listdir(resolved.path), key=_natural_key, reverse=True)
            result.extend((f"{hwcaps}/{n}", SUFFIX_HWCAPS) for n in names)
        roots = ["tls", *_LEGACY_PLATFORMS]
        present = {r for r in roots if self._exists_dir(_join(directory, r))}
        if present:
            for platform in roots[1:]:
                for sub in (f"tls/{platform}/{platform}", f"tls/{platform}", "tls",
                            f"{platform}/{platform}", platform):
                    path = _join(directory, sub)
                    if (sub.split("/")[0] in present and all(path != p for p, _ in result)
                            and self._exists_dir(path)):
                        result.append((path, SUFFIX_LEGACY))
        self._variants[directory] = tuple(result)
        return self._variants[directory]

    def _exists_dir(self, path: str) -> bool:
        resolved = self.sysroot.resolve(path)
        return resolved is not None and stat.S_ISDIR(resolved.st.st_mode)

    # -- expansion ---------------------------------------------------------------

    def _expand_dirs(self, entries: Iterable[str], owner: _Loaded, space: _Namespace,
                     platform: str | None) -> list[str]:
        result = []
        for entry in entries:
            expanded = self._expand(entry, owner, space, platform)
            if expanded is None:
                continue
            directory = _absolute(expanded).rstrip("/") or "/"
            if directory not in result:
                result.append(directory)
        return result

    def _expand(self, text: str, owner: _Loaded, space: _Namespace, platform: str | None) -> str | None:
        """Substitute $ORIGIN/$LIB/$PLATFORM (``platform``); ``None`` if a token has no value."""
        if "$" not in text:
            return text
        values = {
            "ORIGIN": posixpath.dirname(owner.loaded_as) or "/",
            "LIB": self._lib_token(space),
            "PLATFORM": platform,
        }
        missing = False

        def substitute(match: re.Match[str]) -> str:
            nonlocal missing
            value = values[match.group(1) or match.group(2)]
            if value is None:
                missing = True
                return ""
            return value

        expanded = _DST.sub(substitute, text)
        return None if missing else expanded

    def _lib_token(self, space: _Namespace) -> str | None:
        dirs = self._default_dirs(space.interpreter, space.want)
        return dirs[0].strip("/") if dirs else None

    # -- loader facts ---------------------------------------------------------------

    def _default_dirs(self, interpreter: str | None,
                      want: tuple[int, bool, str] | None) -> tuple[str, ...]:
        key = (interpreter, want)
        if key in self._defaults:
            return self._defaults[key]
        if interpreter is None:
            interpreter = self._standard_interpreter(want)
        dirs = self._dirs_from_interpreter(interpreter) if interpreter else None
        if dirs is None:
            dirs = self._heuristic_dirs(want)
        self._defaults[key] = dirs
        return dirs

    def _dirs_from_interpreter(self, interpreter: str) -> tuple[str, ...] | None:
        resolved = self.sysroot.resolve(_absolute(interpreter))
        if resolved is None or not stat.S_ISREG(resolved.st.st_mode):
            return None
        host = self.sysroot.host_path(resolved.path)
        return _memoized(("dirs", host), resolved.st, lambda: _system_dirs(host))

    def _heuristic_dirs(self, want: tuple[int, bool, str] | None) -> tuple[str, ...]:
        elf_class = want[0] if want else 64
        machine = want[2] if want else "EM_X86_64"
        triplet = _MULTIARCH.get((machine, elf_class))
        if triplet and (self._exists_dir(f"/lib/{triplet}") or self._exists_dir(f"/usr/lib/{triplet}")):
            return (f"/lib/{triplet}", f"/usr/lib/{triplet}", "/lib", "/usr/lib")
        if elf_class == 64:
            return ("/lib64", "/usr/lib64")
        return ("/lib", "/usr/lib")

    def _standard_interpreter(self, want: tuple[int, bool, str] | None) -> str | None:
        if want is not None:
            path = _STANDARD_INTERP.get((want[2], want[0], want[1]))
            if path is not None and self.sysroot.resolve(path) is not None:
                return path
            return None
        for path in _STANDARD_INTERP.values():
            if self.sysroot.resolve(path) is not None:
                return path
        return None

    def _any_interpreter_info(self) -> ElfInfo | None:
        path = self._standard_interpreter(None)
        resolved = self.sysroot.resolve(path) if path else None
        return self._read(resolved) if resolved is not None else None

    def _cache_index(self) -> dict[str, list[ldcache.CacheEntry]] | None:
        if not self._cache_read:
            self._cache_read = True
            self._cache = self._read_ld_cache()
        return self._cache

    def _read_ld_cache(self) -> dict[str, list[ldcache.CacheEntry]] | None:
        resolved = self.sysroot.resolve(ldcache.LD_SO_CACHE)
        if resolved is None or not stat.S_ISREG(resolved.st.st_mode):
            return _index_cache(ldcache.read_ld_cache(self.sysroot))
        return _memoized(("ld.so.cache", self.sysroot.host_path(resolved.path)), resolved.st,
                         lambda: _index_cache(ldcache.read_ld_cache(self.sysroot)))

    def _ld_so_conf(self) -> list[str]:
        if self._conf_dirs is None:
            self._conf_dirs = ldcache.read_ld_so_conf(self.sysroot)
        return self._conf_dirs

    def _read(self, resolved: Resolved) -> ElfInfo | None:
        """ELF facts of a resolved regular file, memoized by identity."""
        host = self.sysroot.host_path(resolved.path)
        return _memoized(("elf", host), resolved.st, lambda: read_elf(host, label=resolved.path))


#: Facts read from files, shared by every resolver of the process and keyed by
#: the host file's identity (path, inode, size, mtime): a build system that
#: resolves many images over one sysroot reads each library and the loader's
#: cache once. A changed file has a new key.
_FILE_FACTS: dict[tuple[Any, ...], Any] = {}


def _memoized(key: tuple[str, str], st: os.stat_result, compute: Callable[[], _T]) -> _T:
    full = (*key, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    try:
        return cast(_T, _FILE_FACTS[full])
    except KeyError:
        value = compute()
        _FILE_FACTS[full] = value
        return value


def _index_cache(entries: list[ldcache.CacheEntry] | None) -> dict[str, list[ldcache.CacheEntry]] | None:
    """Cache entries by soname, in file order."""
    if entries is None:
        return None
    index: dict[str, list[ldcache.CacheEntry]] = {}
    for entry in entries:
        index.setdefault(entry.soname, []).append(entry)
    return index


def _system_dirs(host: str) -> tuple[str, ...] | None:
    """The NUL-separated system dirs stored in an ``ld.so`` file, if found."""
    try:
        with open(host, "rb") as handle:
            data = handle.read()
    except OSError:
        return None
    match = _SYSTEM_DIRS.search(data)
    if match is None:
        return None
    parts = match.group(0).split(b"\0")[:-1]
    return tuple(p.decode("utf-8", "surrogateescape").rstrip("/") or "/" for p in parts)


def _new_info(new: list[_Loaded], edge: Dependency) -> ElfInfo | None:
    """The ElfInfo of the object an edge leads to, if newly loaded."""
    for loaded in new:
        if loaded.edge is edge:
            return loaded.info
    return None


def _reuse(needer: str, name: str, known: _Loaded) -> Dependency:
    """An edge to an object already loaded: how it was found the first time."""
    if known.edge is None:  # the program itself
        return Dependency(needer, name, known.path, RULE_DIRECT, (), None)
    first = known.edge
    return Dependency(needer, name, known.path, first.rule, first.links, first.search_dir)


def _platform_values(want: tuple[int, bool, str]) -> tuple[str | None, ...]:
    """Every value of ``$PLATFORM`` for the class/endianness/machine ``want`` (``(None,)``: none)."""
    return _PLATFORMS.get((want[2], want[1]), (None,))


def _accepted_flags(info: ElfInfo) -> frozenset[int]:
    expected = ldcache.cache_flags(info)
    if expected & 0xFF00:
        return frozenset({expected})
    return frozenset({expected, 1})


def _without_paths(info: ElfInfo) -> ElfInfo:
    return ElfInfo(info.elf_class, info.little_endian, info.machine, False, None, (), (), (), None, False)


def _absolute(path: str) -> str:
    return path if path.startswith("/") else "/" + path


def _join(directory: str, name: str) -> str:
    return directory.rstrip("/") + "/" + name


def _natural_key(text: str) -> tuple[tuple[int, str], ...]:
    return tuple((int(p), "") if p.isdigit() else (-1, p) for p in re.split(r"(\d+)", text) if p)


__all__ = ["Closure", "Dependency", "LibraryResolver"]
