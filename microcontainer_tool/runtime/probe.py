"""Probing an image: run a command in it, traced, and name the files it lacks.

:func:`probe_image` runs the image as a microcontainer (read-only root, no
network, its own user) under ``strace`` (:mod:`~microcontainer_tool.runtime.tracer`),
keeps the lookups of the probe command and its children
(:func:`~microcontainer_tool.closure.accesses.parse_accesses` with
``follow_exec``) and compares them with the sysroot the image was built from:
every path the program looked for in vain that the sysroot has is reported
(:class:`MissingFile`), with its owner package and the spec entry that adds it.

What is and is not reported is decided by
:func:`~microcontainer_tool.closure.proposals.propose`, shared with ``trace``
(lookups that fail in the sysroot too, such as the loader's ``glibc-hwcaps``
probing, are not; a directory the program *listed* is, whole).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from microcontainer_tool.closure.accesses import Access, Outcome
from microcontainer_tool.closure.proposals import MissingFile, Owners, proposal_lines, propose
from microcontainer_tool.errors import RunError
from microcontainer_tool.runtime.containers import default_state_dir, run
from microcontainer_tool.runtime.tracer import read_log, strace_prefix
from microcontainer_tool.sources.sysroot import SysRoot


@dataclass
class ProbeReport:
    """What a probe found.

    Attributes:
        args: the probe command.
        exit_code: its exit status (128 + N when killed by signal N).
        missing: the files the image lacks, sorted by path.
        lookups: how many distinct paths the program looked up.
    """

    args: list[str]
    exit_code: int
    missing: list[MissingFile] = field(default_factory=list)
    lookups: int = 0

    @property
    def passed(self) -> bool:
        """The command succeeded and looked for nothing the sysroot would have given it."""
        return self.exit_code == 0 and not self.missing

    def lines(self) -> list[str]:
        """The human-readable report: one line per missing file, then the spec entries to add."""
        command = " ".join(self.args)
        out = [f"probe `{command}`: exit status {self.exit_code}, {self.lookups} paths looked up"]
        if not self.missing:
            return out
        out.append(f"probe: {len(self.missing)} paths the program looked for are in the sysroot "
                   "but not in the image:")
        return out + proposal_lines(self.missing, "probe: add to the spec:")


def missing_files(accesses: Iterable[Access], sysroot: SysRoot, owners: Owners) -> list[MissingFile]:
    """The paths looked for in vain that ``sysroot`` has, with owner and spec key, sorted by path."""
    return propose(accesses, sysroot, owners, lambda access: access.outcome is Outcome.MISSING)


def probe_image(image: str, args: Sequence[str], sysroot: SysRoot, owners: Owners, *, cache_dir: str,
                cwd: str = "/", state_dir: str | None = None, read_dir: str | None = None,
                tag: str | None = None) -> ProbeReport:
    """Run ``args`` in ``image`` traced and report what it missed (see the module docstring).

    The container has a read-only root, no network and the image's user;
    ``read_dir`` is mounted at ``/read``. The program's standard output goes to
    our standard error, so a build's own output stays clean.

    Args:
        image: the built image (an OCI layout ``DIR[:TAG]`` or an archive).
        args: the probe command (``args[0]`` is looked up in the image's ``PATH``).
        sysroot: the root the image was built from.
        owners: package owners of sysroot paths (:func:`dpkg_owners`, :func:`table_owners`).
        cache_dir: the tool's cache (the unpacked image goes there).
        cwd: the image's working directory (relative paths resolve against it).
        state_dir: container state (default :func:`~.containers.default_state_dir`).
        read_dir: host directory mounted read-only at ``/read``.
        tag: the image to pick when the layout holds several.

    Raises:
        RunError: not root, no runc or strace, or the container could not start.
    """
    if not args:
        raise RunError("the probe command is empty")
    with tempfile.TemporaryDirectory(prefix="mct-probe-") as temp:
        log = os.path.join(temp, "strace.log")
        code = run(image, state_dir=state_dir or default_state_dir(), cache_dir=cache_dir, tag=tag,
                   wrapper=strace_prefix(log), stdout=2, args=list(args), read_dir=read_dir)
        accesses = read_log(log, cwd=cwd, follow_exec=list(args))
    if not accesses:
        raise RunError(f"probe `{' '.join(args)}`: the trace shows no exec of the command "
                       "(is it in the image's PATH?)")
    return ProbeReport(list(args), code, missing_files(accesses, sysroot, owners),
                       len({access.path for access in accesses}))
