"""Real container clients load, name and run our outputs: podman 4.3 and containerd 1.6 (``ctr``).

podman runs with a private storage root, run root and tmp dir under pytest's tmp (the host's
``/var/lib/containers`` is never touched), the ``vfs`` driver (no overlay mounts left behind),
runc and cgroupfs (crun fails on this host's hybrid cgroups) and no network. containerd is started
by a fixture on a private socket, root and state, with the CRI plugin off, and stopped after.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import have, run_cli

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="root needed (podman and containerd as root)")

GREETING = "hello from the image"
TIMEOUT = 120


@pytest.fixture(scope="module")
def spec_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    spec = tmp_path_factory.mktemp("spec")
    (spec / "microimage.yaml").write_text(
        f"from: /\npaths: [/usr/bin/echo]\ncmd: [/usr/bin/echo, {GREETING}]\n")
    return spec


def build(spec_dir: Path, out: Path, *args: str) -> Path:
    proc = run_cli("build", "-c", str(spec_dir), "-o", str(out), "-q", *args)
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture
def podman() -> Iterator[Callable[..., subprocess.CompletedProcess]]:
    """``podman`` with private storage; its containers, images and directories are removed after the test."""
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


def podman_load(podman: Callable[..., subprocess.CompletedProcess], archive: Path) -> str:
    proc = podman("load", "-q", "-i", str(archive))
    assert proc.returncode == 0, proc.stderr
    loaded = [line.removeprefix("Loaded image: ") for line in proc.stdout.splitlines()
              if line.startswith("Loaded image: ")]
    assert len(loaded) == 1, proc.stdout
    return loaded[0]


def podman_names(podman: Callable[..., subprocess.CompletedProcess]) -> list[str]:
    proc = podman("images", "--format", "{{.Repository}}:{{.Tag}}")
    assert proc.returncode == 0, proc.stderr
    return sorted(proc.stdout.split())


def podman_run(podman: Callable[..., subprocess.CompletedProcess], name: str) -> str:
    proc = podman("run", "--rm", "--read-only", "--network", "none", "--ulimit", "nofile=1024:1024",
                  "--ulimit", "nproc=4096:4096", name)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.parametrize("fmt", ["oci-archive", "docker-archive"])
def test_podman_loads_the_given_name_and_runs_it(spec_dir: Path, tmp_path: Path, fmt: str,
                                                 podman: Callable[..., subprocess.CompletedProcess]) -> None:
    archive = build(spec_dir, tmp_path / "img.tar", "--format", fmt, "--name", "example.org/team/hello:1.0")
    assert podman_load(podman, archive) == "example.org/team/hello:1.0"
    assert podman_names(podman) == ["example.org/team/hello:1.0"]
    assert podman_run(podman, "example.org/team/hello:1.0") == GREETING + "\n"


def test_podman_names_a_short_name_and_the_default_like_docker(
        spec_dir: Path, tmp_path: Path, podman: Callable[..., subprocess.CompletedProcess]) -> None:
    # -t alone: the name is the output's stem; a short name is Docker Hub's (docker.io/library/)
    greeting = build(spec_dir, tmp_path / "greeting.tar", "-t", "v2")
    assert podman_load(podman, greeting) == "docker.io/library/greeting:v2"
    short = build(spec_dir, tmp_path / "short.tar", "--name", "team/app", "-t", "3")
    assert podman_load(podman, short) == "docker.io/team/app:3"
    local = build(spec_dir, tmp_path / "local.tar", "--name", "localhost/app")
    assert podman_load(podman, local) == "localhost/app:latest"
    assert podman_names(podman) == ["docker.io/library/greeting:v2", "docker.io/team/app:3",
                                    "localhost/app:latest"]
    assert podman_run(podman, "localhost/app") == GREETING + "\n"


@pytest.fixture
def containerd() -> Iterator[Callable[..., subprocess.CompletedProcess]]:
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
            daemon_wait(daemon, 0.1)
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


def daemon_wait(daemon: subprocess.Popen, seconds: float) -> None:
    try:
        daemon.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        pass


def ctr_names(ctr: Callable[..., subprocess.CompletedProcess]) -> list[str]:
    proc = ctr("images", "ls", "-q")
    assert proc.returncode == 0, proc.stderr
    return sorted(proc.stdout.split())


def test_ctr_imports_the_oci_archive_under_the_given_name(
        spec_dir: Path, tmp_path: Path, containerd: Callable[..., subprocess.CompletedProcess]) -> None:
    # ctr imports an uncompressed tar: our oci-archive (OUT.tar)
    archive = build(spec_dir, tmp_path / "img.tar", "--name", "example.org/team/hello:1.0")
    proc = containerd("images", "import", str(archive))
    assert proc.returncode == 0, proc.stderr
    assert ctr_names(containerd) == ["example.org/team/hello:1.0"]
    short = build(spec_dir, tmp_path / "greeting.tar", "-t", "v2")
    proc = containerd("images", "import", str(short))
    assert proc.returncode == 0, proc.stderr
    assert ctr_names(containerd) == ["docker.io/library/greeting:v2", "example.org/team/hello:1.0"]
    # the image is whole: containerd checks every blob against the manifest when it unpacks it
    proc = containerd("images", "check")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("complete") == 2, proc.stdout


def test_same_name_same_bytes_and_the_name_is_only_in_the_index(spec_dir: Path, tmp_path: Path) -> None:
    first = build(spec_dir, tmp_path / "a" / "img.tar", "--name", "example.org/app:1")
    second = build(spec_dir, tmp_path / "b" / "img.tar", "--name", "example.org/app", "-t", "1")
    other = build(spec_dir, tmp_path / "c" / "img.tar", "--name", "example.org/other:1")
    assert first.read_bytes() == second.read_bytes()
    assert first.read_bytes() != other.read_bytes()
    proc = run_cli("inspect", str(first))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == run_cli("inspect", str(other)).stdout  # same manifest, config and layer
