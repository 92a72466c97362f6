"""End to end: real programs from /, validated, unpacked and run with runc (read-only root)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import REPO, have, ldd_files, run_cli, runc_run


def build(spec_dir: Path, out: Path, *extra: str, **kw) -> subprocess.CompletedProcess:
    proc = run_cli("build", "-c", str(spec_dir), "-o", str(out), *extra, **kw)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return proc


def write_spec(directory: Path, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "microimage.yaml").write_text(text)
    return directory


def validate(layout: Path, tag: str = "latest") -> None:
    """oci-image-tool 1.0.0-rc1 validates a layout with ``--type image`` (it finds the layout)."""
    if not have("oci-image-tool"):
        pytest.skip("oci-image-tool not installed")
    proc = subprocess.run(["oci-image-tool", "validate", "--type", "image", "--ref", f"name={tag}",
                           str(layout)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def inspect_json(image: Path | str) -> dict:
    proc = run_cli("inspect", "--json", str(image))
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_cat_example_runs_read_only(tmp_path):
    out = tmp_path / "cat"
    build(REPO / "examples" / "cat", out)
    validate(out)
    info = inspect_json(out)
    paths = {f["path"] for f in info["files"]}
    assert {"/usr/bin/cat", "/read/data", "/lib64", "/write", "/run", "/tmp", "/dev", "/proc",
            "/sys"} <= paths
    assert info["config"]["config"]["User"] == "10:10"
    assert info["config"]["created"] == "1970-01-01T00:00:00Z"
    assert info["config"]["architecture"] == "amd64"
    for entry in info["files"]:
        if entry["path"] in ("/tmp", "/run"):
            assert entry["mode"] == "1777", entry  # scratch space for any user (tmpfs at run time)
        else:
            assert entry["mode"] in ("0755", "0644", "0777"), entry
    proc = runc_run(out, "latest", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "Hello World!\n"


@pytest.fixture(scope="module")
def coreutils_image(tmp_path_factory):
    base = tmp_path_factory.mktemp("coreutils")
    spec = write_spec(base / "spec", """
from: /
paths: [/usr/bin/touch, /usr/bin/id, /usr/bin/cat]
cmd: [/usr/bin/id]
mounts: [/write]
""")
    out = base / "image"
    build(spec, out)
    validate(out)
    return out


def test_runs_as_uid_10_without_capabilities(coreutils_image, tmp_path):
    proc = runc_run(coreutils_image, "latest", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("uid=10 gid=10"), proc.stdout
    proc = runc_run(coreutils_image, "latest", tmp_path, args=["/usr/bin/cat", "/proc/self/status"])
    caps = dict(line.split(":\t") for line in proc.stdout.splitlines() if line.startswith("Cap"))
    assert int(caps["CapEff"], 16) == 0 and int(caps["CapPrm"], 16) == 0, caps


def test_root_is_read_only_and_write_volume_works(coreutils_image, tmp_path):
    proc = runc_run(coreutils_image, "latest", tmp_path, args=["/usr/bin/touch", "/newfile"])
    assert proc.returncode != 0
    assert "Read-only file system" in proc.stderr
    host_write = tmp_path / "write"
    host_write.mkdir()
    os.chmod(host_write, 0o777)
    proc = runc_run(coreutils_image, "latest", tmp_path, args=["/usr/bin/touch", "/write/made-here"],
                    write_dir=str(host_write))
    assert proc.returncode == 0, proc.stderr
    assert (host_write / "made-here").exists()


def test_python_deep_closure(tmp_path):
    if not os.path.exists("/usr/bin/python3.11"):
        pytest.skip("Debian python3.11 not installed")
    spec = write_spec(tmp_path / "spec", """
from: /
paths:
  - /usr/bin/python3
  - /usr/lib/python3.11
excludes:
  - /usr/lib/python3.11/test
  - /usr/lib/python3.11/idlelib
  - /usr/lib/python3.11/tkinter
  - /usr/lib/python3.11/ensurepip
  - /usr/lib/python3.11/**/__pycache__
entrypoint: [/usr/bin/python3]
cmd:
  - -c
  - >-
    import ssl, sqlite3, json, ctypes, hashlib, zlib, lzma, bz2;
    print(ssl.OPENSSL_VERSION.split()[0], sqlite3.sqlite_version_info[0],
    hashlib.sha256(b'x').hexdigest()[:8])
env: [PYTHONDONTWRITEBYTECODE=1]
""")
    out = tmp_path / "py"
    build(spec, out)
    validate(out)
    info = inspect_json(out)
    paths = {f["path"] for f in info["files"]}
    assert "/usr/lib/python3.11/test" not in paths
    assert not any("__pycache__" in p for p in paths)
    # C extension modules bring their own libraries (libssl, libsqlite3, liblzma, ...)
    assert any(p.startswith("/usr/lib/x86_64-linux-gnu/libssl.so") for p in paths), sorted(paths)[:50]
    assert any(p.startswith("/usr/lib/x86_64-linux-gnu/libsqlite3.so") for p in paths)
    proc = runc_run(out, "latest", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["OpenSSL", "3", "2d711642"]


def test_docker_archive_and_smith_formats(tmp_path):
    spec = REPO / "examples" / "cat"
    docker = tmp_path / "cat-docker.tar"
    build(spec, docker, "--format", "docker-archive", "--tag", "v1")
    smith = tmp_path / "cat.tar.gz"
    build(spec, smith)
    archive = tmp_path / "cat.tar"
    build(spec, archive)
    layout = tmp_path / "cat"
    digest = run_cli("build", "-c", str(spec), "-o", str(layout), "-q").stdout.strip()
    assert digest.startswith("sha256:")
    for image in (smith, archive):
        assert inspect_json(image)["manifest_digest"] == digest
    if have("skopeo"):
        proc = subprocess.run(["skopeo", "inspect", f"docker-archive:{docker}"], capture_output=True,
                              text=True)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["Architecture"] == "amd64"
        proc = subprocess.run(["skopeo", "inspect", f"oci-archive:{archive}"], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr


def test_deps_matches_ldd(tmp_path):
    proc = run_cli("deps", "/usr/bin/python3")
    assert proc.returncode == 0, proc.stderr
    ours = {os.path.realpath(p) for p in proc.stdout.split()}
    theirs = {os.path.realpath(p) for p in ldd_files("/usr/bin/python3")[1:]}
    assert ours == theirs
    tree = run_cli("deps", "--tree", "/usr/bin/python3")
    assert tree.returncode == 0 and "libc.so.6 =>" in tree.stdout


def test_project_program_with_runpath_library(tmp_path):
    """A program built here, with its own library under $ORIGIN/../lib, via files:."""
    if not have("gcc"):
        pytest.skip("gcc needed")
    src = tmp_path / "src"
    src.mkdir()
    (src / "greet.c").write_text('#include <stdio.h>\nvoid greet(void){puts("hello from libgreet");}\n')
    (src / "main.c").write_text("void greet(void);\nint main(void){greet();return 0;}\n")
    (src / "lib").mkdir()
    subprocess.run(["gcc", "-shared", "-fPIC", "-Wl,-soname,libgreet.so.1", "-o",
                    str(src / "lib" / "libgreet.so.1"), str(src / "greet.c")], check=True)
    subprocess.run(["gcc", "-o", str(src / "hello"), str(src / "main.c"), "-L", str(src / "lib"),
                    "-l:libgreet.so.1", "-Wl,--enable-new-dtags,-rpath,$ORIGIN/../lib"], check=True)
    spec = write_spec(tmp_path / "spec", f"""
files:
  /app/bin/hello: {src / 'hello'}
  /app/lib/libgreet.so.1: {src / 'lib' / 'libgreet.so.1'}
cmd: [/app/bin/hello]
""")
    out = tmp_path / "hello"
    build(spec, out)
    validate(out)
    proc = runc_run(out, "latest", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "hello from libgreet\n"


def test_library_only_in_ld_so_conf_gets_generated_cache(tmp_path):
    """A library found through the sysroot's ld.so.conf runs without LD_LIBRARY_PATH."""
    if not have("gcc"):
        pytest.skip("gcc needed")
    root = tmp_path / "root"
    (root / "opt/greet/lib").mkdir(parents=True)
    (root / "usr/bin").mkdir(parents=True)
    (root / "etc/ld.so.conf.d").mkdir(parents=True)
    (root / "etc/ld.so.conf").write_text("include /etc/ld.so.conf.d/*.conf\n")
    (root / "etc/ld.so.conf.d/greet.conf").write_text("/opt/greet/lib\n")
    src = tmp_path / "src"
    src.mkdir()
    (src / "greet.c").write_text('#include <stdio.h>\nvoid greet(void){puts("cache works");}\n')
    (src / "main.c").write_text("void greet(void);\nint main(void){greet();return 0;}\n")
    subprocess.run(["gcc", "-shared", "-fPIC", "-Wl,-soname,libgreet.so.1", "-o",
                    str(root / "opt/greet/lib/libgreet.so.1"), str(src / "greet.c")], check=True)
    subprocess.run(["gcc", "-o", str(root / "usr/bin/hello"), str(src / "main.c"),
                    str(root / "opt/greet/lib/libgreet.so.1")], check=True)
    # the C library and loader come from the host, copied in with their link chain
    for path in ("/lib64/ld-linux-x86-64.so.2", "/lib/x86_64-linux-gnu/libc.so.6"):
        real = os.path.realpath(path)
        target = root / real.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(real, target)
        shutil.copymode(real, target)
        if real != path:
            link = root / path.lstrip("/")
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.exists():
                os.symlink(real, link)
    spec = write_spec(tmp_path / "spec", f"""
from: {root}
paths: [/usr/bin/hello]
cmd: [/usr/bin/hello]
""")
    out = tmp_path / "img"
    build(spec, out)
    paths = {f["path"] for f in inspect_json(out)["files"]}
    assert "/etc/ld.so.cache" in paths and "/opt/greet/lib/libgreet.so.1" in paths
    proc = runc_run(out, "latest", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "cache works\n"


def test_named_user_gets_nss_files_and_libs_are_added(tmp_path):
    spec = write_spec(tmp_path / "spec", """
paths: [/usr/bin/id]
libs: [libz.so.1]
user: app:staff
groups: [audio]
cmd: [id]
""")
    out = tmp_path / "img"
    build(spec, out)
    files = {f["path"]: f for f in inspect_json(out)["files"]}
    assert {"/etc/passwd", "/etc/group", "/etc/nsswitch.conf"} <= set(files)
    assert files["/usr/lib/x86_64-linux-gnu/libz.so.1"]["type"] == "symlink"
    assert any(p.startswith("/usr/lib/x86_64-linux-gnu/libz.so.1.") for p in files)
    assert inspect_json(out)["config"]["config"]["User"] == "app:staff"
    proc = runc_run(out, "latest", tmp_path, args=["/usr/bin/id", "-n", "-G", "app"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["staff", "audio"]  # membership from the image's /etc/group
    proc = runc_run(out, "latest", tmp_path)
    assert proc.stdout.startswith("uid=10(app) gid=10(staff)"), proc.stdout
