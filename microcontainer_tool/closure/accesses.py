"""What a program tried to open, stat and execute, read from an ``strace`` log.

A pure parser: no process is run here (:mod:`~microcontainer_tool.runtime.tracer`
runs programs under ``strace``). :func:`parse_accesses` reads a log written by
``strace -f -qq -s 4096 --decode-pids=pidns -e trace=%file,%process -o LOG``
and returns one :class:`Access` per path lookup the program made, with its
outcome: found, missing (``ENOENT``/``ENOTDIR``), failed otherwise, or executed.

What it understands:

- ``-f`` pid prefixes, and syscalls split into ``... <unfinished ...>`` and
  ``<... NAME resumed> ...`` lines (joined per pid);
- ``openat(AT_FDCWD, "path", ...)``, ``newfstatat``, ``statx``, ``faccessat2``,
  ``readlinkat``, ``execve``/``execveat`` and their older one-path forms;
- strace's string escapes (``\\"``, ``\\n``, ``\\x41``, octal ``\\303``), decoded
  as bytes and then as file names (``os.fsdecode``);
- relative paths, resolved against each process's working directory, which
  starts at ``cwd`` and follows successful ``chdir`` calls and is inherited by
  children (``fchdir`` cannot be followed without fd decoding: a relative path
  after it resolves against the last known directory). A relative path given
  with a real directory fd (``openat(5, "x")``) is dropped: the fd is not known;
- ``follow_exec``: keep only what one program did — from the successful
  ``execve`` whose argv is exactly ``follow_exec`` on, plus every process that
  program forked (clone return values, translated to strace's pid namespace by
  ``--decode-pids=pidns`` when the program runs in a container).

What it drops: the program's own writes (opens with ``O_WRONLY``, ``O_RDWR``,
``O_CREAT``, ``O_TRUNC``, and every syscall that is not a lookup: ``mkdir``,
``unlink``, ``rename``...), lookups of an fd (``newfstatat(3, "", ...)``), and
paths under ``IGNORED_PREFIXES`` (kernel file systems and run-time mounts).
"""

from __future__ import annotations

import enum
import os
import posixpath
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

#: Paths that are never part of an image: kernel file systems and run-time mounts.
IGNORED_PREFIXES = ("/proc", "/sys", "/dev", "/write", "/read", "/run", "/tmp")

_WRITE_FLAGS = ("O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC", "O_TMPFILE")
_MISSING_ERRNOS = ("ENOENT", "ENOTDIR")

#: syscall -> (index of the dirfd argument or None, index of the path argument)
_LOOKUPS: dict[str, tuple[int | None, int]] = {
    "open": (None, 0), "openat": (0, 1), "openat2": (0, 1),
    "stat": (None, 0), "lstat": (None, 0), "stat64": (None, 0), "lstat64": (None, 0),
    "newfstatat": (0, 1), "fstatat64": (0, 1), "statx": (0, 1),
    "access": (None, 0), "faccessat": (0, 1), "faccessat2": (0, 1),
    "readlink": (None, 0), "readlinkat": (0, 1),
    "execve": (None, 0), "execveat": (0, 1),
    "statfs": (None, 0), "statfs64": (None, 0),
    "getxattr": (None, 0), "lgetxattr": (None, 0), "listxattr": (None, 0), "llistxattr": (None, 0),
    "chdir": (None, 0),
}
_OPENS = ("open", "openat", "openat2")
_EXECS = ("execve", "execveat")
_FORKS = ("clone", "clone3", "fork", "vfork")

_LINE_RE = re.compile(r"(?:\[pid\s+)?(\d+)\]?\s+(.*)")
_RESUMED_RE = re.compile(r"<\.\.\. (\w+) resumed>(.*)")
_CALL_RE = re.compile(r"(\w+)\(")
_RESULT_RE = re.compile(r"\s*=\s*(-?\d+|0x[0-9a-fA-F]+|\?)(?:<[^>]*>)?"
                        r"(?:\s*/\* (\d+) in strace's PID NS \*/)?(?:\s+(E[A-Z0-9]+)\b)?")
_ESCAPES = {"n": b"\n", "t": b"\t", "r": b"\r", "v": b"\v", "f": b"\f", "a": b"\a", "b": b"\b",
            "\\": b"\\", '"': b'"', "'": b"'", "?": b"?"}


class Outcome(enum.Enum):
    """What a lookup came to."""

    FOUND = "found"
    """The path exists (opened, stat'ed, readable link...)."""
    MISSING = "missing"
    """``ENOENT`` or ``ENOTDIR``: the path is not there."""
    FAILED = "failed"
    """Another error (``EACCES``, ``ELOOP``...): the path may exist."""
    EXECUTED = "executed"
    """A successful ``execve``."""


@dataclass(frozen=True)
class Access:
    """One path lookup of the traced program.

    Attributes:
        path: absolute, normalized path as the program saw it (not resolved through symlinks).
        outcome: what came of it.
        syscall: the system call (``openat``, ``newfstatat``, ``execve``...).
        pid: the process (strace's pid namespace).
        errno: the error name for ``MISSING``/``FAILED`` (``ENOENT``...), else None.
        directory: the program opened it as a directory (``O_DIRECTORY``: it lists it).
    """

    path: str
    outcome: Outcome
    syscall: str
    pid: int
    errno: str | None = None
    directory: bool = False


@dataclass(frozen=True)
class _Call:
    pid: int
    name: str
    args: list[str]
    result: str
    translated: str | None
    errno: str | None


def decode_string(literal: str) -> str | None:
    """A file name from a strace string literal (``"..."``), escapes decoded; None if not a string.

    A truncated string (``"abc"...``) is returned as far as it was printed.
    """
    if not literal.startswith('"'):
        return None
    out = bytearray()
    i, end = 1, len(literal)
    while i < end:
        char = literal[i]
        if char == '"':
            break
        if char != "\\":
            out += char.encode("utf-8", "surrogateescape")
            i += 1
            continue
        nxt = literal[i + 1] if i + 1 < end else ""
        if nxt == "x":
            digits = re.match(r"[0-9a-fA-F]{1,2}", literal[i + 2:])
            if digits:
                out.append(int(digits.group(), 16))
                i += 2 + len(digits.group())
                continue
        octal = re.match(r"[0-7]{1,3}", literal[i + 1:])
        if octal:
            out.append(int(octal.group(), 8) & 0xFF)
            i += 1 + len(octal.group())
            continue
        out += _ESCAPES.get(nxt, nxt.encode())
        i += 2
    return os.fsdecode(bytes(out))


def split_args(text: str) -> tuple[list[str], str]:
    """Split a syscall's argument text (after ``NAME(``) at top-level commas.

    Returns:
        The arguments (stripped) and the text after the closing parenthesis.
    """
    args: list[str] = []
    depth = 0
    current: list[str] = []
    i, end = 0, len(text)
    while i < end:
        char = text[i]
        if char == '"':  # a string: skip to its closing quote
            j = i + 1
            while j < end and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            current.append(text[i:j + 1])
            i = j + 1
            continue
        if char in "([{":
            depth += 1
        elif char in ")]}":
            if depth == 0 and char == ")":
                args.append("".join(current).strip())
                return [a for a in args if a], text[i + 1:]
            depth -= 1
        elif char == "," and depth == 0:
            args.append("".join(current).strip())
            current = []
            i += 1
            continue
        current.append(char)
        i += 1
    args.append("".join(current).strip())
    return [a for a in args if a], ""


def _calls(lines: Iterable[str]) -> list[_Call]:
    """Complete syscalls in log order (an unfinished call counts where it resumes)."""
    pending: dict[int, str] = {}
    calls: list[_Call] = []
    for raw in lines:
        line = raw.rstrip("\n")
        match = _LINE_RE.match(line)
        if match is None:
            continue
        pid, rest = int(match.group(1)), match.group(2)
        if rest.startswith(("---", "+++")):
            continue
        resumed = _RESUMED_RE.match(rest)
        if resumed is not None:
            rest = pending.pop(pid, resumed.group(1) + "(") + resumed.group(2)
        if rest.endswith("<unfinished ...>"):
            pending[pid] = rest[: -len("<unfinished ...>")].rstrip()
            if not pending[pid].endswith(("(", ",")):
                pending[pid] += ","
            continue
        call = _CALL_RE.match(rest)
        if call is None:
            continue
        args, tail = split_args(rest[call.end():])
        result = _RESULT_RE.match(tail)
        if result is None:
            continue
        calls.append(_Call(pid, call.group(1), args, result.group(1), result.group(2), result.group(3)))
    return calls


def _argv(arg: str) -> list[str] | None:
    if not (arg.startswith("[") and arg.endswith("]")):
        return None
    items, _ = split_args(arg[1:-1] + ")")
    decoded = [decode_string(item) for item in items]
    return None if any(item is None for item in decoded) else [d for d in decoded if d is not None]


def _followed(calls: list[_Call], follow_exec: Sequence[str] | None) -> tuple[set[int], int]:
    """The pids to keep and the index of the call where the followed program starts."""
    if follow_exec is None:
        return {call.pid for call in calls}, 0
    wanted = list(follow_exec)
    start = -1
    for index, call in enumerate(calls):
        if call.name in _EXECS and call.result == "0" and len(call.args) > 2:
            if _argv(call.args[2 if call.name == "execveat" else 1]) == wanted:
                start = index
                break
    if start < 0:
        return set(), len(calls)
    kept = {calls[start].pid}
    children: dict[int, set[int]] = {}
    for call in calls[start:]:
        if call.name in _FORKS and call.errno is None and call.result.isdigit():
            children.setdefault(call.pid, set()).add(int(call.translated or call.result))
    todo = list(kept)
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in kept:
                kept.add(child)
                todo.append(child)
    return kept, start


def _flags(call: _Call) -> str:
    if call.name == "openat2":
        return call.args[2] if len(call.args) > 2 else ""
    index = 1 if call.name == "open" else 2
    return call.args[index] if len(call.args) > index else ""


def parse_accesses(lines: Iterable[str], cwd: str = "/", follow_exec: Sequence[str] | None = None,
                   ignored: Sequence[str] = IGNORED_PREFIXES) -> list[Access]:
    """The path lookups an strace log records, in log order.

    Args:
        lines: the log (``strace -f -o LOG``, with or without ``--decode-pids=pidns``).
        cwd: the working directory of the first process (relative paths resolve against it).
        follow_exec: keep only the program started by the first successful
            ``execve`` with exactly this argv, and its children.
        ignored: path prefixes to drop (a prefix covers itself and what is below it).

    Returns:
        One :class:`Access` per lookup; duplicates kept (see :func:`summarize`).
    """
    calls = _calls(lines)
    kept, start = _followed(calls, follow_exec)
    # A child's first calls can be logged before its parent's clone resumes
    # (the scheduler ran the child first): the child is known by the clone's
    # result, and while the parent waits in clone its directory cannot change.
    parents = {int(c.translated or c.result): c.pid for c in calls
               if c.name in _FORKS and c.errno is None and c.result.isdigit()}
    cwds: dict[int, str] = {}

    def cwd_of(pid: int) -> str:
        chain = []
        while pid not in cwds and pid in parents and pid not in chain:
            chain.append(pid)
            pid = parents[pid]
        here = cwds.get(pid, cwd)
        for child in chain:
            cwds[child] = here
        return here

    accesses: list[Access] = []
    for index, call in enumerate(calls):
        if call.pid not in kept or index < start:
            continue
        here = cwd_of(call.pid)
        if call.name in _FORKS and call.errno is None and call.result.isdigit():
            cwds.setdefault(int(call.translated or call.result), here)
            continue
        spec = _LOOKUPS.get(call.name)
        if spec is None or len(call.args) <= spec[1]:
            continue
        dirfd_index, path_index = spec
        name = decode_string(call.args[path_index])
        if not name:
            continue  # an fd lookup (AT_EMPTY_PATH) or no path
        if not name.startswith("/"):
            if dirfd_index is not None and call.args[dirfd_index] != "AT_FDCWD":
                continue
            name = posixpath.join(here, name)
        path = posixpath.normpath(name)
        if path.startswith("//"):
            path = "/" + path.lstrip("/")
        if call.name == "chdir":
            if call.errno is None:
                cwds[call.pid] = path
            continue
        flags = _flags(call) if call.name in _OPENS else ""
        if any(flag in flags for flag in _WRITE_FLAGS):
            continue
        if any(path == prefix or path.startswith(prefix + "/") for prefix in ignored):
            continue
        if call.errno is not None:
            outcome = Outcome.MISSING if call.errno in _MISSING_ERRNOS else Outcome.FAILED
        elif call.name in _EXECS:
            outcome = Outcome.EXECUTED
        else:
            outcome = Outcome.FOUND
        accesses.append(Access(path, outcome, call.name, call.pid, call.errno,
                               directory="O_DIRECTORY" in flags))
    return accesses


def summarize(accesses: Iterable[Access]) -> dict[str, Access]:
    """One access per path: the most telling one (executed > found > failed > missing).

    A path first missing and later found (a file the program created, or found
    through another spelling) counts as found; a directory opened for listing
    anywhere keeps ``directory`` set.
    """
    rank = {Outcome.EXECUTED: 3, Outcome.FOUND: 2, Outcome.FAILED: 1, Outcome.MISSING: 0}
    best: dict[str, Access] = {}
    for access in accesses:
        old = best.get(access.path)
        if old is None or rank[access.outcome] > rank[old.outcome]:
            chosen = access
        else:
            chosen = old
        if old is not None and (old.directory or access.directory) and not chosen.directory:
            chosen = Access(chosen.path, chosen.outcome, chosen.syscall, chosen.pid, chosen.errno, True)
        best[access.path] = chosen
    return best
