"""What ``microcontainer debug`` debugs: a running process, found from a container of any runtime.

A :class:`Target` is a process id (the container's first process, whose
namespaces and root a debug session enters), the environment the session
starts from, and -- when a runtime manages it -- the command that runs a
program in it through that runtime (``runc exec``, ``podman exec``), for
``debug --exec``. Targets are found:

* :func:`our_container`: a container of ``microcontainer run`` (its state directory);
* :func:`runc_container`: any runc container by id and ``--root`` state directory
  (``runc --root DIR state ID``; ``/run/runc`` is runc's default);
* :func:`podman_container`: a podman container by name or id
  (``podman inspect --format {{.State.Pid}}``);
* :func:`process`: any process by pid.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from microcontainer_tool import jsontext
from microcontainer_tool.errors import RunError
from microcontainer_tool.runtime.containers import container_dir, load_record, runtime_state

DEFAULT_RUNC_ROOT = "/run/runc"
"""runc's own default ``--root`` (as root)."""

PODMAN_FLAGS = ("--runtime", "runc", "--cgroup-manager=cgroupfs", "--events-backend=file")
"""podman's global flags on this kind of host (see ``/work/shared/facts.md``)."""


@dataclass(frozen=True)
class Target:
    """A process to debug.

    Attributes:
        pid: its host pid (the container's init).
        label: how messages name it.
        env: the container's environment (``NAME=VALUE``), the session's starting point.
        exec_prefix: the runtime command that runs ``ARGV`` in it when followed by
            ``[--env NAME=VALUE ...] ID ARGV`` (empty: no runtime; ``--exec`` is refused).
        exec_id: the runtime's name of the container.
    """

    pid: int
    label: str
    env: list[str] = field(default_factory=list)
    exec_prefix: tuple[str, ...] = ()
    exec_id: str = ""


def _running_pid(state: dict[str, Any] | None, label: str) -> int:
    pid = state.get("pid") if state else None
    if state is None or state.get("status") != "running" or not isinstance(pid, int) or pid <= 0:
        status = state.get("status") if state else "unknown"
        raise RunError(f"{label} is not running (status {status})")
    return pid


def _config_env(bundle: str) -> list[str]:
    try:
        config: Any = jsontext.load_file(os.path.join(bundle, "config.json"))
        env = config.get("process", {}).get("env", [])
        return [item for item in env if isinstance(item, str)]
    except (OSError, ValueError, AttributeError):
        return []


def our_container(name: str, state_dir: str) -> Target:
    """A container of ``microcontainer run`` in ``state_dir``.

    Raises:
        RunError: no such container, or it is not running.
    """
    record = load_record(name, state_dir)
    runtime = str(record.get("runtime", "runc"))
    pid = _running_pid(runtime_state(name, state_dir, runtime), f"container {name!r}")
    root = os.path.join(os.path.abspath(state_dir), "runc")
    return Target(pid, f"container {name!r}", _config_env(container_dir(state_dir, name)),
                  (runtime, "--root", root, "exec"), name)


def runc_container(container_id: str, runtime_root: str = DEFAULT_RUNC_ROOT, runtime: str = "runc") -> Target:
    """A runc container by id, from runc's state directory ``runtime_root``.

    Raises:
        RunError: runc is missing, does not know the container, or it is not running.
    """
    binary = shutil.which(runtime)
    if binary is None:
        raise RunError(f"OCI runtime {runtime!r} not found")
    proc = subprocess.run([binary, "--root", runtime_root, "state", container_id], capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, check=False)
    if proc.returncode != 0:
        detail = " ".join(proc.stderr.split()) or f"exit {proc.returncode}"
        raise RunError(f"runc container {container_id!r} (--runtime-root {runtime_root}): {detail}")
    try:
        state = json.loads(proc.stdout)
    except ValueError:
        raise RunError(f"runc state {container_id}: not JSON") from None
    label = f"runc container {container_id!r}"
    pid = _running_pid(state if isinstance(state, dict) else None, label)
    bundle = str(state.get("bundle", ""))
    return Target(pid, label, _config_env(bundle) if bundle else _process_env(pid),
                  (binary, "--root", runtime_root, "exec"), container_id)


def podman_container(name: str, podman: str = "podman", options: Sequence[str] = ()) -> Target:
    """A podman container by name or id.

    Args:
        name: the container.
        podman: the podman binary.
        options: podman global options after :data:`PODMAN_FLAGS` (``--root DIR``,
            ``--runroot DIR``... for a storage other than the default).

    Raises:
        RunError: podman is missing, does not know the container, or it is not running.
    """
    binary = shutil.which(podman)
    if binary is None:
        raise RunError("podman not found; install podman")
    base = (binary, *PODMAN_FLAGS, *options)
    proc = subprocess.run([*base, "inspect", "--type", "container", "--format",
                           "{{.State.Pid}} {{json .Config.Env}}", name],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False)
    if proc.returncode != 0:
        detail = " ".join(proc.stderr.split()) or f"exit {proc.returncode}"
        raise RunError(f"podman container {name!r}: {detail}")
    pid_text, _, env_text = proc.stdout.strip().partition(" ")
    label = f"podman container {name!r}"
    if not pid_text.isdigit() or int(pid_text) <= 0:
        raise RunError(f"{label} is not running")
    try:
        env = json.loads(env_text) if env_text else []
    except ValueError:
        env = []
    return Target(int(pid_text), label, [item for item in env if isinstance(item, str)],
                  (*base, "exec"), name)


def process(pid: int) -> Target:
    """Any process by host pid (its ``PATH`` is the session's starting point).

    Raises:
        RunError: there is no such process.
    """
    if pid <= 0 or not os.path.exists(f"/proc/{pid}/ns/mnt"):
        raise RunError(f"no process with pid {pid}")
    return Target(pid, f"process {pid}", _process_env(pid))


def _process_env(pid: int) -> list[str]:
    """The ``PATH`` of a process (its other variables may hold secrets: not taken)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            data = handle.read(1 << 20)
    except OSError:
        return []
    return [item.decode("utf-8", "replace") for item in data.split(b"\0") if item.startswith(b"PATH=")]
