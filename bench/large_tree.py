#!/usr/bin/env python3
"""An image of many small files (default 100,000 of 100 bytes): ours against ``umoci repack``.

In the same run, alternating, on tmpfs (``/dev/shm`` when it exists): our whole
``microcontainer build`` (``from:`` the tree, ``paths: [/data]``) and umoci's
``repack`` of a bundle whose rootfs already holds the same files (init, new,
unpack and the copy are not timed). Prints wall times, peak RSS of each
process (``wait4``), the ratio ours/umoci with the target (<= 0.5x, peak RSS
<= 100 MiB), the provenance record's size against the files' bytes (target
<= 5 %), and the cost per file at a quarter, a half and all of the files
(linear: the per-file cost stays flat).

Usage: python bench/large_tree.py [--files N] [--rounds N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PER_DIR = 1000
SIZE = 100
RECORD = "var/lib/microcontainer/provenance.json"


def make_tree(root: str, files: int) -> None:
    for number in range(files):
        directory = os.path.join(root, "data", f"d{number // PER_DIR:04d}")
        if number % PER_DIR == 0:
            os.makedirs(directory)
        with open(os.path.join(directory, f"f{number % PER_DIR:04d}"), "wb") as handle:
            handle.write((b"%09d " % number) * (SIZE // 10))


def timed(argv: list[str], **kwargs: object) -> tuple[float, int]:
    """Wall seconds and peak RSS (bytes) of one process."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kwargs)  # type: ignore[call-overload]
    _pid, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    if status != 0:
        raise SystemExit(f"{argv[:4]} failed: {proc.stderr.read().decode() if proc.stderr else status}")
    return elapsed, usage.ru_maxrss * 1024


def ours(work: str, root: str, out: str) -> tuple[float, int]:
    spec = os.path.join(work, f"spec-{os.path.basename(root)}")
    os.makedirs(spec, exist_ok=True)
    with open(os.path.join(spec, "microimage.yaml"), "w") as handle:
        handle.write(f"from: {root}\npaths: [/data]\narch: amd64\n")
    shutil.rmtree(out, ignore_errors=True)
    return timed([sys.executable, "-m", "microcontainer_tool", "build", "-c", spec, "-o", out, "-q"],
                 env={**os.environ, "PYTHONPATH": REPO})


def umoci_bundle(work: str, root: str) -> tuple[str, str]:
    layout, bundle = os.path.join(work, "umoci"), os.path.join(work, "bundle")
    for path in (layout, bundle):
        shutil.rmtree(path, ignore_errors=True)
    subprocess.run(["umoci", "init", "--layout", layout], check=True)
    subprocess.run(["umoci", "new", "--image", f"{layout}:latest"], check=True)
    subprocess.run(["umoci", "unpack", "--image", f"{layout}:latest", bundle], check=True,
                   capture_output=True)
    subprocess.run(["cp", "-a", os.path.join(root, "data"), os.path.join(bundle, "rootfs")], check=True)
    return layout, bundle


def umoci_repack(work: str, root: str) -> tuple[float, int]:
    layout, bundle = umoci_bundle(work, root)
    return timed(["umoci", "repack", "--image", f"{layout}:latest", bundle])


def record_size(out: str) -> int:
    with open(os.path.join(out, "index.json")) as handle:
        digest = json.load(handle)["manifests"][0]["digest"].split(":")[1]
    with open(os.path.join(out, "blobs", "sha256", digest)) as handle:
        layer = json.load(handle)["layers"][-1]["digest"].split(":")[1]
    with tarfile.open(os.path.join(out, "blobs", "sha256", layer), "r:gz") as tar:
        return tar.getmember(RECORD).size


def main() -> int:
    from benchsetup import compile_package  # bench/ is sys.path[0] when run as a script

    compile_package()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if not shutil.which("umoci"):
        print("umoci is not installed (apt-get install umoci)", file=sys.stderr)
        return 1
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.TemporaryDirectory(dir=base) as work:
        sizes = sorted({max(args.files // 4, 1), max(args.files // 2, 1), args.files})
        roots = {}
        for count in sizes:
            roots[count] = os.path.join(work, f"root{count}")
            make_tree(roots[count], count)
        root, out = roots[args.files], os.path.join(work, "out")
        ours(work, root, out)  # warm-up
        ours_runs, umoci_runs = [], []
        for _ in range(args.rounds):
            ours_runs.append(ours(work, root, out))
            umoci_runs.append(umoci_repack(work, root))
        record = record_size(out)
        repeat = max(args.rounds - 1, 1)
        per_file = {count: min(ours(work, roots[count], out)[0] for _ in range(repeat)) / count
                    for count in sizes}
    print(f"workload: {args.files} files of {SIZE} bytes in directories of {PER_DIR}, tmpfs, "
          f"{args.rounds} alternating rounds")
    print(f"{'tool':<26}{'min s':>8}{'median s':>10}{'peak RSS MiB':>14}")
    for name, runs in (("microcontainer build", ours_runs), ("umoci repack", umoci_runs)):
        times = [t for t, _ in runs]
        peak = max(m for _, m in runs) / 2**20
        print(f"{name:<26}{min(times):>8.2f}{statistics.median(times):>10.2f}{peak:>14.1f}")
    ratio = min(t for t, _ in ours_runs) / min(t for t, _ in umoci_runs)
    rss = max(m for _, m in ours_runs) / 2**20
    share = record / (args.files * SIZE)
    print(f"ratio ours/umoci (min): {ratio:.2f}  (target <= 0.5: {'met' if ratio <= 0.5 else 'NOT met'})")
    print(f"peak RSS ours: {rss:.1f} MiB  (target <= 100: {'met' if rss <= 100 else 'NOT met'})")
    print(f"provenance record: {record} bytes = {share * 100:.2f} % of the files' bytes "
          f"(target <= 5 %: {'met' if share <= 0.05 else 'NOT met'})")
    print("cost per file (min): " + ", ".join(f"{n} files {c * 1e6:.1f} us" for n, c in per_file.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
