"""Running microcontainers and their records: read-only root, no capabilities, a user namespace.

The manifesto's operations half. An image is unpacked *by us* (never by umoci)
into a cached, read-only root filesystem
(:func:`~microcontainer_tool.runtime.bundle.make_bundle`) and run with an OCI
runtime (``runc``) from a generated ``config.json``
(:func:`~microcontainer_tool.runtime.config.runtime_config`). :func:`run`,
:func:`ps`, :func:`stop`, :func:`rm` manage containers whose state lives in
``STATE/containers/<name>/`` (``runc --root STATE/runc``).

User namespaces and paths: runc 1.1 mounts the root filesystem and the volumes
*inside* the new user namespace, as the mapped root (host uid 100000), which
cannot search a ``0700`` directory such as ``/root`` (the default cache). So with
a user namespace every bind source (root filesystem, ``--write``, ``--read``,
toolbox) is first *staged*: cloned with ``open_tree(2)``, made an **idmapped
mount** (``mount_setattr(2)``, same mapping as the container) and attached under
the container's state directory, which must be searchable by others (the
default ``/run/microcontainer`` is). Through the idmapped mount a container
uid ``N`` reads and writes host files as uid ``N``, exactly as without a user
namespace (the image's ``0:0`` files appear owned by root; a ``--write``
directory must be writable by the container's user, e.g. mode ``0777`` or
owned by uid 10). If the file system cannot be idmapped the stage is a plain
bind: files then appear as ``nobody`` and a ``--write`` directory must be
writable by the host uid ``100000 + N``. A fresh (empty, ours) ``--write``
directory is given to those ids (:mod:`~microcontainer_tool.runtime.volumes`).
Without user namespaces (disabled, or the kernel refuses them) ids map 1:1 and
nothing is staged; the container still has no capabilities, ``noNewPrivileges``
and a read-only root.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from microcontainer_tool import jsontext
from microcontainer_tool.errors import RunError
from microcontainer_tool.hostfs.atomic import write_atomic
from microcontainer_tool.runtime.bundle import Bundle, make_bundle
from microcontainer_tool.runtime.config import bind_mount, runtime_config
from microcontainer_tool.runtime.namespaces import IdMap, detach_mount, host_id_map, stage_mount
from microcontainer_tool.runtime.toolbox import CRASHCART
from microcontainer_tool.runtime.toolboxbuilder import resolve_toolbox
from microcontainer_tool.runtime.volumes import invoking_uids, prepare_write_dir

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_RECORD = "container.json"
_ALIVE = ("created", "running", "paused", "creating")


# --------------------------------------------------------------------------- defaults


def default_state_dir() -> str:
    """``/run/microcontainer`` for root, else ``$XDG_RUNTIME_DIR/microcontainer``."""
    if os.geteuid() != 0 and os.environ.get("XDG_RUNTIME_DIR"):
        return os.path.join(os.environ["XDG_RUNTIME_DIR"], "microcontainer")
    return "/run/microcontainer"


# --------------------------------------------------------------------------- containers


@dataclass(frozen=True)
class ContainerInfo:
    """One container of a state directory.

    Attributes:
        name: its name (the runtime's container id).
        image: the image it was started from.
        digest: the image's manifest digest.
        pid: the program's host pid while it runs, else None.
        status: the runtime's ``created``/``running``/``paused``/``stopped``,
            or ``unknown`` when the runtime no longer knows it.
        created: when it was started (UTC, ISO 8601).
    """

    name: str
    image: str
    digest: str
    pid: int | None
    status: str
    created: str


def _containers_dir(state_dir: str) -> str:
    return os.path.join(os.path.abspath(state_dir), "containers")


def _runtime_root(state_dir: str) -> str:
    return os.path.join(os.path.abspath(state_dir), "runc")


def container_dir(state_dir: str, name: str) -> str:
    """The state directory of container ``name`` (``STATE/containers/NAME``).

    Raises:
        RunError: ``name`` is not a valid container name.
    """
    if not _NAME_RE.fullmatch(name):
        raise RunError(f"bad container name {name!r}: use letters, digits, '_', '.', '-' (at most 64)")
    return os.path.join(_containers_dir(state_dir), name)


def load_record(name: str, state_dir: str) -> dict[str, Any]:
    """The state record of container ``name`` (``container.json``).

    Raises:
        RunError: there is no such container.
    """
    path = os.path.join(container_dir(state_dir, name), _RECORD)
    try:
        record = jsontext.load_file(path)
    except FileNotFoundError:
        raise RunError(f"no container named {name!r} in {state_dir}") from None
    except (OSError, ValueError) as error:
        raise RunError(f"{path}: unreadable container record: {error}") from None
    if not isinstance(record, dict):
        raise RunError(f"{path}: malformed container record")
    return record


def _write_record(directory: str, record: dict[str, Any]) -> None:
    write_atomic(os.path.join(directory, _RECORD), json.dumps(record, indent=2, sort_keys=True).encode())


def _runtime_command(runtime: str, state_dir: str, *args: str) -> list[str]:
    return [runtime, "--root", _runtime_root(state_dir), *args]


def runtime_state(name: str, state_dir: str, runtime: str = "runc") -> dict[str, Any] | None:
    """``runc state NAME`` as a dict, or None if the runtime does not know the container."""
    proc = subprocess.run(_runtime_command(runtime, state_dir, "state", name), capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, check=False)
    if proc.returncode != 0:
        return None
    try:
        state = json.loads(proc.stdout)
    except ValueError:
        return None
    return state if isinstance(state, dict) else None


def _last_runtime_error(log_path: str) -> str:
    message = ""
    try:
        with open(log_path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if isinstance(entry, dict) and entry.get("level") in ("error", "fatal"):
                    message = str(entry.get("msg", ""))
    except OSError:
        pass
    message = re.sub(r"^\S+ (run|create|start) failed: ", "", " ".join(message.split()))
    return message or "the runtime failed (no message)"


def _searchable_by_others(path: str) -> str | None:
    """The first directory on ``path``'s way that others cannot search, or None."""
    current = "/"
    for part in os.path.realpath(path).strip("/").split("/"):
        info = os.stat(current)
        if not info.st_mode & stat.S_IXOTH:
            return current
        current = os.path.join(current, part)
    return None if os.stat(current).st_mode & stat.S_IXOTH else current


def _stage(config: dict[str, Any], directory: str, idmap: IdMap | None, staged: list[dict[str, Any]]) -> None:
    """Stage the root and every bind source under ``directory`` (see the module docstring).

    Without ``idmap`` only the root is staged, as a plain bind: a prepared root
    such as ``/`` is then a mount point of its own, which ``pivot_root`` needs.
    Each stage is appended to ``staged`` as soon as it is mounted, so a failure
    half-way leaves a list the caller can unmount.
    """
    root = config["root"]
    target = os.path.join(directory, "rootfs")
    idmapped = stage_mount(root["path"], target, idmap, readonly=True)
    staged.append({"source": root["path"], "target": target, "idmapped": idmapped})
    root["path"] = target
    if idmap is None:
        return
    for number, mount in enumerate(config["mounts"]):
        if mount.get("type") != "bind" or not str(mount.get("source", "")).startswith("/") \
                or mount.get("source") == "/sys":
            continue
        target = os.path.join(directory, "mnt", str(number))
        readonly = "ro" in mount.get("options", [])
        idmapped = stage_mount(mount["source"], target, idmap, readonly=readonly)
        staged.append({"source": mount["source"], "target": target, "idmapped": idmapped})
        mount["source"] = target


def _prepare_write(config: dict[str, Any], source: str, record: dict[str, Any]) -> str | None:
    """Make the ``--write`` directory ``source`` writable by the container's user (see :mod:`.volumes`).

    The user's host ids: its own through an idmapped stage or without a user
    namespace, the mapped ones (``uidMappings``) through a plain bind.
    """
    user = config["process"]["user"]
    uid, gid = int(user["uid"]), int(user["gid"])
    idmapped = any(entry["source"] == source and entry["idmapped"] for entry in record["staged"])
    if record["userns"] and not idmapped:
        uid += int(config["linux"]["uidMappings"][0]["hostID"])
        gid += int(config["linux"]["gidMappings"][0]["hostID"])
    return prepare_write_dir(source, uid, gid, invoking_uids(os.environ))


def _unstage(record: dict[str, Any]) -> None:
    for entry in reversed(record.get("staged") or []):
        try:
            detach_mount(entry["target"])
        except OSError:
            pass


def _cleanup(name: str, state_dir: str, record: dict[str, Any]) -> None:
    subprocess.run(_runtime_command(record.get("runtime", "runc"), state_dir, "delete", "--force", name),
                   capture_output=True, stdin=subprocess.DEVNULL, check=False)
    _unstage(record)
    shutil.rmtree(container_dir(state_dir, name), ignore_errors=True)


def _generated_name() -> str:
    return "mc-" + uuid.uuid4().hex[:12]


def run(image: str, *, name: str | None = None, detach: bool = False, runtime: str = "runc",
        state_dir: str, cache_dir: str, tag: str | None = None, debug: bool = False,
        toolbox: str | None = None, wrapper: Sequence[str] = (), stdout: int | None = None,
        bundle: Bundle | None = None, platform: str | None = None, **config_kw: Any) -> int:
    """Run ``image`` as a microcontainer.

    Args:
        image: an image reference for :func:`~microcontainer_tool.runtime.bundle.make_bundle`.
        name: the container's name (default: generated, ``mc-<hex>``).
        detach: start it in the background (stdout/stderr go to ``stdout.log`` and
            ``stderr.log`` in its state directory) and return 0.
        runtime: the OCI runtime binary (``runc``).
        state_dir: where container state lives (:func:`default_state_dir`).
        cache_dir: the tool's cache (root filesystems, toolboxes).
        tag: the image to pick when the layout holds several.
        debug: mount a toolbox read-only at ``/dev/crashcart`` from the start.
        toolbox: the toolbox for ``debug`` (see
            :func:`microcontainer_tool.runtime.toolboxbuilder.resolve_toolbox`).
        wrapper: a command put before the runtime's (``strace ... -o LOG``: see
            :mod:`~microcontainer_tool.runtime.tracer`); foreground runs only.
        stdout: file descriptor for the program's standard output (default: ours).
        bundle: a prepared root filesystem and configuration to run instead of
            unpacking ``image`` (which then only names it in messages and the
            record): ``trace`` runs a sysroot this way. Its root is always
            staged (bound under the container's state directory), so that
            even ``/`` can be the container's root.
        platform: ``[OS/]ARCH[/VARIANT]``: the image to pick from a multi-platform index.
        **config_kw: keyword arguments of :func:`~microcontainer_tool.runtime.config.runtime_config`
            (``args``, ``env``, ``user``, ``write_dir``, ``read_dir``, ``net``, ``userns``, ``extra_mounts``).

    Returns:
        The program's exit code (128 + N if killed by signal N), or 0 when detached.

    Raises:
        RunError: not root, no runtime, a name in use, or the container could not start.
        LayoutError: the image cannot be read.
        OutputError: the image cannot be unpacked into the cache, or the container's record written.
    """
    if os.geteuid() != 0:
        raise RunError("running containers needs root (the runtime runs as root)")
    runtime_path = shutil.which(runtime)
    if runtime_path is None:
        raise RunError(f"OCI runtime {runtime!r} not found; install runc")
    if detach and wrapper:
        raise RunError("a wrapped (traced) container cannot be detached")
    prepared = bundle is not None
    if bundle is None:
        bundle = make_bundle(image, cache_dir, tag, platform)
    extra = list(config_kw.pop("extra_mounts", ()))
    if debug:
        extra.append(bind_mount(resolve_toolbox(toolbox, cache_dir), CRASHCART, readonly=True))
    config = runtime_config(bundle.image_config, bundle, extra_mounts=extra, **config_kw)
    name = name or _generated_name()
    directory = container_dir(state_dir, name)
    config["hostname"] = name
    containers = _containers_dir(state_dir)
    try:
        os.makedirs(containers, mode=0o711, exist_ok=True)
        os.mkdir(directory, 0o711)
    except FileExistsError:
        raise RunError(f"a container named {name!r} exists; remove it with rm") from None
    except OSError as error:
        raise RunError(f"{containers}: cannot create: {error.strerror or error}") from None
    userns = any(ns["type"] == "user" for ns in config["linux"]["namespaces"])
    write_source = next((m["source"] for m in config["mounts"] if m.get("destination") == "/write"), None)
    record: dict[str, Any] = {
        "name": name, "image": os.path.abspath(image) if os.path.exists(image) else image,
        "digest": bundle.digest, "runtime": runtime_path, "detach": detach, "debug": debug,
        "userns": userns, "staged": [],
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    try:
        if userns:
            blocked = _searchable_by_others(directory)
            if blocked is not None:
                raise RunError(f"{blocked}: not searchable by the container's mapped root, so runc"
                               f" cannot reach the bundle; use a state dir like /run/microcontainer")
            try:
                _stage(config, directory, host_id_map(), record["staged"])
            except OSError as error:
                raise RunError(f"cannot prepare the bundle's mounts: {error}") from None
        elif prepared:
            try:
                _stage(config, directory, None, record["staged"])
            except OSError as error:
                raise RunError(f"cannot prepare the bundle's mounts: {error}") from None
        if write_source is not None:
            record["write_dir_given"] = _prepare_write(config, write_source, record)
        _write_record(directory, record)
        with open(os.path.join(directory, "config.json"), "w", encoding="utf-8") as handle:
            json.dump(config, handle, indent=2)
    except BaseException:
        _cleanup(name, state_dir, record)
        raise
    if detach:
        return _start_detached(name, state_dir, directory, record)
    return _run_foreground(name, state_dir, directory, record, list(wrapper), stdout)


def _run_args(record: dict[str, Any], state_dir: str, directory: str, *extra: str) -> list[str]:
    return _runtime_command(record["runtime"], state_dir, "--log", os.path.join(directory, "runtime.log"),
                            "--log-format", "json", "run", "--bundle", directory,
                            "--pid-file", os.path.join(directory, "pid"), *extra, record["name"])


def _run_foreground(name: str, state_dir: str, directory: str, record: dict[str, Any],
                    wrapper: list[str] | None = None, stdout: int | None = None) -> int:
    proc = subprocess.Popen((wrapper or []) + _run_args(record, state_dir, directory), stdout=stdout)
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        def forward(signum: int, _frame: object) -> None:
            proc.send_signal(signum)  # runc passes it on to the program

        # Ctrl-C reaches runc (same process group) and runc forwards it: do not die first.
        previous[signal.SIGINT] = signal.signal(signal.SIGINT, signal.SIG_IGN)
        for signum in (signal.SIGTERM, signal.SIGHUP):
            previous[signum] = signal.signal(signum, forward)
    try:
        code = proc.wait()
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        started = os.path.exists(os.path.join(directory, "pid"))
        message = _last_runtime_error(os.path.join(directory, "runtime.log"))
        _cleanup(name, state_dir, record)
    if code != 0 and not started:
        raise RunError(f"{record['image']}: cannot start: {message}")
    return code if code >= 0 else 128 - code


def _start_detached(name: str, state_dir: str, directory: str, record: dict[str, Any]) -> int:
    with open(os.path.join(directory, "stdout.log"), "ab") as out, \
            open(os.path.join(directory, "stderr.log"), "ab") as err:
        proc = subprocess.run(_run_args(record, state_dir, directory, "--detach"),
                              stdin=subprocess.DEVNULL, stdout=out, stderr=err, check=False)
    if proc.returncode != 0:
        message = _last_runtime_error(os.path.join(directory, "runtime.log"))
        _cleanup(name, state_dir, record)
        raise RunError(f"{record['image']}: cannot start: {message}")
    return 0


def _names(state_dir: str) -> Iterator[str]:
    try:
        entries = sorted(os.listdir(_containers_dir(state_dir)))
    except FileNotFoundError:
        return
    for entry in entries:
        if (_NAME_RE.fullmatch(entry)
                and os.path.isfile(os.path.join(_containers_dir(state_dir), entry, _RECORD))):
            yield entry


def _info(name: str, state_dir: str) -> ContainerInfo:
    record = load_record(name, state_dir)
    state = runtime_state(name, state_dir, record.get("runtime", "runc"))
    status = str(state.get("status", "unknown")) if state else "unknown"
    pid = state.get("pid") if state and status in _ALIVE else None
    return ContainerInfo(name, str(record.get("image", "")), str(record.get("digest", "")),
                         pid if isinstance(pid, int) and pid > 0 else None, status,
                         str(record.get("created", "")))


def ps(state_dir: str) -> list[ContainerInfo]:
    """Every container recorded in ``state_dir``, by name, with the runtime's status."""
    return [_info(name, state_dir) for name in _names(state_dir)]


def inspect_container(name: str, state_dir: str) -> ContainerInfo:
    """One container's :class:`ContainerInfo`.

    Raises:
        RunError: there is no such container.
    """
    return _info(name, state_dir)


def stop(name: str, state_dir: str, timeout: float = 10) -> None:
    """Stop a container: SIGTERM, then SIGKILL after ``timeout`` seconds.

    A program that is its namespace's pid 1 ignores SIGTERM unless it handles it,
    so a plain ``sleep`` needs the SIGKILL. Stopping a stopped container does nothing.

    Raises:
        RunError: there is no such container, or it would not die.
    """
    record = load_record(name, state_dir)
    runtime = record.get("runtime", "runc")

    def alive() -> bool:
        state = runtime_state(name, state_dir, runtime)
        return state is not None and state.get("status") in ("running", "paused", "created")

    for signame, wait in (("TERM", timeout), ("KILL", 10.0)):
        if not alive():
            return
        subprocess.run(_runtime_command(runtime, state_dir, "kill", name, signame), capture_output=True,
                       stdin=subprocess.DEVNULL, check=False)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not alive():
                return
            time.sleep(0.05)
    if alive():
        raise RunError(f"container {name!r} did not stop")


def rm(name: str, state_dir: str, force: bool = False) -> None:
    """Remove a container: the runtime's state, staged mounts and its state directory.

    Args:
        name: the container.
        state_dir: the state directory.
        force: kill it first if it still runs.

    Raises:
        RunError: no such container, or it runs and ``force`` is false.
    """
    record = load_record(name, state_dir)
    runtime = record.get("runtime", "runc")
    state = runtime_state(name, state_dir, runtime)
    if state is not None and state.get("status") in ("running", "paused") and not force:
        raise RunError(f"container {name!r} is running; stop it first or use --force")
    if state is not None:
        proc = subprocess.run(_runtime_command(runtime, state_dir, "delete", *(["--force"] if force else []),
                                               name), capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, check=False)
        if proc.returncode != 0 and runtime_state(name, state_dir, runtime) is not None:
            detail = " ".join(proc.stderr.split()) or f"exit {proc.returncode}"
            raise RunError(f"container {name!r}: {runtime} delete failed: {detail}")
    _unstage(record)
    shutil.rmtree(container_dir(state_dir, name), ignore_errors=True)
