"""Real container clients load, name and run our outputs: podman 4.3 and containerd 1.6 (``ctr``).

Each test gets its own private podman storage or containerd daemon (``clients.py`` says how);
``test_client_matrix.py`` checks every client against every output form.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from clients import Client, containerd_client, ctr_names, podman_client, podman_load, podman_names, podman_run
from conftest import run_cli

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="root needed (podman and containerd as root)")

GREETING = "hello from the image"


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
def podman() -> Iterator[Client]:
    """``podman`` with private storage, for one test (see :func:`clients.podman_client`)."""
    with podman_client() as call:
        yield call


@pytest.mark.parametrize("fmt", ["oci-archive", "docker-archive"])
def test_podman_loads_the_given_name_and_runs_it(spec_dir: Path, tmp_path: Path, fmt: str,
                                                 podman: Client) -> None:
    archive = build(spec_dir, tmp_path / "img.tar", "--format", fmt, "--name", "example.org/team/hello:1.0")
    assert podman_load(podman, archive) == "example.org/team/hello:1.0"
    assert podman_names(podman) == ["example.org/team/hello:1.0"]
    assert podman_run(podman, "example.org/team/hello:1.0") == GREETING + "\n"


def test_podman_names_a_short_name_and_the_default_like_docker(
        spec_dir: Path, tmp_path: Path, podman: Client) -> None:
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
def containerd() -> Iterator[Client]:
    """A private containerd for one test (see :func:`clients.containerd_client`)."""
    with containerd_client() as ctr:
        yield ctr


def test_ctr_imports_the_oci_archive_under_the_given_name(
        spec_dir: Path, tmp_path: Path, containerd: Client) -> None:
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
