"""microimage.lock: canonical, byte-stable, validated; inputs digest over everything resolved."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import have, require_shared_rpms
from repo_helpers import createrepo

from microcontainer_tool.errors import SourceError
from microcontainer_tool.sources.rpm.lock import (
    Lock,
    LockedPackage,
    dumps_lock,
    inputs_digest,
    lock_from_packages,
    read_lock,
    write_lock,
)
from microcontainer_tool.sources.rpm.package import Checksum, PackageInfo
from microcontainer_tool.sources.rpm.repo import Fetcher, RepoConfig, load_repo
from microcontainer_tool.sources.rpm.solver import resolve

SHA = "ab" * 32


@pytest.fixture(scope="module")
def rocky_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    rpms = require_shared_rpms()
    if not have("createrepo_c"):
        pytest.skip("needs createrepo_c")
    return createrepo(tmp_path_factory.mktemp("rocky") / "repo", sorted(rpms.glob("*.rpm"))).as_uri()


def lock_curl(url: str, cache: Path) -> Lock:
    config = RepoConfig("rocky", url)
    fetch = Fetcher(cache_dir=str(cache))
    resolution = resolve([load_repo(config, fetch, str(cache))], ["curl"])
    digest = inputs_digest(["curl"], [config], "x86_64")
    return lock_from_packages(resolution.packages, digest)


def test_relocking_an_unchanged_repo_is_byte_identical(rocky_url: str, tmp_path: Path):
    first, second = tmp_path / "a" / "microimage.lock", tmp_path / "b" / "microimage.lock"
    first.parent.mkdir()
    second.parent.mkdir()
    write_lock(str(first), lock_curl(rocky_url, tmp_path / "cache1"))
    write_lock(str(second), lock_curl(rocky_url, tmp_path / "cache2"))  # cold cache: XML parsed
    write_lock(str(first), lock_curl(rocky_url, tmp_path / "cache1"))  # warm: from .solv
    assert first.read_bytes() == second.read_bytes()
    assert os.listdir(first.parent) == ["microimage.lock"]  # no temporary file left behind
    text = first.read_text()
    data = json.loads(text)
    assert text == json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False) + "\n"
    assert text.endswith("}\n") and not text.endswith("\n\n")
    assert data["lockfile_version"] == 1
    names = [p["name"] for p in data["packages"]]
    assert names == sorted(names) and {"curl", "libcurl", "glibc", "openssl-libs"} <= set(names)
    curl = next(p for p in data["packages"] if p["name"] == "curl")
    assert curl == {"name": "curl", "epoch": 0, "version": "7.76.1", "release": "34.el9",
                    "arch": "x86_64", "url": rocky_url + "/curl-7.76.1-34.el9.x86_64.rpm",
                    "checksum_type": "sha256", "checksum": curl["checksum"], "repo": "rocky"}
    lock = read_lock(str(first))
    assert lock == lock_curl(rocky_url, tmp_path / "cache1")
    assert next(p for p in lock.packages if p.name == "openssl-libs").nevra.startswith("openssl-libs-1:")


def test_written_order_does_not_depend_on_the_given_order(tmp_path: Path):
    a = LockedPackage("a", 0, "1", "1", "noarch", "file:///a.rpm", "sha256", SHA, "r")
    b = LockedPackage("b", 2, "1", "1", "x86_64", "file:///b.rpm", "sha256", SHA, "r")
    digest = "sha256:" + "0" * 64
    assert dumps_lock(Lock(digest, [b, a])) == dumps_lock(Lock(digest, [a, b]))
    write_lock(str(tmp_path / "l"), Lock(digest, [b, a]))
    assert read_lock(str(tmp_path / "l")).packages == [a, b]


def test_inputs_digest_covers_every_input_and_ignores_order():
    repos = [RepoConfig("base", "https://example.invalid/base"),
             RepoConfig("extra", "https://example.invalid/extra", priority=10)]
    base = dict(requests=["curl", "bash >= 5"], repos=repos, arch="x86_64", exclude=["foo"],
                install_weak_deps=False, local=[Checksum("sha256", SHA)])
    digest = inputs_digest(**base)
    assert digest.startswith("sha256:") and len(digest) == 71
    same = [
        dict(base, requests=["bash  >=  5", "curl", "curl"]),
        dict(base, repos=list(reversed(repos))),
        dict(base, repos=[("base", "https://example.invalid/base/", 99),
                          ("extra", "https://example.invalid/extra", 10)]),
        dict(base, local=[SHA]),
    ]
    for variant in same:
        assert inputs_digest(**variant) == digest, variant
    info = PackageInfo("x", 0, "1", "1", "noarch", checksum=Checksum("sha256", SHA))
    assert inputs_digest(**dict(base, local=[info])) == digest
    different = [
        dict(base, requests=["curl"]),
        dict(base, requests=["curl", "bash >= 6"]),
        dict(base, repos=repos[:1]),
        dict(base, repos=[repos[0], RepoConfig("extra", "https://example.invalid/other", priority=10)]),
        dict(base, repos=[repos[0], RepoConfig("extra", "https://example.invalid/extra", priority=11)]),
        dict(base, repos=[repos[0], RepoConfig("renamed", "https://example.invalid/extra", priority=10)]),
        dict(base, arch="aarch64"),
        dict(base, exclude=[]),
        dict(base, install_weak_deps=True),
        dict(base, local=[]),
        dict(base, local=[Checksum("sha256", "cd" * 32)]),
    ]
    digests = {inputs_digest(**variant) for variant in different}
    assert digest not in digests and len(digests) == len(different)


def good_package(**changes) -> dict:
    package = {"name": "a", "epoch": 0, "version": "1", "release": "1", "arch": "noarch",
               "url": "https://example.invalid/a.rpm", "checksum_type": "sha256", "checksum": SHA,
               "repo": "r"}
    package.update(changes)
    return package


def document(**changes) -> dict:
    data = {"inputs_digest": "sha256:" + "0" * 64, "lockfile_version": 1, "packages": [good_package()]}
    data.update(changes)
    return data


@pytest.mark.parametrize("content, message", [
    ("{not json", "not a valid lock file"),
    ("[]", "not a JSON object"),
    (json.dumps(document(lockfile_version=2)), "unsupported lockfile_version 2"),
    (json.dumps(document(inputs_digest="abc")), "inputs_digest"),
    (json.dumps(document(packages={})), "packages must be a list"),
    (json.dumps(document(extra=1)), "unknown keys extra"),
    (json.dumps(document(packages=[1])), "packages[0] is not an object"),
    (json.dumps(document(packages=[{"name": "a"}])), "packages[0] lacks arch, checksum"),
    (json.dumps(document(packages=[good_package(epoch="0")])), "packages[0].epoch must be an integer"),
    (json.dumps(document(packages=[good_package(epoch=True)])), "epoch must be an integer"),
    (json.dumps(document(packages=[good_package(epoch=-1)])), "epoch is negative"),
    (json.dumps(document(packages=[good_package(name="")])), "packages[0].name is empty"),
    (json.dumps(document(packages=[good_package(checksum="XYZ")])), "not lower-case hex"),
    (json.dumps(document(packages=[good_package(), good_package(extra=1)])),
     "packages[1] has unknown keys extra"),
    (json.dumps(document(packages=[good_package(), good_package(version="2")])), "a.noarch is locked twice"),
    (b"\xff\xfe", "not a valid lock file"),
])
def test_bad_lock_files_are_one_line_errors(tmp_path: Path, content: str | bytes, message: str):
    path = tmp_path / "microimage.lock"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(SourceError) as err:
        read_lock(str(path))
    text = str(err.value)
    assert "\n" not in text and text.startswith(f"{path}:") and message in text, text


def test_good_document_reads(tmp_path: Path):
    path = tmp_path / "microimage.lock"
    path.write_text(json.dumps(document()))
    assert read_lock(str(path)).packages == [LockedPackage(**good_package())]


def test_unreadable_and_unwritable(tmp_path: Path):
    with pytest.raises(SourceError, match="cannot read .*No such file"):
        read_lock(str(tmp_path / "missing.lock"))
    with pytest.raises(SourceError, match="cannot write"):
        write_lock(str(tmp_path / "no" / "dir" / "microimage.lock"), Lock("sha256:" + "0" * 64, []))


def test_a_package_without_checksum_cannot_be_locked():
    with pytest.raises(SourceError, match="no checksum"):
        lock_from_packages([PackageInfo("a", 0, "1", "1", "noarch")], "sha256:" + "0" * 64)
