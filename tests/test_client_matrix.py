"""Every client reads every output form: skopeo, oci-image-tool, syft, podman and containerd (``ctr``).

One small image (``/usr/bin/echo hi`` from ``/``, named ``example.org/matrix/hello:1.0``) is built
once in each form of ``build -o OUT`` -- ``oci`` (layout ``DIR``), ``oci-archive`` (``OUT.tar``),
``smith`` (``OUT.tar.gz``) and ``docker-archive`` -- and each client reads each form. A cell
passes only when the client reports *our* image: the manifest digest, the config digest (image id),
the diff_ids or the name we wrote, never just exit status 0. Where a client cannot read a form
itself, the cell asserts that it fails as it does today, then the workaround the README's table
"Which client reads which output" gives (for instance ``gunzip -c OUT.tar.gz > OUT.tar``). One private
podman storage and one containerd daemon serve the whole module.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from clients import Client, containerd_client, ctr_names, podman_client, podman_load, podman_run
from conftest import REPO, have, run_cli
from scanners import syft_binary, syft_scan

from microcontainer_tool.model.provenance import read_record

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="root needed (podman and containerd as root)")

NAME = "example.org/matrix/hello:1.0"
TAG = "1.0"
GREETING = "hi"
FORMS = ("oci", "oci-archive", "smith", "docker-archive")
CLIENTS = ("skopeo", "oci-image-tool", "syft", "podman", "ctr")
TIMEOUT = 300


@dataclass(frozen=True)
class Image:
    """The image as we wrote it: where each form is, and the identities a client must report."""

    paths: dict[str, Path]
    manifest_digest: str
    config_digest: str
    diff_ids: list[str]
    packages: set[str]
    work: Path

    def gunzipped_smith(self) -> Path:
        """The documented workaround for smith's ``.tar.gz``: ``gunzip -c OUT.tar.gz > OUT.tar``."""
        plain = self.work / "smith-gunzipped.tar"
        if not plain.exists():
            with open(plain, "wb") as out:
                subprocess.run(["gunzip", "-c", str(self.paths["smith"])], stdout=out, check=True,
                               timeout=TIMEOUT)
        return plain


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Image:
    work = tmp_path_factory.mktemp("matrix")
    (work / "microimage.yaml").write_text(
        f"from: /\npaths: [/usr/bin/echo]\ncmd: [/usr/bin/echo, {GREETING}]\n")
    paths = {"oci": work / "layout", "oci-archive": work / "hello.tar", "smith": work / "hello.tar.gz",
             "docker-archive": work / "hello-docker.tar"}
    digests = set()
    for form, out in paths.items():
        proc = run_cli("build", "-c", str(work), "-o", str(out), "-q", "--name", NAME, "--format", form)
        assert proc.returncode == 0, proc.stderr
        digests.add(proc.stdout.strip())
    assert len(digests) == 1, digests  # one image, four forms
    layout = paths["oci"]
    index = json.loads((layout / "index.json").read_text())
    assert index["manifests"][0]["annotations"]["io.containerd.image.name"] == NAME
    blobs = layout / "blobs" / "sha256"
    manifest_digest = index["manifests"][0]["digest"]
    assert manifest_digest in digests
    manifest = json.loads((blobs / manifest_digest[7:]).read_text())
    config = json.loads((blobs / manifest["config"]["digest"][7:]).read_text())
    packages = {facts["name"] for facts in read_record(str(layout))["packages"].values()}
    assert {"libc6", "coreutils"} <= packages
    return Image(paths, manifest_digest, manifest["config"]["digest"], config["rootfs"]["diff_ids"], packages,
                 work)


@pytest.fixture(scope="module")
def podman() -> Iterator[Client]:
    """One private podman storage for the module; each cell empties it first."""
    with podman_client() as call:
        yield call


@pytest.fixture(scope="module")
def containerd() -> Iterator[Client]:
    """One private containerd for the module; each cell removes what it imported."""
    with containerd_client() as ctr:
        yield ctr


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=TIMEOUT,
                          stdin=subprocess.DEVNULL, check=False)


# --- skopeo -----------------------------------------------------------------------------------------

SKOPEO = {"oci": "oci:{path}:1.0", "oci-archive": "oci-archive:{path}", "smith": "oci-archive:{path}",
          "docker-archive": "docker-archive:{path}"}


def read_skopeo(image: Image, form: str) -> None:
    """skopeo reads every form itself, smith's gzipped archive included (it decompresses any input)."""
    assert have("skopeo"), "skopeo is not installed: run examples/setup.sh"
    source = SKOPEO[form].format(path=image.paths[form])
    raw = run("skopeo", "inspect", "--raw", source)
    assert raw.returncode == 0, raw.stderr
    manifest = json.loads(raw.stdout)
    assert manifest["config"]["digest"] == image.config_digest
    config = run("skopeo", "inspect", "--config", source)
    assert config.returncode == 0, config.stderr
    assert json.loads(config.stdout)["rootfs"]["diff_ids"] == image.diff_ids
    if form == "docker-archive":
        # skopeo reads manifest.json and makes a Docker schema 2 manifest: its layers are the diff_ids
        assert manifest["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
        assert [layer["digest"] for layer in manifest["layers"]] == image.diff_ids
    else:
        assert "sha256:" + hashlib.sha256(raw.stdout.encode()).hexdigest() == image.manifest_digest
        info = run("skopeo", "inspect", source)
        assert info.returncode == 0, info.stderr
        assert json.loads(info.stdout)["Digest"] == image.manifest_digest


# --- oci-image-tool ---------------------------------------------------------------------------------


def validate(layout: Path, *refs: str) -> subprocess.CompletedProcess:
    args = ["oci-image-tool", "validate", "--type", "image"]
    for ref in refs:
        args += ["--ref", ref]
    return run(*args, str(layout))


def read_oci_image_tool(image: Image, form: str) -> None:
    """oci-image-tool 1.0.0-rc1 validates layout directories; an archive is validated extracted.

    Its tar reader is broken for every tar (``find failed: unable to walk: end of walk``,
    opencontainers/image-tools#205, unfixed in 1.0.0-rc1) and it reads no gzip, so archives are
    extracted with Python's ``tarfile`` first. A docker-archive holds the OCI layout too
    (``oci-layout``, ``index.json``, ``blobs/``, besides ``manifest.json``), so it validates the same way.
    """
    assert have("oci-image-tool"), "oci-image-tool is not installed: run examples/setup.sh"
    path = image.paths[form]
    if form == "oci":
        layout = path
    else:
        direct = validate(path, f"name={TAG}")
        assert direct.returncode != 0
        broken = "invalid tar header" if form == "smith" else "find failed: unable to walk: end of walk"
        assert broken in direct.stderr, direct.stderr
        layout = image.work / f"extracted-{form}"
        if not layout.exists():
            with tarfile.open(path, "r:*") as tar:
                tar.extractall(layout, filter="data")
    proc = validate(layout, f"name={TAG}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Validation succeeded" in proc.stdout + proc.stderr
    proc = validate(layout, f"digest={image.manifest_digest}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # it really looks: another digest or tag is not found
    for ref in (f"digest=sha256:{'0' * 64}", "name=other"):
        proc = validate(layout, ref)
        assert proc.returncode != 0 and "is not match" in proc.stderr, proc.stderr


# --- syft -------------------------------------------------------------------------------------------

SYFT = {"oci": "oci-dir:{path}", "oci-archive": "oci-archive:{path}", "smith": "oci-archive:{path}",
        "docker-archive": "docker-archive:{path}"}


def read_syft(image: Image, form: str) -> None:
    """syft reads the layout and both tars; smith's ``.tar.gz`` only gunzipped (syft reads no gzip)."""
    path = image.paths[form]
    if form == "smith":
        env = dict(os.environ, SYFT_CHECK_FOR_APP_UPDATE="false", HOME=str(image.work))
        direct = subprocess.run([syft_binary(), "scan", f"oci-archive:{path}", "-o", "json"],
                                capture_output=True, text=True, timeout=TIMEOUT, env=env, check=False)
        assert direct.returncode != 0 and "invalid tar header" in direct.stderr, direct.stderr
        path = image.gunzipped_smith()
    document = syft_scan(SYFT[form].format(path=path), image.work / f"syft-{form}")
    source = document["source"]["metadata"]
    assert source["imageID"] == image.config_digest
    assert [layer["digest"] for layer in source["layers"]] == image.diff_ids
    if form == "docker-archive":
        assert source["tags"] == [NAME]  # manifest.json's RepoTags
    else:
        assert source["manifestDigest"] == image.manifest_digest
    assert {artifact["name"] for artifact in document["artifacts"]} == image.packages


# --- podman -----------------------------------------------------------------------------------------


def podman_image(podman: Client, name: str) -> tuple[str, str]:
    """The manifest digest and image id podman stores for ``name``."""
    proc = podman("image", "inspect", "--format", "{{.Digest}} {{.Id}}", name)
    assert proc.returncode == 0, proc.stderr
    digest, image_id = proc.stdout.split()
    return digest, image_id


def read_podman(image: Image, form: str, podman: Client) -> None:
    """podman loads all three archives by our name (the smith one gzipped as it is) and pulls the layout.

    ``podman pull oci:DIR:TAG`` names the image after the directory's path as given
    (``localhost/tmp/x/DIR:latest`` for ``/tmp/x/DIR``), not by our name annotation: ``podman tag`` it,
    or load ``OUT.tar``.
    """
    assert podman("rmi", "--all", "--force").returncode == 0
    assert podman("images", "-q").stdout.split() == []
    path = image.paths[form]
    if form == "oci":
        proc = podman("pull", "-q", f"oci:{path}:{TAG}")
        assert proc.returncode == 0, proc.stderr
        assert "sha256:" + proc.stdout.strip() == image.config_digest
        name = f"localhost{path}:latest"  # podman names it after the path as given
        assert podman_image(podman, name)[1] == image.config_digest[7:]
        assert podman("tag", name, NAME).returncode == 0
    else:
        assert podman_load(podman, path) == NAME
    assert podman_image(podman, NAME) == (image.manifest_digest, image.config_digest[7:])
    assert podman_run(podman, NAME) == GREETING + "\n"


# --- containerd -------------------------------------------------------------------------------------


def ctr_digest(ctr: Client, name: str) -> str:
    """The manifest digest ``ctr images ls`` shows for ``name``."""
    proc = ctr("images", "ls", f"name=={name}")
    assert proc.returncode == 0, proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines()[1:]]
    assert [row[0] for row in rows] == [name], proc.stdout
    return rows[0][2]


def read_ctr(image: Image, form: str, ctr: Client) -> None:
    """``ctr images import`` takes the uncompressed tars; smith's gunzipped; a layout only as ``OUT.tar``."""
    for name in ctr_names(ctr):
        assert ctr("images", "rm", "--sync", name).returncode == 0
    assert ctr_names(ctr) == []
    path = image.paths[form]
    if form in ("oci", "smith"):
        direct = ctr("images", "import", str(path))
        assert direct.returncode != 0
        assert ("is a directory" if form == "oci" else "invalid tar header") in direct.stderr, direct.stderr
        # the workarounds: build the layout's image as OUT.tar (the same image); gunzip smith's
        path = image.paths["oci-archive"] if form == "oci" else image.gunzipped_smith()
    proc = ctr("images", "import", str(path))
    assert proc.returncode == 0, proc.stderr
    assert ctr_names(ctr) == [NAME]
    assert ctr_digest(ctr, NAME) == image.manifest_digest
    check = ctr("images", "check", f"name=={NAME}")
    assert check.returncode == 0 and "complete (2/2)" in check.stdout, check.stdout + check.stderr
    container = f"mct-matrix-{form}"
    proc = ctr("run", "--rm", "--read-only", NAME, container)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == GREETING + "\n"


# --- the matrix -------------------------------------------------------------------------------------


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("client", CLIENTS)
def test_client_reads_form(client: str, form: str, image: Image, request: pytest.FixtureRequest) -> None:
    readers: dict[str, Callable[[], None]] = {
        "skopeo": lambda: read_skopeo(image, form),
        "oci-image-tool": lambda: read_oci_image_tool(image, form),
        "syft": lambda: read_syft(image, form),
        "podman": lambda: read_podman(image, form, request.getfixturevalue("podman")),
        "ctr": lambda: read_ctr(image, form, request.getfixturevalue("containerd")),
    }
    readers[client]()


def test_readme_table_lists_every_client_and_form() -> None:
    """The README's table "Which client reads which output" has a row per client, a column per form."""
    text = (REPO / "README.md").read_text()
    section = text.split("#### Which client reads which output", 1)[1].split("\n#", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    header = [cell.strip() for cell in rows[0].strip("|").split("|")]
    assert header[1:] == [f"`{form}`" for form in FORMS], header
    clients = [re.sub(r"[`*]", "", row.strip("|").split("|")[0]).strip() for row in rows[1:]]
    assert clients == list(CLIENTS), clients
