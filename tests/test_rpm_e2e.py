"""End to end from real Rocky Linux 9 RPMs: lock over HTTP, build offline, run with runc."""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import pytest
from conftest import (
    SHARED_RPMS,
    HttpServer,
    assert_one_line_error,
    make_repo,
    needs_shared_rpms,
    run_cli,
    runc_run,
)

pytestmark = needs_shared_rpms


@pytest.fixture(scope="module")
def rocky_repo(tmp_path_factory):
    repo = make_repo(tmp_path_factory.mktemp("rocky") / "repo", sorted(SHARED_RPMS.glob("*.rpm")))
    server = HttpServer(str(repo))
    yield server.url, repo
    server.stop()


def write_spec(directory: Path, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "microimage.yaml").write_text(text)
    return directory


def layer_file(layout: Path, name: str) -> bytes:
    """The content of one file of a one-layer image's layer."""
    index = json.loads((layout / "index.json").read_text())
    blobs = layout / "blobs" / "sha256"
    manifest = json.loads((blobs / index["manifests"][0]["digest"][7:]).read_text())
    with open(blobs / manifest["layers"][0]["digest"][7:], "rb") as raw:
        with tarfile.open(fileobj=raw, mode="r:gz") as tar:
            member = tar.extractfile(name)
            assert member is not None, name
            return member.read()


def manifest_names(image: Path) -> list[str]:
    proc = run_cli("inspect", "--json", str(image))
    assert proc.returncode == 0, proc.stderr
    return [f["path"] for f in json.loads(proc.stdout)["files"]]


def test_curl_from_a_repository(rocky_repo, tmp_path):
    url, _repo = rocky_repo
    spec = write_spec(tmp_path / "spec", f"""
packages: [curl]
repos:
  - baseurl: {url}
    name: rocky
paths: [/usr/bin/curl]
cmd: [/usr/bin/curl, --version]
""")
    cache = tmp_path / "cache"
    proc = run_cli("lock", "-c", str(spec), "--cache-dir", str(cache))
    assert proc.returncode == 0, proc.stderr
    lock_file = spec / "microimage.lock"
    first_lock = lock_file.read_bytes()
    names = {p["name"] for p in json.loads(first_lock)["packages"]}
    assert {"curl", "libcurl", "glibc", "openssl-libs"} <= names
    proc = run_cli("lock", "-c", str(spec), "--cache-dir", str(cache), "--update")
    assert proc.returncode == 0, proc.stderr
    assert lock_file.read_bytes() == first_lock  # re-locking an unchanged repo: same bytes

    out = tmp_path / "curl"
    proc = run_cli("build", "-c", str(spec), "-o", str(out), "--cache-dir", str(cache), "-q")
    assert proc.returncode == 0, proc.stderr
    digest = proc.stdout.strip()
    paths = manifest_names(out)
    assert "/usr/bin/curl" in paths and "/usr/lib64/libcurl.so.4" in paths
    assert "/var/lib/rpmmanifest/container-manifest-2" in paths
    assert "/usr/bin/bash" not in paths  # a dependency of the packages, not of the program

    # offline: a second cache-only build needs no server and gives the same image
    again = tmp_path / "curl-offline"
    proc = run_cli("build", "-c", str(spec), "-o", str(again), "--cache-dir", str(cache), "--offline", "-q",
                   env={"http_proxy": "http://127.0.0.1:9", "no_proxy": ""})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == digest

    proc = runc_run(out, "latest", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("curl 7.76.1"), proc.stdout


def test_rpm_manifest_lists_exactly_the_contributing_packages(rocky_repo, tmp_path):
    url, _repo = rocky_repo
    spec = write_spec(tmp_path / "spec", f"""
packages: [curl]
repos: [{{baseurl: '{url}'}}]
paths: [/usr/bin/curl]
""")
    out = tmp_path / "img"
    proc = run_cli("build", "-c", str(spec), "-o", str(out), "--cache-dir", str(tmp_path / "cache"))
    assert proc.returncode == 0, proc.stderr
    assert "/usr/bin/curl" in manifest_names(out)
    manifest_text = layer_file(out, "var/lib/rpmmanifest/container-manifest-2").decode()
    listed = {line.split("\t")[0] for line in manifest_text.splitlines()}
    assert {"curl", "libcurl", "glibc", "openssl-libs", "zlib"} <= listed
    assert "bash" not in listed and "coreutils" not in listed
    for line in manifest_text.splitlines():
        assert len(line.split("\t")) >= 9, line


def test_local_rpm_file_takes_part(rocky_repo, tmp_path):
    url, _repo = rocky_repo
    spec_dir = tmp_path / "spec"
    spec_dir.mkdir()
    local = next(SHARED_RPMS.glob("curl-7*.rpm"))
    shutil.copy(local, spec_dir / local.name)
    write_spec(spec_dir, f"""
packages: [{local.name}]
repos: [{{baseurl: '{url}'}}]
paths: [/usr/bin/curl]
""")
    proc = run_cli("lock", "-c", str(spec_dir), "--cache-dir", str(tmp_path / "cache"))
    assert proc.returncode == 0, proc.stderr
    packages = json.loads((spec_dir / "microimage.lock").read_text())["packages"]
    curl = [p for p in packages if p["name"] == "curl"]
    assert len(curl) == 1 and curl[0]["repo"] == "@local"


def test_unresolvable_package_is_one_line(rocky_repo, tmp_path):
    url, _repo = rocky_repo
    spec = write_spec(tmp_path / "spec", f"packages: [no-such-package]\nrepos: [{{baseurl: '{url}'}}]\n")
    proc = run_cli("lock", "-c", str(spec), "--cache-dir", str(tmp_path / "cache"))
    assert_one_line_error(proc, "no-such-package")
    assert not (spec / "microimage.lock").exists()


def test_spec_change_needs_relock(rocky_repo, tmp_path):
    url, _repo = rocky_repo
    spec = write_spec(tmp_path / "spec", f"packages: [zlib]\nrepos: [{{baseurl: '{url}'}}]\n")
    cache = tmp_path / "cache"
    assert run_cli("lock", "-c", str(spec), "--cache-dir", str(cache)).returncode == 0
    (spec / "microimage.yaml").write_text(f"packages: [zlib, curl]\nrepos: [{{baseurl: '{url}'}}]\n")
    proc = run_cli("build", "-c", str(spec), "-o", str(tmp_path / "o"), "--cache-dir", str(cache))
    assert_one_line_error(proc, "out of date", "microcontainer lock")


def test_wrong_checksum_in_repo_is_one_line(tmp_path):
    rpms = [next(SHARED_RPMS.glob("tzdata-*.rpm"))]  # noarch, no dependencies
    repo = make_repo(tmp_path / "repo", rpms)
    rpm = repo / rpms[0].name
    data = bytearray(rpm.read_bytes())
    data[-100] ^= 0xFF  # corrupt the payload after indexing: the repo's checksum no longer matches
    rpm.write_bytes(bytes(data))
    spec = write_spec(tmp_path / "spec", f"packages: [tzdata]\nrepos: [{{baseurl: 'file://{repo}'}}]\n"
                                         "arch: x86_64\n")
    cache = tmp_path / "cache"
    proc = run_cli("lock", "-c", str(spec), "--cache-dir", str(cache))
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("build", "-c", str(spec), "-o", str(tmp_path / "o"), "--cache-dir", str(cache))
    assert_one_line_error(proc, "tzdata")
    assert not (tmp_path / "o").exists()


def test_truncated_local_rpm_is_one_line(tmp_path):
    spec_dir = tmp_path / "spec"
    spec_dir.mkdir()
    source = next(SHARED_RPMS.glob("zlib-1*.rpm"))
    (spec_dir / "zlib.rpm").write_bytes(source.read_bytes()[:5000])
    write_spec(spec_dir, "packages: [zlib.rpm]\n")
    proc = run_cli("lock", "-c", str(spec_dir), "--cache-dir", str(tmp_path / "cache"))
    assert_one_line_error(proc, "zlib.rpm")


def rocky_key(tmp_path: Path) -> Path:
    """Rocky's public key, taken from its own rocky-gpg-keys package."""
    from microcontainer_tool.sources.rpm.cpio import extract_rpm

    package = next(SHARED_RPMS.glob("rocky-gpg-keys-*.rpm"))
    dest = tmp_path / "keys"
    dest.mkdir()
    extract_rpm(str(package), str(dest))
    return next(p for p in dest.rglob("*Rocky-9*") if p.is_file())


def test_signed_repository_packages_are_verified(rocky_repo, tmp_path):
    url, _repo = rocky_repo
    key = rocky_key(tmp_path)
    spec = write_spec(tmp_path / "spec", f"packages: [zlib, tzdata]\npaths: [/usr/lib64/libz.so.1]\n"
                                          f"repos: [{{baseurl: '{url}', gpgkey: 'file://{key}'}}]\n")
    proc = run_cli("build", "-c", str(spec), "-o", str(tmp_path / "ok"),
                   "--cache-dir", str(tmp_path / "cache"))
    assert proc.returncode == 0, proc.stderr
    # a gpgkey that is no key: refused before anything is extracted (wrong keys: test_rpmsig)
    wrong = next(SHARED_RPMS.glob("curl-7*.rpm"))
    (spec / "microimage.yaml").write_text(f"packages: [zlib, tzdata]\npaths: [/usr/lib64/libz.so.1]\n"
                                          f"repos: [{{baseurl: '{url}', gpgkey: 'file://{wrong}'}}]\n")
    proc = run_cli("build", "-c", str(spec), "-o", str(tmp_path / "bad"),
                   "--cache-dir", str(tmp_path / "cache"))
    assert_one_line_error(proc, "curl-7")
    assert not (tmp_path / "bad").exists()
