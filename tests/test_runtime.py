"""Running microcontainers (microcontainer_tool.runtime) and debugging them (runtime.debug).

The extraction and config tests run anywhere. The container tests need root and
runc; they build real images with the CLI, run them, and always remove their
containers (the state directory lives under /run, which the user-namespaced
runtime can reach; the cache is under pytest's private tmp, which it cannot).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import socket
import stat
import tarfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, assert_one_line_error, have, run_cli

from microcontainer_tool.errors import DigestMismatchError, LayoutError, RunError
from microcontainer_tool.runtime import bundle as bundle_module
from microcontainer_tool.runtime import containers as rt
from microcontainer_tool.runtime import debug as dbg
from microcontainer_tool.runtime.bundle import Bundle, make_bundle
from microcontainer_tool.runtime.config import runtime_config
from microcontainer_tool.runtime.extractor import extract_image
from microcontainer_tool.runtime.namespaces import host_id_map, userns_supported
from microcontainer_tool.runtime.toolbox import static_busybox
from microcontainer_tool.runtime.volumes import prepare_write_dir

# --------------------------------------------------------------------------- image helpers


def tar_layer(entries: list[tuple]) -> bytes:
    """A tar from ``(name, kind, mode, payload)``: kind file|dir|sym|link|chr|fifo."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, mode, payload in entries:
            info = tarfile.TarInfo(name)
            info.mode = mode
            info.mtime = 1000
            data = None
            if kind == "file":
                data = payload.encode() if isinstance(payload, str) else payload
                info.size = len(data)
            else:
                info.type = {"dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE, "link": tarfile.LNKTYPE,
                             "chr": tarfile.CHRTYPE, "fifo": tarfile.FIFOTYPE}[kind]
                if kind in ("sym", "link"):
                    info.linkname = payload
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def write_layout(path: Path, layers: list[bytes], config: dict | None = None,
                 diff_ids: list[str] | None = None) -> str:
    """A one-image OCI layout of gzip ``layers`` (uncompressed tars); returns its directory."""
    blobs = path / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(data: bytes, media: str) -> dict:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return {"mediaType": media, "digest": "sha256:" + digest, "size": len(data)}

    descs = [put(gzip.compress(layer, mtime=0), "application/vnd.oci.image.layer.v1.tar+gzip")
             for layer in layers]
    ids = diff_ids or ["sha256:" + hashlib.sha256(layer).hexdigest() for layer in layers]
    image_config = {"architecture": "amd64", "os": "linux", "config": config or {"Cmd": ["/bin/true"]},
                    "rootfs": {"type": "layers", "diff_ids": ids}}
    config_desc = put(json.dumps(image_config).encode(), "application/vnd.oci.image.config.v1+json")
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": config_desc, "layers": descs}
    manifest_desc = put(json.dumps(manifest).encode(), "application/vnd.oci.image.manifest.v1+json")
    (path / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [manifest_desc]}))
    (path / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    return str(path)


def tree_digest(root: Path) -> dict[str, str]:
    """Every file under ``root`` -> sha256 (symlinks -> their target)."""
    result = {}
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            result[str(path)] = "-> " + os.readlink(path)
        elif path.is_file():
            result[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return result


# --------------------------------------------------------------------------- extraction


def test_layers_whiteouts_modes_and_cache(tmp_path: Path) -> None:
    lower = tar_layer([
        ("etc", "dir", 0o755, None),
        ("etc/keep", "file", 0o644, "keep"),
        ("etc/gone", "file", 0o644, "gone"),
        ("opaque", "dir", 0o755, None),
        ("opaque/old", "file", 0o644, "old"),
        ("bin/tool", "file", 0o4755, "setuid"),   # parent created implicitly
        ("bin/hard", "link", 0o4755, "bin/tool"),
        ("lib", "sym", 0o777, "usr/lib"),
        ("replaced", "dir", 0o755, None),
        ("replaced/child", "file", 0o644, "x"),
    ])
    upper = tar_layer([
        ("etc/.wh.gone", "file", 0o644, ""),
        ("opaque/new", "file", 0o600, "new"),
        ("opaque/.wh..wh..opq", "file", 0o644, ""),
        ("replaced", "file", 0o755, "now a file"),
        ("fifo", "fifo", 0o600, None),
    ])
    layout = write_layout(tmp_path / "img", [lower, upper])
    bundle = make_bundle(layout, str(tmp_path / "cache"))
    root = Path(bundle.rootfs)
    assert root == tmp_path / "cache" / "bundles" / bundle.digest / "rootfs"
    assert (root / "etc/keep").read_text() == "keep"
    assert not (root / "etc/gone").exists()
    assert sorted(os.listdir(root / "opaque")) == ["new"]
    assert (root / "replaced").read_text() == "now a file"
    assert stat.S_IMODE((root / "bin/tool").stat().st_mode) == 0o755  # setuid dropped
    assert (root / "bin/hard").stat().st_ino == (root / "bin/tool").stat().st_ino
    assert os.readlink(root / "lib") == "usr/lib"
    assert stat.S_ISFIFO((root / "fifo").lstat().st_mode)
    assert (root / "etc/keep").stat().st_mtime == 1000
    # cached by digest: a second call does not unpack again
    (root / "marker").write_text("")
    assert make_bundle(layout, str(tmp_path / "cache")).rootfs == bundle.rootfs
    assert (root / "marker").exists()
    assert [p.name for p in (tmp_path / "cache" / "bundles").iterdir()] == [bundle.digest]


@pytest.mark.parametrize(("entries", "words"), [
    ([("/etc/passwd", "file", 0o644, "x")], ["absolute"]),
    ([("a/../../escape", "file", 0o644, "x")], [".."]),
    ([("dev/sda", "chr", 0o600, None)], ["device node", "/dev/sda"]),
    ([("up", "sym", 0o777, "../../../etc")], ["climbs out", "/up"]),
    ([("l", "link", 0o644, "../outside")], [".."]),
    ([("l", "link", 0o644, "missing")], ["target missing"]),
    ([("d", "sym", 0o777, "/tmp"), ("d/mct-escape-probe", "file", 0o644, "x")], ["symlink", "/d"]),
])
def test_unsafe_members_are_refused(tmp_path: Path, entries: list[tuple], words: list[str]) -> None:
    outside = tmp_path / "outside"
    outside.write_text("host file")
    layout = write_layout(tmp_path / "img", [tar_layer(entries)])
    with pytest.raises(RunError) as error:
        make_bundle(layout, str(tmp_path / "cache"))
    message = str(error.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message
    assert outside.read_text() == "host file"
    assert not os.path.exists("/tmp/mct-escape-probe")
    assert list((tmp_path / "cache" / "bundles").iterdir()) == []  # nothing half-built kept


def test_wrong_diff_id_leaves_no_bundle(tmp_path: Path) -> None:
    layer = tar_layer([("f", "file", 0o644, "x")])
    layout = write_layout(tmp_path / "img", [layer], diff_ids=["sha256:" + "0" * 64])
    with pytest.raises(DigestMismatchError):
        make_bundle(layout, str(tmp_path / "cache"))
    assert list((tmp_path / "cache" / "bundles").iterdir()) == []
    with pytest.raises(LayoutError):
        make_bundle(str(tmp_path / "nothing"), str(tmp_path / "cache"))


def test_concurrent_bundle_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    layout = write_layout(tmp_path / "img", [tar_layer([("f", "file", 0o644, "ours")])])
    cache = tmp_path / "cache"

    def racing_extract(view: Any, dest: str) -> None:
        extract_image(view, dest)
        theirs = cache / "bundles" / view.manifest_digest / "rootfs"
        theirs.mkdir(parents=True)
        (theirs / "f").write_text("theirs")

    monkeypatch.setattr(bundle_module, "extract_image", racing_extract)
    bundle = make_bundle(layout, str(cache))
    assert (Path(bundle.rootfs) / "f").read_text() == "theirs"  # the first one in place wins
    assert [p.name for p in (cache / "bundles").iterdir()] == [bundle.digest]  # ours is removed


# --------------------------------------------------------------------------- config.json


def _bundle_with_etc(tmp_path: Path, config: dict) -> Bundle:
    layer = tar_layer([
        ("etc/passwd", "file", 0o644, "root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n"),
        ("etc/group", "file", 0o644, "root:x:0:\napp:x:1000:\nwheel:x:10:app,other\naudio:x:29:app\n"),
    ])
    return make_bundle(write_layout(tmp_path / "img", [layer], config), str(tmp_path / "cache"))


def test_runtime_config(tmp_path: Path) -> None:
    image = {"Entrypoint": ["/bin/app"], "Cmd": ["--default"], "User": "app", "WorkingDir": "/srv",
             "Env": ["PATH=/bin", "MODE=image"]}
    bundle = _bundle_with_etc(tmp_path, image)
    (tmp_path / "w").mkdir()
    (tmp_path / "r").mkdir()
    config = runtime_config(bundle.image_config, bundle, args=["--flag"], env=["MODE=cli", "NEW=1"],
                               write_dir=str(tmp_path / "w"), read_dir=str(tmp_path / "r"))
    assert config["root"] == {"path": bundle.rootfs, "readonly": True}
    process = config["process"]
    assert process["args"] == ["/bin/app", "--flag"]
    assert process["cwd"] == "/srv"
    assert process["user"] == {"uid": 1000, "gid": 1000, "additionalGids": [10, 29]}
    assert {"PATH=/bin", "MODE=cli", "NEW=1", "HOME=/home/app"} <= set(process["env"])
    assert "MODE=image" not in process["env"]
    assert process["noNewPrivileges"] is True
    assert all(v == [] for v in process["capabilities"].values()) and len(process["capabilities"]) == 5
    mounts = {m["destination"]: m for m in config["mounts"]}
    assert {"/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys", "/run", "/tmp",
            "/write", "/read"} == set(mounts)
    assert mounts["/write"]["source"] == str(tmp_path / "w") and "rw" in mounts["/write"]["options"]
    assert "ro" in mounts["/read"]["options"] and "ro" in mounts["/sys"]["options"]
    assert mounts["/run"]["type"] == mounts["/tmp"]["type"] == "tmpfs"
    kinds = {ns["type"] for ns in config["linux"]["namespaces"]}
    assert {"pid", "ipc", "uts", "mount", "network"} <= kinds
    if userns_supported():
        idmap = host_id_map()
        assert "user" in kinds
        assert config["linux"]["uidMappings"] == [{"containerID": 0, "hostID": idmap.uid, "size": idmap.size}]
    host = runtime_config(bundle.image_config, bundle, user="0:29", net="host", userns=False)
    assert host["process"]["user"] == {"uid": 0, "gid": 29}
    assert host["process"]["args"] == ["/bin/app", "--default"]
    assert {ns["type"] for ns in host["linux"]["namespaces"]} == {"pid", "ipc", "uts", "mount"}
    assert "uidMappings" not in host["linux"]


@pytest.mark.parametrize(("kwargs", "words"), [
    ({"user": "nobody"}, ["'nobody'", "/etc/passwd"]),
    ({"user": "app:nogroup"}, ["'nogroup'", "/etc/group"]),
    ({"net": "bridge"}, ["'bridge'"]),
    ({"env": ["=x"]}, ["environment"]),
    ({"write_dir": "/nonexistent-dir"}, ["--write", "not a directory"]),
])
def test_runtime_config_errors(tmp_path: Path, kwargs: dict, words: list[str]) -> None:
    bundle = _bundle_with_etc(tmp_path, {"Cmd": ["/bin/app"]})
    with pytest.raises(RunError) as error:
        runtime_config(bundle.image_config, bundle, **kwargs)
    for word in words:
        assert word in str(error.value)


def test_passwd_symlink_is_not_followed(tmp_path: Path) -> None:
    layout = write_layout(tmp_path / "img", [tar_layer([("etc/passwd", "sym", 0o777, "/etc/passwd")])],
                          {"Cmd": ["/x"], "User": "root"})
    bundle = make_bundle(layout, str(tmp_path / "cache"))
    with pytest.raises(RunError, match="not in the image's /etc/passwd"):
        runtime_config(bundle.image_config, bundle)


# --------------------------------------------------------------------------- containers

needs_runc = pytest.mark.skipif(os.geteuid() != 0 or not have("runc"), reason="root and runc needed")


def _build(spec_dir: Path | str, out: Path) -> str:
    proc = run_cli("build", "-c", str(spec_dir), "-o", str(out), "-q")
    assert proc.returncode == 0, proc.stderr
    return str(out)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    base = tmp_path_factory.mktemp("images")
    core = base / "core-spec"
    core.mkdir()
    (core / "microimage.yaml").write_text(
        "from: /\npaths: [/usr/bin/touch, /usr/bin/id, /usr/bin/cat, /usr/bin/sleep]\ncmd: [/usr/bin/id]\n")
    result = {"cat": _build(REPO / "examples" / "cat", base / "cat"), "core": _build(core, base / "core")}
    try:
        static_busybox()
    except RunError:
        return result
    busybox = base / "busybox-spec"
    busybox.mkdir()
    (busybox / "microimage.yaml").write_text("from: /\npaths: [/bin/busybox]\nentrypoint: [/bin/busybox]\n")
    result["busybox"] = _build(busybox, base / "busybox")
    return result


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(state dir under /run, cache dir in pytest's private tmp); containers removed at the end."""
    state = f"/run/mct-test-{uuid.uuid4().hex[:10]}"
    cache = str(tmp_path_factory.mktemp("cache"))
    yield state, cache
    if os.path.isdir(state):
        for info in rt.ps(state):
            rt.rm(info.name, state, force=True)
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture
def detached(dirs: tuple[str, str]) -> Iterator[Callable[..., str]]:
    """Start a detached container; it is force-removed after the test."""
    state, cache = dirs
    names: list[str] = []

    def start(image: str, **kwargs: object) -> str:
        name = f"t-{uuid.uuid4().hex[:8]}"
        names.append(name)
        assert rt.run(image, name=name, detach=True, state_dir=state, cache_dir=cache, **kwargs) == 0
        return name

    yield start
    for name in names:
        try:
            rt.rm(name, state, force=True)
        except RunError:
            pass


def _run(dirs: tuple[str, str], image: str, **kwargs: object) -> int:
    return rt.run(image, state_dir=dirs[0], cache_dir=dirs[1], **kwargs)


def _mounts_under(path: str) -> list[str]:
    with open("/proc/self/mountinfo", encoding="utf-8") as handle:
        return [line.split()[4] for line in handle if line.split()[4].startswith(path)]


def _dead(pid: int) -> bool:
    """Gone, or a zombie its (host) parent has not reaped yet."""
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):
        return True


@needs_runc
def test_run_cat_and_exit_codes(images: dict[str, str], dirs: tuple[str, str],
                                capfd: pytest.CaptureFixture[str]) -> None:
    assert _run(dirs, images["cat"]) == 0
    assert capfd.readouterr().out == "Hello World!\n"
    assert _run(dirs, images["core"], args=["/usr/bin/cat", "/nonexistent"]) == 1
    assert "/nonexistent: No such file or directory" in capfd.readouterr().err
    with pytest.raises(RunError, match="cannot start.*/no/such/program"):
        _run(dirs, images["core"], args=["/no/such/program"])
    assert os.listdir(os.path.join(dirs[0], "containers")) == []  # foreground runs leave nothing
    assert _mounts_under(dirs[0]) == []


@needs_runc
@pytest.mark.parametrize("userns", [True, False])
def test_read_only_root_write_volume_user_and_caps(images: dict[str, str], dirs: tuple[str, str],
                                                   tmp_path: Path, capfd: pytest.CaptureFixture[str],
                                                   userns: bool) -> None:
    write = tmp_path / "write"
    write.mkdir()
    write.chmod(0o777)
    assert _run(dirs, images["core"], args=["/usr/bin/touch", "/write/made", "/made"],
                write_dir=str(write), userns=userns) == 1
    assert "'/made': Read-only file system" in capfd.readouterr().err
    assert (write / "made").exists()
    assert (write / "made").stat().st_uid == 10  # as in the container, with or without userns
    assert not (Path(make_bundle(images["core"], dirs[1]).rootfs) / "made").exists()

    # the non-root user writes its scratch files to the tmpfs on /tmp and /run (1777 in the image)
    assert _run(dirs, images["core"], args=["/usr/bin/touch", "/tmp/scratch", "/run/app.pid"],
                userns=userns) == 0, capfd.readouterr().err

    assert _run(dirs, images["core"], userns=userns) == 0
    assert capfd.readouterr().out.startswith("uid=10 gid=10")
    assert _run(dirs, images["core"], user="4242:99", userns=userns) == 0
    assert capfd.readouterr().out.startswith("uid=4242 gid=99")

    assert _run(dirs, images["core"], args=["/usr/bin/cat", "/proc/self/status"], userns=userns) == 0
    status = dict(line.split(":\t", 1) for line in capfd.readouterr().out.splitlines() if ":\t" in line)
    assert status["CapEff"].strip() == status["CapPrm"].strip() == status["CapBnd"].strip() == "0" * 16
    assert status["NoNewPrivs"].strip() == "1"
    assert status["Uid"].split()[0] == "10"


@pytest.mark.skipif(os.geteuid() != 0, reason="root needed (chown)")
def test_prepare_write_dir_gives_only_fresh_own_dirs(tmp_path: Path) -> None:
    fresh = tmp_path / "fresh"
    fresh.mkdir(mode=0o755)
    note = prepare_write_dir(str(fresh), 100010, 100011, {0})  # a plain bind: the mapped host ids
    assert note is not None and "100010:100011" in note
    assert (fresh.stat().st_uid, fresh.stat().st_gid) == (100010, 100011)
    assert prepare_write_dir(str(fresh), 100010, 100011, {0}) is None  # writable now: untouched
    group = tmp_path / "group"
    group.mkdir()
    group.chmod(0o775)
    os.chown(group, 0, 100011)
    assert prepare_write_dir(str(group), 100010, 100011, {0}) is None  # group-writable: left as it is
    assert group.stat().st_uid == 0
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o755)
    with pytest.raises(RunError, match="owned by uid 0"):
        prepare_write_dir(str(theirs), 10, 10, {1234})  # not the invoking user's
    assert theirs.stat().st_uid == 0


@needs_runc
@pytest.mark.parametrize("userns", [True, False])
def test_run_write_gives_a_fresh_dir_to_the_container_user(images: dict[str, str], dirs: tuple[str, str],
                                                           tmp_path: Path, userns: bool) -> None:
    """``run --write FRESH`` (root-owned 0755, as ``mkdir`` under sudo makes it) works, as podman's ``:U``."""
    state, cache = dirs
    opts = ["--state-dir", state, "--cache-dir", cache] + ([] if userns else ["--no-userns"])
    fresh = tmp_path / "fresh"
    fresh.mkdir(mode=0o755)
    assert fresh.stat().st_uid == 0 and stat.S_IMODE(fresh.stat().st_mode) == 0o755
    proc = run_cli("run", *opts, "--write", str(fresh), images["core"], "--", "/usr/bin/touch", "/write/x")
    assert proc.returncode == 0, proc.stderr
    made = fresh / "x"
    assert made.is_file()
    # the file is the container user's (10:10) as the host sees it, and so is the directory now
    assert (made.stat().st_uid, made.stat().st_gid) == (fresh.stat().st_uid, fresh.stat().st_gid)
    assert made.stat().st_uid in (10, host_id_map().uid + 10)
    # a second run writes to the (now non-empty) directory it already owns
    proc = run_cli("run", *opts, "--write", str(fresh), images["core"], "--", "/usr/bin/touch", "/write/y")
    assert proc.returncode == 0, proc.stderr
    assert (fresh / "y").is_file()

    # a non-empty root-owned directory is not given away: refused before the container starts
    full = tmp_path / "full"
    full.mkdir(mode=0o755)
    (full / "data").write_text("keep")
    proc = run_cli("run", *opts, "--write", str(full), images["core"], "--", "/usr/bin/touch", "/write/x")
    owner = made.stat().st_uid
    assert_one_line_error(proc, str(full), "not empty", f"chown {owner}:{owner} {full}")
    assert sorted(os.listdir(full)) == ["data"] and full.stat().st_uid == 0
    # nor an empty one someone else owns
    other = tmp_path / "other"
    other.mkdir(mode=0o755)
    os.chown(other, 4321, 4321)
    proc = run_cli("run", *opts, "--write", str(other), images["core"], "--", "/usr/bin/touch", "/write/x")
    assert_one_line_error(proc, "owned by uid 4321")
    assert other.stat().st_uid == 4321 and os.listdir(other) == []
    # a directory the user can write to already is left as it is
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    open_dir.chmod(0o1777)
    proc = run_cli("run", *opts, "--write", str(open_dir), images["core"], "--", "/usr/bin/touch", "/write/x")
    assert proc.returncode == 0, proc.stderr
    assert (open_dir / "x").is_file() and open_dir.stat().st_uid == 0
    assert os.listdir(os.path.join(state, "containers")) == []


@needs_runc
def test_detached_ps_stop_rm(images: dict[str, str], dirs: tuple[str, str],
                             detached: Callable[..., str]) -> None:
    state = dirs[0]
    name = detached(images["core"], args=["/usr/bin/sleep", "300"])
    info = {i.name: i for i in rt.ps(state)}[name]
    assert info.status == "running" and info.pid is not None
    assert info.digest == make_bundle(images["core"], dirs[1]).digest
    host_uid = Path(f"/proc/{info.pid}/status").read_text().split("Uid:")[1].split()[0]
    expected = host_id_map().uid + 10 if userns_supported() else 10
    assert int(host_uid) == expected
    with pytest.raises(RunError, match="exists"):
        rt.run(images["core"], name=name, detach=True, state_dir=state, cache_dir=dirs[1])
    with pytest.raises(RunError, match="is running"):
        rt.rm(name, state)
    rt.stop(name, state, timeout=1)  # sleep is pid 1 and ignores SIGTERM: killed after 1 s
    assert {i.name: i for i in rt.ps(state)}[name].status == "stopped"
    assert _dead(info.pid)
    rt.rm(name, state)
    assert name not in {i.name for i in rt.ps(state)}
    assert not os.path.exists(os.path.join(state, "containers", name))
    assert _mounts_under(os.path.join(state, "containers", name)) == []
    with pytest.raises(RunError, match="no container named"):
        rt.stop(name, state)


@needs_runc
def test_debug_sideloads_busybox(images: dict[str, str], dirs: tuple[str, str],
                                 detached: Callable[..., str], capfd: pytest.CaptureFixture[str]) -> None:
    if "busybox" not in images:
        pytest.skip("Debian's busybox-static is not installed")
    state, cache = dirs
    before = tree_digest(Path(images["core"]))
    name = detached(images["core"], args=["/usr/bin/sleep", "300"])
    pid = rt.inspect_container(name, state).pid
    assert pid is not None
    capfd.readouterr()
    code = dbg.debug(name, state, None, ["sh", "-c", "ls /usr/bin; ls /proc/1/root/usr/bin; id -u; touch /x"],
                     cache_dir=cache)
    out, err = capfd.readouterr()
    assert code == 1, err  # touch on the read-only root fails
    assert out.split().count("sleep") == 2 and out.split().count("touch") == 2
    assert "Read-only file system" in err
    assert not dbg.toolbox_mounted(pid)
    assert "crashcart" not in os.listdir(f"/proc/{pid}/root/dev")
    assert dbg.debug(name, state, None, ["no-such-tool"], cache_dir=cache) == 127
    assert tree_digest(Path(images["core"])) == before
    with pytest.raises(RunError, match="is not running"):
        rt.stop(name, state, timeout=0)
        dbg.debug(name, state, None, ["true"], cache_dir=cache)


@needs_runc
def test_run_with_debug_toolbox_image(images: dict[str, str], dirs: tuple[str, str],
                                      detached: Callable[..., str],
                                      capfd: pytest.CaptureFixture[str]) -> None:
    if "busybox" not in images:
        pytest.skip("Debian's busybox-static is not installed")
    state, cache = dirs
    name = detached(images["core"], args=["/usr/bin/sleep", "300"], debug=True, toolbox=images["busybox"])
    pid = rt.inspect_container(name, state).pid
    assert pid is not None and dbg.toolbox_mounted(pid)
    capfd.readouterr()
    assert dbg.debug(name, state, None, ["busybox", "ls", "/usr/bin"], cache_dir=cache) == 0
    assert capfd.readouterr().out.split() == ["cat", "id", "sleep", "touch"]
    assert dbg.toolbox_mounted(pid)  # mounted at start: left in place


@needs_runc
def test_detached_http_server(images: dict[str, str], dirs: tuple[str, str], tmp_path: Path,
                              detached: Callable[..., str]) -> None:
    if "busybox" not in images:
        pytest.skip("Debian's busybox-static is not installed")
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("served from /read\n")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    name = detached(images["busybox"], args=["httpd", "-f", "-p", f"127.0.0.1:{port}", "-h", "/read"],
                    read_dir=str(site), net="host")
    body = None
    deadline = time.monotonic() + 10
    while body is None and time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=2) as response:
                body = response.read().decode()
        except OSError:
            time.sleep(0.1)
    assert body == "served from /read\n"
    rt.stop(name, dirs[0], timeout=1)
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)


def test_cli_run_propagates_output_and_exit_code(images, dirs):
    if os.geteuid() != 0 or not shutil.which("runc"):
        pytest.skip("runc as root needed")
    state = ["--state-dir", dirs[0], "--cache-dir", dirs[1]]
    proc = run_cli("run", *state, images["cat"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "Hello World!\n"
    proc = run_cli("run", *state, images["cat"], "--", "/usr/bin/cat", "/does/not/exist")
    assert proc.returncode == 1
    proc = run_cli("ps", "--state-dir", dirs[0])
    assert proc.returncode == 0 and proc.stdout.startswith("NAME")
