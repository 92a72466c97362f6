"""Multi-platform images: one spec, amd64 and arm64, one OCI image index.

The arm64 sysroot is real Debian arm64 packages (coreutils, libc6, libselinux1,
libpcre2-8-0) fetched with ``apt-get download`` and unpacked with ``dpkg-deb
-x`` (``examples/setup.sh`` adds the arm64 architecture and registers
qemu-aarch64 with binfmt_misc, so runc runs the arm64 image under qemu); the
amd64 sysroot is this machine's ``/``. The program is coreutils' dynamically
linked ``ls`` (and ``uname``, which under qemu-user says ``aarch64``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from clients import Client, podman_client
from conftest import (
    REPO,
    assert_one_line_error,
    copy_closure,
    ldd_files,
    make_repo,
    p256_keys,
    run_cli,
    runc_run,
)
from registry_env import Env, running_registries
from rpmbuild_fixtures import build_rpm

from microcontainer_tool.errors import SpecError
from microcontainer_tool.spec.imagespec import parse_spec, platform_specs

ARM64_DEBS = ("coreutils", "libc6", "libselinux1", "libpcre2-8-0", "busybox-static")
TOOL_DIR = REPO / "microcontainer_tool" / "site_tools"
INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@pytest.fixture(scope="session")
def arm64_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Debian arm64 sysroot holding coreutils and its libraries (downloaded once per session)."""
    foreign = subprocess.run(["dpkg", "--print-foreign-architectures"], capture_output=True, text=True,
                             check=True).stdout.split()
    assert "arm64" in foreign, "dpkg has no arm64 architecture: run examples/setup.sh as root"
    work = tmp_path_factory.mktemp("arm64")
    debs = work / "debs"
    debs.mkdir()
    os.chmod(debs, 0o777)  # apt-get download drops privileges to _apt where it can
    proc = subprocess.run(["apt-get", "download", "-q", *(f"{name}:arm64" for name in ARM64_DEBS)],
                          cwd=debs, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    root = work / "root"
    root.mkdir()
    for deb in sorted(debs.glob("*.deb")):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True, capture_output=True)
    assert (root / "bin/ls").is_file() and (root / "lib/ld-linux-aarch64.so.1").exists()
    return root


def _spec(directory: Path, arm64_root: Path, arch: str = "[amd64, arm64]",
          sysroots: str | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    sysroots = sysroots if sysroots is not None else f"{{amd64: /, arm64: {arm64_root}}}"
    (directory / "microimage.yaml").write_text(
        f"arch: {arch}\nfrom: {sysroots}\npaths: [/bin/ls, /bin/uname]\ncmd: [/bin/uname, -m]\n")
    return directory / "microimage.yaml"


def _build(spec: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    proc = run_cli("build", "-c", str(spec), "-o", str(out), "--name", "multi", "-t", "v1", *extra)
    assert proc.returncode == 0, proc.stderr
    return proc


def _blob(layout: Path, digest: str) -> bytes:
    return (layout / "blobs/sha256" / digest.split(":", 1)[1]).read_bytes()


def _index(layout: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """``index.json`` and the image index it names."""
    top = json.loads((layout / "index.json").read_bytes())
    return top, json.loads(_blob(layout, top["manifests"][0]["digest"]))


def _platforms(index: dict[str, Any]) -> dict[str, str]:
    """``os/arch[/variant]`` -> manifest digest."""
    out = {}
    for desc in index["manifests"]:
        plat = desc["platform"]
        out["/".join([plat["os"], plat["architecture"]] + ([plat["variant"]] if "variant" in plat else []))] \
            = desc["digest"]
    return out


def _single_digest(layout: Path) -> str:
    """The manifest digest a single-image layout's ``index.json`` names."""
    return str(json.loads((layout / "index.json").read_bytes())["manifests"][0]["digest"])


def _files(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes()
            for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture(scope="session")
def built(arm64_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The two-platform layout (tag v1)."""
    work = tmp_path_factory.mktemp("multi")
    out = work / "img"
    _build(_spec(work / "spec", arm64_root), out)
    return out


def _skopeo(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=120, check=False)


def test_the_spec_lists_platforms_and_a_sysroot_each(tmp_path: Path) -> None:
    spec = parse_spec("arch: [amd64, aarch64]\nfrom: {x86_64: ./a, arm64: ./b}\npaths: [/bin/ls]\n",
                      "s.yaml", str(tmp_path))
    assert spec.platforms == ("amd64", "arm64") and spec.arch == ""
    assert [(s.arch, s.variant, s.from_) for s in platform_specs(spec)] == [("amd64", "", "./a"),
                                                                           ("arm64", "v8", "./b")]
    shared = parse_spec("arch: [arm64, amd64]\nfrom: ./r\npaths: [/bin/ls]\n", "s.yaml", str(tmp_path))
    assert [(s.arch, s.from_) for s in platform_specs(shared)] == [("arm64", "./r"), ("amd64", "./r")]
    one = parse_spec("arch: arm64\npaths: [/bin/ls]\n", "s.yaml", str(tmp_path))
    assert platform_specs(one) == [one] and "platforms" not in one.canonical()
    bad = {
        "arch: [amd64, amd64]\npaths: [/x]\n": "listed twice",
        "arch: []\npaths: [/x]\n": "must not be an empty list",
        "from: {amd64: /}\npaths: [/x]\n": "list the platforms in 'arch'",
        "arch: [amd64, arm64]\nfrom: {amd64: /}\npaths: [/x]\n": "no sysroot for arm64",
        "arch: [amd64]\nfrom: {amd64: /, arm64: /}\npaths: [/x]\n": "which 'arch' does not list",
        "arch: [amd64, sparc]\npaths: [/x]\n": "unknown arch 'sparc'",
    }
    for text, words in bad.items():
        with pytest.raises(SpecError, match=words):
            parse_spec(text, "s.yaml", str(tmp_path))


def test_the_output_is_one_index_of_one_manifest_per_platform(built: Path) -> None:
    top, index = _index(built)
    assert [d["mediaType"] for d in top["manifests"]] == [INDEX]
    assert top["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] == "v1"
    assert index["mediaType"] == INDEX and [d["mediaType"] for d in index["manifests"]] == [MANIFEST] * 2
    assert list(_platforms(index)) == ["linux/amd64", "linux/arm64/v8"]
    for desc in index["manifests"]:
        manifest = json.loads(_blob(built, desc["digest"]))
        config = json.loads(_blob(built, manifest["config"]["digest"]))
        assert (config["architecture"], config.get("variant")) == (desc["platform"]["architecture"],
                                                                   desc["platform"].get("variant"))


def test_skopeo_umoci_and_oci_image_tool_accept_the_index(built: Path, tmp_path: Path) -> None:
    _top, index = _index(built)
    platforms = _platforms(index)
    for arch, platform in (("arm64", "linux/arm64/v8"), ("amd64", "linux/amd64")):
        proc = _skopeo("inspect", "--override-arch", arch, f"oci:{built}:v1")
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["Architecture"] == arch
        raw = _skopeo("inspect", "--raw", "--override-arch", arch, f"oci:{built}:v1")
        assert raw.returncode == 0, raw.stderr
        assert json.loads(raw.stdout)["mediaType"] in (INDEX, MANIFEST)
        single = tmp_path / f"one-{arch}"
        copy = _skopeo("copy", "--override-arch", arch, f"oci:{built}:v1", f"oci:{single}:v1")
        assert copy.returncode == 0, copy.stderr
        assert _single_digest(single) == platforms[platform]
        manifest_blob = tmp_path / f"manifest-{arch}.json"
        manifest_blob.write_bytes(_blob(built, platforms[platform]))
        check = subprocess.run(["oci-image-tool", "validate", "--type", "manifest", str(manifest_blob)],
                               capture_output=True, text=True, check=False)
        assert check.returncode == 0, check.stderr + check.stdout
    index_blob = tmp_path / "index.json"
    index_blob.write_bytes(_blob(built, _index(built)[0]["manifests"][0]["digest"]))
    check = subprocess.run(["oci-image-tool", "validate", "--type", "imageIndex", str(index_blob)],
                           capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stderr + check.stdout
    listed = subprocess.run(["umoci", "ls", "--layout", str(built)], capture_output=True, text=True,
                            check=False)
    assert listed.returncode == 0 and listed.stdout.split() == ["v1"], listed.stderr
    before = _files(built)
    collected = subprocess.run(["umoci", "gc", "--layout", str(built)], capture_output=True, text=True,
                               check=False)
    assert collected.returncode == 0, collected.stderr
    assert _files(built) == before  # every blob is reachable from the index


def test_both_platforms_run(built: Path, tmp_path: Path) -> None:
    for arch, machine in (("amd64", "x86_64"), ("arm64", "aarch64")):
        single = tmp_path / f"one-{arch}"
        copy = _skopeo("copy", "--override-arch", arch, f"oci:{built}:v1", f"oci:{single}:v1")
        assert copy.returncode == 0, copy.stderr
        ran = runc_run(single, "v1", tmp_path)
        assert ran.returncode == 0 and ran.stdout == f"{machine}\n", ran.stderr
        listing = runc_run(single, "v1", tmp_path, args=["/bin/ls", "/bin"])
        assert listing.returncode == 0 and listing.stdout.split() == ["ls", "uname"], listing.stderr
        ours = run_cli("run", "--platform", arch, "--cache-dir", str(tmp_path / "cache"), str(built))
        assert ours.returncode == 0 and ours.stdout == f"{machine}\n", ours.stderr


def test_the_index_is_reproducible_and_a_new_platform_changes_no_other(
        arm64_root: Path, built: Path, tmp_path: Path) -> None:
    spec = _spec(tmp_path / "spec", arm64_root)
    again = tmp_path / "again"
    _build(spec, again)
    assert _files(again) == _files(built)
    archive, archive2 = tmp_path / "img.tar", tmp_path / "img2.tar"
    _build(spec, archive)
    _build(spec, archive2)
    assert archive.read_bytes() == archive2.read_bytes()
    listed = subprocess.run(["tar", "-xOf", str(archive), "index.json"], capture_output=True,
                            check=True).stdout
    assert listed == (built / "index.json").read_bytes()
    platforms = _platforms(_index(built)[1])
    only_amd64 = tmp_path / "amd64"
    _build(_spec(tmp_path / "spec-amd64", arm64_root, "[amd64]", "{amd64: /}"), only_amd64)
    assert _platforms(_index(only_amd64)[1]) == {"linux/amd64": platforms["linux/amd64"]}
    only_arm64 = tmp_path / "arm64"
    _build(_spec(tmp_path / "spec-arm64", arm64_root, "[arm64]", f"{{arm64: {arm64_root}}}"), only_arm64)
    assert _platforms(_index(only_arm64)[1]) == {"linux/arm64/v8": platforms["linux/arm64/v8"]}
    # the amd64 manifest is exactly the single-platform (arch: amd64) build's
    single = tmp_path / "single"
    _build(_spec(tmp_path / "spec-single", arm64_root, "amd64", "/"), single)
    assert _single_digest(single) == platforms["linux/amd64"]
    # --platform builds one platform of the list as a single image: the same manifest
    chosen = tmp_path / "chosen"
    _build(spec, chosen, "--platform", "linux/arm64")
    assert _single_digest(chosen) == platforms["linux/arm64/v8"]


def test_a_file_of_the_wrong_machine_is_refused(arm64_root: Path, tmp_path: Path) -> None:
    spec = _spec(tmp_path / "spec", arm64_root, sysroots=f"{{amd64: {arm64_root}, arm64: /}}")
    proc = run_cli("build", "-c", str(spec), "-o", str(tmp_path / "out"))
    assert_one_line_error(proc, "/bin/ls", "EM_AARCH64", "not amd64")
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no per-platform debris
    single = _spec(tmp_path / "single", arm64_root, "arm64", "/")  # one arch: checked too
    proc = run_cli("build", "-c", str(single), "-o", str(tmp_path / "single-out"))
    assert_one_line_error(proc, "/bin/ls", "EM_X86_64", "not arm64")


def test_docker_archive_is_refused_for_several_platforms(arm64_root: Path, tmp_path: Path) -> None:
    spec = _spec(tmp_path / "spec", arm64_root)
    proc = run_cli("build", "-c", str(spec), "-o", str(tmp_path / "out.tar"), "--format", "docker-archive")
    assert_one_line_error(proc, "docker-archive holds one image per tag")
    one = run_cli("build", "-c", str(spec), "-o", str(tmp_path / "arm.tar"), "--format", "docker-archive",
                  "--platform", "arm64")
    assert one.returncode == 0, one.stderr
    traced = run_cli("trace", "-c", str(spec), "--", "/bin/ls")
    assert_one_line_error(traced, "arch lists 2 platforms and trace handles one")


def test_platform_options_choose_the_manifest(built: Path, arm64_root: Path, tmp_path: Path) -> None:
    arm = run_cli("inspect", "--platform", "arm64", str(built))
    assert arm.returncode == 0 and "platform  linux/arm64/v8" in arm.stdout.splitlines(), arm.stderr
    host = run_cli("inspect", str(built))
    assert "platform  linux/amd64" in host.stdout.splitlines(), host.stderr
    top, index = _index(built)
    assert host.stdout.splitlines()[0] == \
        f"index     {top['manifests'][0]['digest']} (linux/amd64, linux/arm64/v8)"
    as_json = json.loads(run_cli("inspect", "--json", "--platform", "arm64", str(built)).stdout)
    assert as_json["index"] == {"digest": top["manifests"][0]["digest"], "platforms": _platforms(index)}
    assert as_json["manifest_digest"] == _platforms(index)["linux/arm64/v8"]
    assert_one_line_error(run_cli("inspect", "--platform", "linux/s390x", str(built)),
                          "no image for platform linux/s390x", "linux/arm64/v8")
    why = run_cli("why", "--platform", "linux/arm64", str(built), "/lib/ld-linux-aarch64.so.1")
    assert why.returncode == 0, why.stderr
    assert run_cli("why", "--platform", "amd64", str(built), "/lib/ld-linux-aarch64.so.1").returncode != 0
    sbom = run_cli("sbom", "--platform", "arm64", str(built))
    assert sbom.returncode == 0, sbom.stderr
    hashes = {c["name"]: c["hashes"][0]["content"] for c in json.loads(sbom.stdout)["components"]
              if c.get("type") == "file" and c.get("hashes")}
    ls_hash = hashlib.sha256((arm64_root / "bin/ls").read_bytes()).hexdigest()
    assert ls_hash in hashes.values()
    same = run_cli("diff", "--platform", "arm64", str(built), str(built))
    assert same.returncode == 0, same.stdout + same.stderr
    only_amd64 = tmp_path / "amd64"
    _build(_spec(tmp_path / "spec", arm64_root, "[amd64]", "{amd64: /}"), only_amd64)
    assert run_cli("diff", "--platform", "amd64", str(only_amd64), str(built)).returncode == 0
    assert run_cli("diff", "--platform", "arm64", str(only_amd64), str(built)).returncode != 0


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    yield from running_registries(tmp_path_factory)


@pytest.fixture()
def podman() -> Iterator[Client]:
    with podman_client() as call:
        yield call


def test_push_the_index_and_clients_pick_their_platform(built: Path, env: Env, tmp_path: Path,
                                                        podman: Client) -> None:
    top, index = _index(built)
    platforms = _platforms(index)
    ref = f"{env.open.host}/multi/ls:v1"
    pushed = run_cli("push", "--plain-http", "-q", str(built), ref)
    assert pushed.returncode == 0, pushed.stderr
    assert pushed.stdout.strip() == top["manifests"][0]["digest"]
    raw = _skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{ref}")
    assert raw.returncode == 0, raw.stderr
    assert raw.stdout.encode() == _blob(built, top["manifests"][0]["digest"])
    for arch, platform, machine in (("arm64", "linux/arm64/v8", "aarch64"),
                                    ("amd64", "linux/amd64", "x86_64")):
        seen = _skopeo("inspect", "--tls-verify=false", "--override-arch", arch, f"docker://{ref}")
        assert seen.returncode == 0 and json.loads(seen.stdout)["Architecture"] == arch, seen.stderr
        pulled = run_cli("pull", "--plain-http", "--platform", platform, ref, "-o", str(tmp_path / arch))
        assert pulled.returncode == 0, pulled.stderr
        assert _single_digest(tmp_path / arch) == platforms[platform]
        got = podman("pull", "--tls-verify=false", "--platform", platform.rsplit("/v8", 1)[0], ref)
        assert got.returncode == 0, got.stderr
        ran = podman("run", "--rm", "--read-only", "--network", "none", "--ulimit", "nofile=1024:1024",
                     "--ulimit", "nproc=4096:4096", ref)
        assert ran.returncode == 0 and ran.stdout == f"{machine}\n", ran.stderr
    one = run_cli("push", "--plain-http", "-q", "--platform", "arm64", str(built),
                  f"{env.open.host}/multi/arm:v1")
    assert one.returncode == 0 and one.stdout.strip() == platforms["linux/arm64/v8"], one.stderr


def test_a_pushed_index_is_signed_and_verified(built: Path, env: Env, tmp_path: Path) -> None:
    keys = p256_keys(tmp_path, "right", "wrong")
    ref = f"{env.open.host}/multi/signed:v1"
    pushed = run_cli("push", "--plain-http", "-q", str(built), ref)
    assert pushed.returncode == 0, pushed.stderr
    index_digest = pushed.stdout.strip()
    signed = run_cli("sign", "--plain-http", "--key", str(keys["right"]), ref)
    assert signed.returncode == 0 and index_digest in signed.stdout, signed.stderr
    tag = index_digest.replace(":", "-") + ".sig"
    assert _skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{env.open.host}/multi/signed:{tag}"
                   ).returncode == 0
    good = run_cli("verify", "--plain-http", "--key", str(keys["right.pub"]), ref)
    assert good.returncode == 0 and good.stdout.startswith("verified"), good.stdout + good.stderr
    bad = run_cli("verify", "--plain-http", "--key", str(keys["wrong.pub"]), ref)
    assert bad.returncode == 1 and bad.stdout.startswith("not verified"), bad.stdout + bad.stderr


# --------------------------------------------------------------------------- SCons


def _scons(cwd: Path) -> str:
    proc = subprocess.run([sys.executable, "-m", "SCons", "-Q"], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0 and "Traceback" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    return proc.stdout


def test_scons_refuses_to_sign_a_multi_platform_image(tmp_path: Path) -> None:
    # the joined index would not carry per-platform attestations or signatures: say so, build nothing
    project = tmp_path / "project"
    for arch in ("amd64", "arm64"):
        (project / f"root-{arch}").mkdir(parents=True)
    (project / "microimage.yaml").write_text(
        "arch: [amd64, arm64]\nfrom: {amd64: ./root-amd64, arm64: ./root-arm64}\npaths: [/bin/ls]\n"
        "entrypoint: [/bin/ls]\n")
    for setting in ("MCT_ATTEST=True", "MCT_SIGN_KEY='key.pem'"):
        (project / "SConstruct").write_text(
            f"env = Environment(tools=['default', 'microimage'], toolpath=[{str(TOOL_DIR)!r}], {setting})\n"
            "env.MicroImage('build/img', 'microimage.yaml')\n")
        proc = subprocess.run([sys.executable, "-m", "SCons", "-Q"], cwd=project, capture_output=True,
                              text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})
        assert proc.returncode != 0 and "Traceback" not in proc.stdout + proc.stderr, proc.stderr
        assert "not supported for a multi-platform image" in proc.stderr, proc.stderr
        assert not (project / "build").exists()


def test_scons_rebuilds_only_the_platform_whose_inputs_changed(arm64_root: Path, tmp_path: Path) -> None:
    project = tmp_path / "project"
    copy_closure(project / "root-amd64", ldd_files("/bin/ls"))
    shutil.copytree(arm64_root, project / "root-arm64", symlinks=True)
    for arch in ("amd64", "arm64"):
        (project / f"root-{arch}/etc").mkdir(parents=True, exist_ok=True)
        (project / f"root-{arch}/etc/note").write_text(f"{arch}\n")
    (project / "microimage.yaml").write_text(
        "arch: [amd64, arm64]\nfrom: {amd64: ./root-amd64, arm64: ./root-arm64}\n"
        "paths: [/bin/ls, /etc/note]\nentrypoint: [/bin/ls]\n")
    (project / "SConstruct").write_text(
        f"env = Environment(tools=['default', 'microimage'], toolpath=[{str(TOOL_DIR)!r}])\n"
        "env.MicroImage('build/img', 'microimage.yaml')\n")
    first = _scons(project)
    assert re.findall(r"^MicroImage (\S+)$", first, re.M) == [
        "build/img.platforms/amd64.tar", "build/img.platforms/arm64.tar", "build/img.tar"], first
    layout = project / "build/img"
    before = _platforms(_index(layout)[1])
    # the same bytes as the command line's build of the spec
    cli = tmp_path / "cli" / "img"
    proc = run_cli("build", "-c", str(project / "microimage.yaml"), "-o", str(cli))
    assert proc.returncode == 0, proc.stderr
    assert (cli / "index.json").read_bytes() == (layout / "index.json").read_bytes()
    assert "MicroImage" not in _scons(project)  # up to date
    amd64_part = project / "build/img.platforms/amd64.tar"
    stamp = (amd64_part.stat().st_ino, amd64_part.stat().st_mtime_ns)
    (project / "root-arm64/etc/note").write_text("arm64, changed\n")
    second = _scons(project)
    assert re.findall(r"^MicroImage (\S+)$", second, re.M) == ["build/img.platforms/arm64.tar",
                                                                "build/img.tar"], second
    assert (amd64_part.stat().st_ino, amd64_part.stat().st_mtime_ns) == stamp
    after = _platforms(_index(layout)[1])
    assert after["linux/amd64"] == before["linux/amd64"]
    assert after["linux/arm64/v8"] != before["linux/arm64/v8"]


# --------------------------------------------------------------------------- RPM specs


def test_an_rpm_spec_resolves_and_locks_each_architecture(arm64_root: Path, tmp_path: Path) -> None:
    rpms = [build_rpm(tmp_path / "rpms", "bbox", arch="x86_64",
                      files={"/bin/busybox": Path("/bin/busybox")}),
            build_rpm(tmp_path / "rpms", "bbox", arch="aarch64",
                      files={"/bin/busybox": arm64_root / "bin/busybox"})]
    repo = make_repo(tmp_path / "repo", rpms)
    spec_dir = tmp_path / "spec"
    spec_dir.mkdir()
    (spec_dir / "microimage.yaml").write_text(
        f"arch: [amd64, arm64]\npackages: [bbox]\nrepos: [{{baseurl: 'file://{repo}'}}]\n"
        "paths: [/bin/busybox]\ncmd: [/bin/busybox, uname, -m]\n")
    locked = run_cli("lock", "-c", str(spec_dir), "--cache-dir", str(tmp_path / "cache"))
    assert locked.returncode == 0, locked.stderr
    for rpm_arch in ("x86_64", "aarch64"):
        lock = json.loads((spec_dir / f"microimage.{rpm_arch}.lock").read_text())
        assert [(p["name"], p["arch"]) for p in lock["packages"]] == [("bbox", rpm_arch)]
    assert not (spec_dir / "microimage.lock").exists()
    out = tmp_path / "img"
    proc = run_cli("build", "-c", str(spec_dir), "-o", str(out), "--cache-dir", str(tmp_path / "cache"))
    assert proc.returncode == 0, proc.stderr
    assert list(_platforms(_index(out)[1])) == ["linux/amd64", "linux/arm64/v8"]
    for arch, machine in (("amd64", "x86_64"), ("arm64", "aarch64")):
        ran = run_cli("run", "--platform", arch, "--cache-dir", str(tmp_path / "cache"), str(out))
        assert ran.returncode == 0 and ran.stdout == f"{machine}\n", ran.stderr
        why = run_cli("why", "--platform", arch, str(out), "/bin/busybox")
        nevra = f"bbox-1.0-1.{'x86_64' if arch == 'amd64' else 'aarch64'}"
        assert why.returncode == 0 and nevra in why.stdout, why.stdout + why.stderr


def test_microizing_a_multi_platform_index_takes_each_platform_from_it(built: Path, tmp_path: Path) -> None:
    spec_dir = tmp_path / "spec"
    spec_dir.mkdir()
    (spec_dir / "microimage.yaml").write_text(
        f"arch: [arm64, amd64]\nfrom: {built}:v1\npaths: [/bin/uname]\ncmd: [/bin/uname, -m]\n")
    out = tmp_path / "micro"
    proc = run_cli("build", "-c", str(spec_dir), "-o", str(out), "--cache-dir", str(tmp_path / "cache"))
    assert proc.returncode == 0, proc.stderr
    assert list(_platforms(_index(out)[1])) == ["linux/arm64/v8", "linux/amd64"]
    for arch, machine in (("amd64", "x86_64"), ("arm64", "aarch64")):
        ran = run_cli("run", "--platform", arch, "--cache-dir", str(tmp_path / "cache"), str(out))
        assert ran.returncode == 0 and ran.stdout == f"{machine}\n", ran.stderr
        listing = run_cli("inspect", "--json", "--platform", arch, str(out))
        names = {os.path.basename(f["path"]) for f in json.loads(listing.stdout)["files"]}
        assert "uname" in names and "ls" not in names, sorted(names)


def test_scons_pushes_the_index(arm64_root: Path, env: Env, tmp_path: Path) -> None:
    project = tmp_path / "project"
    _spec(project, arm64_root)
    ref = f"{env.open.host}/scons/multi:v1"
    (project / "SConstruct").write_text(
        f"env = Environment(tools=['default', 'microimage'], toolpath=[{str(TOOL_DIR)!r}])\n"
        "img = env.MicroImage('build/img', 'microimage.yaml')\n"
        f"env.MicroPush('build/img.pushed', img, REF={ref!r}, MCT_PUSH_PLAIN_HTTP=True)\n")
    _scons(project)
    top, _index_blob = _index(project / "build/img")
    digest = top["manifests"][0]["digest"]
    assert (project / "build/img.pushed").read_text() == f"{ref}@{digest}\n"
    raw = _skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{ref}")
    assert raw.returncode == 0 and json.loads(raw.stdout)["mediaType"] == INDEX, raw.stderr
    assert "MicroPush" not in _scons(project)
