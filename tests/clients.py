"""Container clients as the tests run them: podman 4.3 with private storage, a private containerd 1.6.

podman runs with a private storage root, run root and tmp dir in a temp dir (the host's
``/var/lib/containers`` is never touched), the ``vfs`` driver (no overlay mounts left behind),
runc and cgroupfs (crun fails on this host's hybrid cgroups) and no network. containerd runs on a
private socket, root and state, with the CRI plugin off, and is stopped after. Both are context
managers so a test module can hold one for a test or for the whole module.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from conftest import have

Client = Callable[..., subprocess.CompletedProcess]
"""A client command with its private options bound: ``client(*args)`` runs it and returns the result."""

TIMEOUT = 120


@contextmanager
def podman_client() -> Iterator[Client]:
    """``podman`` with private storage; its containers, images and directories are removed after."""
    assert have("podman"), "podman is not installed: run examples/setup.sh"
    work = tempfile.mkdtemp(prefix="mct-podman-")  # podman refuses a run root longer than 50 characters
    base = ["podman", "--root", f"{work}/storage", "--runroot", f"{work}/run", "--tmpdir", f"{work}/tmp",
            "--storage-driver", "vfs", "--runtime", "runc", "--cgroup-manager=cgroupfs",
            "--events-backend=file"]

    def call(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(base + list(args), capture_output=True, text=True, timeout=TIMEOUT,
                              stdin=subprocess.DEVNULL, check=False)

    try:
        yield call
    finally:
        call("rm", "--all", "--force")
        call("rmi", "--all", "--force")
        shutil.rmtree(work, ignore_errors=True)


def podman_load(podman: Client, archive: Path) -> str:
    """``podman load -i ARCHIVE``: the one name it loaded."""
    proc = podman("load", "-q", "-i", str(archive))
    assert proc.returncode == 0, proc.stderr
    loaded = [line.removeprefix("Loaded image: ") for line in proc.stdout.splitlines()
              if line.startswith("Loaded image: ")]
    assert len(loaded) == 1, proc.stdout
    return loaded[0]


def podman_names(podman: Client) -> list[str]:
    """``REPOSITORY:TAG`` of every image in the store, sorted."""
    proc = podman("images", "--format", "{{.Repository}}:{{.Tag}}")
    assert proc.returncode == 0, proc.stderr
    return sorted(proc.stdout.split())


def podman_run(podman: Client, name: str) -> str:
    """``podman run --rm --read-only`` without network: the container's standard output."""
    proc = podman("run", "--rm", "--read-only", "--network", "none", "--ulimit", "nofile=1024:1024",
                  "--ulimit", "nproc=4096:4096", name)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@contextmanager
def containerd_client() -> Iterator[Client]:
    """A private ``containerd`` (socket, root and state in a temp dir); ``ctr`` against it."""
    assert have("containerd", "ctr"), "containerd is not installed: run examples/setup.sh"
    # a short path: a unix socket's path is limited to 108 bytes
    work = tempfile.mkdtemp(prefix="mct-ctd-")
    sock = os.path.join(work, "containerd.sock")
    config = os.path.join(work, "config.toml")
    with open(config, "w", encoding="utf-8") as handle:
        handle.write(f"""version = 2
root = "{work}/root"
state = "{work}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.internal.v1.tracing",
                    "io.containerd.tracing.processor.v1.otlp", "io.containerd.snapshotter.v1.aufs",
                    "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
                    "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
""")
    log = open(os.path.join(work, "containerd.log"), "wb")  # noqa: SIM115  (closed below)
    daemon = subprocess.Popen(["containerd", "--config", config], stdout=log, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL, start_new_session=True)

    def ctr(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["ctr", "--address", sock, *args], capture_output=True, text=True,
                              timeout=TIMEOUT, stdin=subprocess.DEVNULL, check=False)

    try:
        # up to 100 tries, 0.1 s apart or sooner: the daemon is serving once `ctr version` answers
        for _ in range(100):
            if daemon.poll() is not None:
                break
            if os.path.exists(sock) and ctr("--timeout", "10s", "version").returncode == 0:
                break
            _daemon_wait(daemon, 0.1)
        assert daemon.poll() is None, Path(work, "containerd.log").read_text()
        assert ctr("version").returncode == 0, Path(work, "containerd.log").read_text()
        yield ctr
    finally:
        if daemon.poll() is None:
            os.killpg(daemon.pid, signal.SIGTERM)
            try:
                daemon.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(daemon.pid, signal.SIGKILL)
                daemon.wait()
        log.close()
        subprocess.run(["umount", "-R", "-l", os.path.join(work, "state")], capture_output=True, check=False)
        shutil.rmtree(work, ignore_errors=True)


def _daemon_wait(daemon: subprocess.Popen, seconds: float) -> None:
    try:
        daemon.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        pass


def ctr_names(ctr: Client) -> list[str]:
    """The names of every image containerd holds, sorted."""
    proc = ctr("images", "ls", "-q")
    assert proc.returncode == 0, proc.stderr
    return sorted(proc.stdout.split())
