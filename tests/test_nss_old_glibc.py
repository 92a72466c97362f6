"""The ``nss`` pack on a CentOS-7-shaped RPM set (glibc 2.17), built with rpmbuild and served over HTTP.

No CentOS 7 RPM (nor any glibc < 2.34) can be downloaded on this machine, so the
packages are rpmbuild fixtures laid out the way CentOS 7 lays them out:
``filesystem`` owns ``/lib64 -> usr/lib64``; ``glibc-2.17`` ships the loader as
``/usr/lib64/ld-2.17.so``, libc as ``/usr/lib64/libc-2.17.so`` with the
``libc.so.6`` link, and ``libnss_files-2.17.so``/``libnss_dns-2.17.so`` with
their soname links; ``coreutils`` ships ``/usr/bin/id``.

What this proves, and what it does not: the ELF files are this host's (Debian's
glibc 2.36, whose ``files`` and ``dns`` NSS are built in; its ``libnss_*.so.2``
are stubs). So the pack's *selection* is proven on a glibc-2.17-shaped package
set — the version is read from the RPM layout, the modules are taken with
provenance ``pack nss``, ``auto_packs: false`` leaves them out — and the run
proves the nss files, the named user and the RPM sysroot end to end under runc
(``id -un`` prints ``app``). It does not prove that a real glibc 2.17 ``dlopen``s
the modules the pack adds: that needs a real glibc 2.17, which is not at hand.
"""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest
from conftest import HttpServer, have, make_repo, run_cli, runc_run
from rpmbuild_fixtures import build_rpm

from microcontainer_tool.model.provenance import read_record

pytestmark = pytest.mark.skipif(not have("createrepo_c", "rpmbuild"),
                                reason="needs createrepo_c and rpmbuild")

VERSION = "2.17"
RELEASE = "326.el7_9"
LIB64 = "/usr/lib64"
MODULES = (f"{LIB64}/libnss_files.so.2", f"{LIB64}/libnss_dns.so.2")


def host_library(soname: str, program: str = "/usr/bin/id") -> Path:
    """The host file ``ldd PROGRAM`` finds for ``soname`` (else the one beside libc), symlinks resolved."""
    out = subprocess.run(["ldd", program], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        words = line.split()
        if words and words[0] == soname and "=>" in words:
            return Path(os.path.realpath(words[2]))
    return Path(os.path.realpath(host_library("libc.so.6", program).parent / soname))


def centos7_rpms(work: Path) -> list[Path]:
    """``filesystem``, ``glibc-2.17``, ``libselinux``, ``pcre2``, ``coreutils``, laid out as on CentOS 7."""
    interpreter = Path(os.path.realpath("/lib64/ld-linux-x86-64.so.2"))
    filesystem = build_rpm(work, "filesystem", "3.2", "25.el7", autoreqprov=False,
                           dirs=["/usr", "/usr/bin", "/usr/lib", LIB64, "/usr/sbin", "/etc"],
                           symlinks={"/bin": "usr/bin", "/lib": "usr/lib", "/lib64": "usr/lib64",
                                     "/sbin": "usr/sbin"})
    glibc_files: dict[str, bytes | Path] = {f"{LIB64}/ld-{VERSION}.so": interpreter,
                                            f"{LIB64}/libc-{VERSION}.so": host_library("libc.so.6")}
    glibc_links = {f"{LIB64}/ld-linux-x86-64.so.2": f"ld-{VERSION}.so",
                   f"{LIB64}/libc.so.6": f"libc-{VERSION}.so"}
    for module in ("files", "dns"):
        glibc_files[f"{LIB64}/libnss_{module}-{VERSION}.so"] = host_library(f"libnss_{module}.so.2")
        glibc_links[f"{LIB64}/libnss_{module}.so.2"] = f"libnss_{module}-{VERSION}.so"
    # CentOS 7's loader searches /lib64 and /usr/lib64 by itself; this host's loader (Debian's) searches
    # only its multiarch dirs, /lib and /usr/lib, so the fixture lists /usr/lib64 in ld.so.conf.d (the
    # image then gets a generated ld.so.cache, as for any library outside the loader's default dirs)
    glibc_files["/etc/ld.so.conf"] = b"include ld.so.conf.d/*.conf\n"
    glibc_files["/etc/ld.so.conf.d/lib64.conf"] = b"/usr/lib64\n"
    # rpm generates the soname provides; rtld(GNU_HASH) is declared by glibc.spec itself
    glibc = build_rpm(work, "glibc", VERSION, RELEASE, files=glibc_files, symlinks=glibc_links,
                      provides=["rtld(GNU_HASH)"], requires=["filesystem"])
    selinux = build_rpm(work, "libselinux", "2.5", "15.el7",
                        files={f"{LIB64}/libselinux.so.1": host_library("libselinux.so.1")})
    pcre2 = build_rpm(work, "pcre2", "10.23", "2.el7",
                      files={f"{LIB64}/libpcre2-8.so.0": host_library("libpcre2-8.so.0")})
    coreutils = build_rpm(work, "coreutils", "8.22", "24.el7_9.2", files={"/usr/bin/id": Path("/usr/bin/id")})
    return [filesystem, glibc, selinux, pcre2, coreutils]


@pytest.fixture(scope="module")
def centos7(tmp_path_factory: pytest.TempPathFactory):
    """The CentOS-7-shaped packages (name -> .rpm) and their createrepo_c repository's URL on 127.0.0.1."""
    rpms = centos7_rpms(tmp_path_factory.mktemp("rpms"))
    repo = make_repo(tmp_path_factory.mktemp("centos7") / "repo", rpms)
    server = HttpServer(str(repo))
    yield server.url, {p.name.split("-")[0]: p for p in rpms}
    server.stop()


def build_image(url: str, work: Path, extra: str = "") -> Path:
    spec = work / "spec"
    spec.mkdir()
    (spec / "microimage.yaml").write_text(
        f"packages: [coreutils]\nrepos: [{{baseurl: '{url}', name: centos7}}]\n"
        f"paths: [/usr/bin/id]\nnss: true\nuser: app\ncmd: [id, -un]\n{extra}")
    out = work / "image"
    proc = run_cli("build", "-c", str(spec), "-o", str(out), "--cache-dir", str(work / "cache"))
    assert proc.returncode == 0, proc.stderr
    return out


def test_the_fixture_is_centos7_shaped(centos7: tuple[str, dict[str, Path]]) -> None:
    rpms = centos7[1]
    query = subprocess.run(["rpm", "-qp", "--provides", "--requires", str(rpms["glibc"])],
                           capture_output=True, text=True, check=True).stdout.splitlines()
    assert {"rtld(GNU_HASH)", "libc.so.6()(64bit)", "filesystem"} <= set(query)
    listing = subprocess.run(["rpm", "-qplv", str(rpms["glibc"])],
                             capture_output=True, text=True, check=True).stdout
    assert f"{LIB64}/libc.so.6 -> libc-{VERSION}.so" in listing
    assert f"{LIB64}/libnss_files.so.2 -> libnss_files-{VERSION}.so" in listing
    requires = subprocess.run(["rpm", "-qp", "--requires", str(rpms["coreutils"])],
                              capture_output=True, text=True, check=True).stdout.splitlines()
    assert {"libc.so.6()(64bit)", "libselinux.so.1()(64bit)", "rtld(GNU_HASH)"} <= set(requires)


def test_nss_pack_on_glibc_2_17_rpms_resolves_the_user(centos7: tuple[str, dict[str, Path]],
                                                       tmp_path: Path) -> None:
    image = build_image(centos7[0], tmp_path)
    record = read_record(str(image))
    trigger = f"automatic: nss files with glibc {VERSION} < 2.34"  # read from libc-2.17.so, not the banner
    for module in MODULES:  # the soname link and the old-style file it names, both from the pack
        for path in (module, module.replace(".so.2", f"-{VERSION}.so")):
            assert record["files"][path]["package"] == f"rpm:glibc-{VERSION}-{RELEASE}.x86_64"
            assert record["files"][path]["why"] == [
                {"kind": "pack", "selector": "nss", "rule": trigger, "by": f"{LIB64}/libc-{VERSION}.so"}]
    why = run_cli("why", str(image), MODULES[0])
    assert why.returncode == 0, why.stderr
    lines = why.stdout.splitlines()
    assert lines[0].startswith(f"{MODULES[0]} <- pack nss ({trigger}) <- ") and \
        lines[0].endswith("<- paths: /usr/bin/id"), lines
    assert lines[-1] == f"package: glibc-{VERSION}-{RELEASE}.x86_64 (rpm)", lines

    # read-only root, the named user from the image's own /etc/passwd
    proc = runc_run(image, "latest", tmp_path)
    assert (proc.returncode, proc.stdout) == (0, "app\n"), proc.stderr
    app = next(line for line in layer_text(image, "etc/passwd").splitlines() if line.startswith("app:"))
    proc = runc_run(image, "latest", tmp_path, args=["id", "-u"])
    assert (proc.returncode, proc.stdout) == (0, app.split(":")[2] + "\n"), proc.stderr


def test_auto_packs_false_leaves_the_modules_out(centos7: tuple[str, dict[str, Path]],
                                                 tmp_path: Path) -> None:
    image = build_image(centos7[0], tmp_path, "auto_packs: false\n")
    files = set(read_record(str(image))["files"])
    assert {f"{LIB64}/libc-{VERSION}.so", "/etc/passwd", "/etc/nsswitch.conf"} <= files
    assert not {p for p in files if "libnss_" in p}
    # and it still runs here: this host's glibc 2.36 has files built in (see the module docstring)
    proc = runc_run(image, "latest", tmp_path)
    assert (proc.returncode, proc.stdout) == (0, "app\n"), proc.stderr


def layer_text(image: Path, name: str) -> str:
    """A file of the image's (one) layer, by its tar member name."""
    blobs = image / "blobs" / "sha256"
    index = json.loads((image / "index.json").read_text())
    manifest = json.loads((blobs / index["manifests"][0]["digest"][7:]).read_text())
    with open(blobs / manifest["layers"][0]["digest"][7:], "rb") as raw, \
            tarfile.open(fileobj=raw, mode="r:gz") as tar:
        member = tar.extractfile(name)
        assert member is not None, name
        return member.read().decode()
