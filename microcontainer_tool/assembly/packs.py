"""Packs: files programs load at run time that ``DT_NEEDED`` does not name.

A pack is a curated set of sysroot files a program ``dlopen``\\ s or reads by
itself: glibc's gconv modules (``iconv``), NSS modules, OpenSSL's config,
providers and CA bundle, the time zone database, the C.UTF-8 locale. The spec
names packs with ``packs:``; some are also taken **automatically** when the
ELF closure shows they are needed (``auto_packs: false`` turns that off):

``gconv``
    ``DIR/gconv/`` whole (modules, ``gconv-modules``, ``gconv-modules.d/``,
    ``gconv-modules.cache``), DIR being the directory of the image's
    ``libc.so.6`` (``/usr/lib/x86_64-linux-gnu`` on Debian, ``/usr/lib64`` on
    RPM distributions). Automatic when a program or library of the closure
    imports ``iconv_open`` (an undefined dynamic symbol: libc itself defines it).
``ssl``
    What ``libcrypto`` names in its own build strings (``OPENSSLDIR``,
    ``MODULESDIR``, ``ENGINESDIR``): ``OPENSSLDIR/openssl.cnf`` and the files
    and directories it ``.include``\\ s, ``OPENSSLDIR/cert.pem``, the providers
    and engines directories, and the CA bundles at their Debian and RPM paths
    (each with its symlink chain). Automatic when ``libcrypto.so.*`` is in the closure.
``nss``
    ``libnss_files.so.2`` and ``libnss_dns.so.2`` beside ``libc.so.6``.
    Automatic when the image gets nss files and the sysroot's glibc is older
    than 2.34 (2.34 built ``files`` and ``dns`` into libc).
``tz``
    ``/usr/share/zoneinfo`` whole and ``/etc/localtime``. Explicit only.
``locale``
    ``/usr/lib/locale/C.utf8`` (or ``C.UTF-8``) and ``/usr/lib/locale/locale-archive``.
    Explicit only.

Each pack's files are looked up in the sysroot (no host paths, no fixed glibc
version); their ELF closure is added by the assembler like any other file's.
"""

from __future__ import annotations

import posixpath
import re
import stat
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from microcontainer_tool.closure.elf import ElfInfo
from microcontainer_tool.errors import SourceError
from microcontainer_tool.sources.sysroot import Resolved, SysRoot

#: Every pack, with a one-line summary (``packs:`` accepts these names).
PACKS = {
    "gconv": "glibc's iconv modules and their configuration (all charsets)",
    "locale": "the C.UTF-8 locale and locale-archive",
    "nss": "glibc's files and dns NSS modules (built into glibc >= 2.34)",
    "ssl": "OpenSSL's openssl.cnf (and includes), providers, engines and CA bundles",
    "tz": "the time zone database and /etc/localtime",
}
#: The symbol whose import brings the gconv pack.
ICONV_SYMBOL = "iconv_open"
#: The first glibc with the files and dns NSS modules built in.
NSS_BUILTIN = (2, 34)
CA_BUNDLES = (
    "/etc/ssl/certs/ca-certificates.crt",  # Debian, Ubuntu, Alpine
    "/etc/pki/tls/certs/ca-bundle.crt",  # RHEL, Rocky, Fedora (-> /etc/pki/ca-trust/extracted/...)
    "/etc/pki/tls/certs/ca-bundle.trust.crt",
    "/etc/ssl/cert.pem",
    "/etc/ssl/ca-bundle.pem",  # SUSE
)
ZONEINFO = "/usr/share/zoneinfo"
LOCALTIME = "/etc/localtime"
LOCALE_DIR = "/usr/lib/locale"
C_LOCALES = ("C.utf8", "C.UTF-8")
LOCALE_ARCHIVE = "/usr/lib/locale/locale-archive"
MAX_CONFIG = 1 << 20
MAX_LIBC = 64 << 20

_LIBC_FILE = re.compile(r"^libc-(\d+)\.(\d+)(?:\.\d+)?\.so$")
_LIBC_BANNER = re.compile(rb"GNU C Library [^\n\0]{0,200}?version (\d+)\.(\d+)")
_OPENSSL_DIRS = re.compile(rb"(OPENSSLDIR|ENGINESDIR|MODULESDIR): \"([^\"\0]{1,4096})\"")
_INCLUDE = re.compile(r"^\s*\.?include\s*=?\s*(\S+)\s*$", re.MULTILINE)


@dataclass(frozen=True)
class PackChoice:
    """One pack the image gets, and why.

    Attributes:
        name: the pack (a key of :data:`PACKS`).
        why: for people: ``"packs: gconv"`` or the automatic trigger
            (``"automatic: /usr/bin/iconv imports iconv_open"``).
        by: the ELF object that triggered an automatic pack (``""`` if none).
    """

    name: str
    why: str
    by: str = ""


def libc_path(objects: Mapping[str, ElfInfo]) -> str | None:
    """The image's ``libc.so.6`` among the closure's objects (canonical path), if any."""
    found = sorted(p for p, info in objects.items()
                   if info.soname == "libc.so.6" or posixpath.basename(p) == "libc.so.6")
    return found[0] if found else None


def glibc_version(root: SysRoot, libc: str) -> tuple[int, int] | None:
    """The glibc version of a sysroot, read from its files.

    Old glibc ships ``libc-2.17.so`` beside the ``libc.so.6`` link: the name
    of the file ``libc`` resolves to answers (through directory links such as
    RPM's ``/lib64 -> usr/lib64``), else such a name in its directory (a
    ``libc.so.6`` copied without its link). Otherwise the banner string every
    ``libc.so.6`` carries (``GNU C Library (Debian GLIBC 2.36-9) stable
    release version 2.36.``) does.

    Args:
        root: the sysroot.
        libc: image path of ``libc.so.6`` (or of the file it links to).

    Returns:
        ``(major, minor)``, or ``None`` when neither tells.
    """
    resolved = root.resolve(libc)
    if resolved is not None and stat.S_ISREG(resolved.st.st_mode):
        directory = root.resolve(posixpath.dirname(libc))
        st = resolved.st
        key = (root.host_path(resolved.path), libc, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns,
               directory.st.st_mtime_ns if directory is not None else None)
        if key not in _GLIBC_VERSIONS:
            _GLIBC_VERSIONS[key] = _glibc_version(root, libc, resolved)
        return _GLIBC_VERSIONS[key]
    return _glibc_version(root, libc, resolved)


#: glibc versions by libc file identity (and its directory's state): a build system
#: resolving many images over one sysroot reads the 2 MB ``libc.so.6`` once.
_GLIBC_VERSIONS: dict[tuple[object, ...], tuple[int, int] | None] = {}


def _glibc_version(root: SysRoot, libc: str, resolved: Resolved | None) -> tuple[int, int] | None:
    names = [posixpath.basename(resolved.path)] if resolved is not None else []
    for name in names + _listdir(root, posixpath.dirname(libc))[1]:
        match = _LIBC_FILE.match(name)
        if match:
            return int(match.group(1)), int(match.group(2))
    if resolved is None or not stat.S_ISREG(resolved.st.st_mode) or resolved.st.st_size > MAX_LIBC:
        return None
    with open(root.host_path(resolved.path), "rb") as handle:
        found = _LIBC_BANNER.search(handle.read())
    return (int(found.group(1)), int(found.group(2))) if found else None


def choose(explicit: Iterable[str], automatic: bool, objects: Mapping[str, ElfInfo],
           imports: Callable[[str], frozenset[str]], nss_files: bool,
           glibc: tuple[int, int] | None) -> list[PackChoice]:
    """Decide which packs an image gets.

    Args:
        explicit: the spec's ``packs``.
        automatic: the spec's ``auto_packs``.
        objects: the ELF closure (canonical path -> facts).
        imports: the undefined dynamic symbols of an object (by image path).
        nss_files: the image gets ``/etc/passwd``/``group``/``nsswitch.conf``.
        glibc: the sysroot's glibc version, if known.

    Returns:
        One choice per pack, explicit ones first, sorted by name within each group.
    """
    chosen = {name: PackChoice(name, f"packs: {name}") for name in sorted(set(explicit))}
    if not automatic:
        return list(chosen.values())
    found: dict[str, PackChoice] = {}
    ordered = sorted(objects, key=lambda p: (not objects[p].is_program, p))  # programs first
    if "gconv" not in chosen:
        importer = next((p for p in ordered if ICONV_SYMBOL in imports(p)), None)
        if importer is not None:
            found["gconv"] = PackChoice("gconv", f"automatic: {importer} imports {ICONV_SYMBOL}", importer)
    if "ssl" not in chosen:
        crypto = next((p for p in ordered if (objects[p].soname or "").startswith("libcrypto.so.")), None)
        if crypto is not None:
            found["ssl"] = PackChoice("ssl", f"automatic: {crypto} is in the closure", crypto)
    if "nss" not in chosen and nss_files and glibc is not None and glibc < NSS_BUILTIN:
        libc = libc_path(objects)
        found["nss"] = PackChoice("nss", f"automatic: nss files with glibc {glibc[0]}.{glibc[1]} < 2.34",
                                  libc or "")
    return list(chosen.values()) + [found[name] for name in sorted(found)]


def pack_paths(name: str, root: SysRoot, objects: Mapping[str, ElfInfo], explicit: bool) -> list[str]:
    """The sysroot paths a pack brings (each to be added with its symlink chain).

    Args:
        name: the pack.
        root: the sysroot (with the project's overlay).
        objects: the ELF closure (to find ``libc.so.6`` and ``libcrypto``).
        explicit: the spec named the pack (finding nothing is then an error).

    Returns:
        Sorted image paths: files, directories (taken whole) or symlinks.

    Raises:
        SourceError: an explicit pack finds nothing to add (``nss`` excepted
            on glibc >= 2.34, which needs no modules).
    """
    finder = _FINDERS[name]
    paths = sorted(set(finder(root, objects)))
    if not paths and explicit and not (name == "nss" and _nss_builtin(root, objects)):
        raise SourceError(f"pack {name!r}: {_WHAT[name]} in the sysroot")
    return paths


def _present(root: SysRoot, path: str) -> bool:
    """``path`` exists, or is a symlink (a dangling one is kept and reported by the assembler)."""
    return root.resolve(path) is not None or root.resolve(path, follow_last=False) is not None


def _listdir(root: SysRoot, directory: str) -> tuple[str, list[str]]:
    """The canonical path of a directory and its names (none if it is not a directory)."""
    resolved = root.resolve(directory)
    if resolved is None or not stat.S_ISDIR(resolved.st.st_mode):
        return directory, []
    return resolved.path, root.listdir(resolved.path)


def _libc_dir(root: SysRoot, objects: Mapping[str, ElfInfo]) -> str | None:
    libc = libc_path(objects)
    if libc is not None:
        return posixpath.dirname(libc)
    for directory in ("/usr/lib64", "/lib64", "/usr/lib", "/lib"):  # no closure: look for it
        canonical, names = _listdir(root, directory)
        for candidate in [canonical] + [posixpath.join(canonical, n) for n in names
                                        if n.endswith("-linux-gnu")]:
            resolved = root.resolve(posixpath.join(candidate, "libc.so.6"))
            if resolved is not None and stat.S_ISREG(resolved.st.st_mode):
                return posixpath.dirname(resolved.path)
    return None


def _gconv(root: SysRoot, objects: Mapping[str, ElfInfo]) -> list[str]:
    libc_dir = _libc_dir(root, objects)
    if libc_dir is None:
        return []
    gconv = posixpath.join(libc_dir, "gconv")
    resolved = root.resolve(gconv)
    return [gconv] if resolved is not None and stat.S_ISDIR(resolved.st.st_mode) else []


def _nss(root: SysRoot, objects: Mapping[str, ElfInfo]) -> list[str]:
    libc_dir = _libc_dir(root, objects)
    if libc_dir is None:
        return []
    return [p for p in (posixpath.join(libc_dir, n) for n in ("libnss_dns.so.2", "libnss_files.so.2"))
            if root.resolve(p) is not None]


def _nss_builtin(root: SysRoot, objects: Mapping[str, ElfInfo]) -> bool:
    libc_dir = _libc_dir(root, objects)
    if libc_dir is None:
        return False
    version = glibc_version(root, posixpath.join(libc_dir, "libc.so.6"))
    return version is not None and version >= NSS_BUILTIN


def openssl_dirs(root: SysRoot, libcrypto: str) -> dict[str, str]:
    """``OPENSSLDIR``, ``MODULESDIR``, ``ENGINESDIR`` as ``libcrypto`` was built with them.

    Args:
        root: the sysroot.
        libcrypto: image path of ``libcrypto.so.*``.

    Returns:
        The names found, each mapped to its absolute directory.
    """
    resolved = root.resolve(libcrypto)
    if resolved is None or not stat.S_ISREG(resolved.st.st_mode) or resolved.st.st_size > MAX_LIBC:
        return {}
    with open(root.host_path(resolved.path), "rb") as handle:
        data = handle.read()
    found: dict[str, str] = {}
    for match in _OPENSSL_DIRS.finditer(data):
        value = match.group(2).decode("utf-8", "surrogateescape")
        if value.startswith("/"):
            found.setdefault(match.group(1).decode(), posixpath.normpath(value))
    return found


def _libcrypto(root: SysRoot, objects: Mapping[str, ElfInfo]) -> str | None:
    found = sorted(p for p, info in objects.items() if (info.soname or "").startswith("libcrypto.so."))
    if found:
        return found[0]
    libc_dir = _libc_dir(root, objects)  # explicit pack, no libcrypto in the closure: beside libc
    if libc_dir is None:
        return None
    names = sorted(n for n in _listdir(root, libc_dir)[1] if re.match(r"^libcrypto\.so\.\d+$", n))
    return posixpath.join(libc_dir, names[-1]) if names else None


def _ssl(root: SysRoot, objects: Mapping[str, ElfInfo]) -> list[str]:
    libcrypto = _libcrypto(root, objects)
    dirs = openssl_dirs(root, libcrypto) if libcrypto is not None else {}
    paths: list[str] = []
    for key in ("MODULESDIR", "ENGINESDIR"):
        directory = dirs.get(key)
        resolved = root.resolve(directory) if directory else None
        if directory and resolved is not None and stat.S_ISDIR(resolved.st.st_mode):
            paths.append(directory)
    openssldir = dirs.get("OPENSSLDIR")
    if openssldir:
        config = posixpath.join(openssldir, "openssl.cnf")
        if _present(root, config):
            paths.append(config)
            paths += _includes(root, config)
        cert = posixpath.join(openssldir, "cert.pem")
        if _present(root, cert):
            paths.append(cert)
    paths += [bundle for bundle in CA_BUNDLES if _present(root, bundle)]
    return paths


def _includes(root: SysRoot, config: str) -> list[str]:
    """Absolute ``.include`` targets of an OpenSSL config, followed through included files."""
    found: list[str] = []
    queue, seen = [config], {config}
    while queue:
        resolved = root.resolve(queue.pop())
        if resolved is None or not stat.S_ISREG(resolved.st.st_mode) or resolved.st.st_size > MAX_CONFIG:
            continue
        with open(root.host_path(resolved.path), "rb") as handle:
            text = handle.read().decode("utf-8", "replace")
        for match in _INCLUDE.finditer(text):
            target = match.group(1)
            if not target.startswith("/") or ".." in target.split("/") or target in seen:
                continue  # relative includes depend on the run-time cwd or OPENSSL_CONF_INCLUDE
            seen.add(target)
            if _present(root, target):
                found.append(posixpath.normpath(target))
                queue.append(target)
    return found


def _tz(root: SysRoot, objects: Mapping[str, ElfInfo]) -> list[str]:
    paths = [ZONEINFO] if root.resolve(ZONEINFO) is not None else []
    return paths + ([LOCALTIME] if paths and _present(root, LOCALTIME) else [])


def _locale(root: SysRoot, objects: Mapping[str, ElfInfo]) -> list[str]:
    paths = [posixpath.join(LOCALE_DIR, name) for name in C_LOCALES
             if root.resolve(posixpath.join(LOCALE_DIR, name)) is not None][:1]
    return paths + ([LOCALE_ARCHIVE] if root.resolve(LOCALE_ARCHIVE) is not None else [])


_FINDERS: dict[str, Callable[[SysRoot, Mapping[str, ElfInfo]], list[str]]] = {
    "gconv": _gconv, "locale": _locale, "nss": _nss, "ssl": _ssl, "tz": _tz,
}
_WHAT = {
    "gconv": "no gconv/ directory beside libc.so.6",
    "locale": f"no {LOCALE_DIR}/C.utf8, C.UTF-8 or locale-archive",
    "nss": "no libnss_files.so.2 or libnss_dns.so.2 beside libc.so.6",
    "ssl": "no libcrypto, nor any of its OpenSSL directories, config or CA bundles",
    "tz": f"no {ZONEINFO}",
}
