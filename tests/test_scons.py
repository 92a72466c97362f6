"""The SCons tool end to end: real ``scons`` runs in temporary checkouts.

In the style of SCons's own end-to-end tests: each test copies a checkout
(``SConstruct``, ``site_scons/``, ``examples/``) or writes a small project,
runs ``python -m SCons`` as a process, and checks its exit status, the
commands it printed, and the bytes, inodes and mtimes of what it left behind.
Checkouts that are only read (or that each test first brings up to date) are
shared per module to keep the file fast.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from conftest import REPO, copy_closure, ldd_files, run_cli, runc_run

IMAGES = ("hello", "goodbye", "cat")
TOOL_DIR = REPO / "microcontainer_tool" / "site_tools"


# --------------------------------------------------------------------------- helpers

def scons(cwd: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m SCons ARGS`` in ``cwd`` with the package importable."""
    full_env = {k: v for k, v in os.environ.items()
                if k not in ("SCONSFLAGS", "MCT_SCONS_CACHEDIR", "SCONS_CACHE_MSVC_CONFIG")}
    full_env["PYTHONPATH"] = str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")
    if env:
        full_env.update(env)
    return subprocess.run([sys.executable, "-m", "SCons", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=300)


def ok(proc: subprocess.CompletedProcess) -> str:
    """Assert a clean scons run; return its stdout."""
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    return proc.stdout


def checkout(dest: Path) -> Path:
    """A fresh copy of the repository's SCons project (no build outputs)."""
    ignore = shutil.ignore_patterns("build", ".mct-cache", "__pycache__", ".sconsign*", "*.pyc")
    dest.mkdir(parents=True)
    shutil.copy2(REPO / "SConstruct", dest / "SConstruct")
    for name in ("site_scons", "examples"):
        shutil.copytree(REPO / name, dest / name, ignore=ignore, symlinks=True)
    return dest


def built_images(output: str) -> set[str]:
    """Images whose archive scons (re)built, from its ``MicroImage`` lines."""
    return set(re.findall(r"^MicroImage build/images/(\S+)\.tar$", output, re.M))


def files_under(root: Path, *dirs: str) -> list[Path]:
    out = []
    for name in dirs:
        for dirpath, _, filenames in os.walk(root / name):
            out += [Path(dirpath) / f for f in filenames]
    return sorted(out)


def stats(root: Path, *dirs: str) -> dict[str, tuple[int, int]]:
    """``{path: (inode, mtime_ns)}`` of every file under ``dirs``: a rewrite changes it."""
    result = {}
    for path in files_under(root, *dirs):
        st = path.stat()
        result[str(path.relative_to(root))] = (st.st_ino, st.st_mtime_ns)
    return result


def contents(root: Path, *dirs: str) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in files_under(root, *dirs)}


def image_stats(root: Path, name: str) -> dict[str, tuple[int, int]]:
    """Stats of one image: its archive and its layout directory."""
    result = stats(root, f"build/images/{name}")
    st = (root / f"build/images/{name}.tar").stat()
    result[f"build/images/{name}.tar"] = (st.st_ino, st.st_mtime_ns)
    return result


def manifest(layout: Path) -> tuple[str, dict]:
    """The (only) manifest digest of a layout and the manifest itself."""
    index = json.loads((layout / "index.json").read_text())
    assert len(index["manifests"]) == 1, index
    digest = index["manifests"][0]["digest"]
    return digest, json.loads(blob(layout, digest).read_bytes())


def blob(layout: Path, digest: str) -> Path:
    return layout / "blobs" / "sha256" / digest.split(":", 1)[1]


def layer_names(layout: Path) -> set[str]:
    _, man = manifest(layout)
    assert len(man["layers"]) == 1, man
    with tarfile.open(blob(layout, man["layers"][0]["digest"]), "r:*") as tar:
        return {m.name.lstrip("./") for m in tar.getmembers()}


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def up_to_date(root: Path) -> None:
    """Bring a shared checkout up to date and check that ``-q`` agrees."""
    ok(scons(root, "image"))
    assert scons(root, "-q", "image").returncode == 0


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """A checkout built once with -j1 and never edited (tests only read it)."""
    root = checkout(tmp_path_factory.mktemp("pristine") / "repo")
    out = ok(scons(root, "-j1", "image"))
    assert built_images(out) == set(IMAGES), out
    return root


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """A built checkout the edit tests change, one after the other."""
    root = checkout(tmp_path_factory.mktemp("work") / "repo")
    ok(scons(root, "image"))
    return root


# --------------------------------------------------------------------------- up to date

def test_second_build_rewrites_nothing(pristine):
    assert scons(pristine, "-q", "image").returncode == 0
    before = stats(pristine, "build/images", ".mct-cache")
    assert any("/blobs/sha256/" in p for p in before) and any(".mct-cache/layers/" in p for p in before)
    out = ok(scons(pristine, "image"))
    assert "`image' is up to date." in out, out
    assert not built_images(out) and "OCI layout" not in out, out
    assert stats(pristine, "build/images", ".mct-cache") == before


def test_provenance_names_build_tree_nodes(pristine):
    """Project files are named by their path in the build tree (from the SConstruct's directory)."""
    proc = run_cli("why", str(pristine / "build/images/hello"), "/usr/local/lib/libgreet.so")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "source: project:build/lib/libgreet.so"
    assert "needed by /usr/local/bin/hello (as libgreet.so, RUNPATH)" in proc.stdout
    proc = run_cli("why", str(pristine / "build/images/cat"), "/read/data")
    assert proc.stdout.splitlines() == ["/read/data <- rootfs/ overlay",
                                        "source: project:examples/cat/rootfs/"]


# --------------------------------------------------------------------------- edits

def test_comment_in_source_recompiles_but_rebuilds_no_image(work):
    up_to_date(work)
    before = stats(work, "build/images", ".mct-cache")
    source = work / "examples/hello/hello.c"
    source.write_text("/* A comment: the compiled program stays the same. */\n" + source.read_text())
    out = ok(scons(work, "image"))
    assert re.search(r"^gcc -o build/hello/hello\.o ", out, re.M), out
    assert not re.search(r"-o build/bin/hello ", out), out  # same object: no relink
    assert not built_images(out) and "OCI layout" not in out, out
    assert stats(work, "build/images", ".mct-cache") == before


def test_program_change_rebuilds_only_its_image(work):
    up_to_date(work)
    others = {name: image_stats(work, name) for name in ("goodbye", "cat")}
    archive = (work / "build/images/hello.tar").read_bytes()
    source = work / "examples/hello/hello.c"
    text = source.read_text()
    assert '"nobody"' in text
    source.write_text(text.replace('"nobody"', '"somebody else"'))
    assert scons(work, "-q", "image").returncode != 0
    out = ok(scons(work, "image"))
    assert re.search(r"^gcc -o build/hello/hello\.o ", out, re.M), out
    assert re.search(r"^gcc -o build/bin/hello ", out, re.M), out
    assert built_images(out) == {"hello"}, out
    assert (work / "build/images/hello.tar").read_bytes() != archive
    for name, before in others.items():
        assert image_stats(work, name) == before, name
    assert scons(work, "-q", "image").returncode == 0


def test_config_file_edit_rebuilds_only_its_image(work):
    up_to_date(work)
    others = {name: image_stats(work, name) for name in ("goodbye", "cat")}
    digest, _ = manifest(work / "build/images/hello")
    conf = work / "examples/hello/app.conf"
    conf.write_text("edited config\n")
    assert scons(work, "-q", "image").returncode != 0
    out = ok(scons(work, "image"))
    assert built_images(out) == {"hello"}, out
    assert "gcc" not in out, out
    assert manifest(work / "build/images/hello")[0] != digest
    for name, before in others.items():
        assert image_stats(work, name) == before, name


def test_config_only_change_reuses_the_layer(work):
    up_to_date(work)
    layout = work / "build/images/hello"
    others = {name: image_stats(work, name) for name in ("goodbye", "cat")}
    digest, man = manifest(layout)
    layer = blob(layout, man["layers"][0]["digest"])
    layer_stat = (layer.stat().st_ino, layer.stat().st_mtime_ns)
    cache = stats(work, ".mct-cache/layers")  # (scans/ keeps the scanner's answers: hello's is new)
    entries = [json.loads(p.read_text()) for p in (work / ".mct-cache/layers").glob("*.json")]
    assert man["layers"][0]["digest"] in {e["digest"] for e in entries}  # the layer is cached
    spec = work / "examples/hello/microimage.yaml"
    text = spec.read_text()
    assert "title: hello" in text
    spec.write_text(text.replace("title: hello", "title: hello-relabelled"))
    out = ok(scons(work, "image"))
    assert built_images(out) == {"hello"}, out
    new_digest, new_man = manifest(layout)
    assert new_digest != digest
    assert new_man["layers"] == man["layers"]
    assert (layer.stat().st_ino, layer.stat().st_mtime_ns) == layer_stat  # not rewritten
    assert stats(work, ".mct-cache/layers") == cache  # cache hit: no entry written
    config = json.loads(blob(layout, new_man["config"]["digest"]).read_bytes())
    assert config["config"]["Labels"]["org.opencontainers.image.title"] == "hello-relabelled"
    for name, before in others.items():
        assert image_stats(work, name) == before, name


def test_unrelated_files_rebuild_nothing(work):
    up_to_date(work)
    before = stats(work, "build/images", ".mct-cache")
    write(work / "examples/NOTES.txt", "notes\n")
    write(work / "examples/hello/README", "beside the spec, but not in the image\n")
    write(work / "examples/cat/notes.txt", "beside rootfs/, not in it\n")
    with open(work / "examples/setup.sh", "a") as handle:
        handle.write("# edited\n")
    proc = scons(work, "-q", "image")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert stats(work, "build/images", ".mct-cache") == before


# --------------------------------------------------------------------------- reproducibility

def test_parallel_build_elsewhere_is_byte_identical(pristine, tmp_path):
    other = checkout(tmp_path / "a-differently-named" / "checkout-dir")
    out = ok(scons(other, "-j2", "image"))
    assert built_images(out) == set(IMAGES), out
    assert scons(other, "-j2", "-q", "image").returncode == 0  # deps complete after a parallel build
    mine, theirs = contents(other, "build/images"), contents(pristine, "build/images")
    assert any(p.endswith("hello.tar") for p in mine)
    assert sorted(mine) == sorted(theirs)
    assert [p for p in mine if mine[p] != theirs[p]] == []


def test_cachedir_round_trip(tmp_path):
    cache = tmp_path / "shared-cache"
    first = checkout(tmp_path / "a")
    out = ok(scons(first, f"cache={cache}", "image"))
    assert "Retrieved" not in out and built_images(out) == set(IMAGES), out
    second = checkout(tmp_path / "elsewhere" / "b")
    out = ok(scons(second, "image", env={"MCT_SCONS_CACHEDIR": str(cache)}))
    for name in IMAGES:
        assert f"Retrieved `build/images/{name}.tar' from cache" in out, out
    assert not built_images(out), out
    assert contents(second, "build/images") == contents(first, "build/images")
    assert scons(second, "-q", "image", env={"MCT_SCONS_CACHEDIR": str(cache)}).returncode == 0


# --------------------------------------------------------------------------- sysroot

def test_changed_sysroot_library_rebuilds_the_image(tmp_path):
    sysroot = tmp_path / "sysroot"
    real = copy_closure(sysroot, ldd_files("/usr/bin/true"))
    libc = next(p for name, p in real.items() if os.path.basename(name).startswith("libc.so"))
    project = tmp_path / "project"
    write(project / "SConstruct",
          f"env = Environment(tools=['default', 'microimage'], toolpath=[{str(TOOL_DIR)!r}])\n"
          f"env.MicroImage('img', FROM={str(sysroot)!r}, PATHS=['/usr/bin/true'], "
          "CMD=['/usr/bin/true'])\n")
    out = ok(scons(project))
    assert "MicroImage img.tar" in out, out
    assert any(n.endswith("/" + libc.name) for n in layer_names(project / "img"))
    assert scons(project, "-q").returncode == 0
    archive = (project / "img.tar").read_bytes()

    # unrelated sysroot files, and a touch that keeps the content: nothing to do
    write(sysroot / "usr/bin/unrelated", "#!/bin/sh\n")
    write(sysroot / "etc/motd", "hello\n")
    os.utime(libc)
    proc = scons(project, "-q")
    assert proc.returncode == 0, proc.stdout + proc.stderr

    with open(libc, "ab") as handle:  # still an ELF file, different bytes
        handle.write(b"\0mct")
    assert scons(project, "-q").returncode != 0
    out = ok(scons(project))
    assert "MicroImage img.tar" in out, out
    assert (project / "img.tar").read_bytes() != archive
    assert scons(project, "-q").returncode == 0


# --------------------------------------------------------------------------- clean

def test_clean_removes_the_images(tmp_path):
    root = checkout(tmp_path / "repo")
    ok(scons(root, "image"))
    assert files_under(root, "build/images")
    out = ok(scons(root, "-c", "image"))
    assert "Removed build/images/hello.tar" in out, out
    assert files_under(root, "build/images") == []
    assert not (root / "build/images").exists() or not any((root / "build/images").iterdir())
    assert scons(root, "-q", "image").returncode != 0


# --------------------------------------------------------------------------- user errors

def assert_scons_error(proc: subprocess.CompletedProcess, *words: str) -> str:
    """Non-zero exit, one ``scons: ***`` line naming the problem, no traceback."""
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("scons: ***")]
    assert len(lines) == 1, proc.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def test_path_matching_nothing_is_a_one_line_error(tmp_path):
    write(tmp_path / "spec/microimage.yaml", "paths: [/does/not/exist]\ncmd: [/x]\n")
    write(tmp_path / "SConstruct",
          f"env = Environment(tools=['default', 'microimage'], toolpath=[{str(TOOL_DIR)!r}])\n"
          "env.MicroImage('images/bad', 'spec/microimage.yaml')\n")
    proc = scons(tmp_path)
    assert_scons_error(proc, "/does/not/exist", "matches nothing")
    assert not (tmp_path / "images").exists() or not any((tmp_path / "images").iterdir())


def test_bad_keyword_is_a_one_line_error_when_reading(tmp_path):
    write(tmp_path / "SConstruct",
          f"env = Environment(tools=['default', 'microimage'], toolpath=[{str(TOOL_DIR)!r}])\n"
          "env.MicroImage('images/bad', PATHS=['/usr/bin/true'], CMD='not-a-list')\n")
    proc = scons(tmp_path)
    assert_scons_error(proc, "images/bad", "cmd")
    assert "done reading SConscript files" not in proc.stdout, proc.stdout
    assert not (tmp_path / "images").exists()


# --------------------------------------------------------------------------- running

def test_built_images_run(pristine, tmp_path):
    proc = runc_run(pristine / "build/images/hello", "latest", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "Hello, microcontainer!\n"
    proc = runc_run(pristine / "build/images/goodbye", "latest", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "Goodbye, world!\n"


# --------------------------------------------------------------------------- loading the tool

TRUE_IMAGE = "env.MicroImage('images/true', PATHS=['/usr/bin/true'], CMD=['/usr/bin/true'])\n"


def check_true_image(project: Path) -> None:
    out = ok(scons(project))
    assert "MicroImage images/true.tar" in out, out
    layout = project / "images/true"
    _, man = manifest(layout)
    config = json.loads(blob(layout, man["config"]["digest"]).read_bytes())
    assert config["config"]["Cmd"] == ["/usr/bin/true"]
    assert "usr/bin/true" in layer_names(layout)


def test_tool_loads_via_toolpath(tmp_path):
    write(tmp_path / "SConstruct",
          f"env = Environment(tools=['default', 'microimage'], toolpath=[{str(TOOL_DIR)!r}])\n"
          + TRUE_IMAGE)
    assert not (tmp_path / "site_scons").exists()
    check_true_image(tmp_path)


def test_tool_loads_via_site_init(tmp_path):
    without = tmp_path / "without"
    write(without / "SConstruct", "env = Environment(tools=['default', 'microimage'])\n" + TRUE_IMAGE)
    proc = scons(without)  # control: nothing else makes the tool findable
    assert proc.returncode != 0 and "microimage" in proc.stderr, proc.stdout + proc.stderr
    project = tmp_path / "with"
    write(project / "SConstruct", "env = Environment(tools=['default', 'microimage'])\n" + TRUE_IMAGE)
    write(project / "site_scons/site_init.py",
          "import microcontainer_tool.sconstool as m; m.register()\n")
    check_true_image(project)
