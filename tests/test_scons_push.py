"""``MicroPush`` end to end: real ``scons`` pushing to a real registry.

A small project (tool loaded from ``site_scons/site_init.py``, two images)
pushes to Debian's ``docker-registry`` on 127.0.0.1. Each image's stamp
records ``REF@DIGEST``; ``skopeo`` is the independent reader of what the
registry holds. The edit tests share one project and run in order, each first
bringing it up to date.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
import requests
from conftest import have, run_cli
from registry_env import Registry, free_port
from test_scons import assert_scons_error, checkout, ok, scons, write

pytestmark = pytest.mark.skipif(not have("docker-registry", "skopeo"),
                                reason="needs docker-registry and skopeo")

NAMES = ("a", "b")

SCONSTRUCT = """\
registry = ARGUMENTS["registry"]
tag = ARGUMENTS.get("tag", "latest")
if ARGUMENTS.get("cache"):
    CacheDir(ARGUMENTS["cache"])
env = Environment(tools=["default", "microimage"], MCT_PUSH_PLAIN_HTTP=True,
                  MCT_PUSH_INSECURE=ARGUMENTS.get("insecure", "0"),
                  MCT_DOCKER_MEDIA_TYPES=ARGUMENTS.get("docker", "0"),
                  MCT_DOCKER_CONFIG=ARGUMENTS.get("docker_config", ""))
a = env.MicroImage("images/a", PATHS=["/usr/bin/true"], CMD=["/usr/bin/true"],
                   FILES={"/msg.txt": "a/msg.txt"})
b = env.MicroImage("images/b", PATHS=["/usr/bin/true"], CMD=["/usr/bin/true"],
                   FILES={"/msg.txt": "b/msg.txt"})
pushed = [env.MicroPush("pushed/a.ref", a, REF=f"{registry}/a:{tag}"),     # what MicroImage returned
          env.MicroPush("pushed/b.ref", "images/b", REF=f"{registry}/b:{tag}")]  # the layout's path
Alias("image", [a, b])
Alias("push", pushed)
Default("image")
"""


# --------------------------------------------------------------------------- helpers

def make_project(root: Path) -> Path:
    write(root / "SConstruct", SCONSTRUCT)
    write(root / "site_scons/site_init.py", "import microcontainer_tool.sconstool as m; m.register()\n")
    for name in NAMES:
        write(root / name / "msg.txt", f"message of {name}\n")
    return root


def run(root: Path, *args: str) -> subprocess.CompletedProcess:
    """scons with no ambient Docker credentials."""
    return scons(root, *args, env={"DOCKER_CONFIG": str(root / "no-docker-config")})


def pushed(output: str) -> set[str]:
    """Images scons pushed, from its ``MicroPush`` lines."""
    return set(re.findall(r"^MicroPush pushed/(\S+)\.ref$", output, re.M))


def archive_digest(root: Path, name: str) -> str:
    """The manifest digest the build made (the oci-archive's index)."""
    with tarfile.open(root / f"images/{name}.tar") as tar:
        index = json.loads(tar.extractfile("index.json").read())
    assert len(index["manifests"]) == 1, index
    return index["manifests"][0]["digest"]


def skopeo(*args: str) -> str:
    proc = subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def registry_digest(ref: str) -> str:
    return json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{ref}"))["Digest"]


def stamp(root: Path, name: str) -> str:
    return (root / f"pushed/{name}.ref").read_text()


def check_stamp(root: Path, name: str, ref: str, built: bool = True) -> str:
    """The stamp is exactly ``REF@DIGEST\\n``, the registry's digest (and the build's)."""
    text = stamp(root, name)
    assert re.fullmatch(re.escape(ref) + r"@sha256:[0-9a-f]{64}\n", text), text
    digest = text.strip().rsplit("@", 1)[1]
    assert digest == registry_digest(ref)
    if built:
        assert digest == archive_digest(root, name)
    return digest


def up_to_date(root: Path, *args: str) -> None:
    ok(run(root, "push", *args))
    assert run(root, "-q", "push", *args).returncode == 0


def stamp_stats(root: Path) -> dict[str, tuple[int, int, str]]:
    out = {}
    for path in sorted((root / "pushed").iterdir()):
        st = path.stat()
        out[path.name] = (st.st_ino, st.st_mtime_ns, path.read_text())
    return out


def docker_config(path: Path, host: str, user: str, password: str) -> Path:
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    write(path, json.dumps({"auths": {host: {"auth": auth}}}))
    return path


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    reg = Registry(tmp_path_factory.mktemp("registry"), "open", None)
    yield reg
    reg.stop()


@pytest.fixture(scope="module")
def project(tmp_path_factory, registry) -> Path:
    """A project pushed once; the tests below edit it in order."""
    root = make_project(tmp_path_factory.mktemp("push") / "project")
    out = ok(run(root, "push", f"registry={registry.host}"))
    assert pushed(out) == set(NAMES), out
    return root


# --------------------------------------------------------------------------- pushing

def test_push_records_the_registry_and_build_digest(project, registry):
    for name in NAMES:
        check_stamp(project, name, f"{registry.host}/{name}:latest")
    assert not (project / "images/a/index.json").exists()  # the archive is pushed: no layout needed
    assert [p.name for p in (project / "pushed").iterdir() if p.name.startswith(".")] == []


def test_second_push_does_nothing(project, registry):
    args = ("push", f"registry={registry.host}")
    before = stamp_stats(project)
    assert run(project, "-q", *args).returncode == 0
    out = ok(run(project, *args))
    assert not pushed(out) and "`push' is up to date." in out, out
    assert stamp_stats(project) == before


def test_edited_input_pushes_only_that_image(project, registry):
    args = (f"registry={registry.host}",)
    up_to_date(project, *args)
    before = stamp_stats(project)
    write(project / "a/msg.txt", "an edited message\n")
    assert run(project, "-q", "push", *args).returncode != 0
    out = ok(run(project, "push", *args))
    assert pushed(out) == {"a"}, out
    assert len(re.findall(r"^MicroPush ", out, re.M)) == 1, out
    after = stamp_stats(project)
    assert after["a.ref"][2] != before["a.ref"][2]
    assert after["b.ref"] == before["b.ref"]  # not even rewritten
    check_stamp(project, "a", f"{registry.host}/a:latest")
    assert run(project, "-q", "push", *args).returncode == 0


def test_ref_and_option_changes_push_again(project, registry):
    base = f"registry={registry.host}"
    up_to_date(project, base)
    digests = {name: check_stamp(project, name, f"{registry.host}/{name}:latest") for name in NAMES}

    out = ok(run(project, "push", base, "tag=v2"))  # another REF
    assert pushed(out) == set(NAMES), out
    for name in NAMES:
        assert check_stamp(project, name, f"{registry.host}/{name}:v2") == digests[name]
    assert run(project, "-q", "push", base, "tag=v2").returncode == 0

    out = ok(run(project, "push", base, "tag=v2", "insecure=1"))  # a push option
    assert pushed(out) == set(NAMES), out

    out = ok(run(project, "push", base, "tag=v2", "insecure=1", "docker=1"))  # other manifest bytes
    assert pushed(out) == set(NAMES), out
    for name in NAMES:
        ref = f"{registry.host}/{name}:v2"
        digest = check_stamp(project, name, ref, built=False)
        assert digest != digests[name]
        raw = json.loads(skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{ref}"))
        assert raw["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    assert run(project, "-q", "push", base, "tag=v2", "insecure=1", "docker=1").returncode == 0

    out = ok(run(project, "push", base))  # back to the first REF and options
    assert pushed(out) == set(NAMES), out
    for name in NAMES:
        assert check_stamp(project, name, f"{registry.host}/{name}:latest") == digests[name]


def test_failed_push_is_one_line_and_leaves_no_stamp(project, registry):
    up_to_date(project, f"registry={registry.host}")
    dead = f"127.0.0.1:{free_port()}"
    proc = run(project, "-j1", "push", f"registry={dead}")
    line = assert_scons_error(proc, dead, "pushing")
    failed = re.match(r"scons: \*\*\* \[pushed/(\w+)\.ref\] ", line)
    assert failed, line
    assert not (project / f"pushed/{failed.group(1)}.ref").exists()
    assert [p.name for p in (project / "pushed").iterdir() if p.name.startswith(".")] == []  # no temp files
    assert run(project, "-q", "push", f"registry={dead}").returncode != 0
    out = ok(run(project, "push", f"registry={registry.host}"))  # and back
    assert failed.group(1) in pushed(out), out


# --------------------------------------------------------------------------- CacheDir

def test_cachedir_never_restores_a_push(tmp_path, registry):
    cache = tmp_path / "cache"
    root = make_project(tmp_path / "project")
    args = ("push", f"registry={registry.host}/cached", f"cache={cache}")
    out = ok(run(root, *args))
    assert pushed(out) == set(NAMES), out
    ref = f"{registry.host}/cached/a:latest"
    digest = check_stamp(root, "a", ref)
    assert not any(stamp(root, "a") == p.read_text(errors="replace") for p in cache.rglob("*") if p.is_file())

    # the registry loses the image, the stamp goes: the archive comes from the cache, the push is real
    response = requests.delete(f"http://{registry.host}/v2/cached/a/manifests/{digest}", timeout=30)
    assert response.status_code == 202, response.text
    head = requests.head(f"http://{registry.host}/v2/cached/a/manifests/latest", timeout=30)
    assert head.status_code == 404
    (root / "pushed/a.ref").unlink()
    shutil.rmtree(root / "images")
    out = ok(run(root, *args))
    assert "Retrieved `images/a.tar' from cache" in out, out
    assert "Retrieved `pushed/" not in out and pushed(out) == {"a"}, out
    assert check_stamp(root, "a", ref) == digest


# --------------------------------------------------------------------------- other images and inputs

def test_layout_directory_and_archive_paths(tmp_path, project, registry):
    up_to_date(project, f"registry={registry.host}")
    ok(run(project, "image", f"registry={registry.host}"))
    other = tmp_path / "other"
    shutil.copytree(project / "images/a", other / "layout")
    shutil.copy2(project / "images/b.tar", other / "b.tar")
    write(other / "SConstruct",
          "env = Environment(tools=['default', 'microimage'], MCT_PUSH_PLAIN_HTTP=1)\n"
          f"env.MicroPush('layout.ref', 'layout', REF='{registry.host}/paths/layout')\n"
          f"env.MicroPush('archive.ref', env.File('b.tar'), REF='{registry.host}/paths/archive:t')\n")
    write(other / "site_scons/site_init.py", "import microcontainer_tool.sconstool as m; m.register()\n")
    out = ok(run(other, "."))
    assert set(re.findall(r"^MicroPush (\S+)$", out, re.M)) == {"layout.ref", "archive.ref"}, out
    layout_ref, archive_ref = f"{registry.host}/paths/layout:latest", f"{registry.host}/paths/archive:t"
    assert (other / "layout.ref").read_text() == f"{layout_ref}@{archive_digest(project, 'a')}\n"
    assert (other / "archive.ref").read_text() == f"{archive_ref}@{archive_digest(project, 'b')}\n"
    assert registry_digest(layout_ref) == archive_digest(project, "a")
    assert run(other, "-q", ".").returncode == 0

    shutil.rmtree(other / "layout")  # another image in the layout directory
    shutil.copytree(project / "images/b", other / "layout")
    assert run(other, "-q", ".").returncode != 0
    out = ok(run(other, "."))
    assert re.findall(r"^MicroPush (\S+)$", out, re.M) == ["layout.ref"], out
    assert (other / "layout.ref").read_text() == f"{layout_ref}@{archive_digest(project, 'b')}\n"
    assert registry_digest(layout_ref) == archive_digest(project, "b")


def test_sconscript_mistakes_are_one_line_errors(tmp_path):
    head = "env = Environment(tools=['default', 'microimage'])\n" \
           "img = env.MicroImage('images/t', PATHS=['/usr/bin/true'], CMD=['/usr/bin/true'])\n"
    write(tmp_path / "site_scons/site_init.py", "import microcontainer_tool.sconstool as m; m.register()\n")
    for line, words in [("env.MicroPush('t.ref', img)\n", ("t.ref", "REF")),
                        ("env.MicroPush('t.ref', img, REF='Bad Host/t')\n", ("t.ref", "Bad Host")),
                        ("env.MicroPush('t.ref', [img, img], REF='localhost:1/t')\n",
                         ("t.ref", "one image"))]:
        write(tmp_path / "SConstruct", head + line)
        proc = run(tmp_path)
        assert_scons_error(proc, *words)
        assert "done reading SConscript files" not in proc.stdout, proc.stdout


# --------------------------------------------------------------------------- credentials

def test_credentials_come_from_the_docker_config_and_never_show(tmp_path, registry):
    if not have("htpasswd"):
        pytest.skip("needs htpasswd (apache2-utils)")
    password, wrong = "s3cret-Pa55word-0123", "wr0ng-Pa55word-4567"
    htpasswd = subprocess.run(["htpasswd", "-Bbn", "alice", password], capture_output=True, text=True,
                              check=True).stdout
    write(tmp_path / "htpasswd", htpasswd)
    locked = Registry(tmp_path, "basic", {"htpasswd": {"realm": "mct", "path": str(tmp_path / "htpasswd")}})
    try:
        root = make_project(tmp_path / "project")
        good = docker_config(tmp_path / "good/config.json", locked.host, "alice", password)
        bad = docker_config(tmp_path / "bad/config.json", locked.host, "alice", wrong).parent  # a directory

        proc = run(root, "push", f"registry={locked.host}", "tag=anon")  # no credentials
        assert_scons_error(proc, "authentication failed", "anonymous")

        proc = run(root, "push", f"registry={locked.host}", "tag=bad", f"docker_config={bad}")
        line = assert_scons_error(proc, "authentication failed", str(bad / "config.json"))
        assert wrong not in proc.stdout + proc.stderr and password not in proc.stdout + proc.stderr, line
        assert not (root / "pushed/a.ref").exists() and not (root / "pushed/b.ref").exists()

        proc = run(root, "push", f"registry={locked.host}", f"docker_config={good}")
        out = ok(proc)
        assert pushed(out) == set(NAMES), out
        assert password not in proc.stdout + proc.stderr
        for name in NAMES:
            assert stamp(root, name) == f"{locked.host}/{name}:latest@{archive_digest(root, name)}\n"
        # other credentials do not push again: they change nothing in the registry
        again = run(root, "-q", "push", f"registry={locked.host}", f"docker_config={tmp_path}/good")
        assert again.returncode == 0
    finally:
        locked.stop()


# --------------------------------------------------------------------------- this repository

def test_examples_push(tmp_path, registry):
    root = checkout(tmp_path / "repo")
    proc = run(root, "push")
    assert_scons_error(proc, "registry=")
    out = ok(run(root, "push", f"registry={registry.host}/examples/", "plain_http=1"))
    images = set(re.findall(r"^MicroPush build/pushed/(\S+)\.ref$", out, re.M))
    assert images == {"hello", "goodbye", "cat"}, out
    for name in images:
        ref = f"{registry.host}/examples/{name}:latest"
        text = (root / f"build/pushed/{name}.ref").read_text()
        index = json.loads((root / f"build/images/{name}/index.json").read_text())
        assert text == f"{ref}@{index['manifests'][0]['digest']}\n"
        assert registry_digest(ref) == index["manifests"][0]["digest"]
    assert run(root, "-q", "push", f"registry={registry.host}/examples", "plain_http=1").returncode == 0
    out = ok(run(root))  # the default target: images, no registry
    assert "`image' is up to date." in out, out


def test_image_from_a_registry_reference(tmp_path, project, registry):
    """``from:`` a digest-pinned registry image: pulled once into $MCT_CACHEDIR, then no-op builds."""
    up_to_date(project, f"registry={registry.host}")
    own = Registry(tmp_path, "short-lived", None)  # stopped half-way: the cache must do
    try:
        skopeo("copy", "--dest-tls-verify=false", f"oci-archive:{project / 'images/a.tar'}",
               f"docker://{own.host}/a:1")
        digest = registry_digest(f"{own.host}/a:1")
        root = tmp_path / "micro"
        write(root / "site_scons/site_init.py", "import microcontainer_tool.sconstool as m; m.register()\n")
        write(root / "SConstruct", f"""\
env = Environment(tools=["default", "microimage"], MCT_PULL_PLAIN_HTTP=ARGUMENTS.get("plain", "1"))
img = env.MicroImage("images/m", FROM="{own.host}/a@{digest}", PATHS=["/usr/bin/true", "/msg.txt"],
                     CMD=["/usr/bin/true"])
Default(img)
""")
        proc = run(root, "plain=0")  # HTTPS to a plain-HTTP registry: one line, no image
        assert proc.returncode != 0 and "--plain-http" in proc.stderr
        assert not (root / "images/m").exists()
        ok(run(root))
        assert run(root, "-q").returncode == 0  # up to date: nothing pulled, nothing rebuilt
    finally:
        own.stop()
    shutil.rmtree(root / "images")
    ok(run(root))  # the pinned image is in the cache: a clean rebuild needs no registry
    proc = run_cli("why", str(root / "images/m.tar"), "/msg.txt")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["/msg.txt <- paths: /msg.txt", f"source: image:{own.host}/a@{digest}"]
