"""``MCT_CACHE_REPO`` in SCons: two checkouts ("machines") share layers through a real registry.

The registry's access log counts what each machine sends: the second machine's
build reads the cache and writes nothing to it, and its ``MicroPush`` to the
same registry mounts the layer from the cache repository instead of uploading it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests
from conftest import have
from registry_env import Registry
from test_scons import ok, scons, write

pytestmark = pytest.mark.skipif(not have("docker-registry"), reason="needs docker-registry")

SCONSTRUCT = """\
env = Environment(tools=["default", "microimage"], MCT_PUSH_PLAIN_HTTP=True,
                  MCT_CACHE_REPO_PLAIN_HTTP=True)
a = env.MicroImage("images/a", PATHS=["/usr/bin/true"], CMD=["/usr/bin/true"],
                   FILES={"/msg.txt": "msg.txt"})
Alias("push", env.MicroPush("pushed/a.ref", a, REF=ARGUMENTS["ref"]))
Default(a)
"""


def machine(root: Path) -> Path:
    write(root / "SConstruct", SCONSTRUCT)
    write(root / "site_scons/site_init.py", "import microcontainer_tool.sconstool as m; m.register()\n")
    write(root / "msg.txt", "the same message\n")
    return root


def layer_digest(archive: Path) -> str:
    import tarfile

    with tarfile.open(archive) as tar:
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
        name = f"blobs/sha256/{index['manifests'][0]['digest'][7:]}"
        manifest = json.load(tar.extractfile(name))  # type: ignore[arg-type]
    return manifest["layers"][0]["digest"]


def mark(registry: Registry, name: str) -> int:
    """Send a marker request and wait until the access log has it; return its index in the log.

    The registry logs a request when it completes, possibly after the client has
    moved on: the marker, sent afterwards, orders the log.
    """
    import time

    path = f"/v2/marker/{name}/tags/list"
    requests.get(f"http://{registry.host}{path}", timeout=10)
    for _ in range(200):
        logged = registry.requests_logged()
        if ("GET", path) in logged:
            return logged.index(("GET", path))
        time.sleep(0.05)
    raise AssertionError(f"the registry never logged {path}")


def test_two_checkouts_share_layers_and_the_push_mounts(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry", "open", None, access_log=True)
    try:
        cache_repo = f"{registry.host}/team/cache"
        env = {"MCT_CACHE_REPO": cache_repo, "DOCKER_CONFIG": str(tmp_path / "no-docker-config")}
        one, two = machine(tmp_path / "one"), machine(tmp_path / "two")
        out = ok(scons(one, "push", f"ref={registry.host}/app/one:latest",
                       env={**env, "HOME": str(tmp_path / "home-one")}))
        assert "cache " + cache_repo + ": 0 layer hit(s), 1 miss(es), 1 stored" in out, out
        start = mark(registry, "start")

        out = ok(scons(two, "push", f"ref={registry.host}/app/two:latest",
                       env={**env, "HOME": str(tmp_path / "home-two")}))
        assert "cache " + cache_repo + ": 1 layer hit(s), 0 miss(es), 0 stored" in out, out
        assert "warning" not in out
        sent = registry.requests_logged()[start + 1:mark(registry, "end")]
        layer = layer_digest(two / "images/a.tar")
        assert (two / "images/a.tar").read_bytes() == (one / "images/a.tar").read_bytes()
        # the build wrote nothing to the cache repository
        assert [r for r in sent if r[1].startswith("/v2/team/cache/") and r[0] != "GET"] == []
        # the push mounted the layer from it: no upload session, no PUT of the layer
        quoted = layer.replace(":", "%3A")
        mounts = [r for r in sent if r[0] == "POST" and f"mount={quoted}" in r[1]]
        assert len(mounts) == 1 and "from=team%2Fcache" in mounts[0][1], sent
        assert not [r for r in sent if r[0] in ("PUT", "PATCH") and quoted in r[1]], sent
        assert (two / "pushed/a.ref").read_text().startswith(f"{registry.host}/app/two:latest@sha256:")
    finally:
        registry.stop()


CACHEDIR_SCONSTRUCT = """\
import microcontainer_tool.sconstool as m
env = Environment(MCT_CACHE_REPO_PLAIN_HTTP=True)
env.CacheDir("scache", m.RegistryCacheDir)  # per environment: SCons keeps the class per environment
env.Command("out.txt", "in.txt", "cat $SOURCE $SOURCE > $TARGET && echo ran >> ran.log")
"""


def cachedir_checkout(root: Path) -> Path:
    write(root / "SConstruct", CACHEDIR_SCONSTRUCT)
    write(root / "in.txt", "input\n")
    return root


def test_cachedir_class_shares_files_through_the_registry(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry", "open", None, access_log=True)
    try:
        env = {"MCT_CACHE_REPO": f"{registry.host}/team/scons-cache",
               "DOCKER_CONFIG": str(tmp_path / "no-docker-config")}
        one, two, three = (cachedir_checkout(tmp_path / name) for name in ("one", "two", "three"))
        ok(scons(one, ".", env=env))
        assert (one / "ran.log").read_text() == "ran\n"
        start = mark(registry, "start")
        out = ok(scons(two, ".", env={**env, "MCT_CACHE_REPO_READONLY": "1"}))
        sent = registry.requests_logged()[start + 1:mark(registry, "after-two")]
        assert "Retrieved `out.txt' from cache" in out, out
        assert not (two / "ran.log").exists()  # the command never ran
        assert (two / "out.txt").read_bytes() == (one / "out.txt").read_bytes() == b"input\ninput\n"
        assert [r for r in sent if r[0] != "GET"] == []
        # a blob that does not match its digest is refused: the command runs, the build succeeds
        manifest_path = next(p for m, p in sent if "/manifests/scons-" in p)
        manifest = requests.get(f"http://{registry.host}{manifest_path}", timeout=10,
                                headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}).json()
        blob = registry.blob_data_path(manifest["layers"][0]["digest"])
        blob.write_bytes(b"INPUT\nINPUT\n")  # same size, other bytes
        out = ok(scons(three, ".", env=env))
        assert "Retrieved" not in out and "refused the entry" in out, out
        assert (three / "ran.log").read_text() == "ran\n"
        assert (three / "out.txt").read_bytes() == b"input\ninput\n"
    finally:
        registry.stop()
