"""From a spec and its inputs to the image's file tree.

Order of work, each step recording provenance:

1. ``paths`` (globs with ``**``) are expanded in the sysroot; each match is
   added with the symlink chain that leads to it; directories take their
   whole subtree; ``excludes`` prune subtrees.
2. ``files`` and the ``rootfs/`` overlay are laid over the result.
3. The ELF closure (PT_INTERP + DT_NEEDED, ld.so rules) of every ELF file in
   the tree and of ``libs`` is added, resolved through the layered view,
   together with the packs (:mod:`.packs`: gconv, ssl, nss, tz, locale) the
   spec names or the closure calls for, and the packs' own closure.
4. Generated files: ``/etc/ld.so.cache`` when the image's loader would not
   find a library in its default dirs, and the nss files.
5. The manifesto's directories and every missing parent directory.
"""

from __future__ import annotations

import os
import posixpath
import stat
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from microcontainer_tool.assembly import packs
from microcontainer_tool.assembly.nss import Identity, nss_files, parse_user
from microcontainer_tool.assembly.pattern import covers, expand, has_magic
from microcontainer_tool.closure import ldcache
from microcontainer_tool.closure.elf import ELF_MAGIC, ElfInfo, oci_platform, read_elf, undefined_symbols
from microcontainer_tool.closure.ldd import Closure, LibraryResolver
from microcontainer_tool.errors import MissingLibraryError, SourceError, SpecError
from microcontainer_tool.model.tree import (
    DIR_MODE,
    FILE_MODE,
    Entry,
    EntryKind,
    FileTree,
    HostFile,
    InlineContent,
    Provenance,
    file_mode,
    normalize_path,
)
from microcontainer_tool.sources.dpkg import STATUS_D, DpkgDatabase
from microcontainer_tool.sources.hostcontent import ContentReader
from microcontainer_tool.sources.sysroot import LayeredRoot, SysRoot
from microcontainer_tool.spec.imagespec import ARCHES, DEFAULT_PATH, OVERLAY_SKIP, ImageSpec

if TYPE_CHECKING:
    from microcontainer_tool.sources.rpm.root import PackageRoot

#: Directories every microcontainer has (empty; mount points at run time).
RUNTIME_DIRS = ("/dev", "/proc", "/sys", "/read", "/write", "/run", "/tmp")
#: Scratch directories any user of the image may write to (tmpfs at run time):
#: ``1777``, the one exception to "no sticky bit". A runtime mounting a tmpfs
#: there without a ``mode=`` (runc 1.1 gives it the covered directory's mode)
#: would otherwise leave the image's non-root user unable to write its pid files.
SCRATCH_DIRS = ("/run", "/tmp")
SCRATCH_MODE = 0o1777
LD_CACHE_PATH = "/etc/ld.so.cache"

Warn = Callable[[str], None]


@dataclass
class Assembly:
    """The assembled image content and what was learnt on the way.

    Attributes:
        tree: the file tree of the image.
        closure: the ELF closure (``None`` if the image holds no ELF).
        identity: the image's user.
        platform: ``(architecture, variant)`` for the image config.
        main: image path of the program the image runs, if it is an ELF.
        warnings: messages for the user (missing libraries when allowed, ...).
        packages: package id (``rpm:NEVRA``, ``deb:NAME:ARCH``) -> facts
            (see :mod:`.provenance`), for every package that contributed a
            file, symlink or generated entry.
    """

    tree: FileTree
    closure: Closure | None
    identity: Identity
    platform: tuple[str, str | None]
    main: str | None
    warnings: list[str] = field(default_factory=list)
    packages: dict[str, dict[str, Any]] = field(default_factory=dict)


def assemble(spec: ImageSpec, allow_missing: bool = False, packages: PackageRoot | None = None,
             sysroot: SysRoot | None = None, package_facts: bool = True,
             cache_dir: str | None = None) -> Assembly:
    """Build the image's file tree from a spec.

    Args:
        spec: the validated spec.
        allow_missing: report missing libraries as warnings instead of failing.
        packages: the extracted packages of an RPM spec (its sysroot), see
            :func:`~.rpmroot.prepare_sysroot`; ``None`` for a ``from:`` tree.
        sysroot: the root to take files from instead of ``spec.from_`` (an
            :class:`~.imageroot.ImageRoot`); ``None`` opens the ``from:`` tree.
        package_facts: read a Debian sysroot's dpkg database (package
            sources, ``status.d`` entries); dependency scanners need no facts.
        cache_dir: the tool's cache, where a host directory's dpkg database is
            indexed (:mod:`~microcontainer_tool.sources.dpkgindex`); ``None``: not indexed.

    Returns:
        The assembly.

    Raises:
        MicrocontainerError: any input problem, with a one-line message.
    """
    return _Assembler(spec, allow_missing, packages, sysroot, package_facts, cache_dir).run()


#: The symbols each ELF file imports, by file identity, shared by the assemblies of a
#: process (a build system resolving many images over one sysroot reads each library once).
_IMPORTS: dict[tuple[object, ...], frozenset[str]] = {}

#: Documentation a package's files bring that a microcontainer does without,
#: when ``paths`` defaults to the requested packages' files.
DOC_DIRS = ("/usr/share/doc", "/usr/share/man", "/usr/share/info", "/usr/share/licenses")
RPM_MANIFEST = "/var/lib/rpmmanifest/container-manifest-2"
OS_RELEASE = ("/etc/os-release", "/usr/lib/os-release")
"""Where scanners read the distribution (os-release(5)): the first one the sysroot has goes in."""


class _Assembler:
    def __init__(self, spec: ImageSpec, allow_missing: bool, packages: PackageRoot | None,
                 sysroot: SysRoot | None = None, package_facts: bool = True,
                 cache_dir: str | None = None) -> None:
        self.spec = spec
        self.allow_missing = allow_missing
        self.packages = packages
        self.sysroot = (sysroot if sysroot is not None
                        else SysRoot(packages.root if packages is not None else spec.sysroot_dir))
        # no host path: where the tree lies is not part of the image
        self.source = "rpm" if packages is not None else sysroot.label if sysroot is not None else "dir"
        self.tree = FileTree()
        self.overlay: dict[str, str] = {}
        self.warnings: list[str] = []
        self.dpkg = DpkgDatabase.open(self.sysroot, cache_dir) if packages is None and package_facts else None
        self._symbols: dict[str, frozenset[str]] = {}
        self.contents = ContentReader()

    def run(self) -> Assembly:
        self._add_paths()
        self._add_files()
        self._add_rootfs()
        layered = LayeredRoot(self.sysroot, self.overlay)
        closure = self._add_closure(layered)
        self._add_os_release()
        if self.packages is not None:
            self._add_rpm_manifest()
        if self.dpkg is not None:
            self._attribute_deb_packages()
        packages = self._contributors()
        if self.dpkg is not None:
            self._add_dpkg_status(packages)
        identity = parse_user(self.spec.effective_user)
        if identity.named or self.spec.groups or self.spec.nss:
            for path, data in nss_files(identity, self.spec.groups).items():
                if path not in self.overlay:
                    self._inline(path, data, "nss", "nss")
        for path in RUNTIME_DIRS:
            existing = self.tree.get(path)
            mode = SCRATCH_MODE if path in SCRATCH_DIRS else DIR_MODE
            if existing is None:
                why = Provenance("microcontainer directory", "generated", "generated",
                                 "microcontainer directory")
                self.tree.add(Entry(path, EntryKind.DIR, mode, provenance=(why,)))
            elif existing.kind is EntryKind.DIR and existing.mode != mode:
                self.tree.add(replace(existing, mode=mode), replace_existing=True)
        self._add_mount_points()
        self.tree.add_parents(Provenance("parent directory", "generated", "generated", "parent directory"))
        self.tree.check()
        main = self._main_program(layered)
        platform = self._platform(main, closure)
        return Assembly(self.tree, closure, identity, platform, main, self.warnings,
                        self._package_facts(packages))

    def _add_mount_points(self) -> None:
        """Make each ``mounts`` entry a directory of the image (a runtime needs one to mount on)."""
        for path in self.spec.mounts:
            path = normalize_path(path)
            parts = path.strip("/").split("/")
            for depth in range(1, len(parts)):
                above = self.tree.get("/" + "/".join(parts[:depth]))
                if above is not None and above.kind is not EntryKind.DIR:
                    raise SpecError(f"{self.spec.where('mounts')}: mount point {path} is under "
                                    f"{above.path}, which is not a directory")
            existing = self.tree.get(path)
            if existing is None:
                why = Provenance(f"mounts: {path}", "generated", "generated", "mount point")
                self.tree.add(Entry(path, EntryKind.DIR, DIR_MODE, provenance=(why,)))
            elif existing.kind is not EntryKind.DIR:
                raise SpecError(f"{self.spec.where('mounts')}: mount point {path} is "
                                f"a {existing.kind.value} in the image, not a directory")

    # -- paths ------------------------------------------------------------

    def _excluded(self, *paths: str) -> bool:
        return any(covers(ex, p) for ex in self.spec.excludes for p in paths)

    def _add_paths(self) -> None:
        if self.packages is not None and not self.spec.paths:
            self._add_package_files()
            return
        for pattern in self.spec.paths:
            found = [p for p in expand(self.sysroot, pattern) if not self._excluded(p)]
            if not found:
                raise SpecError(
                    f"{self.spec.where('paths')}: paths entry {pattern!r} matches nothing"
                    f" in {self.spec.from_}" + (" (after excludes)" if not has_magic(pattern)
                                                and self.sysroot.exists(pattern) else "")
                )
            for path in found:
                prov = Provenance(f"paths: {pattern}", self._source_of(path), "paths", pattern)
                self._add_sys_path(path, prov)

    def _add_package_files(self) -> None:
        """No ``paths``: the files of the packages the spec names (docs left out)."""
        assert self.packages is not None
        wanted = {_request_name(p) for p in self.spec.packages if not p.endswith(".rpm")}
        local = {nevra for nevra in self.packages.packages if nevra in self.packages.local}
        owners = self.packages.owners
        chosen = sorted(path for path, nevra in owners.items()
                        if (nevra.rsplit("-", 2)[0] in wanted or nevra in local)
                        and not any(covers(d, path) for d in DOC_DIRS) and not self._excluded(path))
        for path in chosen:
            st = self.sysroot.lstat(path)
            if st is not None and not stat.S_ISDIR(st.st_mode):
                prov = Provenance(f"package: {owners[path]}", self._source_of(path), "package",
                                  owners[path].rsplit("-", 2)[0])
                self._add_sys_path(path, prov)

    def _source_of(self, path: str) -> str:
        if self.packages is not None and path in self.packages.owners:
            return f"rpm:{self.packages.owners[path]}"
        return self.source

    def _attribute_deb_packages(self) -> None:
        """Give entries of the sysroot the Debian package that owns them (one batch lookup)."""
        assert self.dpkg is not None
        candidates = [e.path for e in self.tree if e.path not in self.overlay
                      and any(p.source == self.source for p in e.provenance)]
        owners = self.dpkg.owners(candidates)
        for path, owner in owners.items():
            entry = self.tree.get(path)
            assert entry is not None
            provenance = tuple(replace(p, source=owner.id) if p.source == self.source else p
                               for p in entry.provenance)
            self.tree.add(replace(entry, provenance=provenance), replace_existing=True)

    def _contributors(self) -> list[str]:
        """Ids of the packages owning a non-directory entry that is not the project's."""
        found = set()
        for entry in self.tree:
            if entry.kind is EntryKind.DIR or entry.path in self.overlay:
                continue
            for prov in entry.provenance:
                if prov.source.startswith(("rpm:", "deb:")):
                    found.add(prov.source)
        return sorted(found)

    def _package_facts(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        from microcontainer_tool.model.provenance import deb_facts, rpm_facts

        facts = {}
        for package_id in ids:
            if package_id.startswith("rpm:") and self.packages is not None:
                meta = self.packages.meta.get(package_id[4:])
                if meta is not None:
                    facts[package_id] = rpm_facts(meta)
            elif package_id.startswith("deb:") and self.dpkg is not None:
                deb = self.dpkg.by_id(package_id)
                if deb is not None:
                    facts[package_id] = deb_facts(deb, self.dpkg)
        return facts

    def _add_dpkg_status(self, ids: list[str]) -> None:
        """``/var/lib/dpkg/status.d/NAME``: the status stanza of each contributing package."""
        assert self.dpkg is not None
        by_name: dict[str, list[str]] = {}
        for package_id in ids:
            if package_id.startswith("deb:"):
                by_name.setdefault(package_id.split(":")[1], []).append(package_id)
        for name, same in sorted(by_name.items()):
            for package_id in same:
                deb = self.dpkg.by_id(package_id)
                if deb is None:
                    continue
                path = f"{STATUS_D}/{name}" if len(same) == 1 else f"{STATUS_D}/{name}:{deb.arch}"
                if path not in self.overlay:
                    self._inline(path, deb.stanza.encode(), "dpkg status (packages that contributed files)",
                                 "dpkg status")

    def _add_os_release(self) -> None:
        """The sysroot's ``os-release``, so that scanners know the distribution (as distroless images).

        ``/etc/os-release`` with its link chain (Debian: ``../usr/lib/os-release``),
        else ``/usr/lib/os-release``; from its package (an RPM sysroot holds the
        locked release package's, e.g. ``rocky-release``). Nothing when the
        sysroot has none, when the spec excludes it, or when the image
        already has one (a ``rootfs/`` overlay, a ``paths`` entry).
        """
        if any(p in self.overlay or self.tree.get(p) is not None for p in OS_RELEASE):
            return
        for path in OS_RELEASE:
            resolved = self.sysroot.resolve(path)
            if resolved is None or not stat.S_ISREG(resolved.st.st_mode):
                continue
            if self._excluded(path, resolved.path, *(link for link, _target in resolved.links)):
                return
            why = Provenance("os-release (the distribution, for scanners)", self._source_of(path),
                             "os-release", path)
            self._add_sys_path(path, why)
            return

    def _add_rpm_manifest(self) -> None:
        """``container-manifest-2``: exactly the packages that contributed files."""
        assert self.packages is not None
        owners = self.packages.owners
        contributors = sorted({owners[e.path] for e in self.tree
                               if e.path in owners and e.path not in self.overlay
                               and e.kind is not EntryKind.DIR})
        lines = "".join(self.packages.packages[nevra] + "\n" for nevra in contributors)
        self._inline(RPM_MANIFEST, lines.encode(), "rpm manifest (packages that contributed files)",
                     "rpm manifest")

    def _add_links(self, links: tuple[tuple[str, str], ...], prov: Provenance) -> None:
        for link_path, target in links:
            source = self._source_of(link_path)  # the link's own package (/lib64 is filesystem's)
            own = replace(prov, source=source) if source != prov.source else prov
            self.tree.add(Entry(link_path, EntryKind.SYMLINK, 0o777, linkname=target, provenance=(own,)))

    def _add_sys_path(self, path: str, prov: Provenance) -> None:
        resolved = self.sysroot.resolve(path)
        if resolved is None:
            self._add_dangling(path, prov)
            return
        self._add_links(resolved.links, prov)
        if stat.S_ISDIR(resolved.st.st_mode):
            self._add_sys_dir(resolved.path, path, prov)
        else:
            self._add_sys_object(resolved.path, resolved.st, prov)

    def _add_dangling(self, path: str, prov: Provenance) -> None:
        partial = self.sysroot.resolve(path, follow_last=False)
        if partial is None or not stat.S_ISLNK(partial.st.st_mode):
            raise SourceError(f"{path}: not found in {self.spec.from_}")
        self._add_links(partial.links, prov)
        target = self.sysroot.readlink(partial.path)
        self.tree.add(Entry(partial.path, EntryKind.SYMLINK, 0o777, linkname=target, provenance=(prov,)))
        self.warnings.append(f"{path}: dangling symlink to {target} kept as is")

    def _add_sys_object(self, path: str, st: os.stat_result, prov: Provenance) -> None:
        source = self._source_of(path)
        if source != prov.source:
            prov = replace(prov, source=source)
        mode = st.st_mode
        if stat.S_ISREG(mode):
            self.tree.add(Entry(path, EntryKind.FILE, file_mode(mode),
                                content=self.contents.host_file(self.sysroot.host_path(path), st),
                                provenance=(prov,)))
        elif stat.S_ISLNK(mode):
            target = self.sysroot.readlink(path)
            self.tree.add(Entry(path, EntryKind.SYMLINK, 0o777, linkname=target, provenance=(prov,)))
            resolved = self.sysroot.resolve(path)
            if resolved is not None and stat.S_ISREG(resolved.st.st_mode):
                self._add_links(resolved.links, prov)
                self._add_sys_object(resolved.path, resolved.st, prov)
        elif stat.S_ISDIR(mode):
            self.tree.add(Entry(path, EntryKind.DIR, DIR_MODE, provenance=(prov,)))
        else:
            raise SourceError(f"{path}: {_special_kind(mode)} cannot go in a microcontainer")

    def _add_sys_dir(self, canonical: str, named: str, prov: Provenance) -> None:
        self.tree.add(Entry(canonical, EntryKind.DIR, DIR_MODE, provenance=(prov,)))
        stack = [(canonical, named)]
        while stack:
            real_dir, named_dir = stack.pop()
            real_base = real_dir.rstrip("/")
            shown_base = named_dir.rstrip("/")
            for name in self.sysroot.listdir(real_dir):
                real = f"{real_base}/{name}"
                shown = f"{shown_base}/{name}"
                if self.spec.excludes and self._excluded(real, shown):
                    continue
                st = self.sysroot.lstat(real)
                if st is None:
                    continue
                if stat.S_ISLNK(st.st_mode):
                    resolved = self.sysroot.resolve(real)
                    if resolved is not None and self._excluded(resolved.path):
                        continue  # excludes match the resolved path too: the link would bring it back
                if stat.S_ISDIR(st.st_mode):
                    self.tree.add(Entry(real, EntryKind.DIR, DIR_MODE, provenance=(prov,)))
                    stack.append((real, shown))
                else:
                    self._add_sys_object(real, st, prov)

    # -- project files ----------------------------------------------------

    def _add_files(self) -> None:
        for image_path, local in self.spec.files:
            host = os.path.normpath(os.path.join(self.spec.base_dir, local))
            try:
                st = os.stat(host)
            except OSError as err:
                raise SourceError(
                    f"{self.spec.where('files')}: files[{image_path}]: {local}: {err.strerror}"
                ) from err
            prov = Provenance(f"files: {image_path}", self._project_source(host), "files", image_path)
            if stat.S_ISDIR(st.st_mode):
                self._add_host_tree(host, normalize_path(image_path), prov, follow_root=True)
            elif stat.S_ISREG(st.st_mode):
                self._add_host_entry(normalize_path(image_path), host, st, prov)
            else:
                raise SourceError(f"{local}: {_special_kind(st.st_mode)} cannot go in a microcontainer")

    def _project_source(self, host: str) -> str:
        """``project:PATH``, PATH relative to the project (no host path: reproducible anywhere)."""
        return f"project:{os.path.relpath(host, self.spec.project_dir or self.spec.base_dir)}"

    def _add_rootfs(self) -> None:
        overlay = self.spec.overlay_dir
        if os.path.isdir(overlay):
            prov = Provenance("rootfs overlay", self._project_source(overlay) + "/", "rootfs")
            self._add_host_tree(overlay, "/", prov, follow_root=True, skip=OVERLAY_SKIP)

    def _add_host_tree(self, host_dir: str, image_dir: str, prov: Provenance,
                       follow_root: bool, skip: tuple[str, ...] = ()) -> None:
        if image_dir != "/":
            self._add_host_entry(image_dir, host_dir, os.stat(host_dir), prov)
        for dirpath, dirnames, filenames in os.walk(host_dir, followlinks=False):
            dirnames.sort()
            rel = os.path.relpath(dirpath, host_dir)
            base = image_dir if rel == "." else posixpath.join(image_dir, rel.replace(os.sep, "/"))
            for name in sorted(dirnames + [f for f in filenames if f not in skip]):
                host = os.path.join(dirpath, name)
                self._add_host_entry(posixpath.join(base, name), host, os.lstat(host), prov)

    def _add_host_entry(self, image_path: str, host: str, st: os.stat_result,
                        prov: Provenance) -> None:
        mode = st.st_mode
        if stat.S_ISDIR(mode):
            entry = Entry(image_path, EntryKind.DIR, DIR_MODE, provenance=(prov,))
        elif stat.S_ISREG(mode):
            entry = Entry(image_path, EntryKind.FILE, file_mode(mode),
                          content=self.contents.host_file(host, st), provenance=(prov,))
        elif stat.S_ISLNK(mode):
            entry = Entry(image_path, EntryKind.SYMLINK, 0o777, linkname=os.readlink(host),
                          provenance=(prov,))
        else:
            raise SourceError(f"{host}: {_special_kind(mode)} cannot go in a microcontainer")
        existing = self.tree.get(image_path)
        if not (existing is not None and existing.kind is EntryKind.DIR and entry.kind is EntryKind.DIR):
            self.tree.remove(image_path)
        self.tree.add(entry, replace_existing=True)
        self.overlay[image_path] = host

    def _inline(self, path: str, data: bytes, reason: str, what: str = "") -> None:
        self.tree.remove(path)
        self.tree.add(Entry(path, EntryKind.FILE, FILE_MODE, content=InlineContent(data),
                            provenance=(Provenance(reason, "generated", "generated", what or reason),)))

    # -- ELF closure ------------------------------------------------------

    def _add_closure(self, layered: LayeredRoot) -> Closure | None:
        resolver = LibraryResolver(layered, library_path=self._library_path())
        roots = self._file_roots()
        for lib in self.spec.libs:
            roots.append(self._add_lib(lib, resolver, layered))
        closure = resolver.closure(roots)
        taken: set[str] = set()
        while True:  # a pack's modules can need another pack (libcrypto's engines, iconv users)
            choices = [c for c in self._pack_choices(layered, closure) if c.name not in taken]
            if not choices:
                break
            for choice in choices:
                taken.add(choice.name)
                self._add_pack(choice, layered, closure)
            roots = list(dict.fromkeys(self._file_roots() + roots))
            closure = resolver.closure(roots)
        if not closure.objects:
            return None
        for dep in closure.edges:
            if dep.path is None:
                continue
            needer = closure.chain(dep.needer)
            why = (f"interpreter of {dep.needer}" if dep.rule == "interpreter"
                   else f"needed by {dep.needer} ({dep.rule})")
            interp = dep.rule == "interpreter"
            prov = Provenance(why + (f" <- {' <- '.join(reversed(needer[:-1]))}" if len(needer) > 1 else ""),
                              self._source_of(dep.path), "interpreter" if interp else "needed",
                              by=dep.needer, name="" if interp else dep.name, rule="" if interp else dep.rule)
            self._add_layered(layered, dep.links, dep.path, prov)
        missing = closure.missing()
        if missing:
            message = resolver.format_missing(closure)
            if not self.allow_missing:
                raise MissingLibraryError(message + " (--allow-missing to build anyway)")
            self.warnings.append(message)
        self._add_ld_cache(resolver, closure, layered)
        return closure

    def _file_roots(self) -> list[str]:
        """The files whose closure counts: host files, but not those already read and not ELF."""
        return [e.path for e in self.tree if e.kind is EntryKind.FILE and isinstance(e.content, HostFile)
                and (e.content.data is None or e.content.data[:4] == ELF_MAGIC)]

    # -- packs ------------------------------------------------------------

    def _pack_choices(self, layered: LayeredRoot, closure: Closure) -> list[packs.PackChoice]:
        libc = packs.libc_path(closure.objects)
        glibc = packs.glibc_version(layered, libc) if libc is not None else None
        identity = parse_user(self.spec.effective_user)
        nss = bool(identity.named or self.spec.groups or self.spec.nss)
        return packs.choose(self.spec.packs, self.spec.auto_packs, closure.objects,
                            lambda path: self._imports(layered, path), nss, glibc)

    def _imports(self, layered: LayeredRoot, path: str) -> frozenset[str]:
        if path not in self._symbols:
            host = layered.host_path(path)
            try:
                st = os.stat(host)
            except OSError:
                self._symbols[path] = undefined_symbols(host, path)  # it reports the error
            else:
                key = (host, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
                if key not in _IMPORTS:
                    _IMPORTS[key] = undefined_symbols(host, path)
                self._symbols[path] = _IMPORTS[key]
        return self._symbols[path]

    def _add_pack(self, choice: packs.PackChoice, layered: LayeredRoot, closure: Closure) -> None:
        """Add a pack's files (their closure follows with the next closure pass)."""
        explicit = choice.name in self.spec.packs
        try:
            found = packs.pack_paths(choice.name, layered, closure.objects, explicit)
        except SourceError as err:
            raise SourceError(f"{self.spec.where('packs')}: {err} ({self.spec.from_})") from None
        for path in found:
            resolved = layered.resolve(path)
            if self._excluded(path) or (resolved is not None and resolved.path in self.overlay) \
                    or path in self.overlay:
                continue  # the project's own files win; excludes prune packs too
            prov = Provenance(f"pack {choice.name}: {choice.why}", self._source_of(path), "pack",
                              choice.name, by=choice.by, rule=choice.why)
            self._add_sys_path(path, prov)

    def _library_path(self) -> tuple[str, ...]:
        value = dict(self.spec.env).get("LD_LIBRARY_PATH", "")
        return tuple(p for p in value.split(":") if p.startswith("/"))

    def _add_layered(self, layered: LayeredRoot, links: tuple[tuple[str, str], ...], path: str,
                     prov: Provenance) -> None:
        self._add_links(links, prov)
        existing = self.tree.get(path)
        if existing is not None:
            if prov not in existing.provenance:
                self.tree.add(Entry(existing.path, existing.kind, existing.mode, existing.content,
                                    existing.linkname, existing.provenance + (prov,)), replace_existing=True)
            return
        st = layered.lstat(path)
        if st is None or not stat.S_ISREG(st.st_mode):
            raise SourceError(f"{path}: not a regular file in {self.spec.from_}")
        self.tree.add(Entry(path, EntryKind.FILE, file_mode(st.st_mode),
                            content=_host_file(layered.host_path(path), os.stat(layered.host_path(path))),
                            provenance=(prov,)))

    def _add_lib(self, lib: str, resolver: LibraryResolver, layered: LayeredRoot) -> str:
        where = self.spec.where("libs")
        prov = Provenance(f"libs: {lib}", self.source, "libs", lib)
        if "/" in lib:
            resolved = layered.resolve(lib)
            if resolved is None or not stat.S_ISREG(resolved.st.st_mode):
                raise SourceError(f"{where}: libs entry {lib!r} is not a file in {self.spec.from_}")
            self._add_layered(layered, resolved.links, resolved.path, prov)
            return resolved.path
        dep = resolver.find_library(lib, self._main_candidate(layered))
        if dep.path is None:
            raise MissingLibraryError(f"{where}: libs entry {lib!r} not found in {self.spec.from_}")
        prov = Provenance(f"libs: {lib} ({dep.rule})", self._source_of(dep.path), "libs", lib, rule=dep.rule)
        self._add_layered(layered, dep.links, dep.path, prov)
        return dep.path

    def _add_ld_cache(self, resolver: LibraryResolver, closure: Closure, layered: LayeredRoot) -> None:
        """Generate /etc/ld.so.cache when the image's loader needs it.

        A library found only through the sysroot's ld.so.conf/ld.so.cache, in a
        directory that is not one of the loader's default dirs, would not be
        found at run time without a cache listing it.
        """
        needed = False
        for dep in closure.edges:
            if dep.path is None or not dep.rule.startswith("ld.so.cache"):
                continue
            needer = closure.objects.get(dep.needer)
            defaults = resolver.default_dirs(needer.interpreter if needer else None)
            if dep.search_dir not in defaults:
                needed = True
                break
        if not needed or LD_CACHE_PATH in self.overlay:
            return
        dirs = ldcache.read_ld_so_conf(layered)
        in_image = {p: info for p, info in closure.objects.items() if p in self.tree}
        entries = ldcache.cache_entries_for(in_image, dirs, sysroot=layered)
        self._inline(LD_CACHE_PATH, ldcache.build_ld_cache(entries),
                     "ld.so.cache for libraries outside the loader's default dirs", "ld.so.cache")

    # -- config facts -----------------------------------------------------

    def _main_candidate(self, layered: LayeredRoot) -> str | None:
        argv = self.spec.entrypoint or self.spec.cmd
        if not argv:
            return None
        program = argv[0]
        if program.startswith("/"):
            return program
        for directory in dict(self.spec.env).get("PATH", DEFAULT_PATH).split(":"):
            candidate = posixpath.join(directory or "/", program)
            if self._in_image(candidate):
                return candidate
        return None

    def _in_image(self, path: str) -> bool:
        for _ in range(40):
            entry = self._lookup(path)
            if entry is None:
                return False
            if entry[0].kind is not EntryKind.SYMLINK:
                return entry[0].kind is EntryKind.FILE
            path = posixpath.normpath(posixpath.join(posixpath.dirname(entry[1]), entry[0].linkname))
        return False

    def _lookup(self, path: str) -> tuple[Entry, str] | None:
        """Find ``path`` in the tree, following symlinked parent directories."""
        parts = [p for p in path.split("/") if p]
        current = ""
        for index, part in enumerate(parts):
            current = f"{current}/{part}"
            entry = self.tree.get(current)
            if entry is None:
                return None
            if entry.kind is EntryKind.SYMLINK and index < len(parts) - 1:
                target = posixpath.normpath(posixpath.join(posixpath.dirname(current), entry.linkname))
                return self._lookup(target + "/" + "/".join(parts[index + 1:]))
            if index == len(parts) - 1:
                return entry, current
        return None

    def _main_program(self, layered: LayeredRoot) -> str | None:
        argv = self.spec.entrypoint or self.spec.cmd
        if not argv:
            return None
        main = self._main_candidate(layered)
        key = "entrypoint" if self.spec.entrypoint else "cmd"
        if main is None or not self._in_image(main):
            raise SpecError(f"{self.spec.where(key)}: {key} program {argv[0]!r} is not in the image")
        return main

    def _platform(self, main: str | None, closure: Closure | None) -> tuple[str, str | None]:
        if self.spec.arch:
            return self.spec.arch, self.spec.variant or None
        infos: list[ElfInfo] = []
        if main is not None and closure is not None:
            found = self._lookup(main)
            if found is not None:
                resolved = LayeredRoot(self.sysroot, self.overlay).resolve(found[1])
                if resolved is not None and resolved.path in closure.objects:
                    infos.append(closure.objects[resolved.path])
        if closure is not None:
            infos.extend(closure.objects[p] for p in sorted(closure.objects)
                         if closure.objects[p].is_program)
            infos.extend(closure.objects[p] for p in sorted(closure.objects))
        if not infos and self.packages is not None:
            by_rpm = {rpm: oci for oci, rpm in ARCHES.items()}
            return by_rpm.get(self.spec.rpm_arch, self.spec.rpm_arch), None
        if not infos:
            raise SpecError(f"{self.spec.source}: the image holds no ELF file: "
                            "set 'arch' to name its architecture")
        return oci_platform(infos[0])


def _host_file(host: str, st: os.stat_result) -> HostFile:
    identity = (st.st_dev, st.st_ino) if st.st_nlink > 1 else None
    return HostFile(host, st.st_size, identity)


def _special_kind(mode: int) -> str:
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device node"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISFIFO(mode):
        return "a fifo"
    return "a special file"


__all__ = ["Assembly", "assemble", "RUNTIME_DIRS", "read_elf"]


def _request_name(request: str) -> str:
    """The package name of a ``packages`` entry (``curl >= 7`` -> ``curl``)."""
    return request.split()[0] if request.split() else request
