"""A Debian sysroot's dpkg database: who owns a file, and distroless-style ``status.d`` entries.

Read through the :class:`~.sysroot.SysRoot` interface, so a directory tree
and a microized image's layers work alike. Only packages whose ``Status`` is
``install ok installed`` count. File lists (``info/PKG[:ARCH].list``) name
paths as the package installed them; on a merged-``/usr`` system
``/lib/x86_64-linux-gnu/libc.so.6`` is ``/usr/lib/...`` in the image, so a
lookup also tries the path through each top-level directory symlink. Owners
are found for a whole image at once: one set intersection per file list.

Images carry ``/var/lib/dpkg/status.d/NAME`` (the package's status stanza)
for the packages that contributed files, as distroless images do: Trivy,
Grype and Syft read those.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote

from microcontainer_tool.errors import MicrocontainerError
from microcontainer_tool.sources.sysroot import SysRoot

if TYPE_CHECKING:
    from microcontainer_tool.sources.dpkgindex import DpkgIndex

STATUS = "/var/lib/dpkg/status"
INFO_DIR = "/var/lib/dpkg/info"
STATUS_D = "/var/lib/dpkg/status.d"
OS_RELEASE = ("/etc/os-release", "/usr/lib/os-release")
_DEP5 = "https://www.debian.org/doc/packaging-manuals/copyright-format/"


@dataclass(frozen=True)
class DebPackage:
    """One installed package.

    Attributes:
        name: ``Package``.
        version: ``Version`` (with any epoch).
        arch: ``Architecture``.
        source: the source package name (``Source`` without its version, or ``name``).
        stanza: the package's status stanza, as dpkg wrote it.
    """

    name: str
    version: str
    arch: str
    source: str
    stanza: str

    @property
    def id(self) -> str:
        """``deb:NAME:ARCH``: the provenance id."""
        return f"deb:{self.name}:{self.arch}"


def parse_stanzas(text: str) -> list[dict[str, str]]:
    """Parse deb822 paragraphs (continuation lines kept, joined with newlines)."""
    return list(iter_stanzas(text))


def iter_stanzas(text: str) -> Iterator[dict[str, str]]:
    """The deb822 paragraphs of ``text`` one by one, as :func:`parse_stanzas` gives them."""
    fields: dict[str, str] = {}
    last = ""
    for line in text.splitlines():
        if not line.strip():
            if fields:
                yield fields
            fields, last = {}, ""
        elif line[0] in " \t" and last:
            fields[last] += "\n" + line
        elif ":" in line:
            key, _, value = line.partition(":")
            last = key.strip()
            fields[last] = value.strip()
    if fields:
        yield fields


def _split_stanzas(text: str) -> list[str]:
    """The paragraphs of a deb822 file, each ending in one newline (blank lines between them)."""
    return [block.strip("\n") + "\n" for block in re.split(r"\n[ \t]*\n", text) if block.strip()]


_FIELD = re.compile(r"^(Package|Status|Architecture|Version|Source):[ \t]*(.*)$", re.M)

_SHARED = ""  # index value of a path several packages list


class _FileLists:
    """The ``info/*.list`` files of a database, and who lists what.

    With an on-disk index (:mod:`~microcontainer_tool.sources.dpkgindex`) the
    lists are not read at all: each wanted path is looked up there. Without,
    the first query intersects the wanted paths with each list (one C-level
    pass, cheapest for one image); from the second on, a full path index is
    built once and used (SCons builds many images from one sysroot).
    """

    def __init__(self, read: Callable[[], list[tuple[str, bytes]]], disk: DpkgIndex | None = None) -> None:
        self._read = read
        self._lists: list[tuple[str, bytes]] | None = None
        self._disk = disk
        self._queries = 0
        self._index: dict[bytes, str] | None = None

    @property
    def lists(self) -> list[tuple[str, bytes]]:
        """``(package key, file list bytes)`` of every package that has a list (read once)."""
        if self._lists is None:
            self._lists = self._read()
        return self._lists

    def listed_by(self, wanted: dict[bytes, str]) -> dict[str, set[str]]:
        """Wanted path (the value) -> keys of the packages listing it (in any spelling)."""
        if self._disk is not None:
            answer = self._disk.listed_by(wanted)
            if answer is not None:
                return answer
            self._disk = None  # unreadable after all: read the lists
        self._queries += 1
        if self._index is None and self._queries > 1:
            self._index = self._build_index()
        found: dict[str, set[str]] = {}
        if self._index is not None:
            for spelling, path in wanted.items():
                key = self._index.get(spelling)
                if key is not None:
                    found.setdefault(path, set()).add(key)
            return found
        # 100k+ lines on a desktop system: one C-level intersection per file list
        for key, data in self.lists:
            for spelling in wanted.keys() & data.split(b"\n"):  # iterates the lines, no set built
                found.setdefault(wanted[spelling], set()).add(key)
        return found

    def _build_index(self) -> dict[bytes, str]:
        index: dict[bytes, str] = {}
        shared: set[bytes] = set()
        for key, data in self.lists:
            listed = dict.fromkeys(data.split(b"\n"), key)
            shared |= listed.keys() & index.keys()
            index.update(listed)
        index.update(dict.fromkeys(shared, _SHARED))
        return index


#: Databases of host directories read in this process, by (root, status and info stat).
_MEMO: dict[tuple[object, ...], tuple[dict[str, DebPackage], _FileLists]] = {}


class DpkgDatabase:
    """The installed packages of a sysroot and the files they own."""

    def __init__(self, root: SysRoot, packages: dict[str, DebPackage],
                 files: _FileLists | None = None) -> None:
        self.root = root
        self.packages = packages
        self._files = files
        self.distro = _distro(root)

    @classmethod
    def open(cls, root: SysRoot, cache_dir: str | None = None) -> DpkgDatabase | None:
        """Read ``/var/lib/dpkg/status`` of ``root``; ``None`` if it has none.

        For a host directory (not an image) the database read is remembered in
        this process, keyed by the identity and mtime of the status file and
        the ``info`` directory (dpkg rewrites both on every change): SCons
        builds many images from one sysroot in one process. With ``cache_dir``,
        it is also indexed there (:mod:`~microcontainer_tool.sources.dpkgindex`)
        for the next processes, which then read no file list.
        """
        key = _stat_key(root)
        if key is not None and key in _MEMO:
            remembered, files = _MEMO[key]
            return cls(root, remembered, files)
        sig = index_file = None
        if cache_dir is not None and key is not None:
            from microcontainer_tool.sources import dpkgindex

            sig = dpkgindex.signature(root, STATUS, INFO_DIR)
            if sig is not None:
                index_file = dpkgindex.index_path(cache_dir, root)
                database = cls._from_index(root, index_file, sig)
                if database is not None:
                    if database._files is not None:
                        _MEMO[key] = (database.packages, database._files)
                    return database
        text = _read(root, STATUS)
        if text is None:
            return None
        packages: dict[str, DebPackage] = {}
        for block in _split_stanzas(text):
            fields = dict(_FIELD.findall(block))
            name = fields.get("Package", "")
            if not name or fields.get("Status", "").split()[-1:] != ["installed"]:
                continue
            arch = fields.get("Architecture", "").strip()
            source = fields.get("Source", "").split(" ")[0] or name
            packages[name if arch == "all" else f"{name}:{arch}"] = DebPackage(
                name, fields.get("Version", "").strip(), arch, source, block)
        database = cls(root, packages)
        if key is not None:
            lists = database._read_lists()
            database._files = _FileLists(lambda: lists)
            _MEMO[key] = (packages, database._files)
            if sig is not None and index_file is not None:
                from microcontainer_tool.sources import dpkgindex

                rows = ((k, p.name, p.version, p.arch, p.source, p.stanza) for k, p in packages.items())
                dpkgindex.save(index_file, sig, rows, lists)
        return database

    @classmethod
    def _from_index(cls, root: SysRoot, index_file: str, sig: str) -> DpkgDatabase | None:
        """The database as indexed in ``index_file``, if that index is of state ``sig``."""
        from microcontainer_tool.sources.dpkgindex import DpkgIndex

        index = DpkgIndex.load(index_file, sig)
        if index is None:
            return None
        rows = index.packages()
        if rows is None:
            index.close()
            return None
        packages = {row[0]: DebPackage(*row[1:]) for row in rows}
        database = cls(root, packages)
        database._files = _FileLists(database._read_lists, index)
        return database

    def by_id(self, package_id: str) -> DebPackage | None:
        """The package with provenance id ``deb:NAME:ARCH``, if installed."""
        _, name, arch = (package_id.split(":", 2) + ["", ""])[:3]
        return self.packages.get(name if arch == "all" else f"{name}:{arch}")

    def owners(self, paths: Iterable[str]) -> dict[str, DebPackage]:
        """The packages owning canonical image paths, in one pass over the file lists.

        A path is looked up as it is and through each top-level directory
        symlink (``/usr/lib/x`` is listed as ``/lib/x`` on merged-``/usr``
        systems). A path several packages list is a shared directory (``/usr``,
        ``/lib``): no package contributed it, so it has no owner.

        Returns:
            Path -> owning package, for the paths that have one.
        """
        aliases = self._top_level_aliases()
        wanted: dict[bytes, str] = {}
        for path in paths:
            wanted[path.encode("utf-8", "surrogateescape")] = path
            for canonical, alias in aliases:
                if path.startswith(canonical + "/"):
                    spelling = alias + path[len(canonical):]
                    wanted.setdefault(spelling.encode("utf-8", "surrogateescape"), path)
        if not wanted:
            return {}
        if self._files is None:
            self._files = _FileLists(self._read_lists)
        listed_by = self._files.listed_by(wanted)
        return {path: self.packages[keys.pop()] for path, keys in listed_by.items()
                if len(keys) == 1 and keys != {_SHARED}}

    def _read_lists(self) -> list[tuple[str, bytes]]:
        lists = []
        for key in sorted(self.packages):
            data = _read_bytes(self.root, f"{INFO_DIR}/{key}.list")
            if data is None and ":" in key:
                data = _read_bytes(self.root, f"{INFO_DIR}/{self.packages[key].name}.list")
            if data:
                lists.append((key, data))
        return lists

    def _top_level_aliases(self) -> list[tuple[str, str]]:
        """``(canonical dir, symlink)`` for top-level directory symlinks (merged ``/usr``)."""
        aliases = []
        try:
            names = self.root.listdir("/")
        except MicrocontainerError:
            return []
        for name in names:
            link = "/" + name
            st = self.root.lstat(link)
            if st is not None and stat.S_ISLNK(st.st_mode):
                resolved = self.root.resolve(link)
                if resolved is not None and stat.S_ISDIR(resolved.st.st_mode) and resolved.path != "/":
                    aliases.append((resolved.path, link))
        return sorted(aliases)

    def license(self, package: DebPackage) -> str:
        """The ``License`` of the ``Files: *`` paragraph of a DEP-5 copyright file, or ``""``."""
        text = _read(self.root, f"/usr/share/doc/{package.name}/copyright")
        if not text or not text.startswith("Format:") or _DEP5 not in text.splitlines()[0]:
            return ""
        for fields in iter_stanzas(text):  # stops at the paragraph it looks for
            if fields.get("Files", "").split() == ["*"]:
                return fields.get("License", "").split("\n")[0].strip()
        return ""

    def purl(self, package: DebPackage) -> str:
        """``pkg:deb/DISTRO/NAME@VERSION?arch=ARCH&distro=ID-VERSION_ID`` (as Syft spells it)."""
        distro_id, version_id = self.distro
        namespace = distro_id or "debian"
        qualifiers = [f"arch={quote(package.arch, safe='')}"]
        if distro_id:
            qualifiers.append(f"distro={distro_id}-{version_id}" if version_id else f"distro={distro_id}")
        return f"pkg:deb/{namespace}/{quote(package.name, safe='')}@{quote(package.version, safe='.-_~')}?" \
            + "&".join(qualifiers)


def _read_bytes(root: SysRoot, path: str) -> bytes | None:
    st = root.lstat(path)
    if st is None or not stat.S_ISREG(st.st_mode):
        return None
    try:
        with open(root.host_path(path), "rb") as handle:
            return handle.read()
    except OSError:
        return None


def _read(root: SysRoot, path: str) -> str | None:
    data = _read_bytes(root, path)
    return data.decode("utf-8", "replace") if data is not None else None


def _distro(root: SysRoot) -> tuple[str, str]:
    for path in OS_RELEASE:
        resolved = root.resolve(path)
        if resolved is None or not stat.S_ISREG(resolved.st.st_mode):
            continue
        text = _read(root, resolved.path) or ""
        values = {}
        for line in text.splitlines():
            key, sep, value = line.partition("=")
            if sep:
                values[key.strip()] = value.strip().strip('"')
        return values.get("ID", ""), values.get("VERSION_ID", "")
    return "", ""


def _stat_key(root: SysRoot) -> tuple[object, ...] | None:
    """Identity of a host directory's dpkg database, or ``None`` (an image, or no database)."""
    if type(root) is not SysRoot:
        return None
    try:
        status = os.stat(root.host_path(STATUS))
        info = os.stat(root.host_path(INFO_DIR))
    except OSError:
        return None
    return (root.root, status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns,
            info.st_ino, info.st_mtime_ns)
