"""Running a command under ``strace`` to learn which files it looks up.

:func:`strace_prefix` is the command line that, put before a command, traces
it and every process it forks into a log; :func:`read_log` parses that log with
:func:`~microcontainer_tool.closure.accesses.parse_accesses`. Traced from the
host, ``runc run`` is followed into the container: paths in the log are as the
container sees them, and ``--decode-pids=pidns`` gives the container's
processes host pids, so a program's forks can be followed
(``follow_exec``). ``--seccomp-bpf`` makes the kernel stop only at the traced
system calls, so the runtime's own (Go) threads run at full speed.

:func:`trace_root` runs a command that way in a plain directory tree (a
sysroot) instead of an image: ``microcontainer trace``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass

from microcontainer_tool.closure.accesses import IGNORED_PREFIXES, Access, parse_accesses
from microcontainer_tool.errors import RunError
from microcontainer_tool.runtime.bundle import Bundle
from microcontainer_tool.runtime.containers import default_state_dir, run

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


@dataclass(frozen=True)
class TraceRun:
    """A command traced in a directory tree.

    Attributes:
        args: the command.
        exit_code: its exit status (128 + N when killed by signal N).
        accesses: its lookups and those of its children.
    """

    args: list[str]
    exit_code: int
    accesses: list[Access]


def trace_root(root: str, args: Sequence[str], *, user: str, cache_dir: str, env: Sequence[str] = (),
               cwd: str = "/", net: str = "none", read_dir: str | None = None,
               state_dir: str | None = None, label: str | None = None) -> TraceRun:
    """Run ``args`` as a microcontainer whose root is the directory ``root``, under strace.

    The container is the one an image gets (read-only root, no capabilities,
    tmpfs ``/tmp`` and ``/run``, own namespaces, no network unless ``net`` is
    ``"host"``), with ``root`` as it is for its root filesystem: bound under the
    container's state directory, so even ``/`` can be it. The program's
    standard output goes to our standard error.

    Args:
        root: host directory (a sysroot).
        args: the command (``args[0]`` is looked up in ``PATH``).
        user: ``UID:GID`` (or names known to ``root``'s ``/etc/passwd``).
        cache_dir: the tool's cache.
        env: ``NAME=VALUE`` entries (``PATH`` defaults to the usual one).
        cwd: the working directory.
        net: ``"none"`` or ``"host"``.
        read_dir: host directory mounted read-only at ``/read`` (``root`` must
            have that directory: nothing is created in it).
        state_dir: container state (default :func:`~.containers.default_state_dir`).
        label: how messages name the root (default ``sysroot:ROOT``).

    Raises:
        RunError: not root, no runc or strace, the command is empty or the
            container could not start, or the trace shows no exec of the command.
    """
    if not args:
        raise RunError("the command to trace is empty")
    name = label or f"sysroot:{root}"
    if read_dir is not None and not os.path.isdir(os.path.join(root, "read")):
        raise RunError(f"--read: {name} has no /read directory to mount {read_dir} on (its root stays "
                       "read-only); give the program files that are in the sysroot")
    config = {"config": {"User": user, "Env": list(env), "WorkingDir": cwd}}
    bundle = Bundle(name, "", os.path.realpath(root), config)
    with tempfile.TemporaryDirectory(prefix="mct-trace-") as temp:
        log = os.path.join(temp, "strace.log")
        code = run(name, state_dir=state_dir or default_state_dir(), cache_dir=cache_dir, bundle=bundle,
                   wrapper=strace_prefix(log), stdout=2, args=list(args), read_dir=read_dir, net=net)
        accesses = read_log(log, cwd=cwd, follow_exec=list(args))
    if not accesses:
        raise RunError(f"trace `{' '.join(args)}`: the trace shows no exec of the command "
                       f"(is it in {name}'s PATH?)")
    return TraceRun(list(args), code, accesses)
