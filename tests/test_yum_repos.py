"""``package: NAME`` without ``repos:``: the host's yum.repos.d (here a test one, $MCT_YUM_REPOS_DIR)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import (
    SHARED_RPMS,
    HttpServer,
    assert_one_line_error,
    make_repo,
    needs_shared_rpms,
    run_cli,
    runc_run,
)

from microcontainer_tool.errors import SpecError
from microcontainer_tool.sources.rpm.yumrepos import read_repos_dir


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    """The shared Rocky RPMs as a createrepo_c repository at URL/9/x86_64/ on 127.0.0.1."""
    top = tmp_path_factory.mktemp("srv")
    make_repo(top / "9" / "x86_64", sorted(SHARED_RPMS.glob("*.rpm")))
    server = HttpServer(str(top))
    yield server.url
    server.stop()


def rocky_key(directory: Path) -> Path:
    """Rocky's public key, from its own rocky-gpg-keys package."""
    from microcontainer_tool.sources.rpm.cpio import extract_rpm

    directory.mkdir()
    extract_rpm(str(next(SHARED_RPMS.glob("rocky-gpg-keys-*.rpm"))), str(directory))
    return next(p for p in directory.rglob("*Rocky-9*") if p.is_file())


@needs_shared_rpms
def test_smith_cat_example_with_the_hosts_repos(served: str, tmp_path: Path) -> None:
    key = rocky_key(tmp_path / "keys")
    repos_d = tmp_path / "yum.repos.d"
    repos_d.mkdir()
    (repos_d / "rocky.repo").write_text(
        "[baseos]\nname=Rocky Linux $releasever - BaseOS\n"
        f"baseurl={served}$releasever/$basearch/\nenabled=1\ngpgcheck=1\ngpgkey=file://{key}\npriority=10\n\n"
        "[debug]\nbaseurl=http://127.0.0.1:9/nothing-here/\nenabled=0\n")
    (repos_d / "notes.txt").write_text("[not a repo file]\n")
    spec = tmp_path / "spec"
    spec.mkdir()
    (spec / "smith.yaml").write_text("package: coreutils\npaths: [/usr/bin/cat]\n")
    env = {"MCT_YUM_REPOS_DIR": str(repos_d), "MCT_YUM_RELEASEVER": "9"}
    proc = run_cli("build", "-c", str(spec), "-o", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "c"),
                   env=env)
    assert proc.returncode == 0, proc.stderr
    lock = (spec / "microimage.lock").read_text()
    assert "coreutils-8.32" in lock and "baseos" in lock
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "f").write_text("meow\n")
    proc = runc_run(tmp_path / "out", "latest", tmp_path, args=["/usr/bin/cat", "/write/f"],
                    write_dir=str(tmp_path / "w"))
    assert proc.returncode == 0 and proc.stdout == "meow\n", proc.stderr


def test_no_repos_anywhere_says_repos_is_needed(tmp_path: Path) -> None:
    spec = tmp_path / "spec"
    spec.mkdir()
    (spec / "smith.yaml").write_text("paths: [/usr/bin/cat]\npackage: coreutils\n")
    proc = run_cli("build", "-c", str(spec), "-o", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "c"),
                   env={"MCT_YUM_REPOS_DIR": str(tmp_path / "none")})
    assert_one_line_error(proc, "smith.yaml:2:", "give 'repos:'")
    proc = run_cli("lock", "-c", str(spec), env={"MCT_YUM_REPOS_DIR": str(tmp_path / "none")})
    assert_one_line_error(proc, "give 'repos:'")


def test_repo_file_fields(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCT_YUM_RELEASEVER", "8")
    (tmp_path / "b.repo").write_text(
        "[zeta]\nbaseurl=https://m.example/${releasever}/os/$basearch\n  https://mirror2.example/\n"
        "gpgcheck=0\ngpgkey=https://k.example/key\n\n"
        "[alpha]\nbaseurl=file:///srv/alpha\npriority=5\n"
        "gpgkey=https://k.example/a https://k.example/b\n")
    (tmp_path / "a.repo").write_text("[off]\nbaseurl=http://x.example/\nenabled=0\n")
    repos = read_repos_dir(str(tmp_path), "aarch64")
    assert [(r.id, r.baseurl, r.priority, r.gpgkey) for r in repos] == [
        ("alpha", "file:///srv/alpha/", 5, "https://k.example/a https://k.example/b"),
        ("zeta", "https://m.example/8/os/aarch64/", 99, ""),
    ]
    (tmp_path / "c.repo").write_text("[m]\nmirrorlist=https://mirrors.example/?repo=x\n")
    with pytest.raises(SpecError, match=r"\[m\] has only a mirrorlist"):
        read_repos_dir(str(tmp_path), "x86_64")
    (tmp_path / "c.repo").write_text("[v]\nbaseurl=https://x.example/$contentdir/\n")
    with pytest.raises(SpecError, match=r"unknown variable \$contentdir"):
        read_repos_dir(str(tmp_path), "x86_64")
    assert read_repos_dir(str(tmp_path / "missing"), "x86_64") == []


@needs_shared_rpms
def test_smith_mock_config_gives_the_repositories(served: str, tmp_path: Path) -> None:
    key = rocky_key(tmp_path / "keys")
    spec = tmp_path / "spec"
    spec.mkdir()
    (spec / "rocky-9.cfg").write_text(
        "config_opts['root'] = 'rocky-9-x86_64'\nconfig_opts['releasever'] = '9'\n"
        "config_opts['yum.conf'] = \"\"\"\n[main]\ngpgcheck=0\nreposdir=/dev/null\n\n"
        f"[baseos]\nbaseurl={served}$releasever/$basearch/\ngpgkey=file://{key}\ngpgcheck=1\n\n"
        "[off]\nbaseurl=http://127.0.0.1:9/x/\nenabled=0\n\"\"\"\n")
    (spec / "smith.yaml").write_text("type: mock\npackage: coreutils\nmock: {config: rocky-9.cfg}\n"
                                     "paths: [/usr/bin/cat]\n")
    # the host's repositories are not consulted when the mock config names some
    proc = run_cli("build", "-c", str(spec), "-o", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "c"),
                   env={"MCT_YUM_REPOS_DIR": str(tmp_path / "none")})
    assert proc.returncode == 0, proc.stderr
    lock = (spec / "microimage.lock").read_text()
    assert "coreutils-8.32" in lock and "baseos" in lock
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "f").write_text("purr\n")
    proc = runc_run(tmp_path / "out", "latest", tmp_path, args=["/usr/bin/cat", "/write/f"],
                    write_dir=str(tmp_path / "w"))
    assert proc.returncode == 0 and proc.stdout == "purr\n", proc.stderr


def test_mock_config_without_yum_conf_is_refused(tmp_path: Path) -> None:
    spec = tmp_path / "spec"
    spec.mkdir()
    (spec / "t.cfg").write_text("include('templates/rocky-9.tpl')\n")
    (spec / "smith.yaml").write_text("package: coreutils\nmock: {config: t.cfg}\npaths: [/usr/bin/cat]\n")
    proc = run_cli("build", "-c", str(spec), "-o", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "c"))
    assert_one_line_error(proc, "t.cfg: no config_opts['yum.conf']", "give 'repos:'")
