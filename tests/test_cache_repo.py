"""``build --cache-repo``: a layer cache the team shares through its registry.

Real ``docker-registry`` processes on 127.0.0.1 (open and token-authenticated),
two "machines" (separate ``HOME``, ``XDG_CACHE_HOME`` and cache directories).
What the second machine does is counted, not timed: the layer cache's
counters, calls of the real ``write_layer``, and every HTTP request through a
``requests.Session`` that records what it sends.
"""

from __future__ import annotations

import base64
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import SHARED_RPMS, HttpServer, make_repo, needs_shared_rpms, run_cli
from registry_env import USER, Env, Registry, free_port, running_registries

from microcontainer_tool.build import build_image
from microcontainer_tool.errors import LayerMismatchError
from microcontainer_tool.oci import layercache as layercache_module
from microcontainer_tool.oci.layer import write_layer
from microcontainer_tool.oci.layercache import LayerCache
from microcontainer_tool.oci.layercheck import check_layer
from microcontainer_tool.oci.model import MEDIA_TYPE_MANIFEST, canonical_json, sha256_digest
from microcontainer_tool.registry.sharedcache import (
    ANNOTATION_PREFIX,
    CACHE_ARTIFACT_TYPE,
    SharedCache,
    layer_tag,
)
from microcontainer_tool.spec.imagespec import load_spec

WRITES = {"POST", "PUT", "PATCH", "DELETE"}


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    yield from running_registries(tmp_path_factory)


class RecordingSession(requests.Session):
    """A real session that records the method and path of every request it sends."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[str, str]] = []

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        self.sent.append((str(method), requests.utils.urlparse(str(url)).path))
        return super().request(method, url, *args, **kwargs)

    def writes(self) -> list[tuple[str, str]]:
        return [(m, p) for m, p in self.sent if m in WRITES]


class Machine:
    """One build machine: its own HOME, tool cache and layer cache."""

    def __init__(self, root: Path, name: str) -> None:
        self.home = root / name / "home"
        self.cache = root / name / "cache"
        self.home.mkdir(parents=True)
        self.cache.mkdir(parents=True)

    def environ(self) -> dict[str, str]:
        return {"HOME": str(self.home), "XDG_CACHE_HOME": str(self.home / ".cache"),
                "MCT_CACHE_DIR": str(self.cache), "DOCKER_CONFIG": str(self.home / ".docker")}

    def login(self, registry: Registry, password: str) -> None:
        """Store credentials as ``docker login`` does (``auths`` in config.json)."""
        docker = self.home / ".docker"
        docker.mkdir(exist_ok=True)
        auth = base64.b64encode(f"{USER}:{password}".encode()).decode()
        (docker / "config.json").write_text(json.dumps({"auths": {registry.host: {"auth": auth}}}))


def _spec(tmp_path: Path, paths: str = "[/usr/bin/true]") -> Path:
    spec = tmp_path / f"spec-{abs(hash(paths))}"
    spec.mkdir(exist_ok=True)
    (spec / "microimage.yaml").write_text(f"paths: {paths}\ncmd: [/usr/bin/true]\n")
    return spec


def _build(spec: Path, machine: Machine, out: Path, cache: SharedCache | None,
           monkeypatch: pytest.MonkeyPatch) -> tuple[LayerCache, list[int], Any]:
    """Build in-process as ``machine``; return the layer cache, the write_layer calls and the result."""
    for key, value in machine.environ().items():
        monkeypatch.setenv(key, value)
    calls: list[int] = []

    def counted_write_layer(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return write_layer(*args, **kwargs)

    monkeypatch.setattr(layercache_module, "write_layer", counted_write_layer)
    layers = LayerCache(str(machine.cache), remote=cache)
    result = build_image(load_spec(str(spec)), str(out), name="img", layer_cache=layers,
                         cache_dir=str(machine.cache))
    return layers, calls, result


def _shared(registry: Registry, repo: str, **kwargs: Any) -> tuple[SharedCache, RecordingSession]:
    session = RecordingSession()
    return SharedCache(registry.client(session=session), repo, **kwargs), session


def _storage_state(registry: Registry) -> dict[str, tuple[int, int]]:
    """Every file of the registry's storage with its size and mtime: any write changes it."""
    state = {}
    for dirpath, _dirs, files in os.walk(registry.storage):
        for name in files:
            st = os.stat(os.path.join(dirpath, name))
            state[os.path.join(dirpath, name)] = (st.st_size, st.st_mtime_ns)
    return state


def test_second_machine_reads_the_cache_and_does_no_layer_work(env: Env, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    spec = _spec(tmp_path)
    a, b = Machine(tmp_path, "a"), Machine(tmp_path, "b")
    cache_a, session_a = _shared(env.open, "team/cache-two")
    layers_a, calls_a, first = _build(spec, a, tmp_path / "a.tar", cache_a, monkeypatch)
    assert (layers_a.stats.built, layers_a.stats.remote_hits, len(calls_a)) == (1, 0, 1)
    assert (cache_a.stats.layer_misses, cache_a.stats.layers_stored) == (1, 1)
    assert any(m == "PUT" and "/manifests/layer-" in p for m, p in session_a.writes())
    assert cache_a.warnings == []

    before = _storage_state(env.open)
    cache_b, session_b = _shared(env.open, "team/cache-two")
    layers_b, calls_b, second = _build(spec, b, tmp_path / "b.tar", cache_b, monkeypatch)
    assert calls_b == []  # no tar written, nothing compressed
    assert (layers_b.stats.built, layers_b.stats.remote_hits, layers_b.stats.remote_refused) == (0, 1, 0)
    assert (cache_b.stats.layer_hits, cache_b.stats.layers_stored) == (1, 0)
    assert session_b.writes() == []  # uploads nothing
    assert [m for m, _p in session_b.sent] == ["GET", "GET"]  # the manifest, the blob
    assert _storage_state(env.open) == before
    assert cache_b.warnings == []
    assert second.manifest_digest == first.manifest_digest
    assert (tmp_path / "b.tar").read_bytes() == (tmp_path / "a.tar").read_bytes()
    # and both are what a build with no cache at all writes
    plain = build_image(load_spec(str(spec)), str(tmp_path / "plain.tar"), name="img",
                        cache_dir=str(b.cache))
    assert plain.manifest_digest == first.manifest_digest
    assert (tmp_path / "plain.tar").read_bytes() == (tmp_path / "a.tar").read_bytes()
    # the fetched layer sits in machine b's local cache: a third build there asks nobody
    cache_b2, session_b2 = _shared(env.open, "team/cache-two")
    layers_b2, calls_b2, _ = _build(spec, b, tmp_path / "b2.tar", cache_b2, monkeypatch)
    assert (layers_b2.stats.local_hits, calls_b2, session_b2.sent) == (1, [], [])


def test_entry_format(env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = _spec(tmp_path)
    cache, _session = _shared(env.open, "team/cache-format")
    layers, _calls, result = _build(spec, Machine(tmp_path, "a"), tmp_path / "a.tar", cache, monkeypatch)
    [key] = [name[:-5] for name in os.listdir(layers.root + "/layers") if name.endswith(".json")]
    client = env.open.client()
    tag = layer_tag(key, "gzip")
    assert len(tag) <= 128 and tag.startswith("layer-")
    data, media_type, _digest = client.get_manifest("team/cache-format", tag)
    manifest = json.loads(data)
    assert media_type == MEDIA_TYPE_MANIFEST
    assert manifest["artifactType"] == CACHE_ARTIFACT_TYPE
    assert manifest["config"]["mediaType"] == CACHE_ARTIFACT_TYPE
    assert manifest["annotations"][ANNOTATION_PREFIX + "key"] == key
    assert manifest["annotations"][ANNOTATION_PREFIX + "diff_id"] == result.layer.diff_id
    [layer] = manifest["layers"]
    assert (layer["digest"], layer["size"], layer["mediaType"]) == (
        result.layer.digest, result.layer.size, result.layer.media_type)
    config = tmp_path / "config.json"
    client.get_blob("team/cache-format", manifest["config"]["digest"], str(config))
    facts = json.loads(config.read_text())
    assert (facts["diff_id"], facts["key"], facts["size"]) == (result.layer.diff_id, key, result.layer.size)


def _poison(registry: Registry, repo: str, key: str, layer: dict[str, Any], diff_id: str) -> None:
    """Tag as ``key``'s entry a manifest naming ``layer``, claiming ``diff_id`` (a cache writer can)."""
    client = registry.client()
    config = canonical_json({"key": key, "diff_id": diff_id})
    client.upload_blob(repo, config, sha256_digest(config), len(config))
    manifest = {"schemaVersion": 2, "mediaType": MEDIA_TYPE_MANIFEST, "artifactType": CACHE_ARTIFACT_TYPE,
                "config": {"mediaType": CACHE_ARTIFACT_TYPE, "digest": sha256_digest(config),
                           "size": len(config)},
                "layers": [layer],
                "annotations": {ANNOTATION_PREFIX + "key": key, ANNOTATION_PREFIX + "diff_id": diff_id}}
    client.put_manifest(repo, layer_tag(key, "gzip"), canonical_json(manifest), MEDIA_TYPE_MANIFEST)


@pytest.mark.parametrize("claim", ["its-own-diff-id", "the-right-diff-id"])
def test_poisoned_entry_is_refused_and_the_build_succeeds(env: Env, tmp_path: Path, claim: str,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    repo = f"team/cache-poison-{claim}"
    good_spec, other_spec = _spec(tmp_path), _spec(tmp_path, "[/usr/bin/true, /usr/bin/false]")
    a = Machine(tmp_path, "a")
    # a's honest builds: the image and another image (a real, self-consistent layer of another tree)
    cache_a, _ = _shared(env.open, repo)
    layers_a, _, good = _build(good_spec, a, tmp_path / "good.tar", cache_a, monkeypatch)
    _, _, other = _build(other_spec, a, tmp_path / "other.tar", cache_a, monkeypatch)
    [key] = [n[:-5] for n in os.listdir(layers_a.root + "/layers") if n.endswith(".json")
             and json.loads(Path(layers_a.root, "layers", n).read_text())["diff_id"] == good.layer.diff_id]
    # the writer re-tags the good key with the other layer: digests all consistent, tree wrong
    other_layer = {"mediaType": other.layer.media_type, "digest": other.layer.digest,
                   "size": other.layer.size}
    _poison(env.open, repo, key, other_layer,
            other.layer.diff_id if claim == "its-own-diff-id" else good.layer.diff_id)

    cache_b, session_b = _shared(env.open, repo, read_only=True)
    layers_b, calls_b, result = _build(good_spec, Machine(tmp_path, "b"), tmp_path / "b.tar", cache_b,
                                       monkeypatch)
    assert (layers_b.stats.remote_refused, layers_b.stats.remote_hits, layers_b.stats.built) == (1, 0, 1)
    assert len(calls_b) == 1  # built here instead
    [warning] = cache_b.warnings
    assert "refused the entry for key" in warning and "\n" not in warning
    assert result.layer == good.layer
    assert (tmp_path / "b.tar").read_bytes() == (tmp_path / "good.tar").read_bytes()
    assert session_b.writes() == []
    # the refused blob never entered b's local cache
    names = os.listdir(layers_b.root + "/layers")
    assert not any(n.startswith(".") for n in names)
    assert all(json.loads(Path(layers_b.root, "layers", n).read_text())["digest"] != other.layer.digest
               for n in names if n.endswith(".json"))


def test_blob_not_matching_its_digest_is_refused(env: Env, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    repo = "team/cache-corrupt"
    spec = _spec(tmp_path)
    cache_a, _ = _shared(env.open, repo)
    _, _, good = _build(spec, Machine(tmp_path, "a"), tmp_path / "a.tar", cache_a, monkeypatch)
    blob = env.open.blob_data_path(good.layer.digest)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF  # the registry's stored bytes rot (or are swapped)
    blob.write_bytes(bytes(data))
    try:
        cache_b, _ = _shared(env.open, repo)
        layers_b, calls_b, result = _build(spec, Machine(tmp_path, "b"), tmp_path / "b.tar", cache_b,
                                           monkeypatch)
    finally:
        data[len(data) // 2] ^= 0xFF
        blob.write_bytes(bytes(data))
    assert (layers_b.stats.remote_hits, layers_b.stats.built, len(calls_b)) == (0, 1, 1)
    assert cache_b.stats.refused == 1
    [warning] = cache_b.warnings
    assert "refused" in warning and good.layer.digest in warning
    assert (tmp_path / "b.tar").read_bytes() == (tmp_path / "a.tar").read_bytes()
    assert result.layer == good.layer


def test_read_only_never_writes(env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = _spec(tmp_path)
    before = _storage_state(env.open)
    cache, session = _shared(env.open, "team/cache-readonly", read_only=True)
    layers, calls, _ = _build(spec, Machine(tmp_path, "a"), tmp_path / "a.tar", cache, monkeypatch)
    assert (layers.stats.built, len(calls)) == (1, 1)
    assert (cache.stats.layer_misses, cache.stats.layers_stored) == (1, 0)
    assert session.sent and session.writes() == []
    assert _storage_state(env.open) == before
    assert cache.warnings == []


def _closed_port() -> int:
    port = free_port()
    with socket.socket() as probe:  # nothing listens there
        assert probe.connect_ex(("127.0.0.1", port)) != 0
    return port


def test_unreachable_cache_warns_and_the_build_succeeds(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    machine = Machine(tmp_path, "a")
    repo = f"127.0.0.1:{_closed_port()}/team/cache"
    proc = run_cli("build", "-c", str(spec), "-o", str(tmp_path / "a.tar"), "--name", "img", "--plain-http",
                   "--cache-repo", repo, env=machine.environ())
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1, proc.stderr
    assert warnings[0].startswith(f"microcontainer: warning: cache repository {repo}: ")
    assert "building without it" in warnings[0] and "Traceback" not in proc.stderr
    plain = run_cli("build", "-c", str(spec), "-o", str(tmp_path / "b.tar"), "--name", "img",
                    env=machine.environ())
    assert plain.returncode == 0, plain.stderr
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()


def test_cli_token_auth_two_machines(env: Env, tmp_path: Path) -> None:
    """The command line, token auth with credentials from each machine's docker config."""
    spec = _spec(tmp_path)
    repo = f"{env.token.host}/team/cache-cli"
    a, b = Machine(tmp_path, "a"), Machine(tmp_path, "b")
    for machine in (a, b):
        machine.login(env.token, env.password)
    first = run_cli("build", "-c", str(spec), "-o", str(tmp_path / "out-a"), "--name", "img", "--plain-http",
                    "--cache-repo", repo, env=a.environ())
    assert first.returncode == 0, first.stderr
    assert "warning" not in first.stderr, first.stderr
    assert f"cache    {repo}: 0 layer hit(s), 1 miss(es), 1 stored" in first.stdout
    before = _storage_state(env.token)
    second = run_cli("build", "-c", str(spec), "-o", str(tmp_path / "out-b"), "--name", "img", "--plain-http",
                     env={**b.environ(), "MCT_CACHE_REPO": repo, "MCT_CACHE_REPO_READONLY": "1"})
    assert second.returncode == 0, second.stderr
    assert "warning" not in second.stderr, second.stderr
    assert f"cache    {repo}: 1 layer hit(s), 0 miss(es), 0 stored (read-only)" in second.stdout
    assert _storage_state(env.token) == before  # nothing uploaded
    manifest = [line for line in first.stdout.splitlines() if line.startswith("manifest ")]
    assert manifest and manifest == [line for line in second.stdout.splitlines()
                                     if line.startswith("manifest ")]
    for name in ("index.json", "oci-layout"):
        assert (tmp_path / "out-a" / name).read_bytes() == (tmp_path / "out-b" / name).read_bytes()
    blobs = [sorted(os.listdir(tmp_path / f"out-{x}/blobs/sha256")) for x in "ab"]
    assert blobs[0] == blobs[1]
    # without credentials the token registry refuses: a warning, and the build still succeeds
    c = Machine(tmp_path, "c")
    third = run_cli("build", "-c", str(spec), "-o", str(tmp_path / "out-c"), "--name", "img", "--plain-http",
                    "--cache-repo", repo, env=c.environ())
    assert third.returncode == 0, third.stderr
    [warning] = [line for line in third.stderr.splitlines() if "warning" in line]
    assert "authentication failed" in warning or "access denied" in warning, warning


def test_check_layer_is_exact(tmp_path: Path) -> None:
    """The check accepts exactly write_layer's tar of the tree, for each codec."""
    from microcontainer_tool.assembly.assemble import assemble

    spec = load_spec(str(_spec(tmp_path, "[/usr/bin/true, /usr/bin/false]")))
    tree = assemble(spec).tree
    digest = tree.digest()
    for codec in ("gzip", "zstd", "none"):
        blob = tmp_path / f"layer.{codec}"
        with open(blob, "wb") as sink:
            info = write_layer(tree, sink, codec, 7)
        with open(blob, "rb") as handle:
            assert check_layer(handle, tree, digest, 7) == info.diff_id
        with open(blob, "rb") as handle, pytest.raises(LayerMismatchError):
            check_layer(handle, tree, digest, 8)  # another epoch: every header differs
    raw = (tmp_path / "layer.none").read_bytes()
    for bad in (raw + bytes(512), raw[:-512], raw[:1024] + b"x" + raw[1025:]):
        (tmp_path / "bad").write_bytes(bad)
        with open(tmp_path / "bad", "rb") as handle, pytest.raises(LayerMismatchError):
            check_layer(handle, tree, digest, 7)


@needs_shared_rpms
def test_rpm_payloads_are_shared(env: Env, tmp_path: Path) -> None:
    """Machine b builds an RPM spec with the package repository gone: the cache repo has every .rpm."""
    repo_dir = make_repo(tmp_path / "rocky", sorted(SHARED_RPMS.glob("*.rpm")))
    server = HttpServer(str(repo_dir))
    spec = tmp_path / "rpmspec"
    spec.mkdir()
    (spec / "microimage.yaml").write_text(f"packages: [curl]\nrepos:\n  - baseurl: {server.url}\n"
                                          "    name: rocky\npaths: [/usr/bin/curl]\ncmd: [/usr/bin/curl]\n")
    cache_repo = f"{env.open.host}/team/cache-rpm"
    a, b = Machine(tmp_path, "a"), Machine(tmp_path, "b")
    try:
        first = run_cli("build", "-c", str(spec), "-o", str(tmp_path / "out-a.tar"), "--name", "img",
                        "--plain-http", "--cache-repo", cache_repo, env=a.environ())
    finally:
        server.stop()
    assert first.returncode == 0, first.stderr
    lock = json.loads((spec / "microimage.lock").read_text())
    count = len(lock["packages"])
    assert count > 10
    assert f"packages 0 hit(s), {count} miss(es), {count} stored" in first.stdout
    tags = set(env.open.client().tags("team/cache-rpm"))
    assert {f"rpm-sha256-{p['checksum']}" for p in lock["packages"]} <= tags
    before = _storage_state(env.open)
    second = run_cli("build", "-c", str(spec), "-o", str(tmp_path / "out-b.tar"), "--name", "img",
                     "--plain-http", "--cache-repo", cache_repo, "--cache-repo-read-only", env=b.environ())
    assert second.returncode == 0, second.stderr
    assert "cache repository" not in second.stderr + first.stderr, second.stderr
    assert f"1 layer hit(s), 0 miss(es), 0 stored, packages {count} hit(s), 0 miss(es), 0 stored" \
        in second.stdout
    assert _storage_state(env.open) == before
    assert (tmp_path / "out-a.tar").read_bytes() == (tmp_path / "out-b.tar").read_bytes()
    # each package in b's download cache is the lock's, byte for byte
    for package in lock["packages"]:
        path = b.cache / "packages" / f"sha256-{package['checksum']}.rpm"
        assert sha256_digest(path.read_bytes()) == f"sha256:{package['checksum']}"


def test_check_layer_hardlinks_links_and_inline_content(tmp_path: Path) -> None:
    """Every kind of member: directories, symlinks, hardlinks, inline, empty and long-named files."""
    from microcontainer_tool.model.tree import Entry, EntryKind, FileTree, HostFile, InlineContent

    one = tmp_path / "one"
    one.write_bytes(b"x" * 1000)
    os.link(one, tmp_path / "linked")
    st = os.stat(one)
    identity = (st.st_dev, st.st_ino)
    tree = FileTree()
    tree.add(Entry("/d", EntryKind.DIR, 0o755))
    tree.add(Entry("/d/a", EntryKind.FILE, 0o644, HostFile(str(one), st.st_size, identity)))
    tree.add(Entry("/d/b", EntryKind.FILE, 0o755, HostFile(str(tmp_path / "linked"), st.st_size, identity)))
    tree.add(Entry("/d/inline", EntryKind.FILE, 0o600, InlineContent(b"generated\n")))
    tree.add(Entry("/d/empty", EntryKind.FILE, 0o644, InlineContent(b"")))
    tree.add(Entry("/d/" + "n" * 150 + "-\u00e9", EntryKind.FILE, 0o644, InlineContent(b"long")))
    tree.add(Entry("/d/link", EntryKind.SYMLINK, 0o777, linkname="a"))
    blob = tmp_path / "layer"
    with open(blob, "wb") as sink:
        info = write_layer(tree, sink, "gzip", 0)
    with open(blob, "rb") as handle:
        assert check_layer(handle, tree, tree.digest(), 0) == info.diff_id
    # the same paths, but /d/b a copy instead of a hardlink: another tree, refused
    copy = FileTree()
    for entry in tree:
        if entry.path == "/d/b":
            entry = Entry("/d/b", EntryKind.FILE, 0o755, HostFile(str(tmp_path / "linked"), st.st_size, None))
        copy.add(entry)
    with open(blob, "rb") as handle, pytest.raises(LayerMismatchError):
        check_layer(handle, copy, copy.digest(), 0)
    # the same structure with other bytes in /d/inline (same size): refused by the content hash
    other = FileTree()
    for entry in tree:
        if entry.path == "/d/inline":
            entry = Entry("/d/inline", EntryKind.FILE, 0o600, InlineContent(b"GENERATED\n"))
        other.add(entry)
    with open(blob, "rb") as handle, pytest.raises(LayerMismatchError, match="contents"):
        check_layer(handle, other, other.digest(), 0)


def test_entry_whose_blob_is_gone_is_a_miss_and_is_stored_again(env: Env, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    repo = "team/cache-collected"
    spec = _spec(tmp_path)
    cache_a, _ = _shared(env.open, repo)
    _, _, good = _build(spec, Machine(tmp_path, "a"), tmp_path / "a.tar", cache_a, monkeypatch)
    gone = requests.delete(f"http://{env.open.host}/v2/{repo}/blobs/{good.layer.digest}", timeout=10)
    assert gone.status_code == 202, gone.text  # garbage collection, or a writer, removed it
    cache_b, session_b = _shared(env.open, repo)
    layers_b, calls_b, _ = _build(spec, Machine(tmp_path, "b"), tmp_path / "b.tar", cache_b, monkeypatch)
    assert (layers_b.stats.built, len(calls_b)) == (1, 1)
    assert (cache_b.stats.layer_misses, cache_b.stats.layers_stored, cache_b.warnings) == (1, 1, [])
    assert [p for m, p in session_b.writes() if m == "PUT" and "/manifests/layer-" in p]
    assert (tmp_path / "b.tar").read_bytes() == (tmp_path / "a.tar").read_bytes()
