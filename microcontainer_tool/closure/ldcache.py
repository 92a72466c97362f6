"""``/etc/ld.so.conf`` and ``/etc/ld.so.cache`` of a sysroot: reading and writing.

Reading follows glibc's ``ldconfig`` (``elf/ldconfig.c`` ``parse_conf``) and
``ld.so`` (``elf/dl-cache.c``):

* ``ld.so.conf``: one directory per line, ``#`` comments, ``include PATTERN...``
  (glob; a relative pattern is relative to the directory of the file that
  includes it), ``hwcap`` lines ignored, ``dir=type`` suffixes dropped, trailing
  slashes removed, relative directories ignored, duplicates dropped.
* ``ld.so.cache``: the new ``glibc-ld.so.cache1.1`` format (string offsets
  relative to the new header), alone or appended to the old ``ld.so-1.7.0``
  format; an old-format-only file is read as such.

Writing produces a new-format-only cache sorted like ``ldconfig`` sorts it
(descending :func:`libcmp` order of the keys, then descending flags, glibc-hwcaps
entries first) because ``ld.so`` binary-searches it.
"""

from __future__ import annotations

import fnmatch
import posixpath
import stat
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cmp_to_key
from typing import TYPE_CHECKING

from microcontainer_tool.errors import SourceError
from microcontainer_tool.sources.sysroot import SysRoot

if TYPE_CHECKING:
    from microcontainer_tool.closure.elf import ElfInfo

LD_SO_CONF = "/etc/ld.so.conf"
LD_SO_CACHE = "/etc/ld.so.cache"

OLD_MAGIC = b"ld.so-1.7.0"
NEW_MAGIC = b"glibc-ld.so.cache1.1"
NEW_HEADER = 48
NEW_ENTRY = 24
OLD_ENTRY = 12
EXTENSION_MAGIC = (-358342284) & 0xFFFFFFFF
EXTENSION_TAG_HWCAPS = 1
HWCAP_EXTENSION = 1 << 62
ISA_LEVEL_MASK = (1 << 10) - 1
ENDIAN_LITTLE = 2
ENDIAN_BIG = 3
MAX_INCLUDE_DEPTH = 16
HWCAPS_DIR = "glibc-hwcaps"

FLAG_ELF_LIBC6 = 0x0003
_ARCH_FLAGS: dict[tuple[str, int], int] = {
    ("EM_X86_64", 64): 0x0300,   # FLAG_X8664_LIB64
    ("EM_X86_64", 32): 0x0800,   # FLAG_X8664_LIBX32
    ("EM_386", 32): 0x0000,
    ("EM_AARCH64", 64): 0x0A00,  # FLAG_AARCH64_LIB64
    ("EM_ARM", 32): 0x0900,      # FLAG_ARM_LIBHF (Debian armhf; soft-float is 0x0b00)
    ("EM_PPC64", 64): 0x0500,    # FLAG_POWERPC_LIB64
    ("EM_S390", 64): 0x0400,     # FLAG_S390_LIB64
    ("EM_SPARCV9", 64): 0x0100,  # FLAG_SPARC_LIB64
    ("EM_RISCV", 64): 0x1000,    # FLAG_RISCV_FLOAT_ABI_DOUBLE
    ("EM_LOONGARCH", 64): 0x1200,  # FLAG_LARCH_FLOAT_ABI_DOUBLE
}


@dataclass(frozen=True)
class CacheEntry:
    """One ``ld.so.cache`` entry.

    Attributes:
        soname: the key ld.so looks names up by.
        path: the image path the entry points to.
        flags: ``FLAG_ELF_LIBC6 | FLAG_<arch>`` bits.
        hwcap: the raw hwcap field (bit 62 marks a glibc-hwcaps entry whose
            low 32 bits index the cache's glibc-hwcaps name table).
    """

    soname: str
    path: str
    flags: int
    hwcap: int = 0


# -- ld.so.conf ----------------------------------------------------------------


def read_ld_so_conf(sysroot: SysRoot) -> list[str]:
    """Directories listed by the sysroot's ``/etc/ld.so.conf`` (includes expanded).

    Args:
        sysroot: the root whose configuration is read.

    Returns:
        Absolute image directories, in order, without duplicates.
    """
    dirs: list[str] = []
    _parse_conf(sysroot, LD_SO_CONF, dirs, 0)
    return dirs


def _parse_conf(sysroot: SysRoot, conf: str, dirs: list[str], depth: int) -> None:
    if depth > MAX_INCLUDE_DEPTH:
        raise SourceError(f"{conf}: ld.so.conf includes nest deeper than {MAX_INCLUDE_DEPTH}")
    text = _read_text(sysroot, conf)
    if text is None:
        return
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        words = line.split()
        if words[0] == "include" and len(words) > 1:
            for pattern in words[1:]:
                if not pattern.startswith("/"):
                    pattern = posixpath.join(posixpath.dirname(conf), pattern)
                for included in _glob(sysroot, pattern):
                    _parse_conf(sysroot, included, dirs, depth + 1)
            continue
        if words[0].lower() == "hwcap":
            continue
        directory = _conf_dir(line)
        if directory is not None and directory not in dirs:
            dirs.append(directory)


def _conf_dir(line: str) -> str | None:
    """The directory of one ld.so.conf line (``dir=type`` allowed), or None if relative."""
    directory = line.split("=", 1)[0].strip() if "=" in line else line
    if not directory.startswith("/"):
        return None
    return posixpath.normpath(directory)


def _read_text(sysroot: SysRoot, image_path: str) -> str | None:
    resolved = sysroot.resolve(image_path)
    if resolved is None or not stat.S_ISREG(resolved.st.st_mode):
        return None
    try:
        with open(sysroot.host_path(resolved.path), "rb") as handle:
            return handle.read().decode("utf-8", "replace")
    except OSError as err:
        raise SourceError(f"cannot read {image_path} in {sysroot.root}: {err.strerror}") from err


def _glob(sysroot: SysRoot, pattern: str) -> list[str]:
    """Expand a glob pattern inside the sysroot; matches sorted like glob(3)."""
    found = ["/"]
    for part in [p for p in pattern.split("/") if p]:
        matches: list[str] = []
        for base in found:
            if not any(c in part for c in "*?["):
                matches.append(posixpath.join(base, part))
                continue
            resolved = sysroot.resolve(base)
            if resolved is None or not stat.S_ISDIR(resolved.st.st_mode):
                continue
            names = sysroot.listdir(resolved.path)
            matches.extend(posixpath.join(base, n) for n in names
                           if fnmatch.fnmatchcase(n, part)
                           and not (n.startswith(".") and not part.startswith(".")))
        found = matches
    return sorted(p for p in found if sysroot.resolve(p) is not None)


# -- ld.so.cache reading -----------------------------------------------------------


def read_ld_cache(sysroot: SysRoot, path: str = LD_SO_CACHE) -> list[CacheEntry] | None:
    """Entries of the sysroot's ``/etc/ld.so.cache``, in file order.

    Args:
        sysroot: the root whose cache is read.
        path: image path of the cache (default ``/etc/ld.so.cache``).

    Returns:
        The entries, or ``None`` if the sysroot has no cache.

    Raises:
        SourceError: the cache is unreadable or corrupt.
    """
    resolved = sysroot.resolve(path)
    if resolved is None or not stat.S_ISREG(resolved.st.st_mode):
        return None
    try:
        with open(sysroot.host_path(resolved.path), "rb") as handle:
            data = handle.read()
    except OSError as err:
        raise SourceError(f"cannot read {path} in {sysroot.root}: {err.strerror}") from err
    return parse_ld_cache(data, path)


def parse_ld_cache(data: bytes, label: str = LD_SO_CACHE) -> list[CacheEntry]:
    """Parse the bytes of an ``ld.so.cache`` (either format, or both).

    Raises:
        SourceError: the bytes are not a valid cache.
    """
    if data.startswith(NEW_MAGIC):
        return _parse_new(data, 0, label)
    if data.startswith(OLD_MAGIC):
        if len(data) < 16:
            raise SourceError(f"{label}: corrupt ld.so.cache (truncated header)")
        nlibs = struct.unpack_from("<I", data, 12)[0]
        end = 16 + nlibs * OLD_ENTRY
        if end > len(data):
            raise SourceError(f"{label}: corrupt ld.so.cache ({nlibs} entries do not fit)")
        new_at = (end + 7) & ~7
        if data[new_at:new_at + len(NEW_MAGIC)] == NEW_MAGIC:
            return _parse_new(data, new_at, label)
        return _parse_old(data, nlibs, end, label)
    raise SourceError(f"{label}: not an ld.so.cache (unknown magic)")


def _parse_new(data: bytes, base: int, label: str) -> list[CacheEntry]:
    if len(data) < base + NEW_HEADER:
        raise SourceError(f"{label}: corrupt ld.so.cache (truncated header)")
    flags = data[base + 28]
    order = ">" if flags & 3 == ENDIAN_BIG else "<"
    nlibs, _len_strings = struct.unpack_from(order + "II", data, base + 20)
    if base + NEW_HEADER + nlibs * NEW_ENTRY > len(data):
        raise SourceError(f"{label}: corrupt ld.so.cache ({nlibs} entries do not fit)")
    entries = []
    for index in range(nlibs):
        eflags, key, value, _osv, hwcap = struct.unpack_from(
            order + "iIIIQ", data, base + NEW_HEADER + index * NEW_ENTRY)
        entries.append(CacheEntry(_cstr(data, base + key, label), _cstr(data, base + value, label),
                                  eflags, hwcap))
    return entries


def _parse_old(data: bytes, nlibs: int, strings: int, label: str) -> list[CacheEntry]:
    entries = []
    for index in range(nlibs):
        eflags, key, value = struct.unpack_from("<iII", data, 16 + index * OLD_ENTRY)
        entries.append(CacheEntry(_cstr(data, strings + key, label), _cstr(data, strings + value, label),
                                  eflags, 0))
    return entries


def _cstr(data: bytes, offset: int, label: str) -> str:
    end = data.find(b"\0", offset)
    if offset >= len(data) or end < 0:
        raise SourceError(f"{label}: corrupt ld.so.cache (string offset {offset} outside the file)")
    return data[offset:end].decode("utf-8", "surrogateescape")


def hwcaps_subdir(path: str) -> str | None:
    """The glibc-hwcaps subdirectory name of a library path, e.g. ``x86-64-v3``."""
    parts = path.split("/")
    if len(parts) >= 3 and parts[-3] == HWCAPS_DIR:
        return parts[-2]
    return None


def is_hwcaps_entry(entry: CacheEntry) -> bool:
    """Whether the entry is a glibc-hwcaps (extension) entry, as dl-cache.h tests it."""
    return ((entry.hwcap >> 32) & ~ISA_LEVEL_MASK) == (HWCAP_EXTENSION >> 32)


# -- ld.so.cache writing -----------------------------------------------------------


def libcmp(left: str, right: str) -> int:
    """glibc's ``_dl_cache_libcmp``: compares digit runs numerically."""
    a, b = left.encode(), right.encode()
    i = j = 0
    while i < len(a):
        ca = a[i]
        cb = b[j] if j < len(b) else 0
        if 48 <= ca <= 57:
            if not 48 <= cb <= 57:
                return 1
            start = i
            while i < len(a) and 48 <= a[i] <= 57:
                i += 1
            val1 = int(a[start:i])
            start = j
            while j < len(b) and 48 <= b[j] <= 57:
                j += 1
            val2 = int(b[start:j])
            if val1 != val2:
                return val1 - val2
        elif 48 <= cb <= 57:
            return -1
        elif ca != cb:
            return ca - cb
        else:
            i += 1
            j += 1
    return 0 - (b[j] if j < len(b) else 0)


def _entry_cmp(e1: CacheEntry, e2: CacheEntry) -> int:
    """ldconfig's ``compare`` (elf/cache.c), plus the path as a final tie-break."""
    res = libcmp(e2.soname, e1.soname)
    if res:
        return res
    if e1.flags != e2.flags:
        return 1 if e1.flags < e2.flags else -1
    h1 = hwcaps_subdir(e1.path) if is_hwcaps_entry(e1) else None
    h2 = hwcaps_subdir(e2.path) if is_hwcaps_entry(e2) else None
    if (h1 is None) != (h2 is None):
        return -1 if h1 is not None else 1
    if h1 is not None and h2 is not None and h1 != h2:
        return -1 if h1 < h2 else 1
    if e1.hwcap != e2.hwcap:
        return 1 if e2.hwcap > e1.hwcap else -1
    return (e1.path > e2.path) - (e1.path < e2.path)


def build_ld_cache(entries: Iterable[CacheEntry], little_endian: bool = True) -> bytes:
    """A deterministic new-format ``ld.so.cache`` holding ``entries``.

    glibc-hwcaps entries (hwcap bit 62) get their name index recomputed from
    their path (``.../glibc-hwcaps/NAME/lib``) and a glibc-hwcaps extension
    section is written for them.

    Args:
        entries: the entries; duplicates are dropped.
        little_endian: byte order of the target (the loader reads it natively).

    Returns:
        The file's bytes.
    """
    order = "<" if little_endian else ">"
    unique = sorted(set(entries), key=cmp_to_key(_entry_cmp))
    hwcaps_names = sorted({hwcaps_subdir(e.path) or "" for e in unique if is_hwcaps_entry(e)} - {""})
    strings = bytearray()
    offsets: dict[str, int] = {}
    start = NEW_HEADER + len(unique) * NEW_ENTRY

    def intern(text: str) -> int:
        if text not in offsets:
            offsets[text] = start + len(strings)
            strings.extend(text.encode("utf-8", "surrogateescape") + b"\0")
        return offsets[text]

    def key_offset(entry: CacheEntry) -> int:
        # Like ldconfig, a key that ends the path string points into it.
        if entry.path.endswith("/" + entry.soname):
            return intern(entry.path) + len(entry.path.encode("utf-8", "surrogateescape")) \
                - len(entry.soname.encode("utf-8", "surrogateescape"))
        return intern(entry.soname)

    records = bytearray()
    for entry in unique:
        hwcap = entry.hwcap
        name = hwcaps_subdir(entry.path) if is_hwcaps_entry(entry) else None
        if name is not None:
            hwcap = (hwcap & ~0xFFFFFFFF) | hwcaps_names.index(name)
        value = intern(entry.path)
        records += struct.pack(order + "iIIIQ", entry.flags, key_offset(entry), value, 0, hwcap)
    name_offsets = [intern(n) for n in hwcaps_names]
    body_end = start + len(strings)
    extension = b""
    ext_offset = 0
    if name_offsets:
        ext_offset = (body_end + 3) & ~3
        table_offset = ext_offset + 8 + 16
        extension = (b"\0" * (ext_offset - body_end)
                     + struct.pack(order + "II", EXTENSION_MAGIC, 1)
                     + struct.pack(order + "IIII", EXTENSION_TAG_HWCAPS, 0, table_offset,
                                   4 * len(name_offsets))
                     + b"".join(struct.pack(order + "I", o) for o in name_offsets))
    header = (NEW_MAGIC + struct.pack(order + "II", len(unique), len(strings))
              + bytes([ENDIAN_LITTLE if little_endian else ENDIAN_BIG, 0, 0, 0])
              + struct.pack(order + "IIII", ext_offset, 0, 0, 0))
    return header + bytes(records) + bytes(strings) + extension


def cache_flags(info: ElfInfo) -> int:
    """The ``ld.so.cache`` flags ldconfig gives a library of this class/machine."""
    return FLAG_ELF_LIBC6 | _ARCH_FLAGS.get((info.machine, info.elf_class), 0)


def cache_entries_for(objects: Mapping[str, ElfInfo], dirs: Sequence[str],
                      sysroot: SysRoot | None = None) -> list[CacheEntry]:
    """What ldconfig would list for these libraries in these directories.

    A library (an object with a SONAME) is listed under the first directory of
    ``dirs`` that holds it -- or its glibc-hwcaps subdirectories. The entry's
    path is ``DIR/SONAME`` when that name leads to the object (ldconfig's soname
    link), else the file itself under ``DIR``.

    Args:
        objects: canonical image path -> ELF facts (non-libraries are ignored).
        dirs: ld.so.conf directories (image paths; may contain symlinks when
            ``sysroot`` is given to resolve them).
        sysroot: the view to resolve directories and soname links in; without
            it, directories are compared to the objects' directories as text.

    Returns:
        The entries, sorted for :func:`build_ld_cache`.
    """
    entries: list[CacheEntry] = []
    taken: set[tuple[str, int, str | None]] = set()
    for directory in dirs:
        canonical = _canonical_dir(sysroot, directory)
        if canonical is None:
            continue
        for path in sorted(objects):
            info = objects[path]
            if info.soname is None:
                continue
            entry = _entry_in_dir(path, info, directory, canonical, sysroot)
            if entry is None:
                continue
            key = (entry.soname, entry.flags, hwcaps_subdir(entry.path) if is_hwcaps_entry(entry) else None)
            if key not in taken:
                taken.add(key)
                entries.append(entry)
    return sorted(entries, key=cmp_to_key(_entry_cmp))


def _canonical_dir(sysroot: SysRoot | None, directory: str) -> str | None:
    if sysroot is None:
        return directory.rstrip("/") or "/"
    resolved = sysroot.resolve(directory)
    if resolved is None or not stat.S_ISDIR(resolved.st.st_mode):
        return None
    return resolved.path


def _entry_in_dir(path: str, info: ElfInfo, directory: str, canonical: str,
                  sysroot: SysRoot | None) -> CacheEntry | None:
    flags = cache_flags(info)
    parent = posixpath.dirname(path)
    base = directory.rstrip("/")
    soname = info.soname or ""
    hwcap_name = hwcaps_subdir(path)
    if hwcap_name is not None and posixpath.dirname(posixpath.dirname(parent)) == canonical:
        subdir = f"{base}/{HWCAPS_DIR}/{hwcap_name}"
        return CacheEntry(soname, _entry_path(subdir, soname, path, sysroot), flags, HWCAP_EXTENSION)
    if parent == canonical:
        return CacheEntry(soname, _entry_path(base, soname, path, sysroot), flags, 0)
    if sysroot is not None:
        link = sysroot.resolve(f"{base}/{soname}")
        if link is not None and link.path == path:
            return CacheEntry(soname, f"{base}/{soname}", flags, 0)
    return None


def _entry_path(directory: str, soname: str, path: str, sysroot: SysRoot | None) -> str:
    by_soname = f"{directory}/{soname}"
    if sysroot is None:
        return by_soname if posixpath.basename(path) == soname else f"{directory}/{posixpath.basename(path)}"
    resolved = sysroot.resolve(by_soname)
    if resolved is not None and resolved.path == path:
        return by_soname
    return f"{directory}/{posixpath.basename(path)}"
