"""Spec loading and validation: every user mistake is one line with file:line."""

from __future__ import annotations

import pytest

from microcontainer_tool.errors import SpecError, UnsupportedError
from microcontainer_tool.spec.imagespec import load_spec, parse_spec, spec_from_canonical


def parse(text: str, tmp_path=None):
    return parse_spec(text, "spec.yaml", str(tmp_path or "/nonexistent"))


def test_full_spec_round_trip():
    spec = parse(
        """
from: /
paths: [/usr/bin/cat, "/usr/lib/**/*.so"]
excludes: [/usr/lib/debug]
files: {/read/app.conf: app.conf}
libs: [libnss_files.so.2]
nss: true
user: app:app
groups: [audio]
mounts: [/write]
entrypoint: [/usr/bin/cat]
cmd: [/read/data]
dir: /write
env: [A=1, "B=x=y"]
labels: {org.example: yes-really}
ports: [80, 53/udp]
"""
    )
    assert spec.paths == ("/usr/bin/cat", "/usr/lib/**/*.so")
    assert spec.files == (("/read/app.conf", "app.conf"),)
    assert spec.env == (("A", "1"), ("B", "x=y"))
    assert spec.ports == ("53/udp", "80/tcp")
    assert spec.workdir == "/write"
    assert spec.effective_user == "app:app"
    assert spec.canonical()["paths"] == ["/usr/bin/cat", "/usr/lib/**/*.so"]


def test_env_mapping_and_smith_ports_mapping():
    spec = parse("paths: [/a]\nenv: {X: '1'}\nports: {'8080/tcp': {}}\n")
    assert spec.env == (("X", "1"),)
    assert spec.ports == ("8080/tcp",)


def test_defaults():
    spec = parse("paths: [/usr/bin/cat]\n")
    assert spec.effective_user == "10:10"
    assert spec.cmd == () and spec.from_ == "/"
    assert parse("paths: [/a]\nroot: true\n").effective_user == "0:0"


@pytest.mark.parametrize(
    "text, line, words",
    [
        ("paths: [/a]\nbogus: 1\n", 2, "unknown key 'bogus'"),
        ("paths: /a\n", 1, "paths must be a list"),
        ("paths: [/a]\ncmd: /bin/sh\n", 2, "cmd must be a list"),
        ("paths: [relative]\n", 1, "must be an absolute image path"),
        ("paths: [/a/../etc]\n", 1, "must not contain '..'"),
        ("paths: [/a]\nuser: 'a:b:c'\n", 2, "bad user"),
        ("paths: [/a]\nuser: 'bad name'\n", 2, "bad user"),
        ("paths: [/a]\nenv: [NOEQUALS]\n", 2, "NAME=VALUE"),
        ("paths: [/a]\nenv: ['1X=2']\n", 2, "bad environment variable name"),
        ("paths: [/a]\nports: [99999]\n", 2, "bad port"),
        ("paths: [/a]\nnss: maybe\n", 2, "true or false"),
        ("paths: [/a]\n\n\npaths: [/b]\n", 4, "duplicate key"),
        ("paths: [/a]\ndir: write\n", 2, "absolute"),
        ("paths: [/a]\narch: vax\n", 2, "unknown arch"),
        ("paths: [/a]\ntype: docker\npackage: x\n", 2, "unknown type 'docker'"),
        ("paths: [/a]\ntype: oci\n", 2, "give 'package' too"),
        ("from: /\npackage: i.tar.gz\npaths: [/a]\n", 1, "'from' and 'package'"),
        ("- just\n- a list\n", 1, "must be a mapping"),
        ("paths: [/a\n", 2, "invalid YAML"),
    ],
)
def test_bad_specs_name_file_and_line(text, line, words):
    with pytest.raises(SpecError) as info:
        parse(text)
    message = str(info.value)
    assert message.startswith(f"spec.yaml:{line}:"), message
    assert words in message
    assert "\n" not in message


@pytest.mark.parametrize("text", ["img.tar.gz", "img.tar.gz:latest", "dir/img.tgz:v1", "img.tar",
                                  "https://registry.example/app:1", "http://localhost:5000/app"])
def test_smith_package_naming_an_image_is_the_sysroot(text):
    spec = parse(f"package: {text}\npaths: [/usr/bin/cat]\n")
    assert spec.from_ == text and spec.packages == ()
    assert spec.where("from") == "spec.yaml:1"


def test_smith_type_oci_and_mock():
    spec = parse("type: oci\npackage: myimage\npaths: [/a]\n")
    assert spec.from_ == "myimage" and spec.packages == ()
    spec = parse("type: mock\npackage: coreutils\npaths: [/a]\n")
    assert spec.packages == ("coreutils",) and spec.from_ == "/"
    assert parse("package: coreutils\npaths: [/a]\n").packages == ("coreutils",)
    # an RPM file name is not an image
    assert parse("package: x-1.0.rpm\npaths: [/a]\n").packages == ("x-1.0.rpm",)


def test_nothing_to_put_in_the_image():
    with pytest.raises(SpecError, match="nothing to put in the image"):
        parse("cmd: [/bin/true]\n")


def test_empty_spec():
    with pytest.raises(SpecError, match="empty"):
        parse("")


def test_load_prefers_microimage_over_smith(tmp_path):
    (tmp_path / "smith.yaml").write_text("paths: [/smith]\n")
    assert load_spec(str(tmp_path)).paths == ("/smith",)
    (tmp_path / "microimage.yaml").write_text("paths: [/micro]\n")
    spec = load_spec(str(tmp_path))
    assert spec.paths == ("/micro",)
    assert spec.base_dir == str(tmp_path)


def test_missing_spec(tmp_path):
    with pytest.raises(SpecError, match="no microimage.yaml or smith.yaml"):
        load_spec(str(tmp_path))
    with pytest.raises(SpecError, match="not found"):
        load_spec(str(tmp_path / "nope.yaml"))


def test_package_keys():
    spec = parse("package: curl\nrepos:\n  - baseurl: http://127.0.0.1:8000/repo\n    priority: 10\n"
                 "  - {baseurl: 'file:///srv/other', name: other}\narch: aarch64\n")
    assert spec.packages == ("curl",)
    assert [(r.id, r.baseurl, r.priority) for r in spec.repos] == [
        ("127.0.0.1-8000-repo", "http://127.0.0.1:8000/repo/", 10), ("other", "file:///srv/other/", 99)]
    assert spec.arch == "arm64" and spec.rpm_arch == "aarch64"
    again = spec_from_canonical(spec.canonical(), spec.base_dir, "x")
    assert again.repos == spec.repos and again.packages == spec.packages


@pytest.mark.parametrize(
    "text, words",
    [
        ("package: a\npackages: [b]\n", "not both"),
        ("packages: [a]\nfrom: /\n", "'from' and 'packages'"),
        ("packages: [a]\nrepos: [{name: x}]\n", "needs a baseurl"),
        ("packages: [a]\nrepos: [{baseurl: 'ftp://x'}]\n", "must be http"),
        ("packages: [a]\nrepos: [{baseurl: 'http://x', prio: 1}]\n", "unknown repos key"),
        ("packages: [a]\nrepos: [{baseurl: 'http://x', priority: high}]\n", "integer"),
        ("paths: [/a]\nrepos: [{baseurl: 'http://x'}]\n", "nothing to resolve"),
    ],
)
def test_bad_package_keys(text, words):
    with pytest.raises(SpecError, match=words):
        parse(text)


def test_parent_is_a_string():
    assert parse("paths: [/a]\nparent: base:1\n").parent == "base:1"
    with pytest.raises(SpecError, match="parent must be a string"):
        parse("paths: [/a]\nparent: [x]\n")


def test_smith_mock_keys():
    spec = parse("package: coreutils\nmock: {config: epel-7-x86_64}\npaths: [/a]\n")
    assert spec.mock_config == "epel-7-x86_64" and spec.packages == ("coreutils",)
    with pytest.raises(UnsupportedError, match=r"spec.yaml:3: 'mock.deps' \(extra packages"):
        parse("package: coreutils\nmock:\n  deps: [gcc]\npaths: [/a]\n")
    with pytest.raises(SpecError, match=r"spec.yaml:1: unknown mock key 'bogus'"):
        parse("mock: {bogus: 1}\npackage: x\npaths: [/a]\n")
    with pytest.raises(SpecError, match="'mock.config' and 'repos'"):
        parse("package: x\nmock: {config: a.cfg}\nrepos: [{baseurl: 'http://h/'}]\npaths: [/a]\n")
    with pytest.raises(SpecError, match="'mock.config' without an RPM 'package'"):
        parse("mock: {config: a.cfg}\npaths: [/a]\n")
