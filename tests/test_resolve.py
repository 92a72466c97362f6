"""libsolv resolution over real repositories: Rocky 9 RPMs and rpmbuild fixtures, over HTTP."""

from __future__ import annotations

import shutil

import pytest
from conftest import SHARED_RPMS, have, require_shared_rpms
from repo_helpers import RepoServer, createrepo, fixture_rpms

from microcontainer_tool.errors import ResolveError
from microcontainer_tool.sources.rpm.payload import read_rpm
from microcontainer_tool.sources.rpm.repo import Fetcher, Repo, RepoConfig, load_repo
from microcontainer_tool.sources.rpm.solver import LOCAL_REPO, check_closure, resolve

pytestmark = pytest.mark.skipif(not have("createrepo_c", "rpmbuild"),
                                reason="needs createrepo_c and rpmbuild")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    """Repos served over real HTTP: ``rocky/``, ``fx/`` (all fixtures), ``old/`` and ``new/``."""
    root = tmp_path_factory.mktemp("repos")
    rpms = fixture_rpms(tmp_path_factory.mktemp("rpms"))
    if SHARED_RPMS.is_dir():  # tests that ask for ``rocky/`` skip without it (see repo())
        createrepo(root / "rocky", sorted(SHARED_RPMS.glob("*.rpm")))
    createrepo(root / "fx", list(rpms.values()))
    createrepo(root / "old", [rpms["app-1.0"]])
    createrepo(root / "new", [rpms["app-2.0"]])
    server = RepoServer(root)
    yield server, rpms
    server.stop()


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("cache"))


def repo(world, cache: str, name: str, priority: int = 99) -> Repo:
    server, _ = world
    if name == "rocky":
        require_shared_rpms()
    fetch = Fetcher(timeout=5, cache_dir=cache)
    return load_repo(RepoConfig(name, server.url + name, priority=priority), fetch, cache)


def nevras(resolution) -> list[str]:
    return [p.nevra for p in resolution.packages]


def problems(excinfo: pytest.ExceptionInfo) -> list[str]:
    text = str(excinfo.value)
    assert "\n" not in text and text.startswith("cannot resolve: "), text
    return text[len("cannot resolve: "):].split("; ")


# ----------------------------------------------------------------------------- Rocky


def test_curl_closure_over_rocky_is_complete_and_consistent(world, cache):
    server, _ = world
    rocky = repo(world, cache, "rocky")
    result = resolve([rocky], ["curl"])
    names = result.names()
    assert {"curl", "libcurl", "glibc", "openssl-libs", "ca-certificates"} <= set(names)
    assert names == sorted(names) and len(set(names)) == len(names)
    assert not result.filelists_loaded  # every file dependency is in primary
    for p in result.packages:
        assert p.repo == "rocky" and p.checksum is not None and p.checksum.kind == "sha256"
        assert p.location == f"{server.url}rocky/{p.name}-{p.version}-{p.release}.{p.arch}.rpm"
    # every requirement of the result is satisfied inside the result (libsolv verify)...
    assert check_closure(result.packages) == []
    # ...and the check can fail: without glibc, much is missing
    broken = check_closure([p for p in result.packages if p.name != "glibc"])
    assert any("libc.so.6" in line or "rtld(GNU_HASH)" in line for line in broken)
    # the Rocky set is curl's closure: the repo holds nothing else
    assert len(names) == 67


@pytest.mark.parametrize("request_, expected", [
    ("libssl.so.3()(64bit)", "openssl-libs"),
    ("/usr/bin/curl", "curl"),
    ("curl >= 7.70", "curl"),
    ("glibc = 2.34-231.el9_7.2", "glibc"),
    ("openssl-libs = 1:3.5.1-4.el9_7", "openssl-libs"),
    ("curl-7.76.1-34.el9.x86_64", "curl"),
    ("curl.x86_64", "curl"),
])
def test_request_forms(world, cache, request_: str, expected: str):
    result = resolve([repo(world, cache, "rocky")], [request_])
    assert expected in result.names() and check_closure(result.packages) == []


def test_file_outside_primary_loads_filelists(world, cache):
    result = resolve([repo(world, cache, "rocky")], ["/usr/lib64/libcurl.so.4"])
    assert result.filelists_loaded and "libcurl" in result.names() and "curl" not in result.names()


def test_version_that_does_not_exist_is_not_silently_replaced(world, cache):
    with pytest.raises(ResolveError) as err:
        resolve([repo(world, cache, "rocky")], ["curl >= 8", "curl"])
    assert problems(err) == ["nothing provides requested curl >= 8"]


def test_excluding_a_needed_library_explains_why(world, cache):
    with pytest.raises(ResolveError) as err:
        resolve([repo(world, cache, "rocky")], ["curl"], exclude=["openssl-*"])
    assert any("libcrypto.so.3()(64bit)" in p or "libssl.so.3()(64bit)" in p for p in problems(err))


def test_resolving_from_the_solv_cache_gives_the_same_answer(world, cache):
    first = nevras(resolve([repo(world, cache, "rocky")], ["curl"]))
    rocky = repo(world, cache, "rocky")  # .solv cached by now (bench/rpm_build.py times locking)
    assert nevras(resolve([rocky], ["curl"])) == first
    assert any(n.startswith("curl-7") for n in first)


# ----------------------------------------------------------------------------- fixtures


def test_newest_version_wins_and_constraints_pick_older(world, cache):
    fx = repo(world, cache, "fx")
    assert nevras(resolve([fx], ["app"])) == ["app-2.0-1.noarch"]
    assert nevras(resolve([fx], ["app < 2"])) == ["app-1.0-1.noarch"]
    assert nevras(resolve([fx], ["app = 1.0-1"])) == ["app-1.0-1.noarch"]
    assert nevras(resolve([fx], ["usesapp"])) == ["app-2.0-1.noarch", "usesapp-1.0-1.noarch"]
    with pytest.raises(ResolveError) as err:
        resolve([fx], ["usesapp", "app < 2"])
    assert any("requires app >= 1.5" in p for p in problems(err))


def test_no_silent_fallback_to_an_older_version(world, cache):
    fx = repo(world, cache, "fx")  # blocker conflicts with app >= 2: only app 1.0 would fit
    with pytest.raises(ResolveError) as err:
        resolve([fx], ["app", "blocker"])
    assert problems(err) == [
        "package blocker-1.0-1.noarch conflicts with app >= 2 provided by app-2.0-1.noarch",
        "cannot install the best candidate for the job"]
    assert nevras(resolve([fx], ["blocker", "app < 2"])) == ["app-1.0-1.noarch",
                                                             "blocker-1.0-1.noarch"]


def test_conflict_is_reported(world, cache):
    fx = repo(world, cache, "fx")
    assert nevras(resolve([fx], ["c1"])) == ["c1-1.0-1.noarch"]
    with pytest.raises(ResolveError) as err:
        resolve([fx], ["c2", "c1"])
    assert problems(err) == ["package c1-1.0-1.noarch conflicts with c2 provided by c2-1.0-1.noarch"]


def test_obsoletes_replace_and_exclude(world, cache):
    fx = repo(world, cache, "fx")
    # wantsold needs "oldthing": newthing provides it and obsoletes the old package
    assert nevras(resolve([fx], ["wantsold"])) == ["newthing-2.0-1.noarch", "wantsold-1.0-1.noarch"]
    with pytest.raises(ResolveError) as err:
        resolve([fx], ["oldthing", "newthing"])
    assert problems(err) == [
        "package newthing-2.0-1.noarch obsoletes oldthing < 2.0 provided by oldthing-1.0-1.noarch"]


def test_weak_dependencies_only_on_request(world, cache):
    fx = repo(world, cache, "fx")
    assert nevras(resolve([fx], ["w"])) == ["w-1.0-1.noarch"]
    assert nevras(resolve([fx], ["w"], install_weak_deps=True)) == [
        "w-1.0-1.noarch", "wextra-1.0-1.noarch", "wsupp-1.0-1.noarch"]  # Recommends, Supplements


def test_file_dependency_satisfied_only_via_filelists(world, cache):
    fx = repo(world, cache, "fx")
    result = resolve([fx], ["fdep"])
    assert result.filelists_loaded
    assert nevras(result) == ["fdep-1.0-1.noarch", "fprov-1.0-1.noarch"]
    assert nevras(resolve([fx], ["/opt/tool/data.bin"])) == ["fprov-1.0-1.noarch"]


def test_epoch_beats_a_higher_version(world, cache):
    result = resolve([repo(world, cache, "fx")], ["ep"])
    assert nevras(result) == ["ep-1:1.0-1.noarch"]
    assert result.packages[0].epoch == 1 and result.packages[0].version == "1.0"


def test_rich_dependency(world, cache):
    fx = repo(world, cache, "fx")
    assert nevras(resolve([fx], ["rich"])) == ["rb-1.0-1.noarch", "rich-1.0-1.noarch"]
    with pytest.raises(ResolveError) as err:
        resolve([fx], ["richbad"])
    assert problems(err) == ["nothing provides (rc or rd) needed by richbad-1.0-1.noarch"]


def test_every_problem_is_listed_on_one_line(world, cache):
    with pytest.raises(ResolveError) as err:
        resolve([repo(world, cache, "fx")], ["nosuch", "broken", "richbad", "c1", "c2", "app"])
    assert sorted(problems(err)) == sorted([
        "nothing provides requested nosuch",
        "nothing provides libfoo.so.1()(64bit) needed by broken-1.0-1.noarch",
        "nothing provides (rc or rd) needed by richbad-1.0-1.noarch",
        "package c1-1.0-1.noarch conflicts with c2 provided by c2-1.0-1.noarch",
    ])


def test_exclude(world, cache):
    fx = repo(world, cache, "fx")
    with pytest.raises(ResolveError) as err:
        resolve([fx], ["app"], exclude=["app"])
    assert problems(err) == ["requested app is excluded"]
    with pytest.raises(ResolveError) as err:
        resolve([fx], ["usesapp"], exclude=["ap*"])
    assert problems(err) == ["nothing provides app >= 1.5 needed by usesapp-1.0-1.noarch"]


def test_repo_priority_lower_number_wins(world, cache):
    old_first = resolve([repo(world, cache, "old", 10), repo(world, cache, "new", 99)], ["app"])
    assert [(p.nevra, p.repo) for p in old_first.packages] == [("app-1.0-1.noarch", "old")]
    new_first = resolve([repo(world, cache, "old", 99), repo(world, cache, "new", 10)], ["app"])
    assert [(p.nevra, p.repo) for p in new_first.packages] == [("app-2.0-1.noarch", "new")]
    same = resolve([repo(world, cache, "old"), repo(world, cache, "new")], ["app"])
    assert nevras(same) == ["app-2.0-1.noarch"]  # equal priority: the best version


def test_local_package_wins_over_the_repo_copy(world, cache, tmp_path):
    _, rpms = world
    local_copy = tmp_path / "app-2.0-1.noarch.rpm"
    shutil.copy(rpms["app-2.0"], local_copy)
    info = read_rpm(str(local_copy))
    result = resolve([repo(world, cache, "fx")], ["usesapp"], local=[info])
    app = next(p for p in result.packages if p.name == "app")
    assert app.repo == LOCAL_REPO and app.location == str(local_copy)
    assert next(p for p in result.packages if p.name == "usesapp").repo == "fx"


def test_local_packages_are_always_installed_with_their_dependencies(world, cache):
    _, rpms = world
    lonely = read_rpm(str(rpms["lonely-1.0"]))
    result = resolve([repo(world, cache, "fx")], [], local=[lonely])
    assert [(p.nevra, p.repo) for p in result.packages] == [
        ("app-2.0-1.noarch", "fx"), ("lonely-1.0-1.noarch", LOCAL_REPO)]
    # a local older version is what gets installed: it is listed, so it is installed
    old_app = read_rpm(str(rpms["app-1.0"]))
    assert [(p.nevra, p.repo) for p in resolve([repo(world, cache, "fx")], ["app"],
                                               local=[old_app]).packages] == [
        ("app-1.0-1.noarch", LOCAL_REPO)]
    # local packages alone, no repositories
    assert nevras(resolve([], [], local=[read_rpm(str(rpms["c1-1.0"]))])) == ["c1-1.0-1.noarch"]
    with pytest.raises(ResolveError) as err:
        resolve([], [], local=[lonely])
    assert problems(err) == ["nothing provides app needed by lonely-1.0-1.noarch"]


def test_local_file_provides_satisfy_file_dependencies(world, cache):
    _, rpms = world
    fprov = read_rpm(str(rpms["fprov-1.0"]))
    fdep = read_rpm(str(rpms["fdep-1.0"]))
    result = resolve([], [], local=[fdep, fprov])
    assert nevras(result) == ["fdep-1.0-1.noarch", "fprov-1.0-1.noarch"]


def test_request_order_does_not_matter(world, cache):
    fx = repo(world, cache, "fx")
    assert resolve([fx], ["rich", "w", "ep"]) == resolve([fx], ["ep", "w", "rich", "w"])


def test_nothing_requested(world, cache):
    with pytest.raises(ResolveError, match="nothing requested"):
        resolve([repo(world, cache, "fx")], [])
