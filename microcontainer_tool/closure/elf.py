"""Reading what the dynamic loader needs from an ELF file, without running it.

Only the ELF header, the program headers, ``PT_INTERP`` and ``PT_DYNAMIC``
are read: section headers are never needed (stripped files have none or
bogus ones). Strings of the dynamic section (``DT_NEEDED``, ``DT_SONAME``,
``DT_RPATH``, ``DT_RUNPATH``) are resolved through ``DT_STRTAB``, whose
virtual address is mapped to a file offset through the ``PT_LOAD`` segments,
exactly as the loader sees it once the file is mapped.

The parsing is done with :mod:`struct` (a few reads per file, well under a
millisecond); pyelftools only supplies the ``e_machine`` names. Any
inconsistency (truncation, offsets out of the file, unterminated strings)
raises :class:`~microcontainer_tool.errors.ElfError` with a one-line message.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import TypeVar

from microcontainer_tool.errors import ElfError

_T = TypeVar("_T")

ELF_MAGIC = b"\x7fELF"

PT_LOAD = 1
PT_DYNAMIC = 2
PT_INTERP = 3

DT_NULL = 0
DT_NEEDED = 1
DT_HASH = 4
DT_STRTAB = 5
DT_SYMTAB = 6
DT_STRSZ = 10
DT_SYMENT = 11
DT_SONAME = 14
DT_RPATH = 15
DT_RUNPATH = 29
DT_FLAGS_1 = 0x6FFFFFFB
DT_GNU_HASH = 0x6FFFFEF5
DF_1_NODEFLIB = 0x800

PN_XNUM = 0xFFFF
MAX_PHNUM = 65536
MAX_DYNAMIC = 1 << 20
MAX_SYMBOLS = 1 << 21

#: The machines images are built for, by e_machine; pyelftools names the rest.
_COMMON_MACHINES = {3: "EM_386", 8: "EM_MIPS", 20: "EM_PPC", 21: "EM_PPC64", 22: "EM_S390",
                    40: "EM_ARM", 62: "EM_X86_64", 183: "EM_AARCH64", 243: "EM_RISCV",
                    258: "EM_LOONGARCH"}


@lru_cache(maxsize=1)
def _machine_names() -> dict[int, str]:
    # Imported only for uncommon machines: pyelftools' enum tables take ~17 ms
    # to import, a tenth of a small build.
    from elftools.elf.enums import ENUM_E_MACHINE

    return {value: name for name, value in ENUM_E_MACHINE.items()
            if isinstance(value, int) and name != "_default_"}


@dataclass(frozen=True)
class ElfInfo:
    """What the loader needs to know about one ELF object.

    Attributes:
        elf_class: 32 or 64.
        little_endian: byte order of the file.
        machine: pyelftools ``e_machine`` name, e.g. ``"EM_X86_64"``.
        is_program: the file has a ``PT_INTERP`` (PIE executables are ET_DYN
            like libraries: only ``PT_INTERP`` tells them apart).
        interpreter: the ``PT_INTERP`` string.
        needed: ``DT_NEEDED`` strings, in order.
        rpath: ``DT_RPATH`` split on ``:`` (raw, unexpanded).
        runpath: ``DT_RUNPATH`` split on ``:`` (raw, unexpanded).
        soname: ``DT_SONAME``.
        nodeflib: ``DF_1_NODEFLIB`` is set in ``DT_FLAGS_1``.
    """

    elf_class: int
    little_endian: bool
    machine: str
    is_program: bool
    interpreter: str | None
    needed: tuple[str, ...]
    rpath: tuple[str, ...]
    runpath: tuple[str, ...]
    soname: str | None
    nodeflib: bool


@dataclass(frozen=True)
class _Layout:
    """Struct formats of one ELF class and byte order."""

    wide: bool
    ehdr: str
    phdr: str
    dyn: str


_LAYOUTS = {
    (1, True): _Layout(False, "<HHIIIIIHHHHHH", "<IIIIIIII", "<iI"),
    (1, False): _Layout(False, ">HHIIIIIHHHHHH", ">IIIIIIII", ">iI"),
    (2, True): _Layout(True, "<HHIQQQIHHHHHH", "<IIQQQQQQ", "<qQ"),
    (2, False): _Layout(True, ">HHIQQQIHHHHHH", ">IIQQQQQQ", ">qQ"),
}


@dataclass(frozen=True)
class _Segment:
    p_type: int
    offset: int
    vaddr: int
    filesz: int


class _Reader:
    """Bounded reads from an open file; every short read is an ElfError."""

    def __init__(self, handle, path: str, size: int) -> None:  # type: ignore[no-untyped-def]
        self.handle = handle
        self.path = path
        self.size = size

    def read(self, offset: int, length: int, what: str) -> bytes:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise ElfError(f"{self.path}: truncated or corrupt ELF file ({what} lies outside the file)")
        self.handle.seek(offset)
        data = self.handle.read(length)
        if len(data) != length:
            raise ElfError(f"{self.path}: truncated ELF file (short read of {what})")
        return data


def read_elf(host_path: str, label: str | None = None) -> ElfInfo | None:
    """Read the loader-relevant facts of an ELF file.

    Args:
        host_path: path of the file on the build machine.
        label: how error messages name the file (e.g. its image path);
            ``host_path`` by default.

    Returns:
        The facts, or ``None`` if the file does not start with the ELF magic
        (scripts, data, empty files).

    Raises:
        ElfError: the file is ELF but truncated or corrupt, or unreadable.
    """
    return _read_with(host_path, label, _parse, None)


def _read_with(host_path: str, label: str | None, parse: Callable[[_Reader, bytes], _T], not_elf: _T) -> _T:
    """Open ``host_path`` and hand an ELF file to ``parse``; ``not_elf`` for anything else.

    Raises:
        ElfError: the file is ELF but truncated or corrupt, or unreadable.
    """
    try:
        with open(host_path, "rb") as handle:
            head = handle.read(64)
            if head[:4] != ELF_MAGIC:
                return not_elf
            handle.seek(0, 2)
            return parse(_Reader(handle, label or host_path, handle.tell()), head)
    except OSError as err:
        raise ElfError(f"{label or host_path}: cannot read ELF file: {err.strerror or err}") from err
    except struct.error as err:  # defensive: every unpack is length-checked
        raise ElfError(f"{label or host_path}: corrupt ELF file ({err})") from err


def _parse(reader: _Reader, head: bytes) -> ElfInfo:
    ei_class, little, layout, e_machine, segments = _headers(reader, head)
    interpreter = _interpreter(reader, segments)
    dyn = _dynamic(reader, layout, segments)
    return ElfInfo(
        elf_class=32 if ei_class == 1 else 64,
        little_endian=little,
        machine=machine_name(e_machine),
        is_program=interpreter is not None,
        interpreter=interpreter,
        needed=tuple(dyn.get(DT_NEEDED, ())),
        rpath=_split_path(dyn.get(DT_RPATH)),
        runpath=_split_path(dyn.get(DT_RUNPATH)),
        soname=dyn[DT_SONAME][0] if DT_SONAME in dyn else None,
        nodeflib=bool(int(dyn.get(DT_FLAGS_1, ["0"])[0]) & DF_1_NODEFLIB),
    )


def _headers(reader: _Reader, head: bytes) -> tuple[int, bool, _Layout, int, list[_Segment]]:
    """ELF class, byte order, struct layout, ``e_machine`` and the program headers."""
    path = reader.path
    if len(head) < 16:
        raise ElfError(f"{path}: truncated ELF header")
    ei_class, ei_data = head[4], head[5]
    if ei_class not in (1, 2):
        raise ElfError(f"{path}: corrupt ELF header (unknown class {ei_class})")
    if ei_data not in (1, 2):
        raise ElfError(f"{path}: corrupt ELF header (unknown data encoding {ei_data})")
    little = ei_data == 1
    layout = _LAYOUTS[(ei_class, little)]
    ehdr_size = 16 + struct.calcsize(layout.ehdr)
    if len(head) < ehdr_size:
        raise ElfError(f"{path}: truncated ELF header")
    fields = struct.unpack_from(layout.ehdr, head, 16)
    e_machine, e_phoff, e_shoff = fields[1], fields[4], fields[5]
    e_phentsize, e_phnum = fields[8], fields[9]
    segments = _segments(reader, layout, little, e_phoff, e_phentsize, e_phnum, e_shoff)
    return ei_class, little, layout, e_machine, segments


def undefined_symbols(host_path: str, label: str | None = None) -> frozenset[str]:
    """Names of the symbols an ELF object imports: its undefined dynamic symbols.

    Read as the loader sees them, through ``PT_DYNAMIC``: ``DT_SYMTAB`` and
    ``DT_STRTAB``, the symbol count from ``DT_HASH`` (``nchain``) or
    ``DT_GNU_HASH`` (the last chain's end). Only names are decoded. A library
    that *defines* a symbol (glibc's ``libc.so.6`` and ``iconv_open``) does
    not list it here.

    Args:
        host_path: path of the file on the build machine.
        label: how error messages name the file.

    Returns:
        The names (empty for a non-ELF file or an object without dynamic symbols).

    Raises:
        ElfError: the file is ELF but truncated or corrupt, or unreadable.
    """
    return _read_with(host_path, label, _parse_undefined, frozenset())


def _parse_undefined(reader: _Reader, head: bytes) -> frozenset[str]:
    _ei_class, little, layout, _machine, segments = _headers(reader, head)
    return _undefined(reader, layout, little, segments)


def _undefined(reader: _Reader, layout: _Layout, little: bool, segments: list[_Segment]) -> frozenset[str]:
    dynamic = next((s for s in segments if s.p_type == PT_DYNAMIC), None)
    if dynamic is None or dynamic.filesz == 0 or dynamic.filesz > MAX_DYNAMIC:
        return frozenset()
    raw = reader.read(dynamic.offset, dynamic.filesz, "PT_DYNAMIC")
    entry = struct.calcsize(layout.dyn)
    tags: dict[int, int] = {}
    for tag, value in struct.iter_unpack(layout.dyn, raw[: len(raw) - len(raw) % entry]):
        if tag == DT_NULL:
            break
        if tag in (DT_HASH, DT_GNU_HASH, DT_SYMTAB, DT_STRTAB, DT_STRSZ, DT_SYMENT):
            tags.setdefault(tag, value)
    if DT_SYMTAB not in tags:
        return frozenset()
    order = "<" if little else ">"
    count = _symbol_count(reader, layout, order, segments, tags)
    sym_fmt = order + ("IBBHQQ" if layout.wide else "IIIBBH")
    size = tags.get(DT_SYMENT) or struct.calcsize(sym_fmt)
    if size < struct.calcsize(sym_fmt) or count > MAX_SYMBOLS:
        raise ElfError(f"{reader.path}: corrupt dynamic symbol table ({count} symbols of {size} bytes)")
    table = reader.read(_offset(reader, segments, tags[DT_SYMTAB], "DT_SYMTAB"), count * size, "DT_SYMTAB")
    strings = _string_table(reader, segments, tags.get(DT_STRTAB), tags.get(DT_STRSZ))
    names = set()
    for index in range(1, count):
        fields = struct.unpack_from(sym_fmt, table, index * size)
        name, shndx = fields[0], fields[3] if layout.wide else fields[5]
        if shndx == 0 and name:
            names.add(_string_at(reader.path, strings, name))
    return frozenset(names)


def _symbol_count(reader: _Reader, layout: _Layout, order: str, segments: list[_Segment],
                  tags: dict[int, int]) -> int:
    """Number of dynamic symbols: ``DT_HASH``'s nchain, or the end of ``DT_GNU_HASH``'s last chain."""
    if DT_HASH in tags:
        raw = reader.read(_offset(reader, segments, tags[DT_HASH], "DT_HASH"), 8, "DT_HASH")
        return int(struct.unpack(order + "II", raw)[1])
    if DT_GNU_HASH not in tags:
        return 0
    base = _offset(reader, segments, tags[DT_GNU_HASH], "DT_GNU_HASH")
    header = reader.read(base, 16, "DT_GNU_HASH")
    nbuckets, symoffset, bloom_size, _shift = struct.unpack(order + "IIII", header)
    if nbuckets > MAX_SYMBOLS or bloom_size > MAX_SYMBOLS:
        raise ElfError(f"{reader.path}: corrupt DT_GNU_HASH ({nbuckets} buckets)")
    buckets_at = base + 16 + bloom_size * (8 if layout.wide else 4)
    raw = reader.read(buckets_at, 4 * nbuckets, "DT_GNU_HASH buckets")
    buckets = struct.unpack(f"{order}{nbuckets}I", raw)
    last = max(buckets, default=0)
    if last < symoffset:
        return symoffset
    chains_at = buckets_at + 4 * nbuckets
    while True:
        if last - symoffset > MAX_SYMBOLS:
            raise ElfError(f"{reader.path}: corrupt DT_GNU_HASH (unterminated chain)")
        (value,) = struct.unpack(order + "I", reader.read(chains_at + 4 * (last - symoffset), 4,
                                                          "DT_GNU_HASH chain"))
        if value & 1:
            return last + 1
        last += 1


def _offset(reader: _Reader, segments: list[_Segment], vaddr: int, what: str) -> int:
    """The file offset of a virtual address inside a ``PT_LOAD`` segment."""
    for seg in segments:
        if seg.p_type == PT_LOAD and seg.vaddr <= vaddr < seg.vaddr + seg.filesz:
            return seg.offset + (vaddr - seg.vaddr)
    raise ElfError(f"{reader.path}: corrupt dynamic section ({what} {vaddr:#x} is in no PT_LOAD)")


def machine_name(e_machine: int) -> str:
    """The pyelftools name of an ``e_machine`` value (``EM_UNKNOWN_0x...`` if none)."""
    common = _COMMON_MACHINES.get(e_machine)
    if common is not None:
        return common
    return _machine_names().get(e_machine, f"EM_UNKNOWN_{e_machine:#x}")


def _segments(reader: _Reader, layout: _Layout, little: bool, phoff: int, phentsize: int,
              phnum: int, shoff: int) -> list[_Segment]:
    if phnum == PN_XNUM:
        phnum = _extended_phnum(reader, layout, little, shoff)
    if phnum == 0:
        return []
    size = struct.calcsize(layout.phdr)
    if phentsize < size or phnum > MAX_PHNUM:
        raise ElfError(f"{reader.path}: corrupt ELF header (e_phentsize {phentsize}, e_phnum {phnum})")
    table = reader.read(phoff, phentsize * phnum, "program header table")
    result = []
    for index in range(phnum):
        raw = struct.unpack_from(layout.phdr, table, index * phentsize)
        if layout.wide:  # Elf64_Phdr: type, flags, offset, vaddr, paddr, filesz, memsz, align
            result.append(_Segment(raw[0], raw[2], raw[3], raw[5]))
        else:  # Elf32_Phdr: type, offset, vaddr, paddr, filesz, memsz, flags, align
            result.append(_Segment(raw[0], raw[1], raw[2], raw[4]))
    return result


def _extended_phnum(reader: _Reader, layout: _Layout, little: bool, shoff: int) -> int:
    """Real program header count stored in section 0's ``sh_info`` (PN_XNUM)."""
    if layout.wide:
        raw = reader.read(shoff, 64, "section header 0")
        return struct.unpack_from("<I" if little else ">I", raw, 44)[0]
    raw = reader.read(shoff, 40, "section header 0")
    return struct.unpack_from("<I" if little else ">I", raw, 28)[0]


def _interpreter(reader: _Reader, segments: list[_Segment]) -> str | None:
    for seg in segments:
        if seg.p_type == PT_INTERP:
            if seg.filesz > 4096:
                raise ElfError(f"{reader.path}: corrupt PT_INTERP (size {seg.filesz})")
            raw = reader.read(seg.offset, seg.filesz, "PT_INTERP")
            return _decode(raw.split(b"\0", 1)[0])
    return None


def _dynamic(reader: _Reader, layout: _Layout, segments: list[_Segment]) -> dict[int, list[str]]:
    """Parse PT_DYNAMIC: tag -> list of strings (DT_FLAGS_1 as a decimal string)."""
    dynamic = next((s for s in segments if s.p_type == PT_DYNAMIC), None)
    if dynamic is None or dynamic.filesz == 0:
        return {}
    if dynamic.filesz > MAX_DYNAMIC:
        raise ElfError(f"{reader.path}: corrupt PT_DYNAMIC (size {dynamic.filesz})")
    raw = reader.read(dynamic.offset, dynamic.filesz, "PT_DYNAMIC")
    entry = struct.calcsize(layout.dyn)
    string_tags: list[tuple[int, int]] = []
    strtab = strsz = None
    flags_1 = 0
    for tag, value in struct.iter_unpack(layout.dyn, raw[: len(raw) - len(raw) % entry]):
        if tag == DT_NULL:
            break
        if tag in (DT_NEEDED, DT_SONAME, DT_RPATH, DT_RUNPATH):
            string_tags.append((tag, value))
        elif tag == DT_STRTAB:
            strtab = value
        elif tag == DT_STRSZ:
            strsz = value
        elif tag == DT_FLAGS_1:
            flags_1 = value
    result: dict[int, list[str]] = {}
    if flags_1:
        result[DT_FLAGS_1] = [str(flags_1)]
    if not string_tags:
        return result
    table = _string_table(reader, segments, strtab, strsz)
    for tag, value in string_tags:
        result.setdefault(tag, []).append(_string_at(reader.path, table, value))
    return result


def _string_table(reader: _Reader, segments: list[_Segment], strtab: int | None,
                  strsz: int | None) -> bytes:
    if strtab is None or strsz is None:
        raise ElfError(f"{reader.path}: corrupt dynamic section (DT_STRTAB or DT_STRSZ missing)")
    for seg in segments:
        if seg.p_type == PT_LOAD and seg.vaddr <= strtab < seg.vaddr + seg.filesz:
            offset = seg.offset + (strtab - seg.vaddr)
            length = min(strsz, seg.vaddr + seg.filesz - strtab)
            return reader.read(offset, length, "DT_STRTAB")
    raise ElfError(f"{reader.path}: corrupt dynamic section (DT_STRTAB {strtab:#x} is in no PT_LOAD)")


def _string_at(path: str, table: bytes, offset: int) -> str:
    end = table.find(b"\0", offset)
    if offset >= len(table) or end < 0:
        raise ElfError(f"{path}: corrupt dynamic section (string offset {offset:#x} outside DT_STRTAB)")
    return _decode(table[offset:end])


def _decode(raw: bytes) -> str:
    """Bytes of a path-like string; undecodable bytes survive as surrogates."""
    return raw.decode("utf-8", "surrogateescape")


def _split_path(values: list[str] | None) -> tuple[str, ...]:
    if not values:
        return ()
    return tuple(part for value in values for part in value.split(":"))


_PLATFORMS: dict[tuple[str, int, bool], tuple[str, str | None]] = {
    ("EM_X86_64", 64, True): ("amd64", None),
    ("EM_386", 32, True): ("386", None),
    ("EM_AARCH64", 64, True): ("arm64", "v8"),
    ("EM_ARM", 32, True): ("arm", "v7"),
    ("EM_PPC64", 64, True): ("ppc64le", None),
    ("EM_PPC64", 64, False): ("ppc64", None),
    ("EM_S390", 64, False): ("s390x", None),
    ("EM_RISCV", 64, True): ("riscv64", None),
    ("EM_MIPS", 32, True): ("mipsle", None),
    ("EM_MIPS", 64, True): ("mips64le", None),
    ("EM_MIPS", 32, False): ("mips", None),
    ("EM_MIPS", 64, False): ("mips64", None),
    ("EM_LOONGARCH", 64, True): ("loong64", None),
}


def oci_platform(info: ElfInfo) -> tuple[str, str | None]:
    """OCI ``architecture`` and ``variant`` for an ELF object.

    Args:
        info: facts of a program or library.

    Returns:
        ``(architecture, variant)``, e.g. ``("amd64", None)``, ``("arm64", "v8")``.

    Raises:
        ElfError: the class/machine/byte order has no OCI platform name.
    """
    found = _PLATFORMS.get((info.machine, info.elf_class, info.little_endian))
    if found is None:
        order = "little" if info.little_endian else "big"
        raise ElfError(
            f"no OCI platform for {info.elf_class}-bit {order}-endian ELF machine {info.machine}"
        )
    return found
