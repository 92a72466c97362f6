#!/usr/bin/env python3
"""Build `curl` from / with microcontainer-tool and, in the same run, with umoci.

Prints a table: median wall time over N alternating rounds, compressed layer
size, and our/umoci ratios. umoci's pipeline is what a user would script:
init a layout, new image, unpack, copy the same files (curl's closure, as
``ldd`` lists it, with their symlink chains) into the rootfs, repack.

Usage: python bench/build_vs_umoci.py [--rounds N] [--program /usr/bin/curl] [--compression gzip-fast]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))

from hostfiles import ldd_files  # noqa: E402  (the tests' ldd oracle)


def cpu_seconds() -> float:
    """User + system CPU seconds of every child process that ended so far (threads included)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def ours(work: str, program: str, compression: str = "gzip") -> tuple[float, int]:
    spec = os.path.join(work, "spec")
    os.makedirs(spec, exist_ok=True)
    with open(os.path.join(spec, "microimage.yaml"), "w") as handle:
        # auto_packs: false: the ELF closure only, the files umoci is handed (ldd's list);
        # with packs, curl's image also holds the gconv modules and the ssl config
        handle.write(f"paths: [{program}]\ncmd: [{program}]\nauto_packs: false\n")
    out = os.path.join(work, "ours")
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "microcontainer_tool", "build", "-c", spec, "-o", out, "-q",
                    "--compression", compression],
                   check=True, capture_output=True, env={**os.environ, "PYTHONPATH": REPO})
    elapsed = time.perf_counter() - start
    return elapsed, layer_size(out)


def umoci(work: str, files: list[str]) -> tuple[float, int]:
    layout = os.path.join(work, "umoci")
    bundle = os.path.join(work, "bundle")
    for path in (layout, bundle):
        shutil.rmtree(path, ignore_errors=True)
    start = time.perf_counter()
    subprocess.run(["umoci", "init", "--layout", layout], check=True)
    subprocess.run(["umoci", "new", "--image", f"{layout}:latest"], check=True)
    subprocess.run(["umoci", "unpack", "--image", f"{layout}:latest", bundle], check=True,
                   capture_output=True)
    rootfs = os.path.join(bundle, "rootfs")
    real = sorted({os.path.realpath(f) for f in files})
    subprocess.run(["cp", "-a", "--parents", *real, rootfs], check=True, cwd="/")
    for path in files:  # the symlinks on the way, as ld.so follows them
        copy_links(path, rootfs)
    subprocess.run(["umoci", "repack", "--image", f"{layout}:latest", bundle], check=True,
                   capture_output=True)
    elapsed = time.perf_counter() - start
    return elapsed, layer_size(layout)


def copy_links(path: str, rootfs: str) -> None:
    """Recreate in ``rootfs`` every symlink met while resolving ``path``."""
    parts = [p for p in path.split("/") if p]
    current = ""
    while parts:
        current = f"{current}/{parts.pop(0)}"
        if os.path.islink(current):
            target = os.readlink(current)
            dest = rootfs + current
            if not os.path.lexists(dest):
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                os.symlink(target, dest)
            base = "" if target.startswith("/") else os.path.dirname(current)
            joined = os.path.normpath(os.path.join(base or "/", target))
            parts = [p for p in joined.split("/") if p] + parts
            current = ""


def layer_size(layout: str) -> int:
    with open(os.path.join(layout, "index.json")) as handle:
        index = json.load(handle)
    digest = index["manifests"][0]["digest"].split(":")[1]
    with open(os.path.join(layout, "blobs", "sha256", digest)) as handle:
        manifest = json.load(handle)
    return sum(layer["size"] for layer in manifest["layers"])


def main() -> int:
    from benchsetup import compile_package  # bench/ is sys.path[0] when run as a script

    compile_package()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--program", default="/usr/bin/curl")
    parser.add_argument("--compression", default="gzip",
                        help="our layer codec (gzip, the default; gzip-fast, the edit-loop option)")
    args = parser.parse_args()
    if not shutil.which("umoci"):
        print("umoci is not installed (apt-get install umoci)", file=sys.stderr)
        return 1
    files = ldd_files(args.program)
    raw = sum(os.path.getsize(os.path.realpath(f)) for f in files)
    ours_t, umoci_t, ratios = [], [], []
    ours_cpu, umoci_cpu = [], []
    sizes = (0, 0)
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None  # tmpfs: no disk in the numbers
    with tempfile.TemporaryDirectory(dir=base) as work:
        ours(work, args.program, args.compression)  # warm-up (page cache, imports)
        for _ in range(args.rounds):
            cpu = cpu_seconds()
            t_ours, s_ours = ours(work, args.program, args.compression)
            ours_cpu.append(cpu_seconds() - cpu)
            cpu = cpu_seconds()
            t_umoci, s_umoci = umoci(work, files)
            umoci_cpu.append(cpu_seconds() - cpu)
            ours_t.append(t_ours)
            umoci_t.append(t_umoci)
            ratios.append(t_ours / t_umoci)
            sizes = (s_ours, s_umoci)
    print(f"workload: {args.program}, {len(files)} files, {raw / 1e6:.1f} MB uncompressed, "
          f"{args.rounds} rounds, our codec {args.compression}")
    print(f"{'tool':<22}{'median wall s':>14}{'min':>8}{'max':>8}{'layer bytes':>14}")
    rows = (("microcontainer build", ours_t, sizes[0]), ("umoci pipeline", umoci_t, sizes[1]))
    for name, times, size in rows:
        print(f"{name:<22}{statistics.median(times):>14.3f}{min(times):>8.3f}{max(times):>8.3f}{size:>14}")
    print(f"{'ratio ours/umoci':<22}{statistics.median(ratios):>14.3f}{min(ratios):>8.3f}{max(ratios):>8.3f}"
          f"{sizes[0] / sizes[1]:>14.3f}")
    cpu_ratio = statistics.median(ours_cpu) / statistics.median(umoci_cpu)
    print(f"CPU seconds (user+sys, median): ours {statistics.median(ours_cpu):.3f}, umoci "
          f"{statistics.median(umoci_cpu):.3f}, ratio {cpu_ratio:.3f}")
    ratio = statistics.median(ratios)
    print(f"target: wall <= 0.5x umoci: {'met' if ratio <= 0.5 else 'NOT met'} ({ratio:.2f}x);"
          f" layer within 1 % of umoci's: {'met' if sizes[0] <= 1.01 * sizes[1] else 'NOT met'}"
          f" ({sizes[0] / sizes[1]:.3f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
