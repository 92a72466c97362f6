"""Debugging running microcontainers, crashcart-style.

A microcontainer has no shell and no tools. :func:`debug` side-loads a
read-only *toolbox* of static binaries into a running container at
``/dev/crashcart`` and runs a command (default: an interactive ``sh``) inside the
container's namespaces, with ``PATH`` extended by the toolbox. The image, and the
container's read-only root, are never touched.

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

import hashlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from typing import Any

from microcontainer_tool.closure.elf import read_elf
from microcontainer_tool.errors import ElfError, MicrocontainerError, RunError
from microcontainer_tool.hostfs.cachedir import default_cache_dir
from microcontainer_tool.runtime.containers import (
    CRASHCART, attach_tree, clone_for_container, detach_mount, enter_namespaces,
    fork_call, host_id_map, load_record, make_bundle, runtime_state,
)

BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")
"""Where Debian's ``busybox-static`` puts its binary."""

TOOLBOX_PATH = [f"{CRASHCART}/{sub}" for sub in ("bin", "sbin", "usr/bin", "usr/sbin")]
"""Toolbox directories put first in the debug command's ``PATH``."""

_NAMESPACES = ("user", "mnt", "uts", "ipc", "net", "pid")


def _static_busybox() -> str:
    for path in BUSYBOX_CANDIDATES:
        if not os.path.isfile(path):
            continue
        try:
            info = read_elf(path)
        except ElfError:
            continue
        if info is not None and info.interpreter is None:
            return path
    raise RunError("no static busybox found (/bin/busybox); install Debian's busybox-static"
                   " (apt-get install busybox-static) or pass --toolbox DIR|IMAGE")


def busybox_toolbox(cache_dir: str) -> str:
    """The default toolbox: the host's static busybox and its applet links, built once in the cache.

    Returns:
        ``cache_dir/toolbox/busybox-<sha256 prefix>``, holding ``bin/busybox`` and a
        ``bin/APPLET -> busybox`` link per applet.

    Raises:
        RunError: no static busybox on this machine, or the cache is not writable.
    """
    binary = _static_busybox()
    with open(binary, "rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
    parent = os.path.join(os.path.abspath(cache_dir), "toolbox")
    final = os.path.join(parent, f"busybox-{digest[:16]}")
    if os.path.isfile(os.path.join(final, "bin", "busybox")):
        return final
    proc = subprocess.run([binary, "--list"], capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False)
    if proc.returncode != 0:
        raise RunError(f"{binary} --list failed: {' '.join(proc.stderr.split())}")
    applets = sorted({name for name in proc.stdout.split() if name and "/" not in name} - {"busybox"})
    try:
        os.makedirs(parent, exist_ok=True)
        temp = tempfile.mkdtemp(prefix=".tmp-", dir=parent)
    except OSError as error:
        raise RunError(f"{parent}: cannot create: {error.strerror or error}") from None
    try:
        os.chmod(temp, 0o755)
        bindir = os.path.join(temp, "bin")
        os.mkdir(bindir, 0o755)
        shutil.copyfile(binary, os.path.join(bindir, "busybox"))
        os.chmod(os.path.join(bindir, "busybox"), 0o755)
        for applet in applets:
            os.symlink("busybox", os.path.join(bindir, applet))
        try:
            os.rename(temp, final)
        except OSError:
            if not os.path.isfile(os.path.join(final, "bin", "busybox")):
                raise
    except OSError as error:
        raise RunError(f"cannot build the busybox toolbox in {parent}: {error.strerror or error}") from None
    finally:
        if os.path.exists(temp):
            shutil.rmtree(temp, ignore_errors=True)
    return final


def toolbox_dir(toolbox: str | None, cache_dir: str) -> str:
    """Resolve ``--toolbox``: None -> :func:`busybox_toolbox`; a directory as is; else an image.

    An image toolbox (OCI layout, archive) is unpacked like a container image
    (:func:`~microcontainer_tool.runtime.containers.make_bundle`) and its root is the toolbox:
    its tools must be static, since the container's loader and libraries are not theirs.

    Raises:
        RunError: the toolbox cannot be built or unpacked.
        LayoutError: an image toolbox cannot be read.
    """
    if toolbox is None:
        return busybox_toolbox(cache_dir)
    if os.path.isdir(toolbox) and not os.path.isfile(os.path.join(toolbox, "oci-layout")):
        return os.path.realpath(toolbox)
    return make_bundle(toolbox, cache_dir).rootfs


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


def _container_env(directory: str) -> list[str]:
    try:
        with open(os.path.join(directory, "config.json"), encoding="utf-8") as handle:
            config: dict[str, Any] = json.load(handle)
        env = config.get("process", {}).get("env", [])
        return [item for item in env if isinstance(item, str)]
    except (OSError, ValueError, AttributeError):
        return []


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


def debug(name: str, state_dir: str, toolbox: str | None = None, command: Sequence[str] | None = None,
          *, cache_dir: str | None = None) -> int:
    """Debug running container ``name`` with a side-loaded toolbox.

    Args:
        name: the container (see :func:`microcontainer_tool.runtime.containers.ps`).
        state_dir: the state directory it was started with.
        toolbox: a directory of static tools, an image, or None for busybox.
            Ignored when a toolbox is already mounted (started with ``debug=True``).
        command: what to run (default: ``sh``), looked up in the toolbox first.
        cache_dir: where toolboxes are built (default: the tool's cache).

    Returns:
        The command's exit code.

    Raises:
        RunError: no such container, it is not running, not root, or no toolbox.
    """
    if os.geteuid() != 0:
        raise RunError("debugging containers needs root")
    record = load_record(name, state_dir)
    state = runtime_state(name, state_dir, record.get("runtime", "runc"))
    pid = state.get("pid") if state else None
    if state is None or state.get("status") != "running" or not isinstance(pid, int) or pid <= 0:
        status = state.get("status") if state else "unknown"
        raise RunError(f"container {name!r} is not running (status {status})")
    argv = list(command) if command else ["sh"]
    mounted_here = False
    if not toolbox_mounted(pid):
        attach_toolbox(pid, toolbox_dir(toolbox, cache_dir or default_cache_dir()))
        mounted_here = True
    try:
        directory = os.path.join(os.path.abspath(state_dir), "containers", name)
        return exec_in_container(pid, argv, _debug_env(_container_env(directory)))
    finally:
        if mounted_here:
            try:
                detach_toolbox(pid)
            except MicrocontainerError:
                if toolbox_mounted(pid):
                    raise
