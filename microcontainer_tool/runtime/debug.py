"""Debugging running microcontainers, crashcart-style.

A microcontainer has no shell and no tools. :func:`debug` side-loads a
read-only *toolbox* of static binaries (:mod:`microcontainer_tool.runtime.toolbox`)
into a running container at ``/dev/crashcart`` and runs a command (default: an
interactive ``sh``) inside the container's namespaces, with ``PATH`` extended by
the toolbox. The image, and the container's read-only root, are never touched.

How the toolbox gets in: a bind mount cannot name a host path from inside the
container's mount namespace (the host tree is not there after ``pivot_root``),
and ``mount --bind /proc/PID/root/...`` across namespaces is refused
(``EINVAL``). So the toolbox is cloned on the host with ``open_tree(2)`` into a
*detached* mount (read-only, nosuid, nodev; idmapped like the container's
volumes when the container has a user namespace), and a forked child that
joined the container's mount namespace attaches it with ``move_mount(2)``. The
mount point is created on the container's ``/dev`` tmpfs by a child that joined
the container's user namespace too (a tmpfs owned by a user namespace refuses
inodes owned by ids it does not map). On exit the mount is detached and the
directory removed. A toolbox mounted at start (``run(..., debug=True)``) or by
another debug session is reused and left in place.

The command is run by our own ``setns``/``fork``/``exec`` rather than
``nsenter -p``: ``nsenter``'s waiting parent dies on Ctrl-C, which would let us
remove the toolbox under a still-running shell. The command runs as root of the
container's user namespace (host uid 100000 with a user namespace; host root
confined to the container's namespaces without one, as crashcart did).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from typing import Any, TextIO

from microcontainer_tool.errors import MicrocontainerError, RunError
from microcontainer_tool.hostfs.cachedir import default_cache_dir
from microcontainer_tool.runtime.namespaces import (
    attach_tree,
    clone_for_container,
    detach_mount,
    enter_namespaces,
    fork_call,
    host_id_map,
)
from microcontainer_tool.runtime.targets import Target, our_container
from microcontainer_tool.runtime.toolbox import CRASHCART
from microcontainer_tool.runtime.toolboxbuilder import resolve_toolbox

TOOLBOX_PATH = [f"{CRASHCART}/{sub}" for sub in ("bin", "sbin", "usr/bin", "usr/sbin")]
"""Toolbox directories put first in the debug command's ``PATH``."""

_NAMESPACES = ("user", "mnt", "uts", "ipc", "net", "pid")
_INTERRUPTS = (signal.SIGINT, signal.SIGQUIT)


def toolbox_mounted(pid: int) -> bool:
    """Whether something is mounted at ``/dev/crashcart`` in ``pid``'s mount namespace."""
    try:
        with open(f"/proc/{pid}/mountinfo", encoding="utf-8", errors="replace") as handle:
            return any(len(fields) > 4 and fields[4] == CRASHCART
                       for fields in (line.split() for line in handle))
    except OSError:
        return False


def _own_userns(pid: int) -> bool:
    return os.stat(f"/proc/{pid}/ns/user").st_ino != os.stat("/proc/self/ns/user").st_ino


def attach_toolbox(pid: int, source: str) -> None:
    """Mount the host directory ``source`` read-only at ``/dev/crashcart`` in ``pid``'s mount namespace.

    Raises:
        RunError: the mount point or the mount could not be made.
    """
    userns = _own_userns(pid)

    def make_point() -> None:
        enter_namespaces(pid, ("user", "mnt"))
        try:
            os.mkdir(CRASHCART, 0o755)
        except FileExistsError:
            pass

    fork_call(make_point, f"{CRASHCART}: cannot create the mount point")
    try:
        fd, _ = clone_for_container(source, host_id_map() if userns else None, readonly=True)
    except OSError as error:
        raise RunError(f"{source}: cannot clone the toolbox: {error}") from None
    try:
        def attach() -> None:
            enter_namespaces(pid, ("mnt",))
            attach_tree(fd, CRASHCART)

        fork_call(attach, f"{CRASHCART}: cannot mount the toolbox")
    finally:
        os.close(fd)


def detach_toolbox(pid: int) -> None:
    """Unmount ``/dev/crashcart`` in ``pid``'s mount namespace and remove the mount point.

    Nothing happens if the container is gone.
    """
    if not os.path.exists(f"/proc/{pid}/ns/mnt"):
        return

    def unmount() -> None:
        enter_namespaces(pid, ("mnt",))
        detach_mount(CRASHCART)

    def remove_point() -> None:
        enter_namespaces(pid, ("user", "mnt"))
        try:
            os.rmdir(CRASHCART)
        except FileNotFoundError:
            pass

    try:
        fork_call(unmount, f"{CRASHCART}: cannot unmount the toolbox")
        fork_call(remove_point, f"{CRASHCART}: cannot remove the mount point")
    except RunError:
        if os.path.exists(f"/proc/{pid}/ns/mnt"):
            raise


def _debug_env(container_env: list[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in container_env:
        name, sep, value = item.partition("=")
        if sep:
            env[name] = value
    env["PATH"] = ":".join(TOOLBOX_PATH + [p for p in env.get("PATH", "").split(":") if p])
    env.setdefault("HOME", "/")
    if os.environ.get("TERM"):
        env["TERM"] = os.environ["TERM"]
    return env


def exec_in_container(pid: int, argv: Sequence[str], env: dict[str, str]) -> int:
    """Run ``argv`` inside ``pid``'s namespaces (user, mount, uts, ipc, net, pid) and root; wait.

    Standard input, output and error are ours. Ctrl-C reaches the command, not us.

    Returns:
        The command's exit code (128 + N if killed by signal N, 127 if not found).

    Raises:
        RunError: the namespaces could not be entered.
    """
    interrupts = (signal.SIGINT, signal.SIGQUIT)

    def child() -> int:
        enter_namespaces(pid, _NAMESPACES)
        grandchild = os.fork()  # joins the pid namespace
        if grandchild == 0:  # pragma: no cover - runs in the container
            try:
                for signum in interrupts:
                    signal.signal(signum, signal.SIG_DFL)
                os.execvpe(argv[0], list(argv), env)
            except OSError as error:
                os.write(2, f"debug: {argv[0]}: {error.strerror or error}\n".encode())
                os._exit(127)
            os._exit(127)
        _, status = os.waitpid(grandchild, 0)
        code = os.waitstatus_to_exitcode(status)
        return code if code >= 0 else 128 - code

    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        previous = {signum: signal.signal(signum, signal.SIG_IGN) for signum in interrupts}
    try:
        return fork_call(child, f"cannot enter the namespaces of pid {pid}")
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


MODES = ("enter", "exec", "mount", "unmount")
"""``debug`` modes: enter the namespaces (default), exec through the runtime, mount only, unmount."""


def debug_target(target: Target, toolbox: str | None = None, command: Sequence[str] | None = None, *,
                 cache_dir: str | None = None, mode: str = "enter", toolbox_root: str | None = None,
                 out: TextIO | None = None) -> int:
    """Debug ``target`` with the toolbox at ``/dev/crashcart``.

    Args:
        target: the process (see :mod:`~microcontainer_tool.runtime.targets`).
        toolbox: ``--toolbox`` (see :func:`~.toolboxbuilder.resolve_toolbox`; None: the default).
            Ignored when a toolbox is already mounted.
        command: what to run (default: ``sh``), looked up in the toolbox first.
        cache_dir: where toolboxes are built (default: the tool's cache).
        mode: ``enter``: our own setns/fork/exec into its namespaces (root of its user
            namespace, full capabilities there); ``exec``: through its runtime (``runc
            exec``, ``podman exec``: the container's user and restrictions); ``mount``:
            mount the toolbox and leave it; ``unmount``: remove a left toolbox.
        toolbox_root: ``--toolbox-root``: the sysroot or image toolbox programs come from.
        out: where ``mount``/``unmount`` report (default: stdout).

    Returns:
        The command's exit code (0 for ``mount``/``unmount``).

    Raises:
        RunError: not root, no toolbox, or ``exec`` for a target without a runtime.
    """
    if os.geteuid() != 0:
        raise RunError("debugging containers needs root")
    if mode not in MODES:
        raise RunError(f"unknown debug mode {mode!r}")
    report = out or sys.stdout
    pid = target.pid
    if mode == "unmount":
        if toolbox_mounted(pid):
            detach_toolbox(pid)
            print(f"{target.label}: toolbox unmounted from {CRASHCART}", file=report)
        else:
            print(f"{target.label}: no toolbox at {CRASHCART}", file=report)
        return 0
    if mode == "exec" and not target.exec_prefix:
        raise RunError(f"{target.label}: --exec needs a runtime (a container, not --pid)")
    argv = list(command) if command else ["sh"]
    mounted_here = False
    if not toolbox_mounted(pid):
        attach_toolbox(pid, resolve_toolbox(toolbox, cache_dir or default_cache_dir(), toolbox_root))
        mounted_here = True
    elif toolbox is not None or toolbox_root is not None:
        print(f"debug: {target.label} already has a toolbox at {CRASHCART}: it is used, --toolbox is ignored"
              f" (--unmount removes it)", file=sys.stderr)
    if mode == "mount":
        state = "mounted" if mounted_here else "already mounted"
        print(f"{target.label}: toolbox {state} at {CRASHCART} (remove it with --unmount)", file=report)
        return 0
    env = _debug_env(target.env)
    try:
        if mode == "exec":
            return _exec_through_runtime(target, argv, env)
        return exec_in_container(pid, argv, env)
    finally:
        if mounted_here:
            try:
                detach_toolbox(pid)
            except MicrocontainerError:
                if toolbox_mounted(pid):
                    raise


def _exec_through_runtime(target: Target, argv: list[str], env: dict[str, str]) -> int:
    """``RUNTIME exec --env PATH=... ID ARGV``: the runtime's user and restrictions apply."""
    settings = [item for name in ("PATH", "TERM") if name in env for item in ("--env", f"{name}={env[name]}")]
    tty = ["--tty"] if sys.stdin.isatty() and sys.stdout.isatty() else []
    if "podman" in os.path.basename(target.exec_prefix[0]):
        tty += ["--interactive"] if tty else []
    proc = subprocess.Popen([*target.exec_prefix, *tty, *settings, target.exec_id, *argv])
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        previous = {signum: signal.signal(signum, signal.SIG_IGN) for signum in _INTERRUPTS}
    try:
        code = proc.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return code if code >= 0 else 128 - code


def debug(name: str, state_dir: str, toolbox: str | None = None, command: Sequence[str] | None = None,
          *, cache_dir: str | None = None, mode: str = "enter", toolbox_root: str | None = None) -> int:
    """Debug running container ``name`` (of ``microcontainer run``) with a side-loaded toolbox.

    Args:
        name: the container (see :func:`microcontainer_tool.runtime.containers.ps`).
        state_dir: the state directory it was started with.
        toolbox: see :func:`debug_target`.
        command: what to run (default: ``sh``), looked up in the toolbox first.
        cache_dir: where toolboxes are built (default: the tool's cache).
        mode: see :func:`debug_target`.
        toolbox_root: see :func:`debug_target`.

    Returns:
        The command's exit code.

    Raises:
        RunError: no such container, it is not running, not root, or no toolbox.
    """
    if os.geteuid() != 0:
        raise RunError("debugging containers needs root")
    return debug_target(our_container(name, state_dir), toolbox, command, cache_dir=cache_dir, mode=mode,
                        toolbox_root=toolbox_root)
