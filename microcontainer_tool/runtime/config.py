"""The OCI runtime configuration (``config.json``) that runs a bundle as a microcontainer.

:func:`runtime_config` writes ``root.readonly``, every capability dropped,
``noNewPrivileges``, tmpfs ``/run`` ``/tmp`` ``/dev``, ``/write`` (rw) and
``/read`` (ro) volumes, own pid/ipc/uts/mount/network namespaces and, when the
kernel allows it, a user namespace mapping container ids 0-65535 to an
unprivileged host range (``/etc/subuid``'s ``root`` entry, else 100000).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from typing import Any

from microcontainer_tool.errors import RunError
from microcontainer_tool.runtime.bundle import Bundle
from microcontainer_tool.runtime.namespaces import host_id_map, userns_supported
from microcontainer_tool.runtime.users import resolve_user

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
"""``PATH`` given to a program whose image sets none."""

_CAPABILITY_SETS = ("bounding", "effective", "inheritable", "permitted", "ambient")
_ENV_NAME_RE = re.compile(r"[^=\0]+")

_MASKED_PATHS = [
    "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
]
_READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]


def _merge_env(base: Iterable[str], extra: Iterable[str]) -> list[str]:
    merged: dict[str, str] = {}
    for item in base:
        name, _, value = item.partition("=")
        merged[name] = value
    for item in extra:
        name, sep, value = item.partition("=")
        if not _ENV_NAME_RE.fullmatch(name) or "\0" in value:
            raise RunError(f"bad environment entry {item!r}: expected NAME=VALUE")
        if sep:
            merged[name] = value
        elif name in os.environ:  # docker's `-e NAME`: take it from our environment
            merged[name] = os.environ[name]
    return [f"{name}={value}" for name, value in merged.items()]


def bind_mount(source: str, destination: str, readonly: bool) -> dict[str, Any]:
    """An OCI bind mount object of host ``source`` at ``destination`` (nosuid, nodev)."""
    options = ["rbind", "nosuid", "nodev", "ro" if readonly else "rw"]
    return {"destination": destination, "type": "bind", "source": source, "options": options}


def _volume(path: str | None, option: str) -> str | None:
    if path is None:
        return None
    if not os.path.isdir(path):
        raise RunError(f"{option} {path}: not a directory")
    return os.path.realpath(path)


def runtime_config(image_config: dict[str, Any], bundle: Bundle, *, args: Sequence[str] | None = None,
                   env: Iterable[str] = (), user: str | None = None, write_dir: str | None = None,
                   read_dir: str | None = None, net: str = "none", userns: bool = True,
                   extra_mounts: Iterable[dict[str, Any]] = ()) -> dict[str, Any]:
    """The OCI runtime spec (``config.json``) that runs ``bundle`` as a microcontainer.

    Args:
        image_config: the image's OCI configuration (its ``config`` member is read:
            ``Entrypoint``, ``Cmd``, ``Env``, ``User``, ``WorkingDir``).
        bundle: the unpacked image (its root filesystem is the root, read-only;
            user and group names are resolved against its ``/etc`` files).
        args: replace the image's ``Cmd`` (the ``Entrypoint`` stays).
        env: ``NAME=VALUE`` entries added to (or replacing) the image's ``Env``;
            a bare ``NAME`` is copied from this process's environment.
        user: ``USER[:GROUP]`` replacing the image's ``User``.
        write_dir: host directory bind-mounted read-write at ``/write``.
        read_dir: host directory bind-mounted read-only at ``/read``.
        net: ``"none"`` (own network namespace with only loopback) or ``"host"``.
        userns: use a user namespace mapping ids 0-65535 to :func:`host_id_map`,
            if the kernel allows it (:func:`userns_supported`); else ids map 1:1.
        extra_mounts: more OCI mount objects, appended last.

    Raises:
        RunError: no command, a bad option, or a user/group the image does not know.
    """
    inner = image_config.get("config") if isinstance(image_config.get("config"), dict) else {}
    assert isinstance(inner, dict)
    entrypoint = list(inner.get("Entrypoint") or [])
    command = list(args) if args is not None else list(inner.get("Cmd") or [])
    process_args = entrypoint + command
    if not process_args:
        raise RunError(f"{bundle.image}: the image has no Entrypoint or Cmd; give the command to run")
    if net not in ("none", "host"):
        raise RunError(f"network mode {net!r}: expected 'none' or 'host'")
    spec = user if user is not None else str(inner.get("User") or "")
    who = resolve_user(bundle.rootfs, spec)
    use_userns = userns and userns_supported()
    idmap = host_id_map() if use_userns else None
    limit = idmap.size if idmap is not None else 2**32 - 1
    for number in (who.uid, who.gid, *who.additional_gids):
        if number >= limit:
            raise RunError(f"user {spec!r}: id {number} is outside the container's id range 0-{limit - 1}")
    environment = _merge_env(inner.get("Env") or [], env)
    names = {item.partition("=")[0] for item in environment}
    if "PATH" not in names:
        environment.insert(0, f"PATH={DEFAULT_PATH}")
    if "HOME" not in names:
        environment.append(f"HOME={who.home}")
    cwd = str(inner.get("WorkingDir") or "/")
    if not cwd.startswith("/"):
        raise RunError(f"{bundle.image}: WorkingDir {cwd!r} is not absolute")
    process_user: dict[str, Any] = {"uid": who.uid, "gid": who.gid}
    if who.additional_gids:
        process_user["additionalGids"] = list(who.additional_gids)

    sys_mount: dict[str, Any] = {"destination": "/sys", "type": "sysfs", "source": "sysfs",
                                 "options": ["nosuid", "noexec", "nodev", "ro"]}
    if idmap is not None and net == "host":  # sysfs of a netns we do not own cannot be mounted
        sys_mount = {"destination": "/sys", "type": "bind", "source": "/sys",
                     "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]}
    mounts: list[dict[str, Any]] = [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": ["nosuid", "noexec", "nodev"]},
        sys_mount,
        {"destination": "/run", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "nodev", "mode=1777"]},
    ]
    write = _volume(write_dir, "--write")
    if write is not None:
        mounts.append(bind_mount(write, "/write", readonly=False))
    read = _volume(read_dir, "--read")
    if read is not None:
        mounts.append(bind_mount(read, "/read", readonly=True))
    mounts.extend(dict(mount) for mount in extra_mounts)

    namespaces = [{"type": kind} for kind in ("pid", "ipc", "uts", "mount")]
    if net == "none":
        namespaces.append({"type": "network"})
    linux: dict[str, Any] = {
        "namespaces": namespaces,
        "maskedPaths": list(_MASKED_PATHS),
        "readonlyPaths": list(_READONLY_PATHS),
        "resources": {"devices": [{"allow": False, "access": "rwm"}]},
    }
    if idmap is not None:
        namespaces.append({"type": "user"})
        linux["uidMappings"] = [{"containerID": 0, "hostID": idmap.uid, "size": idmap.size}]
        linux["gidMappings"] = [{"containerID": 0, "hostID": idmap.gid, "size": idmap.size}]
    return {
        "ociVersion": "1.0.2",
        "root": {"path": bundle.rootfs, "readonly": True},
        "hostname": "microcontainer",
        "process": {
            "terminal": False,
            "user": process_user,
            "args": process_args,
            "env": environment,
            "cwd": cwd,
            "capabilities": {name: [] for name in _CAPABILITY_SETS},
            "noNewPrivileges": True,
        },
        "mounts": mounts,
        "linux": linux,
    }
