"""Portable debug toolboxes (runtime.toolboxbuilder) in any container (runtime.targets, runtime.debug).

Real programs of this machine (strace, gdb) are built into a toolbox and run from
``/dev/crashcart`` inside read-only containers that hold nothing but ``sleep``:
ours (``microcontainer run``), a plain ``runc run`` container by id, and a
process by pid. After each session no toolbox mount is left in the container or
on the host.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import assert_one_line_error, have, run_cli, runc_bundle

from microcontainer_tool.errors import RunError, SourceError, SpecError
from microcontainer_tool.runtime import containers as rt
from microcontainer_tool.runtime import debug as dbg
from microcontainer_tool.runtime import targets
from microcontainer_tool.runtime.toolboxbuilder import build_toolbox, is_program_list, resolve_toolbox
from microcontainer_tool.runtime.toolboxspec import ToolboxSpec, load_toolbox_spec, parse_program_list

needs_runc = pytest.mark.skipif(os.geteuid() != 0 or not have("runc"), reason="root and runc needed")


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def toolbox(cache: str) -> str:
    """strace and gdb from this machine's ``/``, built once."""
    return build_toolbox(parse_program_list("strace,gdb"), cache)


@pytest.fixture(scope="module")
def sleep_image(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A microcontainer built from ``/`` that holds only ``sleep`` (and its libraries)."""
    base = tmp_path_factory.mktemp("sleep-image")
    (base / "microimage.yaml").write_text("from: /\npaths: [/usr/bin/sleep]\ncmd: [/usr/bin/sleep, '300']\n")
    proc = run_cli("build", "-c", str(base), "-o", str(base / "image"), "-q")
    assert proc.returncode == 0, proc.stderr
    return str(base / "image")


@pytest.fixture(scope="module")
def state() -> Iterator[str]:
    path = f"/run/mct-test-{uuid.uuid4().hex[:10]}"
    yield path
    if os.path.isdir(path):
        for info in rt.ps(path):
            rt.rm(info.name, path, force=True)
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def ours(sleep_image: str, state: str, cache: str) -> Iterator[tuple[str, int]]:
    """One of our containers running ``sleep 300``: (name, host pid)."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    assert rt.run(sleep_image, name=name, detach=True, state_dir=state, cache_dir=cache) == 0
    pid = rt.inspect_container(name, state).pid
    assert pid is not None
    yield name, pid
    rt.rm(name, state, force=True)


@pytest.fixture
def plain_runc(sleep_image: str, tmp_path: Path) -> Iterator[tuple[str, str, int]]:
    """A container started with plain ``runc run`` (umoci's bundle, read-only root): (root, id, pid)."""
    bundle, _config = runc_bundle(sleep_image, "latest", tmp_path, args=["/usr/bin/sleep", "300"])
    root = str(tmp_path / "runc-root")
    cid = f"plain-{uuid.uuid4().hex[:8]}"
    # the container inherits runc's stdio: a pipe would keep run() waiting until sleep ends
    with open(tmp_path / "runc.log", "wb") as log:
        proc = subprocess.run(["runc", "--root", root, "run", "--detach", "--bundle", str(bundle), cid],
                              stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    assert proc.returncode == 0, (tmp_path / "runc.log").read_text()
    try:
        state = json.loads(subprocess.run(["runc", "--root", root, "state", cid], check=True,
                                          capture_output=True, text=True).stdout)
        yield root, cid, int(state["pid"])
    finally:
        subprocess.run(["runc", "--root", root, "delete", "--force", cid], capture_output=True)


def assert_no_toolbox_mount(pid: int, toolbox: str) -> None:
    """Neither the container (``pid``) nor the host has a toolbox mount or ``/dev/crashcart`` left."""
    assert not dbg.toolbox_mounted(pid)
    container = Path(f"/proc/{pid}/mountinfo").read_text()
    assert "crashcart" not in container
    assert "crashcart" not in os.listdir(f"/proc/{pid}/root/dev")
    host = Path("/proc/self/mountinfo").read_text()
    assert "crashcart" not in host
    assert os.path.basename(toolbox) not in host


# --------------------------------------------------------------------------- the toolbox


def test_toolbox_layout_wrappers_and_cache(toolbox: str, cache: str) -> None:
    root = Path(toolbox)
    wrapper = (root / "bin" / "strace").read_text()
    assert wrapper.startswith("#!/dev/crashcart/bin/busybox sh\n")
    assert ("exec /dev/crashcart/lib/ld-linux-x86-64.so.2 --library-path /dev/crashcart/lib --argv0 \"$0\""
            " /dev/crashcart/libexec/strace \"$@\"") in wrapper
    gdb = (root / "bin" / "gdb").read_text()
    assert "--data-directory=/dev/crashcart/root/usr/share/gdb" in gdb
    assert "export PYTHONHOME=/dev/crashcart/root/usr" in gdb
    assert (root / "root/usr/share/gdb/python/gdb/__init__.py").is_file()
    assert (root / "root/usr/lib/python3.11/encodings/__init__.py").is_file()
    assert not (root / "root/usr/lib/python3.11/test").exists()
    # every library ldd finds for the programs, by the name it is needed as, plus the loader
    for program in ("/usr/bin/strace", "/usr/bin/gdb"):
        out = subprocess.run(["ldd", program], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if "=>" in line and "vdso" not in line:
                assert (root / "lib" / line.split()[0]).is_file(), line
    assert (root / "lib/ld-linux-x86-64.so.2").is_file() and (root / "lib/libthread_db.so.1").is_file()
    assert os.path.samefile(root / "bin/sh", root / "bin/busybox") and (root / "libexec/strace").is_file()
    # gdb imports iconv_open: the gconv pack comes with it
    assert "export GCONV_PATH=/dev/crashcart/root/usr/lib/x86_64-linux-gnu/gconv" in gdb
    assert list((root / "root/usr/lib/x86_64-linux-gnu/gconv").glob("*.so"))
    # content-addressed: the same inputs give the same directory, other inputs another
    assert build_toolbox(parse_program_list("gdb,strace"), cache) == toolbox
    small = build_toolbox(parse_program_list("strace"), cache)
    assert small != toolbox and not (Path(small) / "libexec/gdb").exists()
    assert os.path.basename(small).startswith("tools-")


def test_toolbox_runs_on_the_host_through_its_own_loader(toolbox: str, tmp_path: Path) -> None:
    """Outside a container too: the wrapper's loader finds only the toolbox's libraries."""
    root = Path(toolbox)
    proc = subprocess.run([str(root / "lib/ld-linux-x86-64.so.2"), "--library-path", str(root / "lib"),
                           "--list", str(root / "libexec/strace")],
                          capture_output=True, text=True, check=True)
    for line in proc.stdout.splitlines():
        if "=>" in line and "vdso" not in line:
            assert line.split("=>")[1].strip().startswith(str(root / "lib")), line


def test_toolbox_argument_forms_and_errors(tmp_path: Path, cache: str) -> None:
    assert is_program_list("strace,gdb") and is_program_list("strace") and is_program_list("/usr/bin/strace")
    directory = tmp_path / "static-tools"
    directory.mkdir()
    assert not is_program_list(str(directory))
    archive = tmp_path / "toolbox.tar"
    archive.write_bytes(b"not ELF")
    assert not is_program_list(str(archive)) and not is_program_list("relative/image.tar")
    assert is_program_list("/no/such/program")  # it may be in --toolbox-root
    assert resolve_toolbox(str(directory), cache) == str(directory)
    spec = tmp_path / "toolbox.yaml"
    spec.write_text("programs: [/usr/bin/strace]\npacks: [tz]\nfiles: [/etc/services]\n")
    loaded = load_toolbox_spec(str(spec))
    assert loaded == ToolboxSpec(("/usr/bin/strace",), "/", None, ("tz",), ("/etc/services",))
    built = Path(resolve_toolbox(str(spec), cache))
    assert (built / "root/etc/services").is_file() and (built / "root/usr/share/zoneinfo").is_dir()
    assert "export TZDIR=/dev/crashcart/root/usr/share/zoneinfo" in (built / "bin/strace").read_text()
    for text, words in (("programs: []\n", ["no programs"]), ("progs: [x]\n", ["unknown key 'progs'"]),
                        ("programs: [strace]\nfiles: [etc/x]\n", ["not an absolute"]),
                        ("- a\n", ["mapping"])):
        spec.write_text(text)
        with pytest.raises(SpecError) as caught:
            load_toolbox_spec(str(spec))
        for word in words:
            assert word in str(caught.value)
    with pytest.raises(SourceError, match="'no-such-tool': not found in dir:/"):
        build_toolbox(parse_program_list("strace,no-such-tool"), cache)
    with pytest.raises(SourceError, match="not an ELF program"):
        build_toolbox(parse_program_list("/usr/bin/ldd"), cache)  # a shell script
    with pytest.raises(SourceError, match="has its own"):
        build_toolbox(parse_program_list("strace,busybox"), cache)
    with pytest.raises(SourceError, match="unknown pack 'nope'"):
        build_toolbox(ToolboxSpec(("strace",), packs=("nope",)), cache)
    proc = run_cli("debug", "--pid", "999999999", "--cache-dir", cache, "--", "true")
    assert_one_line_error(proc, "no process with pid 999999999")


def test_toolbox_from_another_sysroot(tmp_path: Path, cache: str) -> None:
    """``--toolbox-root DIR``: the programs and libraries come from that tree, not the host's."""
    sysroot = tmp_path / "sysroot"
    for path in ("/usr/bin/strace", *_ldd_paths("/usr/bin/strace")):
        target = sysroot / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(os.path.realpath(path), target)
    built = Path(resolve_toolbox("strace", cache, str(sysroot)))
    assert (built / "libexec/strace").read_bytes() == Path("/usr/bin/strace").read_bytes()
    with pytest.raises(SourceError, match="'gdb': not found in dir:"):
        resolve_toolbox("gdb", cache, str(sysroot))


def test_toolbox_from_an_image(tmp_path: Path, cache: str) -> None:
    """``--toolbox-root IMAGE``: an image built from ``/`` with strace is the sysroot."""
    spec = tmp_path / "spec"
    spec.mkdir()
    (spec / "microimage.yaml").write_text("from: /\npaths: [/usr/bin/strace]\n")
    proc = run_cli("build", "-c", str(spec), "-o", str(tmp_path / "strace.oci"), "-q")
    assert proc.returncode == 0, proc.stderr
    built = Path(resolve_toolbox("strace", cache, str(tmp_path / "strace.oci")))
    assert (built / "libexec/strace").read_bytes() == Path("/usr/bin/strace").read_bytes()
    assert (built / "lib/libc.so.6").read_bytes() == Path(os.path.realpath("/lib/x86_64-linux-gnu/libc.so.6")
                                                          ).read_bytes()
    with pytest.raises(SourceError, match="'lsof': not found"):
        resolve_toolbox("lsof", cache, str(tmp_path / "strace.oci"))
    with pytest.raises(RunError, match="--toolbox-root needs"):
        resolve_toolbox(None, cache, str(tmp_path / "strace.oci"))


def _ldd_paths(program: str) -> list[str]:
    out = subprocess.run(["ldd", program], capture_output=True, text=True, check=True).stdout
    paths = []
    for line in out.splitlines():
        parts = line.split()
        if "=>" in parts and len(parts) > 2 and parts[2].startswith("/"):
            paths.append(parts[2])
        elif parts and parts[0].startswith("/"):
            paths.append(parts[0])
    return paths


# --------------------------------------------------------------------------- sessions


@needs_runc
def test_debug_our_container_strace_and_gdb(ours: tuple[str, int], state: str, toolbox: str, cache: str,
                                            sleep_image: str, capfd: pytest.CaptureFixture[str]) -> None:
    name, pid = ours
    # the container has a user namespace of its own: the session joins it
    assert os.stat(f"/proc/{pid}/ns/user").st_ino != os.stat("/proc/self/ns/user").st_ino
    capfd.readouterr()
    # strace attaches to the container's pid 1 (sleep) until interrupted
    attach = ["timeout", "-s", "INT", "2", "strace", "-p", "1", "-e", "trace=none"]
    code = dbg.debug(name, state, toolbox, attach, cache_dir=cache)
    out, err = capfd.readouterr()
    assert "Process 1 attached" in err and "Process 1 detached" in err, err
    assert_no_toolbox_mount(pid, toolbox)
    # strace -c starts a container program: that one runs on the container's own loader and libc
    code = dbg.debug(name, state, toolbox, ["strace", "-f", "-c", "/usr/bin/sleep", "0"], cache_dir=cache)
    out, err = capfd.readouterr()
    assert code == 0, err
    assert "% time" in err and "execve" in err and "total" in err
    # gdb attaches and prints a backtrace of sleep
    code = dbg.debug(name, state, toolbox, ["gdb", "-batch", "-p", "1", "-ex", "bt"], cache_dir=cache)
    out, err = capfd.readouterr()
    assert code == 0, err
    assert "#0 " in out and "nanosleep" in out and "#1 " in out, out + err
    assert_no_toolbox_mount(pid, toolbox)
    # the container's root holds nothing of it
    assert sorted(os.listdir(f"/proc/{pid}/root/usr/bin")) == ["sleep"]


@needs_runc
def test_debug_cli_default_toolbox_in_our_container(ours: tuple[str, int], state: str, cache: str) -> None:
    name, pid = ours
    # options may follow NAME: the command starts after --
    proc = run_cli("debug", name, "--state-dir", state, "--cache-dir", cache, "--",
                   "sh", "-c", "strace -V | head -1; ls /dev/crashcart/libexec")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("strace -- version ")
    for program in ("strace", "gdb", "tcpdump", "lsof"):
        if shutil.which(program):
            assert program in proc.stdout.split()
    assert_no_toolbox_mount(pid, "tools-")


@needs_runc
def test_debug_plain_runc_container_by_id_and_by_pid(plain_runc: tuple[str, str, int], toolbox: str,
                                                     cache: str) -> None:
    root, cid, pid = plain_runc
    common = ["--cache-dir", cache, "--toolbox", toolbox]
    proc = run_cli("debug", *common, "--runtime-root", root, cid, "--",
                   "gdb", "-batch", "-p", "1", "-ex", "bt")
    assert proc.returncode == 0, proc.stderr
    assert "#0 " in proc.stdout and "nanosleep" in proc.stdout
    assert_no_toolbox_mount(pid, toolbox)
    proc = run_cli("debug", "--pid", str(pid), *common, "--",
                   "timeout", "-s", "INT", "2", "strace", "-p", "1", "-e", "trace=none")
    assert "Process 1 attached" in proc.stderr and "Process 1 detached" in proc.stderr, proc.stderr
    assert_no_toolbox_mount(pid, toolbox)
    proc = run_cli("debug", *common, "--runtime-root", root, "no-such-id")
    assert_one_line_error(proc, "no-such-id")
    proc = run_cli("debug", "--runtime-root", root, cid, "stray", "--", "true")
    assert proc.returncode == 2 and "unrecognized arguments: stray" in proc.stderr


@needs_runc
def test_mount_only_unmount_and_exec_through_runc(plain_runc: tuple[str, str, int], toolbox: str,
                                                  cache: str) -> None:
    root, cid, pid = plain_runc
    target = ["--cache-dir", cache, "--runtime-root", root, cid]
    proc = run_cli("debug", "--mount-only", "--toolbox", toolbox, *target)
    assert proc.returncode == 0, proc.stderr
    assert "mounted at /dev/crashcart" in proc.stdout
    assert dbg.toolbox_mounted(pid)
    # sessions reuse the mount and leave it
    for _ in range(2):
        proc = run_cli("debug", *target, "--", "ls", "/dev/crashcart/libexec")
        assert proc.returncode == 0 and proc.stdout.split() == ["gdb", "strace"], proc.stderr
        assert proc.stderr == ""
        assert dbg.toolbox_mounted(pid)
    proc = run_cli("debug", "--toolbox", "strace", *target, "--", "true")
    assert proc.returncode == 0 and "--toolbox is ignored" in proc.stderr
    # read-only
    proc = run_cli("debug", *target, "--", "touch", "/dev/crashcart/x")
    assert proc.returncode == 1 and "Read-only file system" in proc.stderr
    # through the runtime: runc exec, the container's user, no capabilities
    proc = run_cli("debug", "--exec", *target, "--", "strace", "-f", "-c", "/usr/bin/sleep", "0")
    assert proc.returncode == 0, proc.stderr
    assert "execve" in proc.stderr and "total" in proc.stderr
    proc = run_cli("debug", "-e", *target, "--", "sh", "-c", "grep CapEff /proc/self/status")
    assert proc.returncode == 0 and proc.stdout.split() == ["CapEff:", "0000000000000000"], proc.stderr
    proc = run_cli("debug", "--unmount", *target)
    assert proc.returncode == 0 and "unmounted" in proc.stdout
    assert_no_toolbox_mount(pid, toolbox)
    proc = run_cli("debug", "--unmount", *target)
    assert proc.returncode == 0 and "no toolbox" in proc.stdout
    # --exec needs a runtime
    proc = run_cli("debug", "--exec", "--pid", str(pid), "--cache-dir", cache, "--toolbox", toolbox,
                   "--", "true")
    assert_one_line_error(proc, "--exec needs a runtime")
    assert_no_toolbox_mount(pid, toolbox)


def test_targets_errors() -> None:
    with pytest.raises(RunError, match="no process with pid"):
        targets.process(0)


@pytest.fixture
def podman_sleep(tmp_path: Path) -> Iterator[tuple[list[str], str, int]]:
    """A read-only podman container running our ``sleep`` image, in private storage.

    Yields:
        (podman's global options for that storage, the container's name, its pid).
    """
    if os.geteuid() != 0 or not have("podman"):
        pytest.fail("podman as root is needed: run examples/setup.sh")
    spec = tmp_path / "spec"
    spec.mkdir()
    (spec / "microimage.yaml").write_text("from: /\npaths: [/usr/bin/sleep]\ncmd: [/usr/bin/sleep, '300']\n")
    archive = tmp_path / "sleep.tar"
    proc = run_cli("build", "-c", str(spec), "-o", str(archive), "--name", "localhost/sleep:1", "-q")
    assert proc.returncode == 0, proc.stderr
    work = Path(tempfile.mkdtemp(prefix="mct-podman-"))  # podman refuses a long run root
    options = [f"--root={work}/storage", f"--runroot={work}/run", f"--tmpdir={work}/tmp",
               "--storage-driver=vfs"]
    base = ["podman", *targets.PODMAN_FLAGS, *options]
    name = f"pod-{uuid.uuid4().hex[:8]}"
    try:
        for args in (["load", "-q", "-i", str(archive)],
                     ["run", "-d", "--read-only", "--network", "none", "--ulimit", "nofile=1024:1024",
                      "--ulimit", "nproc=4096:4096", "--name", name, "localhost/sleep:1"]):
            proc = subprocess.run(base + args, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                                  timeout=120)
            assert proc.returncode == 0, proc.stderr
        pid = int(subprocess.run(base + ["inspect", "--format", "{{.State.Pid}}", name], capture_output=True,
                                 text=True, check=True, timeout=120).stdout)
        yield options, name, pid
    finally:
        for args in (["rm", "--all", "--force", "--time", "0"], ["rmi", "--all", "--force"]):
            subprocess.run(base + args, capture_output=True, stdin=subprocess.DEVNULL, timeout=120)
        shutil.rmtree(work, ignore_errors=True)


def test_debug_podman_container_by_name(podman_sleep: tuple[list[str], str, int], toolbox: str,
                                        cache: str) -> None:
    options, name, pid = podman_sleep
    common = ["--cache-dir", cache, "--toolbox", toolbox, *(f"--podman-option={opt}" for opt in options),
              "--podman", name]
    proc = run_cli("debug", *common, "--", "gdb", "-batch", "-p", "1", "-ex", "bt")
    assert proc.returncode == 0, proc.stderr
    assert "#0 " in proc.stdout and "nanosleep" in proc.stdout
    assert_no_toolbox_mount(pid, toolbox)
    proc = run_cli("debug", "--exec", *common, "--", "strace", "-f", "-c", "/usr/bin/sleep", "0")
    assert proc.returncode == 0, proc.stderr
    assert "execve" in proc.stderr and "total" in proc.stderr
    assert_no_toolbox_mount(pid, toolbox)
    proc = run_cli("debug", *common[:-1], "no-such-container")
    assert_one_line_error(proc, "podman container 'no-such-container'")
