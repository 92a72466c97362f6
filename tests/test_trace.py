"""``microcontainer trace``: real programs run in the sysroot ``/`` under runc, traced by strace.

Needs root, runc and strace (as every runtime test). Owners are this machine's
dpkg database.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import assert_one_line_error, have, run_cli

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not have("runc", "strace", "iconv", "python3"),
                                reason="root, runc and strace needed")

STDLIB = f"/usr/lib/python{sys.version_info.major}.{sys.version_info.minor}"
DYNLOAD = f"{STDLIB}/lib-dynload"
IMPORTS = "import ssl, sqlite3, decimal, json"
GCONV = "/usr/lib/x86_64-linux-gnu/gconv"

SPEC = """\
# python, traced: the comment stays
from: /        # the host is the sysroot
cmd: ["/usr/bin/python3", "-c", "print('hi')"]
paths: [/usr/bin/python3]
env:
  LC_ALL: C
"""


def _trace(spec: Path, cache: Path, *command: str, write: bool = False,
           **kw: str) -> subprocess.CompletedProcess:
    options = [f"--{key}={value}" if value else f"--{key}" for key, value in kw.items()]
    return run_cli("trace", "-c", str(spec), "--cache-dir", str(cache), *(["--write"] if write else []),
                   *options, "--", *command)


def _proposed(stdout: str) -> list[str]:
    """The entries of the report's "add to the spec" part."""
    lines = stdout.splitlines()
    start = lines.index("trace: add to the spec:")
    return [line.strip()[2:] for line in lines[start + 1:] if line.startswith("    - ")]


def _stdlib_files() -> int:
    return sum(len(files) for _, _, files in os.walk(STDLIB))


def test_python_imports_are_proposed_not_the_whole_stdlib(tmp_path: Path) -> None:
    spec = tmp_path / "microimage.yaml"
    spec.write_text(SPEC)
    cache = tmp_path / "cache"
    proc = _trace(spec, cache, "python3", "-c", IMPORTS)
    assert proc.returncode == 0, proc.stderr
    proposed = _proposed(proc.stdout)
    for wanted in (f"{STDLIB}/ssl.py", f"{STDLIB}/json/__init__.py", f"{STDLIB}/json/decoder.py",
                   f"{STDLIB}/decimal.py", f"{STDLIB}/sqlite3/__init__.py"):
        assert wanted in proposed, proc.stdout
    dynload = [path for path in proposed if path.startswith(f"{DYNLOAD}/_ssl.")]
    assert len(dynload) == 1 and dynload[0].endswith(".so"), proc.stdout
    # the extension module is a shared library: a `libs:` entry, owned by the stdlib's package
    row = next(line for line in proc.stdout.splitlines() if line.startswith(f"  {dynload[0]} "))
    assert "library" in row and f"libs: [- {dynload[0]}]" in row and "(libpython3" in row
    # libssl is found by DT_NEEDED of _ssl: a library; the program itself is in the image already
    assert any(path.endswith("/libssl.so.3") for path in proposed)
    assert "/usr/bin/python3" not in proposed and STDLIB not in proposed
    # measured: 79 of the stdlib's ~1,400 files; the bound leaves room for other Python builds
    in_stdlib = [path for path in proposed if path.startswith(STDLIB + "/")]
    assert 20 < len(in_stdlib) < _stdlib_files() / 5, len(in_stdlib)
    # nothing from the kernel file systems or the program's scratch space
    assert not [path for path in proposed if path.startswith(("/proc", "/sys", "/dev", "/tmp"))]
    assert spec.read_text() == SPEC  # without --write the spec is not touched


def test_write_then_build_probe_passes_and_the_image_runs(tmp_path: Path) -> None:
    spec = tmp_path / "microimage.yaml"
    spec.write_text(SPEC)
    cache = tmp_path / "cache"
    proc = _trace(spec, cache, "python3", "-c", IMPORTS, write=True)
    assert proc.returncode == 0, proc.stderr
    count = len(_proposed(proc.stdout))
    assert proc.stdout.splitlines()[-1] == f"trace: added {count} entries to {spec}"
    text = spec.read_text()
    # untouched lines are kept exactly, in their order, comments included
    original = SPEC.splitlines()
    kept = [line for line in text.splitlines() if line in original]
    assert kept == original[:3] + original[4:]
    assert text.startswith("# python, traced: the comment stays\nfrom: /        # the host is the sysroot\n")
    assert "\nenv:\n  LC_ALL: C\n" in text
    assert f"  - {STDLIB}/ssl.py\n" in text and "paths:\n  - /usr/bin/python3\n" in text
    # idempotent: the same trace again proposes nothing and leaves the file alone
    again = _trace(spec, cache, "python3", "-c", IMPORTS, write=True)
    assert again.returncode == 0, again.stderr
    assert "trace: the spec's image has everything the program used" in again.stdout
    assert "added" not in again.stdout and spec.read_text() == text
    # runs add up: another import proposes only what is still missing
    more = _trace(spec, cache, "python3", "-c", "import csv", write=True)
    assert more.returncode == 0, more.stderr
    added = _proposed(more.stdout)
    assert f"{STDLIB}/csv.py" in added and f"{STDLIB}/ssl.py" not in added
    assert all(text_line in spec.read_text() for text_line in text.splitlines())
    # the spec now builds an image the probe passes, and that runs it under runc
    image = tmp_path / "img"
    built = run_cli("build", "-c", str(spec), "-o", str(image), "-q", "--cache-dir", str(cache),
                    "--probe", f'python3 -c "{IMPORTS}; import csv"')
    assert built.returncode == 0, built.stderr
    assert "not in the image" not in built.stderr
    ran = run_cli("run", "--cache-dir", str(cache), str(image), "--", "python3", "-c",
                  f"{IMPORTS}; print(ssl.OPENSSL_VERSION.split()[0], sqlite3.sqlite_version_info[0])")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.split() == ["OpenSSL", "3"]


def test_iconv_in_the_sysroot_proposes_the_gconv_files(tmp_path: Path) -> None:
    spec = tmp_path / "microimage.yaml"
    text = "/usr/share/common-licenses/Apache-2.0"  # the input is a file of the sysroot (ASCII)
    # with automatic packs (the default) the gconv pack already holds what iconv loads:
    # nothing of it is proposed
    spec.write_text("from: /\npaths: [/usr/bin/iconv]\n")
    proc = _trace(spec, tmp_path / "cache", "iconv", "-f", "UTF-8", "-t", "EUC-JP", text)
    assert proc.returncode == 0, proc.stderr
    assert not [p for p in _proposed(proc.stdout) if p.startswith(GCONV)]
    # auto_packs off: the trace finds what the pack would have brought
    spec.write_text("from: /\nauto_packs: false\npaths: [/usr/bin/iconv]\n")
    proc = _trace(spec, tmp_path / "cache", "iconv", "-f", "UTF-8", "-t", "EUC-JP", text)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == Path(text).read_text()  # the program's output goes to stderr; the report is stdout
    proposed = _proposed(proc.stdout)
    assert f"{GCONV}/gconv-modules.cache" in proposed and f"{GCONV}/EUC-JP.so" in proposed
    row = next(line for line in proc.stdout.splitlines() if line.startswith(f"  {GCONV}/EUC-JP.so "))
    assert "library" in row and "(libc6)" in row and f"libs: [- {GCONV}/EUC-JP.so]" in row
    assert f"{GCONV}/UTF-16.so" not in proposed and GCONV not in proposed  # only what it used
    # a read-only bind needs a /read mount point in the sysroot: nothing is created in it
    read = tmp_path / "read"
    read.mkdir()
    refused = _trace(spec, tmp_path / "cache", "iconv", "/read/x", read=str(read))
    assert_one_line_error(refused, "no /read directory")
    assert not os.path.exists("/read")


def test_runs_as_the_image_user_read_only_without_network(tmp_path: Path) -> None:
    spec = tmp_path / "microimage.yaml"
    spec.write_text("from: /\npaths: [/usr/bin/python3]\nuser: '1234:4321'\n")
    script = ("import os, socket\n"
              "print(os.getuid(), os.getgid())\n"
              "try:\n    open('/etc/mct-trace-probe', 'w')\nexcept OSError as e:\n    print(e.errno)\n"
              "print(sorted(n for _, n in socket.if_nameindex()))\n")
    proc = _trace(spec, tmp_path / "cache", "python3", "-c", script)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == ["1234 4321", "30", "['lo']"]  # EROFS; loopback only
    assert not os.path.exists("/etc/mct-trace-probe")
    net = _trace(spec, tmp_path / "cache", "python3", "-c", script, network="")
    assert net.returncode == 0, net.stderr
    assert net.stderr.splitlines()[2] != "['lo']"


def test_trace_errors_are_one_line(tmp_path: Path) -> None:
    spec = tmp_path / "microimage.yaml"
    spec.write_text("from: /\npaths: [/usr/bin/true]\n")
    assert_one_line_error(run_cli("trace", "-c", str(spec), "--cache-dir", str(tmp_path / "c")),
                          "give the command")
    missing = _trace(spec, tmp_path / "c", "no-such-program-mct")  # runc says it too, then we do
    assert missing.returncode != 0 and "Traceback" not in missing.stderr
    last = missing.stderr.strip().splitlines()[-1]
    assert last.startswith("microcontainer: error: ") and "no-such-program-mct" in last
    built = run_cli("build", "-c", str(spec), "-o", str(tmp_path / "base.tar"), "-q")
    assert built.returncode == 0, built.stderr
    image_spec = tmp_path / "img.yaml"
    image_spec.write_text("from: ./base.tar\npaths: [/usr/bin/true]\n")
    assert_one_line_error(_trace(image_spec, tmp_path / "c", "true"), "from: names an image")
