"""Provenance records, `microcontainer why`, `inspect --packages` and dpkg status.d entries."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import (
    SHARED_RPMS,
    HttpServer,
    assert_one_line_error,
    dpkg_owner,
    have,
    make_repo,
    needs_shared_rpms,
    run_cli,
)

from microcontainer_tool.model.provenance import RECORD_PATH, read_record
from microcontainer_tool.sources.dpkg import parse_stanzas

debian_host = pytest.mark.skipif(not Path("/var/lib/dpkg/status").is_file() or not have("dpkg-query"),
                                 reason="needs a Debian host (dpkg database)")


def spec_dir(path: Path, text: str) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "microimage.yaml").write_text(text)
    return path


def layer_files(image: Path) -> dict[str, dict]:
    proc = run_cli("inspect", "--json", str(image))
    assert proc.returncode == 0, proc.stderr
    return {f["path"]: f for f in json.loads(proc.stdout)["files"]}


@pytest.fixture(scope="module")
def curl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """curl from this Debian host, with a files: entry and a rootfs/ overlay file."""
    if not Path("/usr/bin/curl").exists():
        pytest.skip("needs /usr/bin/curl")
    work = tmp_path_factory.mktemp("curl")
    spec = spec_dir(work / "spec", "paths: [/usr/bin/curl]\ncmd: [/usr/bin/curl]\n"
                                   "files: {/etc/app.conf: app.conf}\n")
    (spec / "app.conf").write_text("x = 1\n")
    (spec / "rootfs/read").mkdir(parents=True)
    (spec / "rootfs/read/data").write_text("hello\n")
    proc = run_cli("build", "-c", str(spec), "-o", str(work / "img"))
    assert proc.returncode == 0, proc.stderr
    return work / "img"


@debian_host
def test_why_a_library_two_levels_deep(curl: Path) -> None:
    record = read_record(str(curl))
    # a library curl reaches only through libcurl
    deep = sorted(p for p, f in record["files"].items()
                  if f["why"] and f["why"][0].get("by", "").split("/")[-1].startswith("libcurl.so"))
    assert deep, "libcurl needs libraries of its own"
    target = next((p for p in deep if "libssl" in p), deep[0])
    proc = run_cli("why", str(curl), target)
    assert proc.returncode == 0, proc.stderr
    chain = proc.stdout.splitlines()[0]
    assert chain.startswith(f"{target} <- needed by /usr/lib/x86_64-linux-gnu/libcurl.so")
    assert chain.endswith("<- needed by /usr/bin/curl (as libcurl.so.4, ld.so.cache) <- paths: /usr/bin/curl")
    owner = dpkg_owner(target)
    assert proc.stdout.splitlines()[1].startswith(f"package: {owner.split(':')[0]} ")


@debian_host
def test_why_names_the_overlay_and_files_entries(curl: Path) -> None:
    proc = run_cli("why", str(curl), "/read/data")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["/read/data <- rootfs/ overlay", "source: project:rootfs/"]
    proc = run_cli("why", str(curl), "/etc/app.conf")
    assert proc.stdout.splitlines() == ["/etc/app.conf <- files: /etc/app.conf", "source: project:app.conf"]
    assert_one_line_error(run_cli("why", str(curl), "/usr/bin/bash"), "/usr/bin/bash", "not in the image")


@debian_host
def test_packages_are_exactly_the_owners_of_files(curl: Path) -> None:
    files = layer_files(curl)
    owners = set()
    for path, info in files.items():
        if info["type"] == "file" and not path.startswith(("/var/lib/", "/etc/app.conf", "/read/")):
            owner = dpkg_owner(path)
            assert owner is not None, path
            owners.add(owner.split(":")[0])
    record = read_record(str(curl))
    assert {p["name"] for p in record["packages"].values()} == owners
    proc = run_cli("inspect", "--packages", str(curl))
    assert proc.returncode == 0, proc.stderr
    listed = {line.split()[0] for line in proc.stdout.splitlines()[1:]}
    assert listed == owners
    version = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "libc6"], capture_output=True,
                             text=True).stdout
    assert any(line.split()[:2] == ["libc6", version] for line in proc.stdout.splitlines())
    facts = json.loads(run_cli("inspect", "--packages", "--json", str(curl)).stdout)
    libc = next(p for p in facts if p["name"] == "libc6")
    assert libc["purl"].startswith("pkg:deb/debian/libc6@") and "arch=amd64" in libc["purl"]


@debian_host
def test_status_d_entries_for_scanners(curl: Path, tmp_path: Path) -> None:
    """distroless layout: /var/lib/dpkg/status.d/NAME is the package's status stanza."""
    for blob in (curl / "blobs/sha256").iterdir():  # the layer is the only gzip blob; JSON ones fail
        subprocess.run(["tar", "-xzf", str(blob), "-C", str(tmp_path)], capture_output=True)
    status_d = tmp_path / "var/lib/dpkg/status.d"
    names = sorted(p.name for p in status_d.iterdir())
    record = read_record(str(curl))
    assert names == sorted(p["name"] for p in record["packages"].values())
    for name in names:
        stanza = parse_stanzas(status_d.joinpath(name).read_text())[0]
        assert stanza["Package"] == name and stanza["Status"] == "install ok installed"
        expected = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", name], capture_output=True,
                                  text=True).stdout
        assert stanza["Version"] == expected
    assert (tmp_path / RECORD_PATH.lstrip("/")).is_file()
    assert not (tmp_path / "var/lib/dpkg/status").exists()  # no database: only the entries


def test_record_is_reproducible_and_has_no_host_paths(tmp_path: Path) -> None:
    outs = []
    for name in ("a", "bb/deeper"):
        spec = spec_dir(tmp_path / name / "spec", "paths: [/usr/bin/true]\nfiles: {/etc/c: c}\n")
        (spec / "c").write_text("c\n")
        out = tmp_path / name / "img.tar"
        assert run_cli("build", "-c", str(spec), "-o", str(out)).returncode == 0
        outs.append(out.read_bytes())
        text = json.dumps(read_record(str(out)))
        assert str(tmp_path) not in text
    assert outs[0] == outs[1]


@pytest.mark.skipif(not have("umoci"), reason="needs umoci to make a foreign image")
def test_image_without_a_record_is_one_line(tmp_path: Path) -> None:
    layout = tmp_path / "foreign"
    subprocess.run(["umoci", "init", "--layout", str(layout)], check=True, capture_output=True)
    subprocess.run(["umoci", "new", "--image", f"{layout}:x"], check=True, capture_output=True)
    bundle = tmp_path / "bundle"
    subprocess.run(["umoci", "unpack", "--image", f"{layout}:x", str(bundle)], check=True,
                   capture_output=True)
    (bundle / "rootfs/hello").write_text("hi\n")
    subprocess.run(["umoci", "repack", "--image", f"{layout}:x", str(bundle)], check=True,
                   capture_output=True)
    proc = run_cli("why", f"{layout}:x", "/hello")
    assert_one_line_error(proc, "no provenance record")
    assert_one_line_error(run_cli("inspect", "--packages", f"{layout}:x"), "no provenance record")
    assert_one_line_error(run_cli("why", str(tmp_path / "nothing"), "/x"), "no such image")


@needs_shared_rpms
def test_rpm_image_provenance(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", sorted(SHARED_RPMS.glob("*.rpm")))
    server = HttpServer(str(repo))
    try:
        spec = spec_dir(tmp_path / "spec", "packages: [curl]\npaths: [/usr/bin/curl]\n"
                                           f"repos: [{{baseurl: '{server.url}', name: rocky}}]\n")
        proc = run_cli("build", "-c", str(spec), "-o", str(tmp_path / "img"),
                       "--cache-dir", str(tmp_path / "c"))
        assert proc.returncode == 0, proc.stderr
    finally:
        server.stop()
    record = read_record(str(tmp_path / "img"))
    proc = run_cli("why", str(tmp_path / "img"), "/usr/lib64/libssl.so.3")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("/usr/lib64/libssl.so.3 <- needed by /usr/lib64/libcurl.so.4")
    assert lines[0] == ("/usr/lib64/libssl.so.3 <- needed by /usr/lib64/libcurl.so.4.7.0 (as libssl.so.3,"
                        " default dirs) <- needed by /usr/bin/curl (as libcurl.so.4, default dirs)"
                        " <- paths: /usr/bin/curl")
    assert any("libldap" in line for line in lines[1:-1])  # every reason gets its chain
    assert lines[-1].startswith("package: openssl-libs-1:3.") and lines[-1].endswith(".x86_64 (rpm)")
    ssl = next(p for p in record["packages"].values() if p["name"] == "openssl-libs")
    assert ssl["license"] == "Apache-2.0" and ssl["repo"] == "rocky"
    assert ssl["purl"].startswith("pkg:rpm/rocky/openssl-libs@3.") and "epoch=1" in ssl["purl"]
    listed = run_cli("inspect", "--packages", str(tmp_path / "img")).stdout
    assert any(line.startswith("openssl-libs ") and "1:3." in line for line in listed.splitlines())
