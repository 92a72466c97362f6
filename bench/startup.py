#!/usr/bin/env python3
"""Start-up of the command line against a bare interpreter, in the same run.

Times ``microcontainer --help`` (and ``build --help``) and ``python -c pass``
with the same interpreter (so site, the venv's ``.pth`` files and an editable
install's import hook count on both sides), alternating, and prints the
minimum and median of each and the overhead over the bare interpreter in
milliseconds (the target: at most 40 ms). The package's bytecode is compiled
first, as an installed package has it.

Usage: python bench/startup.py [--rounds N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET_MS = 40.0


def run_once(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": REPO})
    return time.perf_counter() - start


def main() -> int:
    from benchsetup import compile_package  # bench/ is sys.path[0] when run as a script

    compile_package()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=31)
    args = parser.parse_args()
    cases = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "microcontainer --help": [sys.executable, "-m", "microcontainer_tool", "--help"],
        "microcontainer build --help": [sys.executable, "-m", "microcontainer_tool", "build", "--help"],
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    for argv in cases.values():  # warm-up
        run_once(argv)
    for _ in range(args.rounds):
        for name, argv in cases.items():
            times[name].append(run_once(argv) * 1000)
    bare = times["python -c pass"]
    print(f"{args.rounds} rounds, interpreter {sys.executable}")
    print(f"{'command':<30}{'min ms':>9}{'median ms':>11}{'over bare (median)':>20}")
    for name, values in times.items():
        over = statistics.median(values) - statistics.median(bare)
        print(f"{name:<30}{min(values):>9.1f}{statistics.median(values):>11.1f}{over:>20.1f}")
    over = statistics.median(times["microcontainer --help"]) - statistics.median(bare)
    print(f"target: --help <= {TARGET_MS:.0f} ms over a bare interpreter: "
          f"{'met' if over <= TARGET_MS else 'NOT met'} ({over:.1f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
