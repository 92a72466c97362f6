"""``microcontainer-smith``: smith's command line, end to end against real registries and runc.

Builds with smith's flags from a ``smith.yaml`` (``-d``, the default spec name
and the default ``image.tar.gz`` output), uploads with ``-r http://HOST/REPO:TAG``
to Debian's ``docker-registry`` on 127.0.0.1, downloads it back and runs it;
credentials in the URL against the htpasswd registry are used and never shown.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import uuid
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import pytest
from conftest import REPO, run_cli, runc_run
from registry_env import USER, Env, running_registries

from microcontainer_tool import __version__
from microcontainer_tool.oci import model as oci

SPEC = """\
from: /
paths: [/usr/bin/echo]
cmd: [/usr/bin/echo, hello from smith]
"""


def smith(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``microcontainer-smith ARGS`` (the console script's entry point) as a real process."""
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = str(REPO) + os.pathsep + full_env.get("PYTHONPATH", "")
    full_env.pop("SOURCE_DATE_EPOCH", None)
    full_env.update(env or {})
    entry = "from microcontainer_tool.smithcli import main_entry; main_entry()"
    return subprocess.run([sys.executable, "-c", entry, *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True)


def read_index(archive: Path) -> dict:
    with tarfile.open(archive) as tar:
        member = tar.extractfile("index.json")
        assert member is not None
        return json.loads(member.read())


def read_blob(archive: Path, digest: str) -> dict:
    with tarfile.open(archive) as tar:
        member = tar.extractfile(f"blobs/sha256/{digest.split(':')[1]}")
        assert member is not None
        return json.loads(member.read())


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    yield from running_registries(tmp_path_factory)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``smith -d project`` run from the directory above: writes ``./image.tar.gz``."""
    work = tmp_path_factory.mktemp("smith")
    (work / "project").mkdir()
    (work / "project" / "smith.yaml").write_text(SPEC)
    proc = smith("-d", "project", cwd=work)
    assert proc.returncode == 0, proc.stderr
    assert (work / "image.tar.gz").is_file()
    assert not (work / "project" / "image.tar.gz").exists()  # -i is relative to where smith runs
    return work / "image.tar.gz"


def test_console_script_is_declared():
    scripts = {e.name: e.value for e in metadata.entry_points(group="console_scripts")}
    assert scripts.get("microcontainer-smith") == "microcontainer_tool.smithcli:main_entry"


def test_version(tmp_path):
    for args in (["-V"], ["--version"], ["version"]):
        proc = smith(*args, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert __version__ in proc.stdout
    assert list(tmp_path.iterdir()) == []  # -V builds nothing


def test_build_defaults_no_build_number_and_reproducible(built, tmp_path):
    index = read_index(built)
    (entry,) = index["manifests"]
    assert "com.oracle.smith.build" not in entry["annotations"]
    assert entry["annotations"][oci.ANNOTATION_REF_NAME] == "latest"
    again = tmp_path / "image.tar.gz"  # the same name: the image is named after its file
    proc = smith("-d", str(built.parent / "project"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert again.read_bytes() == built.read_bytes()


def test_build_number_conf_and_fast_flags(built, tmp_path):
    project = tmp_path / "p"
    project.mkdir()
    (project / "other.yaml").write_text(SPEC)
    proc = smith("-c", "other.yaml", "-d", str(project), "-i", "numbered.tar.gz", "-b", "42-ci", "-f", "-v",
                 "-k", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (entry,) = read_index(tmp_path / "numbered.tar.gz")["manifests"]
    assert entry["annotations"]["com.oracle.smith.build"] == "42-ci"
    (plain,) = read_index(built)["manifests"]
    assert entry["digest"] == plain["digest"]  # the build number is on the index entry, not in the image
    missing = smith("-d", str(project), cwd=tmp_path)  # no smith.yaml there
    assert missing.returncode != 0
    assert missing.stderr.startswith("microcontainer-smith: error: ")
    assert "Traceback" not in missing.stderr


def test_upload_download_run(env, built, tmp_path):
    url = f"http://{env.open.host}/smith/echo:v1"
    proc = smith("upload", "-r", url, cwd=built.parent)  # -i image.tar.gz by default
    assert proc.returncode == 0, proc.stderr
    (entry,) = read_index(built)["manifests"]
    _data, media_type, digest = env.open.client().get_manifest("smith/echo", "v1")
    assert (media_type, digest) == (oci.MEDIA_TYPE_MANIFEST, entry["digest"])

    proc = smith("download", "-i", "back.tar.gz", "-r", url, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (back,) = read_index(tmp_path / "back.tar.gz")["manifests"]
    assert back["digest"] == entry["digest"]
    assert back["annotations"][oci.ANNOTATION_REF_NAME] == "latest"  # smith's images are `latest`
    state = f"/run/mct-test-{uuid.uuid4().hex[:10]}"  # runc's mapped root must reach the bundle
    try:
        proc = run_cli("run", "--state-dir", state, "--cache-dir", str(tmp_path / "cache"),
                       str(tmp_path / "back.tar.gz"))
    finally:
        shutil.rmtree(state, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "hello from smith\n"


def test_upload_docker_format(env, built, tmp_path):
    url = f"http://{env.open.host}/smith/docker:d1"
    proc = smith("upload", "-i", str(built), "-r", url, "-d", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    data, media_type, _digest = env.open.client().get_manifest("smith/docker", "d1")
    assert media_type == "application/vnd.docker.distribution.manifest.v2+json"
    assert json.loads(data)["config"]["mediaType"] == "application/vnd.docker.container.image.v1+json"


def test_insecure_flag_for_self_signed_tls(env, built, tmp_path):
    url = f"https://{env.tls.host}/smith/tls:t1"
    refused = smith("upload", "-i", str(built), "-r", url, cwd=tmp_path)
    assert refused.returncode != 0
    assert refused.stderr.startswith("microcontainer-smith: error: "), refused.stderr
    proc = smith("upload", "-i", str(built), "-r", url, "-k", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    proc = smith("-k", "download", "-i", str(tmp_path / "t.tar.gz"), "-r", url, cwd=tmp_path)  # -k before
    assert proc.returncode == 0, proc.stderr
    # a spec naming an image on that registry: -k reaches it too
    project = tmp_path / "from-tls"
    project.mkdir()
    (project / "smith.yaml").write_text(f"from: {url}\npaths: [/usr/bin/echo]\n")
    cache = {"MCT_CACHE_DIR": str(tmp_path / "cache")}
    refused = smith("-d", str(project), cwd=tmp_path, env=cache)
    assert refused.returncode != 0
    assert not (tmp_path / "image.tar.gz").exists()
    proc = smith("-d", str(project), "-k", cwd=tmp_path, env=cache)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "image.tar.gz").is_file()


def test_credentials_in_url_are_used_and_never_shown(env, built, tmp_path):
    host = env.basic.host
    good = f"http://{USER}:{env.password}@{host}/smith/auth:a1"
    proc = smith("upload", "-i", str(built), "-r", good, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert env.password not in proc.stdout + proc.stderr
    proc = smith("download", "-i", "auth.tar.gz", "-r", good, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert env.password not in proc.stdout + proc.stderr
    assert read_index(tmp_path / "auth.tar.gz")["manifests"][0]["digest"] == \
        read_index(built)["manifests"][0]["digest"]

    anonymous = smith("download", "-i", "anon.tar.gz", "-r", f"http://{host}/smith/auth:a1", cwd=tmp_path,
                      env={"DOCKER_CONFIG": str(tmp_path / "no-docker-config")})
    assert anonymous.returncode != 0
    assert not (tmp_path / "anon.tar.gz").exists()
    wrong = "wrong-" + env.password
    for url in (f"http://{USER}:{wrong}@{host}/smith/auth:a1",    # refused by the registry
                f"http://{USER}:{wrong}@{host}/Smith/auth:a1",    # malformed: the message shows the URL
                f"ftp://{USER}:{wrong}@{host}/smith/auth:a1"):
        proc = smith("download", "-i", "bad.tar.gz", "-r", url, cwd=tmp_path)
        assert proc.returncode != 0
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("microcontainer-smith: error: "), proc.stderr
        assert wrong not in proc.stdout + proc.stderr
        assert env.password not in proc.stdout + proc.stderr
    assert "***" in proc.stderr  # the malformed URL is shown, its password masked


def test_pull_by_digest_into_layout_is_tagged_latest(env, built, tmp_path):
    url = f"http://{env.open.host}/smith/pulled:p1"
    assert smith("upload", "-i", str(built), "-r", url, cwd=tmp_path).returncode == 0
    digest = read_index(built)["manifests"][0]["digest"]
    layout = tmp_path / "layout"
    proc = run_cli("pull", "--plain-http", f"{env.open.host}/smith/pulled@{digest}", "-o", str(layout))
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("inspect", "--json", f"{layout}:latest")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["manifest_digest"] == digest
    ran = runc_run(layout, "latest", tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == "hello from smith\n"

    tagged = tmp_path / "tagged"
    proc = run_cli("pull", "--plain-http", f"{env.open.host}/smith/pulled:p1", "-o", str(tagged))
    assert proc.returncode == 0, proc.stderr
    assert run_cli("inspect", f"{tagged}:p1").returncode == 0
    assert run_cli("inspect", f"{tagged}:latest").returncode != 0  # a pull by tag keeps that tag
    retagged = tmp_path / "retagged"
    proc = run_cli("pull", "--plain-http", f"{env.open.host}/smith/pulled:p1", "-o", str(retagged),
                   "--tag", "latest")
    assert proc.returncode == 0, proc.stderr
    assert run_cli("inspect", f"{retagged}:latest").returncode == 0
