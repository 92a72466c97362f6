"""The strace log parser (closure.accesses) on logs of real programs traced on this machine.

Each test runs a real program under the tracer's own strace command line
(runtime.tracer.strace_prefix) and checks what the parser makes of the log;
the split-line and escape cases that a scheduler decides are pinned by small
hand-written logs in the exact format strace 6.1 writes, beside the real ones.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
from conftest import have

from microcontainer_tool.closure.accesses import Outcome, decode_string, parse_accesses, split_args, summarize
from microcontainer_tool.runtime.tracer import read_log, strace_prefix

pytestmark = pytest.mark.skipif(not have("strace", "iconv"), reason="strace and iconv are needed")

GCONV = "/usr/lib/x86_64-linux-gnu/gconv"


def _trace(tmp_path: Path, argv: Sequence[str], cwd: Path | None = None) -> str:
    log = str(tmp_path / "strace.log")
    env = {"PATH": "/usr/bin:/bin", "LC_ALL": "C"}
    proc = subprocess.run(strace_prefix(log) + list(argv), cwd=cwd, env=env, capture_output=True)
    assert proc.returncode == 0, proc.stderr
    return log


def test_iconv_loads_gconv_modules(tmp_path: Path) -> None:
    source = tmp_path / "in.txt"
    source.write_text("h\u00e9llo\n", encoding="utf-8")
    log = _trace(tmp_path, ["/usr/bin/iconv", "-f", "UTF-8", "-t", "EUC-JP", str(source)])
    accesses = read_log(log)
    first = accesses[0]
    assert (first.path, first.outcome, first.syscall) == ("/usr/bin/iconv", Outcome.EXECUTED, "execve")
    found = {a.path for a in accesses if a.outcome is Outcome.FOUND}
    assert f"{GCONV}/gconv-modules.cache" in found
    assert f"{GCONV}/EUC-JP.so" in found
    assert "/lib/x86_64-linux-gnu/libc.so.6" in found or "/usr/lib/x86_64-linux-gnu/libc.so.6" in found
    # the loader's hwcaps probing fails: recorded as missing, with its errno
    missing = [a for a in accesses if a.outcome is Outcome.MISSING]
    assert missing and all(a.errno in ("ENOENT", "ENOTDIR") for a in missing)
    # /tmp (the input file) and /proc are dropped
    assert not any(a.path.startswith(("/tmp/", "/proc/")) for a in accesses)
    # the same log without the ignore list keeps the input file
    assert str(source) in {a.path for a in read_log(log, ignored=())}


def test_chdir_relative_paths_writes_and_forks(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "data.txt").write_text("x")
    script = (
        "import os, subprocess\n"
        "os.chdir('sub') if os.path.isdir('sub') else None\n"
        "open('data.txt').read()\n"              # relative to the start directory
        "os.path.exists('no-such-file')\n"        # a missing relative path
        "open('written.txt', 'w').write('y')\n"   # the program's own write: dropped
        "os.mkdir('made')\n"                      # dropped
        "os.chdir('/usr/share')\n"
        "os.stat('common-licenses/GPL-3')\n"      # relative to the new directory
        "os.listdir('/usr/share/common-licenses')\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    os.stat('zoneinfo-or-not')\n"        # the child inherits the cwd
        "    os._exit(0)\n"
        "os.waitpid(pid, 0)\n"
    )
    log = _trace(tmp_path, [sys.executable, "-c", script], cwd=work)
    accesses = read_log(log, cwd=str(work), ignored=())
    by_path = summarize(accesses)
    assert by_path[str(work / "data.txt")].outcome is Outcome.FOUND
    assert by_path[str(work / "no-such-file")].outcome is Outcome.MISSING
    assert str(work / "written.txt") not in by_path
    assert str(work / "made") not in by_path
    assert by_path["/usr/share/common-licenses/GPL-3"].outcome is Outcome.FOUND
    assert by_path["/usr/share/common-licenses"].directory
    child = by_path["/usr/share/zoneinfo-or-not"]
    assert child.outcome is Outcome.MISSING
    parent_pid = by_path[str(work / "data.txt")].pid
    assert child.pid != parent_pid


def test_follow_exec_keeps_the_program_and_its_children(tmp_path: Path) -> None:
    inner = ["/bin/sh", "-c", "cat /etc/hostname >/dev/null; test -e /etc/no-such-file; true"]
    script = f"import subprocess; open('/etc/os-release').read(); subprocess.run({inner!r})"
    log = _trace(tmp_path, [sys.executable, "-c", script])
    everything = {a.path for a in read_log(log)}
    assert "/etc/os-release" in everything and "/etc/hostname" in everything
    followed = read_log(log, follow_exec=inner)
    paths = {a.path: a for a in followed}
    assert followed[0].path == "/bin/sh" and followed[0].outcome is Outcome.EXECUTED
    assert "/etc/os-release" not in paths            # before the exec, by the parent
    assert paths["/etc/hostname"].outcome is Outcome.FOUND     # by the forked cat
    assert any(a.path.endswith("/cat") and a.outcome is Outcome.EXECUTED for a in followed)
    assert paths["/etc/no-such-file"].outcome is Outcome.MISSING
    assert len({a.pid for a in followed}) >= 2
    # no such exec: nothing
    assert read_log(log, follow_exec=["/bin/sh", "-c", "other"]) == []


def test_escaped_file_names_round_trip(tmp_path: Path) -> None:
    name = 'quote"back\\slash tab\tnew\nline \u00e9\xff'
    odd = tmp_path / os.fsdecode(name.encode("utf-8", "surrogateescape"))
    odd.write_text("x")
    raw = os.fsencode(str(tmp_path)) + b"/latin1-\xe9"
    with open(raw, "wb") as handle:
        handle.write(b"x")
    script = f"import os; os.stat({str(odd)!r}); os.stat({raw!r}); os.path.exists({str(odd) + '-missing'!r})"
    log = _trace(tmp_path, [sys.executable, "-c", script])
    by_path = summarize(read_log(log, ignored=()))
    assert by_path[str(odd)].outcome is Outcome.FOUND
    assert by_path[os.fsdecode(raw)].outcome is Outcome.FOUND
    assert by_path[str(odd) + "-missing"].outcome is Outcome.MISSING


def test_unfinished_and_resumed_lines_are_joined() -> None:
    # strace 6.1's format when two processes interleave (pids as --decode-pids=pidns prints them)
    log = [
        '101 execve("/usr/bin/prog", ["prog"], 0x7ffd /* 3 vars */) = 0\n',
        '101 openat(AT_FDCWD, "/usr/lib/a.so", O_RDONLY|O_CLOEXEC <unfinished ...>\n',
        '102 newfstatat(AT_FDCWD, "/etc/b", <unfinished ...>\n',
        '101 <... openat resumed>)             = 3\n',
        '102 <... newfstatat resumed>0x7ffc, 0) = -1 ENOENT (No such file or directory)\n',
        '101 clone(child_stack=NULL, flags=CLONE_CHILD_CLEARTID|SIGCHLD <unfinished ...>\n',
        '101 <... clone resumed>, child_tidptr=0x7f) = 5 /* 103 in strace\'s PID NS */\n',
        '103 openat(AT_FDCWD, "rel", O_RDONLY) = 3\n',
        '103 openat(4, "x", O_RDONLY)  = -1 ENOENT (No such file or directory)\n',
        '103 openat(AT_FDCWD, "/var/out", O_WRONLY|O_CREAT|O_TRUNC, 0666) = 4\n',
        '101 newfstatat(3, "", {st_mode=S_IFREG|0644, st_size=1, ...}, AT_EMPTY_PATH) = 0\n',
        '101 access("/etc/x", R_OK)  = -1 EACCES (Permission denied)\n',
        '101 --- SIGCHLD {si_signo=SIGCHLD, si_code=CLD_EXITED, si_pid=103} ---\n',
        '101 +++ exited with 0 +++\n',
    ]
    accesses = parse_accesses(log, cwd="/srv", follow_exec=["prog"])
    got = [(a.pid, a.path, a.outcome.value, a.errno) for a in accesses]
    assert got == [
        (101, "/usr/bin/prog", "executed", None),
        (101, "/usr/lib/a.so", "found", None),
        (103, "/srv/rel", "found", None),
        (101, "/etc/x", "failed", "EACCES"),
    ]  # pid 102 is no child of prog; the dirfd lookup, the write and the fd stat are dropped
    assert [a.path for a in parse_accesses(log)][:3] == ["/usr/bin/prog", "/usr/lib/a.so", "/etc/b"]


def test_a_child_logged_before_its_parents_clone_resumes_inherits_the_cwd() -> None:
    # strace -f when the scheduler runs the child first: the child's calls come
    # before the line that says which pid the clone made
    log = [
        '201 execve("/usr/bin/prog", ["prog"], 0x7ffd /* 3 vars */) = 0\n',
        '201 chdir("/usr/share")               = 0\n',
        '201 clone(child_stack=NULL, flags=CLONE_CHILD_CLEARTID|SIGCHLD <unfinished ...>\n',
        '202 newfstatat(AT_FDCWD, "zoneinfo-or-not", 0x7ffc, 0) = -1 ENOENT (No such file or directory)\n',
        '202 chdir("/etc")                     = 0\n',
        '201 <... clone resumed>, child_tidptr=0x7f) = 202\n',
        '202 newfstatat(AT_FDCWD, "hosts", 0x7ffc, 0) = 0\n',
        '201 newfstatat(AT_FDCWD, "misc", 0x7ffc, 0) = 0\n',
    ]
    got = [(a.pid, a.path) for a in parse_accesses(log, cwd="/srv")]
    assert got == [(201, "/usr/bin/prog"), (202, "/usr/share/zoneinfo-or-not"), (202, "/etc/hosts"),
                   (201, "/usr/share/misc")]


def test_string_and_argument_helpers() -> None:
    assert decode_string(r'"a\"b\\c\n\x41\303\251"') == 'a"b\\c\nA\u00e9'
    assert decode_string("AT_FDCWD") is None
    assert decode_string('"trunc"...') == "trunc"
    args, tail = split_args('AT_FDCWD, "a, (b)", {x=[1, 2]}, 0) = 3')
    assert args == ["AT_FDCWD", '"a, (b)"', "{x=[1, 2]}", "0"]
    assert tail == " = 3"
