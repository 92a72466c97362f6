"""Repository metadata: real createrepo_c repos over HTTP (a real server) and file://."""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import shutil
import socket
from pathlib import Path

import pytest
from conftest import SHARED_RPMS, have, require_shared_rpms
from repo_helpers import COMPRESS, RepoServer, createrepo, metadata_file, rewrite_metadata

from microcontainer_tool.errors import DigestMismatchError, MicrocontainerError, RepoError
from microcontainer_tool.sources.rpm.package import Checksum
from microcontainer_tool.sources.rpm.payload import read_rpm
from microcontainer_tool.sources.rpm.repo import Fetcher, RepoConfig, load_repo, new_pool, solvable_files

pytestmark = pytest.mark.skipif(not have("createrepo_c"), reason="needs createrepo_c")

SMALL = ["basesystem-11-13.el9.0.1.noarch.rpm", "setup-2.13.7-10.el9.noarch.rpm",
         "libcurl-7.76.1-34.el9.x86_64.rpm"]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    """The 67 Rocky RPMs indexed by createrepo_c, served over real HTTP at ``/rocky/``."""
    root = tmp_path_factory.mktemp("served")
    createrepo(root / "rocky", sorted(require_shared_rpms().glob("*.rpm")))
    server = RepoServer(root)
    yield server
    server.stop()


@pytest.fixture
def small_repo(tmp_path: Path) -> Path:
    """Three Rocky RPMs in a file:// repo of the test's own."""
    return createrepo(tmp_path / "small", [require_shared_rpms() / name for name in SMALL])


def fetcher(tmp_path: Path, **kwargs) -> Fetcher:
    kwargs.setdefault("backoff", 0.01)
    return Fetcher(timeout=5, cache_dir=str(tmp_path / "cache"), **kwargs)


def load(url: str, tmp_path: Path, fetch: Fetcher | None = None, repo_id: str = "rocky"):
    fetch = fetch or fetcher(tmp_path)
    return load_repo(RepoConfig(repo_id, url), fetch, fetch.cache_dir)


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text and text, text
    assert isinstance(exc, MicrocontainerError)
    return text


# ----------------------------------------------------------------------------- loading


def test_http_repo_lists_every_package_as_the_rpm_headers_say(served: RepoServer, tmp_path: Path):
    before = len(served.requests)
    repo = load(served.url + "rocky", tmp_path)
    packages = repo.packages()
    assert len(packages) == len(repo) == 67
    assert sorted(p.location for p in packages) == sorted(p.name for p in SHARED_RPMS.glob("*.rpm"))
    for info in packages:
        header = read_rpm(str(SHARED_RPMS / info.location))
        assert (info.name, info.epoch, info.version, info.release, info.arch) == \
            (header.name, header.epoch, header.version, header.release, header.arch)
        assert info.checksum == header.checksum  # repo's sha256 of the file == ours
        assert info.size == header.size
        assert (info.license, info.summary, info.sourcerpm, info.vendor, info.buildtime, info.url) == \
            (header.license, header.summary, header.sourcerpm, header.vendor, header.buildtime,
             header.url)
        for kind in ("provides", "conflicts", "obsoletes", "recommends", "suggests",
                     "supplements", "enhances"):  # (createrepo_c trims requires)
            assert sorted(map(str, getattr(info, kind))) == sorted(map(str, getattr(header, kind)))
        assert info.repo == "rocky"
        assert repo.url_of(info) == served.url + "rocky/" + info.location
    shadow = next(p for p in packages if p.name == "shadow-utils")
    assert shadow.epoch == 2 and shadow.evr.startswith("2:")
    assert any(str(d) == "shadow-utils = 2:4.9-15.el9" for d in shadow.provides)
    basesystem = next(p for p in packages if p.name == "basesystem")
    assert {d.name for d in basesystem.requires if d.pre} == {"filesystem", "setup"}
    bash = next(p for p in packages if p.name == "bash")
    assert "/usr/bin/bash" in bash.files  # primary's file subset
    assert not any(d.name.startswith("solvable:") for d in bash.provides)  # libsolv's marker
    fetched = served.requests[before:]
    assert fetched[0] == "/rocky/repodata/repomd.xml"
    assert any("primary.xml" in p for p in fetched)
    assert not any("filelists" in p or "other" in p for p in fetched)  # lazily, not at all


def test_unchanged_repomd_is_served_from_the_solv_cache(served: RepoServer, tmp_path: Path):
    first = load(served.url + "rocky", tmp_path)
    assert first.xml_parsed == ["primary"]
    repomd = (served.root / "rocky" / "repodata" / "repomd.xml").read_bytes()
    assert first.repomd_sha256 == hashlib.sha256(repomd).hexdigest()
    assert first.solv_path == str(tmp_path / "cache" / "repos" / f"rocky-{first.repomd_sha256}.solv")
    assert os.path.isfile(first.solv_path)
    before = len(served.requests)
    second = load(served.url + "rocky", tmp_path)
    assert second.xml_parsed == []
    assert served.requests[before:] == ["/rocky/repodata/repomd.xml"]
    assert [p.nevra for p in second.packages()] == [p.nevra for p in first.packages()]


def test_solv_cache_works_without_the_xml_and_follows_repomd(small_repo: Path, tmp_path: Path):
    url = small_repo.as_uri()
    first = load(url, tmp_path)
    assert first.xml_parsed == ["primary"] and len(first) == 3
    metadata_file(small_repo, "primary").unlink()  # the XML is gone: only the cache can help
    again = load(url, tmp_path)
    assert again.xml_parsed == [] and len(again) == 3
    with pytest.raises(RepoError, match="primary"):
        load(url, tmp_path / "other-cache")  # proves the XML really is gone
    createrepo(small_repo, [SHARED_RPMS / "zlib-1.2.11-40.el9.x86_64.rpm"])  # repomd changes
    changed = load(url, tmp_path)
    assert changed.xml_parsed == ["primary"] and len(changed) == 4
    assert changed.solv_path != first.solv_path
    assert "zlib" in {p.name for p in changed.packages()}


def test_filelists_are_fetched_only_when_asked_and_then_cached(served: RepoServer, tmp_path: Path):
    before = len(served.requests)
    repo = load(served.url + "rocky", tmp_path)
    assert not [p for p in served.requests[before:] if "filelists" in p]
    path = repo.filelists_solv()
    assert repo.xml_parsed == ["primary", "filelists"]
    assert len([p for p in served.requests[before:] if "filelists" in p]) == 1
    again = load(served.url + "rocky", tmp_path)
    assert again.filelists_solv() == path and again.xml_parsed == []
    assert len([p for p in served.requests[before:] if "filelists" in p]) == 1

    pool = new_pool()
    srepo = again.add_to_pool(pool, filelists=True)
    pool.addfileprovides()
    pool.createwhatprovides()
    libcurl = next(s for s in srepo.solvables if s.name == "libcurl")
    assert "/usr/lib64/libcurl.so.4" in solvable_files(libcurl)
    assert again.package_info(libcurl).files == solvable_files(libcurl)
    assert srepo.priority == -99  # dnf priority 99 -> libsolv -99 (higher wins there)


def test_damaged_solv_cache_files_are_rebuilt(small_repo: Path, tmp_path: Path):
    first = load(small_repo.as_uri(), tmp_path)
    filelists = Path(first.filelists_solv())
    Path(first.solv_path).write_bytes(b"SOLV garbage")
    filelists.write_bytes(b"\0" * 100)
    again = load(small_repo.as_uri(), tmp_path)
    assert again.xml_parsed == ["primary"] and len(again) == 3
    pool = new_pool()
    srepo = again.add_to_pool(pool, filelists=True)
    assert again.xml_parsed == ["primary", "filelists"]
    pool.addfileprovides()
    pool.createwhatprovides()
    libcurl = next(s for s in srepo.solvables if s.name == "libcurl")
    assert "/usr/lib64/libcurl.so.4" in solvable_files(libcurl)
    assert len(list(srepo.solvables)) == 3


def test_xml_base_locations_point_elsewhere(small_repo: Path, tmp_path: Path):
    xml = gzip.decompress(metadata_file(small_repo, "primary").read_bytes()).decode()
    xml = xml.replace('<location href="setup-', '<location xml:base="https://mirror.invalid/os/" '
                      'href="setup-')
    rewrite_metadata(small_repo, "primary", "gz", content=xml.encode())
    repo = load(small_repo.as_uri(), tmp_path)
    urls = {p.name: repo.url_of(p) for p in repo.packages()}
    assert urls["setup"] == "https://mirror.invalid/os/setup-2.13.7-10.el9.noarch.rpm"
    assert urls["basesystem"] == small_repo.as_uri() + "/basesystem-11-13.el9.0.1.noarch.rpm"


@pytest.mark.parametrize("codec", ["gz", "xz", "zst", "bz2", "plain"])
def test_every_metadata_codec_loads(small_repo: Path, tmp_path: Path, codec: str):
    rewrite_metadata(small_repo, "primary", codec)
    rewrite_metadata(small_repo, "filelists", codec)
    repo = load(small_repo.as_uri(), tmp_path)
    assert sorted(p.name for p in repo.packages()) == ["basesystem", "libcurl", "setup"]
    repo.filelists_solv()
    assert repo.xml_parsed == ["primary", "filelists"]


# ----------------------------------------------------------------------------- broken repos


def test_wrong_checksum_in_repomd_is_a_digest_mismatch(small_repo: Path, tmp_path: Path):
    primary = rewrite_metadata(small_repo, "primary", "xz", fix_checksum=False)
    with pytest.raises(DigestMismatchError) as err:
        load(small_repo.as_uri(), tmp_path)
    text = one_line(err.value)
    assert primary.as_uri() in text and "repomd.xml says" in text


def test_decompressed_content_is_checked_against_open_checksum(small_repo: Path, tmp_path: Path):
    rewrite_metadata(small_repo, "primary", "gz")
    repomd = small_repo / "repodata" / "repomd.xml"
    text = repomd.read_text()
    start = text.index('<data type="primary">')
    head, tail = text[:start], text[start:]
    marker = '<open-checksum type="sha256">'
    i = tail.index(marker) + len(marker)
    repomd.write_text(head + tail[:i] + "0" * 64 + tail[i + 64:])
    with pytest.raises(DigestMismatchError, match="decompressed sha256"):
        load(small_repo.as_uri(), tmp_path)


@pytest.mark.parametrize("codec", ["gz", "xz", "zst", "bz2", "plain"])
def test_truncated_primary_is_a_repo_error(small_repo: Path, tmp_path: Path, codec: str):
    xml = metadata_file(small_repo, "primary").read_bytes()
    whole = COMPRESS[codec](gzip.decompress(xml))
    rewrite_metadata(small_repo, "primary", codec, raw=whole[: len(whole) * 2 // 3])
    with pytest.raises(RepoError) as err:  # checksum matches: the mirror published it so
        load(small_repo.as_uri(), tmp_path)
    text = one_line(err.value)
    assert "primary" in text
    assert ("truncated" in text) if codec != "plain" else ("malformed" in text)
    cached = tmp_path / "cache" / "repos"
    assert not cached.exists() or not any(cached.iterdir())  # nothing half-parsed is cached


def test_compressed_name_with_other_content_is_a_repo_error(small_repo: Path, tmp_path: Path):
    xml = gzip.decompress(metadata_file(small_repo, "primary").read_bytes())
    rewrite_metadata(small_repo, "primary", "xz", raw=xml)  # .xml.xz holding plain XML
    with pytest.raises(RepoError, match="not xz data"):
        load(small_repo.as_uri(), tmp_path)


def test_primary_with_fewer_packages_than_announced(small_repo: Path, tmp_path: Path):
    xml = gzip.decompress(metadata_file(small_repo, "primary").read_bytes()).decode()
    xml = re.sub(r'packages="3"', 'packages="4"', xml, count=1)
    rewrite_metadata(small_repo, "primary", "gz", content=xml.encode())
    with pytest.raises(RepoError, match="announces 4 packages but holds 3"):
        load(small_repo.as_uri(), tmp_path)


def test_http_404_names_the_url(served: RepoServer, tmp_path: Path):
    with pytest.raises(RepoError) as err:
        load(served.url + "nosuch", tmp_path)
    text = one_line(err.value)
    assert served.url + "nosuch/repodata/repomd.xml" in text and "HTTP 404" in text


def test_http_5xx_is_retried_with_a_bound(served: RepoServer, tmp_path: Path):
    served.fail("/rocky/repodata/repomd.xml", 503, 502)
    repo = load(served.url + "rocky", tmp_path)  # third attempt succeeds
    assert len(repo) == 67
    served.fail("/rocky/repodata/repomd.xml", 503, 503, 503, 503)
    before = len(served.requests)
    with pytest.raises(RepoError) as err:
        load(served.url + "rocky", tmp_path)
    assert "HTTP 503 (after 3 attempts)" in one_line(err.value)
    assert served.requests[before:] == ["/rocky/repodata/repomd.xml"] * 3
    served.fail("/rocky/repodata/repomd.xml")


def test_connection_refused_is_a_repo_error(tmp_path: Path):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    with pytest.raises(RepoError) as err:
        load(f"http://127.0.0.1:{port}/repo", tmp_path, fetcher(tmp_path, retries=2))
    text = one_line(err.value)
    assert f"http://127.0.0.1:{port}/repo/repodata/repomd.xml" in text and "after 2 attempts" in text


def test_missing_file_repo_and_bad_repomd(tmp_path: Path):
    with pytest.raises(RepoError) as err:
        load((tmp_path / "none").as_uri(), tmp_path)
    assert (tmp_path / "none" / "repodata" / "repomd.xml").as_uri() in one_line(err.value)
    (tmp_path / "bad" / "repodata").mkdir(parents=True)
    (tmp_path / "bad" / "repodata" / "repomd.xml").write_text("<html>not a repo")
    with pytest.raises(RepoError, match="not valid XML"):
        load((tmp_path / "bad").as_uri(), tmp_path)
    (tmp_path / "bad" / "repodata" / "repomd.xml").write_text(
        '<repomd xmlns="http://linux.duke.edu/metadata/repo"><revision>1</revision></repomd>')
    with pytest.raises(RepoError, match="no primary metadata"):
        load((tmp_path / "bad").as_uri(), tmp_path)


def test_repo_config_checks_and_normalises():
    config = RepoConfig("base", "https://example.invalid/os", priority=10)
    assert config.baseurl == "https://example.invalid/os/" and config.solv_priority == -10
    assert config.url("repodata/repomd.xml") == "https://example.invalid/os/repodata/repomd.xml"
    with pytest.raises(RepoError, match="not an http"):
        RepoConfig("x", "ftp://example.invalid/")
    with pytest.raises(RepoError, match="reserved"):
        RepoConfig("@local", "file:///tmp/")


# ----------------------------------------------------------------------------- downloads


def curl_package(served: RepoServer, tmp_path: Path):
    repo = load(served.url + "rocky", tmp_path)
    info = next(p for p in repo.packages() if p.name == "curl")
    return repo.url_of(info), info


def test_download_verifies_caches_and_then_needs_no_server(served: RepoServer, tmp_path: Path):
    url, info = curl_package(served, tmp_path)
    fetch = fetcher(tmp_path)
    path = fetch.download(url, info.checksum, size=info.size)
    assert path == str(tmp_path / "cache" / "packages" / f"sha256-{info.checksum.value}.rpm")
    assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == info.checksum.value
    assert [f for f in os.listdir(tmp_path / "cache" / "packages")] == [os.path.basename(path)]
    before = len(served.fetched(r"curl-7"))
    assert fetch.download(url, info.checksum) == path
    assert len(served.fetched(r"curl-7")) == before  # cache hit: no request
    # offline: a fresh fetcher (checksum re-verified once), a URL nothing answers
    offline = fetcher(tmp_path, retries=1)
    dead = "http://127.0.0.1:9/" + info.location
    assert offline.download(dead, info.checksum, size=info.size) == path
    dest = tmp_path / "out" / "curl.rpm"
    assert offline.download(dead, info.checksum, dest=str(dest)) == str(dest)
    assert dest.read_bytes() == Path(path).read_bytes()


def test_download_with_wrong_checksum_leaves_nothing(served: RepoServer, tmp_path: Path):
    url, info = curl_package(served, tmp_path)
    fetch = fetcher(tmp_path)
    with pytest.raises(DigestMismatchError) as err:
        fetch.download(url, Checksum("sha256", "0" * 64))
    assert url in one_line(err.value)
    with pytest.raises(DigestMismatchError, match="bytes downloaded"):
        fetch.download(url, info.checksum, size=info.size + 1)
    assert os.listdir(tmp_path / "cache" / "packages") == []
    with pytest.raises(RepoError, match="HTTP 404"):
        fetch.download(served.url + "rocky/nosuch.rpm", info.checksum)


def test_corrupt_cache_entries_are_replaced(served: RepoServer, tmp_path: Path):
    url, info = curl_package(served, tmp_path)
    path = Path(fetcher(tmp_path).download(url, info.checksum))
    good = path.read_bytes()
    path.write_bytes(b"\0" * len(good))  # same size, wrong bytes
    before = len(served.fetched(r"curl-7"))
    assert fetcher(tmp_path).download(url, info.checksum) == str(path)  # checksum once: caught
    assert path.read_bytes() == good and len(served.fetched(r"curl-7")) == before + 1
    fetch = fetcher(tmp_path)
    fetch.download(url, info.checksum, size=info.size)
    with open(path, "r+b") as handle:
        handle.truncate(100)  # a size change is noticed even after verification
    assert fetch.download(url, info.checksum, size=info.size) == str(path)
    assert path.read_bytes() == good


def test_file_urls_download_too(small_repo: Path, tmp_path: Path):
    repo = load(small_repo.as_uri(), tmp_path)
    info = next(p for p in repo.packages() if p.name == "setup")
    path = fetcher(tmp_path).download(repo.url_of(info), info.checksum, size=info.size)
    assert Path(path).read_bytes() == (small_repo / info.location).read_bytes()
    shutil.rmtree(small_repo)
    assert fetcher(tmp_path).download(repo.url_of(info), info.checksum) == path
