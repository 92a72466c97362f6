#!/usr/bin/env python3
"""How often our ELF closure equals what the host's ``ldd`` reports.

Every regular ELF file directly in /usr/bin, /usr/sbin and
/usr/lib/x86_64-linux-gnu is resolved with sysroot ``/`` and compared with
``ldd FILE``: both sides are sets of realpaths (missing libraries as
``missing:NAME``), ``linux-vdso`` ignored. Files ``ldd`` cannot handle
("not a dynamic executable", "statically linked", errors) are counted apart.

Usage: python bench/ldd_agreement.py [--every N] [--verbose]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


from microcontainer_tool.closure.elf import read_elf  # noqa: E402
from microcontainer_tool.closure.ldd import LibraryResolver  # noqa: E402
from microcontainer_tool.errors import MicrocontainerError  # noqa: E402
from microcontainer_tool.sources.sysroot import SysRoot  # noqa: E402

DIRS = ("/usr/bin", "/usr/sbin", "/usr/lib/x86_64-linux-gnu")


@dataclass
class Result:
    """Outcome of the comparison over a set of files."""

    files: int = 0
    agree: int = 0
    disagree: list[tuple[str, set[str], set[str]]] = field(default_factory=list)
    ldd_skipped: list[str] = field(default_factory=list)
    ours_failed: list[tuple[str, str]] = field(default_factory=list)
    seconds_ours: float = 0.0

    @property
    def compared(self) -> int:
        """Files both sides could handle."""
        return self.agree + len(self.disagree)

    @property
    def percentage(self) -> float:
        """Agreement over the compared files, in percent."""
        return 100.0 * self.agree / self.compared if self.compared else 0.0


def candidate_files(every: int = 1) -> list[str]:
    """Regular ELF files directly in DIRS, sorted; every Nth one."""
    found = []
    for directory in DIRS:
        for name in sorted(os.listdir(directory)):
            path = os.path.join(directory, name)
            if os.path.islink(path) or not os.path.isfile(path):
                continue
            try:
                with open(path, "rb") as handle:
                    if handle.read(4) != b"\x7fELF":
                        continue
            except OSError:
                continue
            found.append(path)
    return found[::every]


def ldd_set(path: str) -> set[str] | None:
    """What ``ldd`` reports for ``path`` (realpaths), or ``None`` if it cannot tell."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LD_")}
    try:
        proc = subprocess.run(["ldd", path], capture_output=True, text=True, timeout=60, cwd="/", env=env)
    except subprocess.TimeoutExpired:
        return None
    out = proc.stdout
    if "not a dynamic executable" in out + proc.stderr or "statically linked" in out:
        return None
    result: set[str] = set()
    for line in out.splitlines():
        line = line.strip()
        if not line or line.startswith("linux-vdso") or line.startswith("linux-gate"):
            continue
        if "=>" in line:
            name, target = (part.strip() for part in line.split("=>", 1))
            if target.startswith("not found"):
                result.add(f"missing:{name}")
                continue
            target = target.rsplit(" (0x", 1)[0].strip()
            if target:
                result.add(os.path.realpath(target))
        elif line.startswith("/"):
            result.add(os.path.realpath(line.rsplit(" (0x", 1)[0].strip()))
    if proc.returncode != 0 and not result:
        return None
    return result


def our_set(resolver: LibraryResolver, path: str) -> set[str]:
    """Our closure of ``path`` in the same shape as :func:`ldd_set`."""
    closure = resolver.closure([path])
    found = {os.path.realpath(p) for p in closure.libraries()}
    return found | {f"missing:{dep.name}" for dep in closure.missing()}


def compare(files: list[str], jobs: int = 4) -> Result:
    """Compare our closure with ldd's for every file."""
    result = Result(files=len(files))
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        theirs = list(pool.map(ldd_set, files))
    resolver = LibraryResolver(SysRoot("/"))
    start = time.perf_counter()
    ours: list[set[str] | str] = []
    for path in files:
        try:
            ours.append(our_set(resolver, path))
        except MicrocontainerError as err:
            ours.append(str(err))
    result.seconds_ours = time.perf_counter() - start
    for path, mine, other in zip(files, ours, theirs, strict=True):
        if other is None:
            result.ldd_skipped.append(path)
        elif isinstance(mine, str):
            result.ours_failed.append((path, mine))
        elif mine == other:
            result.agree += 1
        else:
            result.disagree.append((path, mine, other))
    return result


def per_file_ms(files: list[str], rounds: int = 1) -> tuple[float, float]:
    """(cold-cache resolver ms/file for the closure, read_elf ms/file)."""
    start = time.perf_counter()
    for path in files:
        try:
            LibraryResolver(SysRoot("/")).closure([path])
        except MicrocontainerError:
            pass
    closure_ms = 1000 * (time.perf_counter() - start) / max(len(files), 1)
    start = time.perf_counter()
    for _ in range(rounds):
        for path in files:
            try:
                read_elf(path)
            except MicrocontainerError:
                pass
    read_ms = 1000 * (time.perf_counter() - start) / max(len(files) * rounds, 1)
    return closure_ms, read_ms


def describe(path: str, mine: set[str], other: set[str]) -> str:
    """One line explaining a disagreement."""
    return f"{path}: only ours {sorted(mine - other)}; only ldd {sorted(other - mine)}"


def main() -> int:
    """Run the comparison and print the table."""
    from benchsetup import compile_package  # bench/ is sys.path[0] when run as a script

    compile_package()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--every", type=int, default=1, help="take every Nth file")
    parser.add_argument("--verbose", action="store_true", help="list skipped files too")
    args = parser.parse_args()
    files = candidate_files(args.every)
    result = compare(files)
    sample = files[:: max(1, len(files) // 200)]
    closure_ms, read_ms = per_file_ms(sample)
    rows = [
        ("ELF files", str(result.files)),
        ("compared", str(result.compared)),
        ("agree", str(result.agree)),
        ("disagree", str(len(result.disagree))),
        ("ldd failed/skipped", str(len(result.ldd_skipped))),
        ("ours failed (ElfError...)", str(len(result.ours_failed))),
        ("agreement", f"{result.percentage:.2f} %"),
        ("ours, shared resolver", f"{1000 * result.seconds_ours / max(result.files, 1):.3f} ms/file"),
        ("ours, fresh resolver", f"{closure_ms:.3f} ms/file (closure)"),
        ("read_elf", f"{read_ms:.3f} ms/file"),
    ]
    width = max(len(r[0]) for r in rows)
    for label, value in rows:
        print(f"{label:<{width}}  {value}")
    for path, mine, other in result.disagree:
        print("DISAGREE " + describe(path, mine, other))
    for path, message in result.ours_failed:
        print(f"FAILED {path}: {message}")
    if args.verbose:
        for path in result.ldd_skipped:
            print(f"SKIPPED {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
