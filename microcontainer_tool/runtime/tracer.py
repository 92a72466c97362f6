"""Running a command under ``strace`` to learn which files it looks up.

:func:`strace_prefix` is the command line that, put before a command, traces
it and every process it forks into a log; :func:`read_log` parses that log with
:func:`~microcontainer_tool.closure.accesses.parse_accesses`. Traced from the
host, ``runc run`` is followed into the container: paths in the log are as the
container sees them, and ``--decode-pids=pidns`` gives the container's
processes host pids, so a program's forks can be followed
(``follow_exec``). ``--seccomp-bpf`` makes the kernel stop only at the traced
system calls, so the runtime's own (Go) threads run at full speed.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence

from microcontainer_tool.closure.accesses import IGNORED_PREFIXES, Access, parse_accesses
from microcontainer_tool.errors import RunError

TRACED_CALLS = "trace=%file,%process"
"""What is traced: every syscall taking a file name, and process creation (to follow forks)."""


def strace_binary() -> str:
    """The ``strace`` program.

    Raises:
        RunError: strace is not installed.
    """
    path = shutil.which("strace")
    if path is None:
        raise RunError("strace not found: install it (Debian/Fedora package 'strace') to trace or probe")
    return path


def strace_prefix(log: str) -> list[str]:
    """The command line that runs what follows it under strace, logging to ``log``.

    Raises:
        RunError: strace is not installed.
    """
    return [strace_binary(), "-f", "-qq", "--seccomp-bpf", "-s", "4096", "--decode-pids=pidns",
            "-e", TRACED_CALLS, "-o", log]


def read_log(log: str, cwd: str = "/", follow_exec: Sequence[str] | None = None,
             ignored: Sequence[str] = IGNORED_PREFIXES) -> list[Access]:
    """The lookups recorded in an strace log (see :func:`~.accesses.parse_accesses`).

    Raises:
        RunError: the log cannot be read.
    """
    try:
        with open(log, encoding="utf-8", errors="surrogateescape") as handle:
            return parse_accesses(handle, cwd=cwd, follow_exec=follow_exec, ignored=ignored)
    except OSError as error:
        raise RunError(f"{log}: cannot read the trace: {error.strerror or error}") from None
