"""`microcontainer diff`: two builds of an RPM spec, one library package updated; config changes; errors."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from conftest import assert_one_line_error, have, run_cli
from rpmbuild_fixtures import build_rpm, have_rpmbuild

from microcontainer_tool.oci.imageview import open_image
from microcontainer_tool.reports.diff import summarize

pytestmark = pytest.mark.skipif(not have_rpmbuild() or not have("gcc"), reason="needs rpmbuild and gcc")

LIB64 = "/usr/lib64"
LIBFOO = f"{LIB64}/libfoo.so.1"


def compile_c(work: Path, name: str, source: str, *flags: str) -> Path:
    (work / f"{name}.c").write_text(source)
    out = work / name
    subprocess.run(["gcc", "-O2", "-o", str(out), str(work / f"{name}.c"), *flags], check=True, cwd=work)
    return out


@pytest.fixture(scope="module")
def rpms(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """glibc (host libc + loader in /usr/lib64), libfoo 1.0 and 1.1 (libfoo.so.1), app (needs libfoo)."""
    work = tmp_path_factory.mktemp("rpms")
    libs = {}
    for version, body in (("1.0", "int foo(void) { return 10; }\n"),
                          ("1.1", "int foo(void) { return 11; }\nint foo_extra(void) { return 1; }\n")):
        build = work / version
        build.mkdir()
        libs[version] = compile_c(build, "libfoo.so.1", body, "-shared", "-fPIC", "-Wl,-soname,libfoo.so.1")
    app = compile_c(work, "app", '#include <stdio.h>\nint foo(void);\n'
                    'int main(void) { printf("foo=%d\\n", foo()); return 0; }\n',
                    f"-L{work / '1.0'}", "-l:libfoo.so.1")
    interpreter = Path(os.path.realpath("/lib64/ld-linux-x86-64.so.2"))
    libc = Path(os.path.realpath(subprocess.run(["gcc", "-print-file-name=libc.so.6"], capture_output=True,
                                                text=True, check=True).stdout.strip()))
    glibc = build_rpm(work, "glibc", "2.99", "1",
                      files={f"{LIB64}/ld-linux-x86-64.so.2": interpreter, f"{LIB64}/libc.so.6": libc,
                             "/etc/ld.so.conf": b"/usr/lib64\n"},
                      symlinks={"/lib64": "usr/lib64"},
                      provides=["rtld(GNU_HASH)"])
    out = {"glibc": glibc, "app": build_rpm(work, "app", "1.0", "1", files={"/usr/bin/app": app})}
    for version, lib in libs.items():
        out[f"libfoo-{version}"] = build_rpm(work, "libfoo", version, "1", files={LIBFOO: lib})
    return out


def build(rpms: dict[str, Path], work: Path, libfoo: str, cmd: str = "[/usr/bin/app]") -> Path:
    spec = work / "spec"
    spec.mkdir(parents=True)
    for name in ("glibc", "app", libfoo):
        shutil.copy(rpms[name], spec / f"{name.split('-')[0]}.rpm")
    (spec / "microimage.yaml").write_text("packages: [app.rpm, libfoo.rpm, glibc.rpm]\n"
                                          f"paths: [/usr/bin/app]\ncmd: {cmd}\n")
    out = work / "image.tar"
    proc = run_cli("build", "-c", str(spec), "-o", str(out), "--cache-dir", str(work / "cache"))
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture(scope="module")
def images(rpms: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("images")
    return {"old": build(rpms, base / "old", "libfoo-1.0"),
            "again": build(rpms, base / "again", "libfoo-1.0"),
            "new": build(rpms, base / "new", "libfoo-1.1"),
            "cmd": build(rpms, base / "cmd", "libfoo-1.0", "[/usr/bin/app, --verbose]")}


def test_the_fixture_program_needs_libfoo(images: dict[str, Path]) -> None:
    with open_image(str(images["old"])) as view:
        paths = {f.path for f in view.iter_files()}
    assert {"/usr/bin/app", LIBFOO, f"{LIB64}/libc.so.6"} <= paths


def test_updated_package_is_exactly_what_changed(images: dict[str, Path]) -> None:
    proc = run_cli("diff", str(images["old"]), str(images["new"]))
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr == ""
    lines = proc.stdout.splitlines()
    assert lines[0] == f"--- {images['old']}" and lines[1] == f"+++ {images['new']}"
    assert lines[2].startswith("image ID sha256:")
    assert lines[3:] == ["package ~ libfoo 1.0-1.x86_64 -> 1.1-1.x86_64",
                         f"file    ~ {LIBFOO}  {lib_size(images['old'])} -> {lib_size(images['new'])} bytes"
                         " [libfoo]",
                         "meta    ~ /var/lib/rpmmanifest/container-manifest-2 (changed: the package list for"
                         " scanners)"]
    data = json.loads(run_cli("diff", "--json", str(images["old"]), str(images["new"])).stdout)
    assert data["identical"] is False
    assert data["packages"] == {"added": [], "removed": [],
                                "changed": [{"name": "libfoo", "old": "1.0-1.x86_64", "new": "1.1-1.x86_64"}]}
    assert [f["path"] for f in data["files"]["changed"]] == [LIBFOO]
    assert data["files"]["changed"][0]["changes"] == ["size", "digest"]
    assert data["files"]["added"] == data["files"]["removed"] == []
    assert data["edges"] == {"added": [], "removed": []}
    assert data["metadata"] == [{"path": "/var/lib/rpmmanifest/container-manifest-2", "change": "changed"}]
    assert data["config"] == {"changed": []}


def lib_size(image: Path) -> int:
    with open_image(str(image)) as view:
        return next(f.size for f in view.iter_files() if f.path == LIBFOO)


def test_json_is_canonical_and_stable(images: dict[str, Path]) -> None:
    first = run_cli("diff", "--json", str(images["old"]), str(images["new"])).stdout
    assert first == run_cli("diff", "--json", str(images["old"]), str(images["new"])).stdout
    assert first == json.dumps(json.loads(first), indent=2, sort_keys=True) + "\n"


def test_same_inputs_are_identical(images: dict[str, Path]) -> None:
    proc = run_cli("diff", str(images["old"]), str(images["again"]))
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "identical\n", "")
    data = json.loads(run_cli("diff", "--json", str(images["old"]), str(images["again"])).stdout)
    assert data["identical"] is True


def test_package_filter(images: dict[str, Path]) -> None:
    libfoo = run_cli("diff", "--package", "libfoo", "--json", str(images["old"]), str(images["new"]))
    assert libfoo.returncode == 1
    assert [f["path"] for f in json.loads(libfoo.stdout)["files"]["changed"]] == [LIBFOO]
    glibc = run_cli("diff", "--package", "glibc", str(images["old"]), str(images["new"]))
    assert (glibc.returncode, glibc.stdout) == (0, "identical\n")


def test_config_change_is_reported(images: dict[str, Path]) -> None:
    proc = run_cli("diff", str(images["old"]), str(images["cmd"]))
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout.splitlines()[3:] == [
        'config  ~ Cmd: ["/usr/bin/app"] -> ["/usr/bin/app", "--verbose"]']
    data = json.loads(run_cli("diff", "--json", str(images["old"]), str(images["cmd"])).stdout)
    assert data["config"] == {"changed": [{"field": "Cmd", "old": ["/usr/bin/app"],
                                           "new": ["/usr/bin/app", "--verbose"]}]}
    assert data["files"] == {"added": [], "removed": [], "changed": []} and data["packages"]["changed"] == []


def test_missing_image_is_exit_2_one_line(images: dict[str, Path], tmp_path: Path) -> None:
    proc = run_cli("diff", str(images["old"]), str(tmp_path / "missing"))
    assert proc.returncode == 2
    assert_one_line_error(proc, "missing", "no such image")
    (tmp_path / "bad.tar").write_bytes(b"not a tar at all" * 100)
    proc = run_cli("diff", str(tmp_path / "bad.tar"), str(images["old"]))
    assert proc.returncode == 2
    assert_one_line_error(proc, "bad.tar")


def test_layouts_and_archives_compare_by_content(images: dict[str, Path], tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    with tarfile.open(images["new"]) as tar:
        tar.extractall(layout, filter="data")
    proc = run_cli("diff", str(images["new"]), str(layout))
    assert (proc.returncode, proc.stdout) == (0, "identical\n")


def layer(members: dict[str, bytes | None]) -> bytes:
    """An uncompressed layer tar: path -> content (``None``: a directory)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, content in members.items():
            info = tarfile.TarInfo(path)
            if content is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size, info.mode = len(content), 0o644
                tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def docker_archive(path: Path, layers: list[bytes], cmd: list[str]) -> Path:
    """A legacy docker-archive (``manifest.json`` only) of ``layers``, bottom first."""
    diff_ids = ["sha256:" + hashlib.sha256(d).hexdigest() for d in layers]
    config = {"architecture": "amd64", "os": "linux", "config": {"Cmd": cmd},
              "rootfs": {"type": "layers", "diff_ids": diff_ids}}
    with tarfile.open(path, "w") as tar:
        entries: dict[str, bytes] = {"config.json": json.dumps(config).encode()}
        entries.update({f"layer{n}.tar": data for n, data in enumerate(layers)})
        names = [f"layer{n}.tar" for n in range(len(layers))]
        entries["manifest.json"] = json.dumps([{"Config": "config.json", "RepoTags": ["t:1"],
                                                "Layers": names}]).encode()
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_whiteouts_apply_across_layers(tmp_path: Path) -> None:
    """The merged file systems are compared: a whiteout and an opaque directory of an upper layer apply."""
    base = layer({"a": None, "a/x": b"x", "a/y": b"y", "d": None, "d/z": b"z",
                  "d/sub": None, "d/sub/q": b"q"})
    flat = docker_archive(tmp_path / "flat.tar",
                          [layer({"a": None, "a/y": b"y", "d": None, "d/w": b"www"})], ["/run"])
    layered = docker_archive(tmp_path / "layered.tar",
                             [base, layer({"a/.wh.x": b"", "d/.wh..wh..opq": b"", "d/w": b"www"})], ["/run"])
    with open_image(str(layered)) as view:
        merged = summarize(view)
    assert sorted(merged.files) == ["/a", "/a/y", "/d", "/d/w"]
    assert merged.record is False and merged.packages == {}
    proc = run_cli("diff", "--json", str(flat), str(layered))
    data = json.loads(proc.stdout)
    assert proc.returncode == 1  # other layers, so another image ID; but the same files and config
    assert data["image_id"]["old"] != data["image_id"]["new"]
    assert data["files"] == {"added": [], "removed": [], "changed": []} and data["config"] == {"changed": []}
    changed = docker_archive(tmp_path / "changed.tar",
                             [base, layer({"a/.wh.y": b"", "d/w": b"w2"})], ["/run", "-v"])
    text = run_cli("diff", str(layered), str(changed)).stdout.splitlines()
    assert text[3:] == ["file    ~ /d/w  3 -> 2 bytes",
                        "file    + /a/x (1 bytes)", "file    + /d/sub (dir)", "file    + /d/sub/q (1 bytes)",
                        "file    + /d/z (1 bytes)", "file    - /a/y (1 bytes)",
                        'config  ~ Cmd: ["/run"] -> ["/run", "-v"]']
