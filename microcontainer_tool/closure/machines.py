"""Each platform's ELF files must be of its machine: the check a multi-platform build makes.

The closure (:mod:`microcontainer_tool.closure.ldd`) follows each program's own
ELF class and machine, so an amd64 program in an arm64 sysroot would be
resolved happily against amd64 libraries and then fail to start on arm64.
This check refuses such a file, naming it, its machine and the platform.
"""

from __future__ import annotations

from collections.abc import Mapping

from microcontainer_tool.closure.elf import ElfInfo, oci_platform
from microcontainer_tool.errors import ElfError


def check_machines(objects: Mapping[str, ElfInfo], arch: str, label: str) -> None:
    """Refuse the first ELF object (in path order) whose platform is not ``arch``.

    Args:
        objects: image path -> ELF facts (a closure's ``objects``).
        arch: the OCI architecture the image is for (``amd64``, ``arm64``).
        label: names the platform's input in the message (the spec and its ``from``).

    Raises:
        ElfError: one line naming the file, its ELF class and machine, and ``arch``.
    """
    for path in sorted(objects):
        info = objects[path]
        try:
            found = oci_platform(info)[0]
        except ElfError:
            found = ""
        if found != arch:
            what = f"{info.elf_class}-bit {info.machine}" + (f" ({found})" if found else "")
            raise ElfError(f"{label}: {path} is a {what} ELF file, not {arch}: "
                           f"the {arch} image needs {arch} files")
