#!/usr/bin/env python3
"""Throughput of ``extract_rpm`` over a folder of RPMs vs ``rpm2cpio`` in the same run.

Methods, each over every package of the folder, median of N alternating rounds:

* ``extract_rpm``: this project (in-process): header checks, payload digest,
  decompression, cpio parsing and writing every file below a fresh directory.
* ``rpm2cpio > /dev/null``: rpm's own decompression only (nothing written):
  the target is to stay within 2x of it.
* ``rpm2cpio | cpio -idm``: the usual shell way to unpack an rpm (writes files).

Throughput is MB/s (10^6 bytes) of *uncompressed* payload (the signature header's
``PAYLOADSIZE``). Destinations are created under ``--tmpdir`` (its filesystem's
metadata speed matters: compare a disk with ``/dev/shm``).

Usage: python bench/rpm_extract.py [--rpms DIR] [--rounds N] [--tmpdir DIR]
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import rpm_rs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
SHARED_RPMS = os.path.join(os.path.dirname(REPO), "shared", "rpms", "rocky9-curl")  # ../shared beside REPO

# After the sys.path insert above: the script also runs from a checkout without an install.

from microcontainer_tool.sources.rpm.cpio import extract_rpm  # noqa: E402

PAYLOADSIZE, LONGARCHIVESIZE = 1007, 271


def payload_size(path: str) -> int:
    """Uncompressed payload size from the signature header."""
    signature = rpm_rs.PackageMetadata.open(path).signature
    for tag in (LONGARCHIVESIZE, PAYLOADSIZE):
        if signature.entry_is_present(tag):
            value = signature.entry(tag)
            return value[0] if isinstance(value, list) else value
    raise SystemExit(f"{path}: no payload size in the signature header")


def run_ours(rpms: list[str], dest: str) -> None:
    for path in rpms:
        extract_rpm(path, os.path.join(dest, os.path.basename(path)))


def run_rpm2cpio(rpms: list[str], dest: str) -> None:
    with open(os.devnull, "wb") as null:
        for path in rpms:
            subprocess.run(["rpm2cpio", path], stdout=null, check=True)


def run_cpio(rpms: list[str], dest: str) -> None:
    for path in rpms:
        target = os.path.join(dest, os.path.basename(path))
        os.makedirs(target)
        producer = subprocess.Popen(["rpm2cpio", path], stdout=subprocess.PIPE)
        subprocess.run(["cpio", "-idm", "--quiet", "--no-absolute-filenames"],
                       stdin=producer.stdout, cwd=target, check=True, stderr=subprocess.DEVNULL)
        producer.stdout.close()
        if producer.wait() != 0:
            raise SystemExit(f"rpm2cpio failed on {path}")


METHODS = [
    ("extract_rpm (this project)", run_ours),
    ("rpm2cpio > /dev/null", run_rpm2cpio),
    ("rpm2cpio | cpio -idm", run_cpio),
]


def main() -> None:
    from benchsetup import compile_package  # bench/ is sys.path[0] when run as a script

    compile_package()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rpms", default=SHARED_RPMS)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tmpdir", default=tempfile.gettempdir())
    args = parser.parse_args()

    rpms = sorted(glob.glob(os.path.join(args.rpms, "*.rpm")))
    if not rpms:
        raise SystemExit(f"no .rpm files in {args.rpms}")
    methods = [m for m in METHODS if m[1] is run_ours or shutil.which("rpm2cpio")]
    methods = [m for m in methods if m[1] is not run_cpio or shutil.which("cpio")]
    total = sum(payload_size(p) for p in rpms)
    compressed = sum(os.path.getsize(p) for p in rpms)
    times: dict[str, list[float]] = {name: [] for name, _ in methods}
    for round_no in range(args.rounds):
        order = methods if round_no % 2 == 0 else list(reversed(methods))
        for name, func in order:
            work = tempfile.mkdtemp(prefix="rpm-bench-", dir=args.tmpdir)
            try:
                start = time.perf_counter()
                func(rpms, work)
                times[name].append(time.perf_counter() - start)
            finally:
                shutil.rmtree(work)

    fs = subprocess.run(["stat", "-f", "-c", "%T", args.tmpdir], check=False, capture_output=True,
                        text=True).stdout.strip() or "?"
    print(f"{len(rpms)} packages from {args.rpms}: {compressed / 1e6:.1f} MB compressed, "
          f"{total / 1e6:.1f} MB uncompressed payload; median of {args.rounds} rounds; "
          f"destinations under {args.tmpdir} ({fs})")
    base = statistics.median(times["rpm2cpio > /dev/null"]) if "rpm2cpio > /dev/null" in times else None
    print(f"{'method':<28} {'median s':>9} {'MB/s':>8} {'time / rpm2cpio':>16}")
    for name, _ in methods:
        median = statistics.median(times[name])
        ratio = f"{median / base:.2f}x" if base else "-"
        print(f"{name:<28} {median:>9.3f} {total / 1e6 / median:>8.1f} {ratio:>16}")


if __name__ == "__main__":
    main()
