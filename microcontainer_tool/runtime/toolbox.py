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
    parent = os.path.join(os.path.abspath(cache_dir), "toolbox")
    final = os.path.join(parent, f"busybox-{digest[:16]}")
    if os.path.isfile(os.path.join(final, "bin", "busybox")):
        return final
    applets = busybox_applets(binary)
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as error:
        raise RunError(f"{parent}: cannot create: {error.strerror or error}") from None
    temp = make_temp_dir(parent, ".tmp-")
    try:
        os.chmod(temp, 0o755)
        bindir = os.path.join(temp, "bin")
        os.mkdir(bindir, 0o755)
        shutil.copyfile(binary, os.path.join(bindir, "busybox"))
        os.chmod(os.path.join(bindir, "busybox"), 0o755)
        for applet in applets:
            os.symlink("busybox", os.path.join(bindir, applet))
        publish_dir(temp, final)  # a concurrent build that got there first keeps its copy
    except OSError as error:
        raise RunError(f"cannot build the busybox toolbox in {parent}: {error.strerror or error}") from None
    finally:
        if os.path.exists(temp):
            shutil.rmtree(temp, ignore_errors=True)
    if not os.path.isfile(os.path.join(final, "bin", "busybox")):
        raise RunError(f"{final}: exists but holds no bin/busybox; remove it")
    return final
