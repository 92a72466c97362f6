"""smith.yaml files that work unchanged: smith's spec forms (README, "Coming from smith")."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import assert_one_line_error, run_cli, runc_run


def spec_dir(path: Path, text: str, name: str = "smith.yaml") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / name).write_text(text)
    return path


def build(spec: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    proc = run_cli("build", "-c", str(spec), "-o", str(out), "--cache-dir", str(out.parent / "cache"), *extra)
    assert proc.returncode == 0, proc.stderr
    return proc


def inspect(image: Path | str) -> dict:
    proc = run_cli("inspect", "--json", str(image))
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Our own smith-format ``img.tar.gz`` and oci-archive ``img.tar`` (cat and echo), tagged v1."""
    work = tmp_path_factory.mktemp("images")
    spec = spec_dir(work / "base", "paths: [/usr/bin/cat, /usr/bin/echo]\n", "microimage.yaml")
    for name in ("img.tar.gz", "img.tar"):
        proc = run_cli("build", "-c", str(spec), "-o", str(work / name), "-t", "v1")
        assert proc.returncode == 0, proc.stderr
    return work


@pytest.mark.parametrize("package", ["img.tar.gz:v1", "img.tar:v1", "img.tar.gz"])
def test_package_naming_an_image_archive(images: Path, tmp_path: Path, package: str) -> None:
    spec = spec_dir(images / f"spec-{package.replace(':', '-')}",
                    f"package: ../{package}\npaths: [/usr/bin/cat]\nentrypoint: [/usr/bin/cat]\n")
    out = tmp_path / "out"
    build(spec, out)
    files = {f["path"] for f in inspect(out)["files"]}
    assert "/usr/bin/cat" in files and "/usr/bin/echo" not in files
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "hello").write_text("from the smith image\n")
    proc = runc_run(out, "latest", tmp_path, args=["/usr/bin/cat", "/write/hello"],
                    write_dir=str(tmp_path / "w"))
    assert proc.returncode == 0 and proc.stdout == "from the smith image\n", proc.stderr


def test_package_image_tag_must_exist(images: Path, tmp_path: Path) -> None:
    spec = spec_dir(tmp_path / "s", f"package: {images}/img.tar.gz:nope\npaths: [/usr/bin/cat]\n")
    proc = run_cli("build", "-c", str(spec), "-o", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "c"))
    assert_one_line_error(proc, "no image tagged 'nope'", "v1")
    (tmp_path / "s" / "smith.yaml").write_text("package: missing.tgz:v1\npaths: [/usr/bin/cat]\n")
    proc = run_cli("build", "-c", str(tmp_path / "s"), "-o", str(tmp_path / "out"),
                   "--cache-dir", str(tmp_path / "c"))
    assert_one_line_error(proc, "missing.tgz:v1: no such image archive")


def test_from_and_parent_take_archive_colon_tag(images: Path, tmp_path: Path) -> None:
    spec = spec_dir(tmp_path / "s", f"from: {images}/img.tar.gz:v1\nparent: {images}/img.tar:v1\n"
                                    "paths: [/usr/bin/cat]\n")
    build(spec, tmp_path / "out")
    info = inspect(tmp_path / "out")
    assert len(info["config"]["rootfs"]["diff_ids"]) == 2


def _files(image: Path) -> dict[str, dict]:
    return {f["path"]: f for f in inspect(image)["files"]}


def test_root_wins_over_user_with_a_warning(tmp_path: Path) -> None:
    spec = spec_dir(tmp_path / "s", "paths: [/usr/bin/true]\nroot: true\nuser: app\n")
    proc = build(spec, tmp_path / "out")
    assert "warning:" in proc.stderr and "'root: true' wins over 'user: app'" in proc.stderr
    assert inspect(tmp_path / "out")["config"]["config"]["User"] == "0:0"


@pytest.mark.parametrize("user, config_user", [("app", "app"), ("app:staff", "app:staff"),
                                               ("10", "10:10"), ("daemon", "daemon")])
def test_user_name_without_group_is_just_the_name(tmp_path: Path, user: str, config_user: str) -> None:
    spec = spec_dir(tmp_path / "s", f"paths: [/usr/bin/id]\nuser: '{user}'\nentrypoint: [/usr/bin/id]\n")
    build(spec, tmp_path / "out")
    assert inspect(tmp_path / "out")["config"]["config"]["User"] == config_user
    if user == "app":  # the runtime takes the primary group from the image's /etc/passwd
        proc = runc_run(tmp_path / "out", "latest", tmp_path, args=["/usr/bin/id"])
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith("uid=10(app) gid=10(smith)"), proc.stdout


def test_mounts_are_directories_in_the_image(tmp_path: Path) -> None:
    spec = spec_dir(tmp_path / "s", "paths: [/usr/bin/true]\nmounts: [/data, /var/cache/app, /write]\n")
    build(spec, tmp_path / "out")
    info = inspect(tmp_path / "out")
    assert sorted(info["config"]["config"]["Volumes"]) == ["/data", "/var/cache/app", "/write"]
    files = {f["path"]: f for f in info["files"]}
    for path in ("/data", "/var/cache/app", "/var/cache", "/write"):
        assert files[path]["type"] == "dir" and files[path]["mode"] == "0755", path
    # a mount point the image has as a file is an error, not a silent shadowing
    spec = spec_dir(tmp_path / "s2", "paths: [/usr/bin/true]\nmounts: [/usr/bin/true]\n")
    proc = run_cli("build", "-c", str(spec), "-o", str(tmp_path / "out2"))
    assert_one_line_error(proc, "mount point /usr/bin/true is a file in the image")


def test_rootfs_overlay_skips_vcs_placeholders(tmp_path: Path) -> None:
    spec = spec_dir(tmp_path / "s", "paths: [/usr/bin/true]\n")
    (spec / "rootfs" / "etc" / "app").mkdir(parents=True)
    (spec / "rootfs" / "etc" / "app" / ".gitkeep").write_text("")
    (spec / "rootfs" / ".gitignore").write_text("*.swp\n")
    (spec / "rootfs" / "etc" / "app" / "app.conf").write_text("x=1\n")
    (spec / "rootfs" / "var" / "empty").mkdir(parents=True)
    (spec / "rootfs" / "var" / "empty" / ".gitkeep").write_text("")
    build(spec, tmp_path / "out")
    files = _files(tmp_path / "out")
    assert files["/etc/app/app.conf"]["size"] == 4
    assert files["/etc/app"]["type"] == "dir" and files["/var/empty"]["type"] == "dir"
    assert not [p for p in files if p.endswith((".gitkeep", ".gitignore"))]


def test_run_and_tmp_are_world_writable_sticky(tmp_path: Path) -> None:
    spec = spec_dir(tmp_path / "s", "paths: [/usr/bin/true]\n")
    build(spec, tmp_path / "out")
    files = _files(tmp_path / "out")
    assert files["/run"]["mode"] == files["/tmp"]["mode"] == "1777"
    assert files["/write"]["mode"] == "0755"


PARENT_SPEC = """\
paths: [/usr/bin/echo, /usr/bin/id]
entrypoint: [/usr/bin/echo]
cmd: [hello-from-parent]
env: [PATH=/usr/bin, LANG=C.UTF-8, MODE=parent]
dir: /write
user: app
labels: {org.example.owner: parent, org.example.tier: base}
ports: [8080]
mounts: [/data]
"""


@pytest.fixture(scope="module")
def parent_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An image whose config sets every key a parent: passes on (OCI layout)."""
    work = tmp_path_factory.mktemp("parent")
    spec = spec_dir(work / "spec", PARENT_SPEC, "microimage.yaml")
    proc = run_cli("build", "-c", str(spec), "-o", str(work / "img"))
    assert proc.returncode == 0, proc.stderr
    return work / "img"


def test_parent_passes_on_its_config_like_dockerfile_from(parent_image: Path, tmp_path: Path) -> None:
    spec = spec_dir(tmp_path / "s", f"parent: {parent_image}\npaths: [/usr/bin/true]\nenv: [MODE=child]\n"
                                    "labels: {org.example.owner: child}\n")
    build(spec, tmp_path / "out")
    conf = inspect(tmp_path / "out")["config"]["config"]
    assert conf["Entrypoint"] == ["/usr/bin/echo"] and conf["Cmd"] == ["hello-from-parent"]
    assert conf["Env"] == ["PATH=/usr/bin", "LANG=C.UTF-8", "MODE=child"]
    assert conf["WorkingDir"] == "/write" and conf["User"] == "app"
    assert conf["Labels"] == {"org.example.owner": "child", "org.example.tier": "base"}
    assert conf["ExposedPorts"] == {"8080/tcp": {}} and conf["Volumes"] == {"/data": {}}
    # it runs the parent's program as the parent's user (found in the parent's /etc/passwd)
    proc = runc_run(tmp_path / "out", "latest", tmp_path)
    assert proc.returncode == 0 and proc.stdout == "hello-from-parent\n", proc.stderr
    proc = runc_run(tmp_path / "out", "latest", tmp_path, args=["/usr/bin/id", "-un"])
    assert proc.stdout == "app\n", proc.stderr


def test_spec_keys_and_empty_lists_override_the_parent(parent_image: Path, tmp_path: Path) -> None:
    spec = spec_dir(tmp_path / "s", f"parent: {parent_image}\npaths: [/usr/bin/true]\n"
                                    "entrypoint: [/usr/bin/true]\nenv: []\nlabels: {}\nports: []\n"
                                    "mounts: [/cache]\nuser: '20:20'\ndir: /\n")
    build(spec, tmp_path / "out")
    conf = inspect(tmp_path / "out")["config"]["config"]
    assert conf["Entrypoint"] == ["/usr/bin/true"]
    assert "Cmd" not in conf  # a new entrypoint resets the parent's Cmd, as in Docker
    assert conf["Env"] == ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    assert "Labels" not in conf and "ExposedPorts" not in conf
    assert conf["Volumes"] == {"/cache": {}} and conf["User"] == "20:20" and conf["WorkingDir"] == "/"


def test_from_an_image_keeps_its_narrow_rule(parent_image: Path, tmp_path: Path) -> None:
    spec = spec_dir(tmp_path / "s", f"from: {parent_image}\npaths: [/usr/bin/echo]\n")
    build(spec, tmp_path / "out")
    conf = inspect(tmp_path / "out")["config"]["config"]
    assert conf["Env"] == ["PATH=/usr/bin"] and conf["WorkingDir"] == "/write"
    assert conf["User"] == "10:10"
    assert not {"Entrypoint", "Cmd", "Labels", "ExposedPorts", "Volumes"} & set(conf)


def test_an_archive_url_is_refused_with_what_to_do(tmp_path: Path) -> None:
    spec = spec_dir(tmp_path / "s", "package: https://example.invalid/images/app.tar.gz\n"
                                    "paths: [/usr/bin/cat]\n")
    proc = run_cli("build", "-c", str(spec), "-o", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "c"))
    assert_one_line_error(proc, "not supported yet: download it and name the file")
