"""Debug toolboxes: the read-only directory of static tools a debug session side-loads.

The host's static busybox with a link per applet, built once in the cache
(:func:`busybox_toolbox`): the toolbox when no dynamically linked tool is wanted,
and the shell of the portable toolboxes of
:mod:`~microcontainer_tool.runtime.toolboxbuilder` (which resolves ``--toolbox``).
A toolbox appears inside a container at :data:`CRASHCART`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Callable

from microcontainer_tool.closure.elf import read_elf
from microcontainer_tool.errors import ElfError, RunError
from microcontainer_tool.hostfs.atomic import make_temp_dir, publish_dir

CRASHCART = "/dev/crashcart"
"""Where a debug toolbox appears inside a container."""

BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")
"""Where Debian's ``busybox-static`` puts its binary."""


def static_busybox() -> str:
    """The host's static busybox (Debian's ``busybox-static``).

    Raises:
        RunError: there is none.
    """
    for path in BUSYBOX_CANDIDATES:
        if not os.path.isfile(path):
            continue
        try:
            info = read_elf(path)
        except ElfError:
            continue
        if info is not None and info.interpreter is None:
            return path
    raise RunError("no static busybox found (/bin/busybox); install Debian's busybox-static"
                   " (apt-get install busybox-static) or pass --toolbox DIR|IMAGE")




def busybox_applets(binary: str) -> list[str]:
    """The applet names of a busybox (``busybox --list``), sorted, ``busybox`` itself excluded.

    Raises:
        RunError: ``--list`` failed.
    """
    proc = subprocess.run([binary, "--list"], capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          check=False)
    if proc.returncode != 0:
        raise RunError(f"{binary} --list failed: {' '.join(proc.stderr.split())}")
    return sorted({name for name in proc.stdout.split() if name and "/" not in name} - {"busybox"})


def cached_toolbox(cache_dir: str, name: str, fill: Callable[[str], None], what: str) -> str:
    """``cache_dir/toolbox/NAME``, made once by ``fill(temporary directory)`` and published whole.

    A toolbox whose ``bin/busybox`` is there is reused as it is; a concurrent
    build that published first keeps its copy.

    Raises:
        RunError: the toolbox cannot be made.
    """
    parent = os.path.join(os.path.abspath(cache_dir), "toolbox")
    final = os.path.join(parent, name)
    if os.path.isfile(os.path.join(final, "bin", "busybox")):
        return final
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as error:
        raise RunError(f"{parent}: cannot create: {error.strerror or error}") from None
    temp = make_temp_dir(parent, ".tmp-")
    try:
        os.chmod(temp, 0o755)
        fill(temp)
        publish_dir(temp, final)
    except OSError as error:
        raise RunError(f"cannot build {what} in {parent}: {error.strerror or error}") from None
    finally:
        if os.path.exists(temp):
            shutil.rmtree(temp, ignore_errors=True)
    return final


def busybox_toolbox(cache_dir: str) -> str:
    """The default toolbox: the host's static busybox and its applet links, built once in the cache.

    Returns:
        ``cache_dir/toolbox/busybox-<sha256 prefix>``, holding ``bin/busybox`` and a
        ``bin/APPLET -> busybox`` link per applet.

    Raises:
        RunError: no static busybox on this machine, or the toolbox cannot be built.
        OutputError: the cache is not writable.
    """
    binary = static_busybox()
    with open(binary, "rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
    def fill(temp: str) -> None:
        bindir = os.path.join(temp, "bin")
        os.mkdir(bindir, 0o755)
        shutil.copyfile(binary, os.path.join(bindir, "busybox"))
        os.chmod(os.path.join(bindir, "busybox"), 0o755)
        for applet in busybox_applets(binary):
            os.symlink("busybox", os.path.join(bindir, applet))

    final = cached_toolbox(cache_dir, f"busybox-{digest[:16]}", fill, "the busybox toolbox")
    if not os.path.isfile(os.path.join(final, "bin", "busybox")):
        raise RunError(f"{final}: exists but holds no bin/busybox; remove it")
    return final
