"""Differential test: our closure equals the host ``ldd`` on a sample of host files.

A deterministic sample (every Nth regular ELF file of /usr/bin, /usr/sbin and
/usr/lib/x86_64-linux-gnu, about 150 files) is resolved with sysroot ``/`` and
compared with ``ldd`` (realpaths, missing names, linux-vdso ignored; files ldd
cannot handle, static ones and objects without dependencies, are left out).
Every compared file must agree exactly. ``bench/ldd_agreement.py`` runs the
full set.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench" / "ldd_agreement.py"
SAMPLE_SIZE = 150

pytestmark = pytest.mark.skipif(
    shutil.which("ldd") is None or not os.path.isdir("/usr/lib/x86_64-linux-gnu"),
    reason="needs an x86-64 Debian-like host with ldd")


def load_bench():  # type: ignore[no-untyped-def]
    """Import bench/ldd_agreement.py as a module."""
    spec = importlib.util.spec_from_file_location("ldd_agreement", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_closure_agrees_with_host_ldd() -> None:
    bench = load_bench()
    everything = bench.candidate_files()
    sample = everything[:: max(1, len(everything) // SAMPLE_SIZE)]
    result = bench.compare(sample)
    for path, mine, other in result.disagree:
        print("DISAGREE " + bench.describe(path, mine, other))
    for path, message in result.ours_failed:
        print(f"FAILED {path}: {message}")
    print(f"{result.agree}/{result.compared} agree ({result.percentage:.2f} %), "
          f"{len(result.ldd_skipped)} skipped, {len(result.ours_failed)} failed")
    assert result.compared >= 0.8 * len(sample)
    assert not result.ours_failed
    assert not result.disagree, [bench.describe(*entry) for entry in result.disagree]
    assert result.agree == result.compared
