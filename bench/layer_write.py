#!/usr/bin/env python3
"""Throughput of ``write_layer`` on real host binaries (gzip and zstd).

The tree is host programs and libraries of 0.1-2 MB each, largest first, up to
``--mb`` MB (the same kind of tree as tests/test_layer.py's reproducibility
test). Each codec writes the layer once to warm the page cache, then N times
to a file; the best and median wall times and MB/s (10^6 bytes of file
content per second) are printed. The target is about 0.2 s for 19 MB with
gzip (libdeflate level 6 on 2 cores; ISA-L level 2, the former codec, took
0.05 s for a 14% larger blob); more than 1.5 s means per-byte Python work
crept in.

Usage: python bench/layer_write.py [--rounds N] [--mb MB] [--tmpdir DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "tests"))


from hostfiles import real_binaries  # noqa: E402

from microcontainer_tool.model.tree import EntryKind  # noqa: E402
from microcontainer_tool.oci.layer import write_layer  # noqa: E402


def main() -> None:
    from benchsetup import compile_package  # bench/ is sys.path[0] when run as a script

    compile_package()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--mb", type=float, default=19.0)
    parser.add_argument("--tmpdir", default=tempfile.gettempdir())
    args = parser.parse_args()

    tree, total = real_binaries(int(args.mb * 1_000_000), "bench")
    print(f"{total / 1e6:.1f} MB in {sum(1 for e in tree if e.kind is EntryKind.FILE)} files, "
          f"{args.rounds} rounds")
    print(f"{'codec':<8}{'best s':>10}{'median s':>10}{'MB/s':>10}{'blob MB':>10}")
    with tempfile.TemporaryDirectory(dir=args.tmpdir) as work:
        target = os.path.join(work, "layer")
        for codec in ("gzip", "zstd"):
            with open(target, "wb") as sink:
                info = write_layer(tree, sink, codec, 0)  # warm-up
            times = []
            for _ in range(args.rounds):
                with open(target, "wb") as sink:
                    start = time.perf_counter()
                    write_layer(tree, sink, codec, 0)
                    times.append(time.perf_counter() - start)
            best = min(times)
            print(f"{codec:<8}{best:>10.3f}{statistics.median(times):>10.3f}{total / 1e6 / best:>10.1f}"
                  f"{info.size / 1e6:>10.2f}")


if __name__ == "__main__":
    main()
