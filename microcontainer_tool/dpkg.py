"""A Debian sysroot's dpkg database: who owns a file, and distroless-style ``status.d`` entries.

Read through the :class:`~.sysroot.SysRoot` interface, so a directory tree
and a microized image's layers work alike. Only packages whose ``Status`` is
``install ok installed`` count. File lists (``info/PKG[:ARCH].list``) name
paths as the package installed them; on a merged-``/usr`` system
``/lib/x86_64-linux-gnu/libc.so.6`` is ``/usr/lib/...`` in the image, so a
lookup also tries the path through each top-level directory symlink.

Images carry ``/var/lib/dpkg/status.d/NAME`` (the package's status stanza)
for the packages that contributed files, as distroless images do: Trivy,
Grype and Syft read those.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass
from urllib.parse import quote

from .errors import MicrocontainerError
from .sysroot import SysRoot

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
    out: list[dict[str, str]] = []
    fields: dict[str, str] = {}
    last = ""
    for line in text.splitlines():
        if not line.strip():
            if fields:
                out.append(fields)
            fields, last = {}, ""
        elif line[0] in " \t" and last:
            fields[last] += "\n" + line
        elif ":" in line:
            key, _, value = line.partition(":")
            last = key.strip()
            fields[last] = value.strip()
    if fields:
        out.append(fields)
    return out


def _split_stanzas(text: str) -> list[str]:
    blocks, current = [], []
    for line in text.splitlines():
        if line.strip():
            current.append(line)
        elif current:
            blocks.append("\n".join(current) + "\n")
            current = []
    if current:
        blocks.append("\n".join(current) + "\n")
    return blocks


class DpkgDatabase:
    """The installed packages of a sysroot and the files they own."""

    def __init__(self, root: SysRoot, packages: dict[str, DebPackage]) -> None:
        self.root = root
        self.packages = packages
        self._owners: dict[bytes, str] | None = None
        self._aliases: list[tuple[str, str]] = []
        self.distro = _distro(root)

    @classmethod
    def open(cls, root: SysRoot) -> DpkgDatabase | None:
        """Read ``/var/lib/dpkg/status`` of ``root``; ``None`` if it has none."""
        text = _read(root, STATUS)
        if text is None:
            return None
        packages: dict[str, DebPackage] = {}
        for block in _split_stanzas(text):
            parsed = parse_stanzas(block)
            fields = parsed[0] if parsed else {}
            name = fields.get("Package", "")
            if not name or fields.get("Status", "").split()[-1:] != ["installed"]:
                continue
            arch = fields.get("Architecture", "")
            source = fields.get("Source", "").split(" ")[0] or name
            packages[name if arch == "all" else f"{name}:{arch}"] = DebPackage(
                name, fields.get("Version", ""), arch, source, block)
        return cls(root, packages)

    def by_id(self, package_id: str) -> DebPackage | None:
        """The package with provenance id ``deb:NAME:ARCH``, if installed."""
        _, name, arch = (package_id.split(":", 2) + ["", ""])[:3]
        return self.packages.get(name if arch == "all" else f"{name}:{arch}")

    def owner(self, path: str) -> DebPackage | None:
        """The package owning the canonical image path ``path``, if any."""
        if self._owners is None:
            self._owners = self._read_lists()
            self._aliases = self._top_level_aliases()
        key = self._owners.get(path.encode("utf-8", "surrogateescape"))
        if key is None:
            for canonical, alias in self._aliases:
                if path.startswith(canonical + "/"):
                    key = self._owners.get((alias + path[len(canonical):]).encode("utf-8", "surrogateescape"))
                    if key is not None:
                        break
        return self.packages.get(key) if key is not None else None

    def license(self, package: DebPackage) -> str:
        """The ``License`` of the ``Files: *`` paragraph of a DEP-5 copyright file, or ``""``."""
        text = _read(self.root, f"/usr/share/doc/{package.name}/copyright")
        if not text or not text.startswith("Format:") or _DEP5 not in text.splitlines()[0]:
            return ""
        for fields in parse_stanzas(text):
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

    def _read_lists(self) -> dict[bytes, str]:
        # 100k+ lines on a desktop system: keep this in C-level dict and set operations
        # (bytes, dict.fromkeys, key-view intersections).
        # A path several packages list is a shared directory (/usr, /lib on merged-/usr):
        # no package contributed it, so it gets no owner.
        owners: dict[bytes, str] = {}
        shared: set[bytes] = set()
        for key in sorted(self.packages, reverse=True):
            data = _read_bytes(self.root, f"{INFO_DIR}/{key}.list")
            if data is None and ":" in key:
                data = _read_bytes(self.root, f"{INFO_DIR}/{self.packages[key].name}.list")
            if data:
                listed = dict.fromkeys(data.split(b"\n"), key)
                shared |= listed.keys() & owners.keys()
                owners.update(listed)
        for path in shared:
            del owners[path]
        owners.pop(b"", None)
        return owners

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


