"""Host files for tests and benchmarks: what the host's ``ldd`` says, symlink chains, sysroot copies.

Plain functions (no pytest), so ``bench/`` scripts use the same oracle as the tests.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from pathlib import Path

from microcontainer_tool.model.tree import EXEC_MODE, Entry, EntryKind, FileTree, HostFile, Provenance


def ldd_files(program: str) -> list[str]:
    """``program`` and every file the host's ``ldd`` lists for it (the oracle)."""
    proc = subprocess.run(["ldd", program], capture_output=True, text=True, check=True)
    files = [program]
    for line in proc.stdout.splitlines():
        parts = line.split()
        if "=>" in parts and parts[parts.index("=>") + 1].startswith("/"):
            files.append(parts[parts.index("=>") + 1])
        elif parts and parts[0].startswith("/"):
            files.append(parts[0])
    return files


def with_links(path: str) -> list[str]:
    """``path``, and every symlink met resolving it on the host, in order."""
    out: list[str] = []
    pending = [p for p in path.split("/") if p]
    current = ""
    for _ in range(100):
        if not pending:
            break
        current = f"{current}/{pending.pop(0)}"
        if os.path.islink(current):
            out.append(current)
            target = os.readlink(current)
            base = "/" if target.startswith("/") else os.path.dirname(current)
            pending = [p for p in os.path.normpath(os.path.join(base, target)).split("/") if p] + pending
            current = ""
    out.append(current)
    return out


def copy_closure(dest: Path, files: list[str]) -> dict[str, Path]:
    """Copy host files and their symlink chains into the sysroot ``dest``, in the order given.

    Returns:
        Each path of ``files`` -> its regular-file copy in ``dest``.
    """
    real = {}
    for path in files:
        current = path
        for _ in range(10):
            target = dest / current.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            if os.path.islink(current):
                link = os.readlink(current)
                if not target.is_symlink():
                    os.symlink(link, target)
                current = os.path.normpath(os.path.join(os.path.dirname(current), link))
                continue
            if not target.exists():
                shutil.copyfile(current, target)
                shutil.copymode(current, target)
            real[path] = target
            break
    for name in ("lib", "lib64", "bin", "sbin"):  # the host's merged-usr links
        if os.path.islink(f"/{name}") and not (dest / name).exists():
            os.symlink(os.readlink(f"/{name}"), dest / name)
    return real


def real_binaries(limit: int, reason: str) -> tuple[FileTree, int]:
    """Host programs and libraries of 0.1-2 MB each, largest first, up to ``limit`` bytes in all.

    Returns:
        The tree (files under ``/data``, parents added with provenance ``reason``) and its byte count.
    """
    candidates = [p for p in glob.glob("/usr/bin/*") + glob.glob("/usr/lib/x86_64-linux-gnu/*.so*")
                  if os.path.isfile(p) and not os.path.islink(p) and 100_000 < os.path.getsize(p) < 2_000_000]
    tree = FileTree()
    total = 0
    for path in sorted(candidates, key=os.path.getsize, reverse=True):
        size = os.path.getsize(path)
        if total + size > limit:
            continue
        total += size
        tree.add(Entry("/data/" + os.path.basename(path), EntryKind.FILE, EXEC_MODE, HostFile(path, size)))
    tree.add_parents(Provenance(reason))
    return tree, total
