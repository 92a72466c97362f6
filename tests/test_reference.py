"""Docker-style image references: parsing, Docker Hub defaults, validation."""

from __future__ import annotations

import pytest

from microcontainer_tool.errors import SpecError
from microcontainer_tool.registry.reference import Reference

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize("text, registry, repository, tag, digest, canonical", [
    ("nginx", "registry-1.docker.io", "library/nginx", "latest", None,
     "registry-1.docker.io/library/nginx:latest"),
    ("nginx:1.25", "registry-1.docker.io", "library/nginx", "1.25", None,
     "registry-1.docker.io/library/nginx:1.25"),
    ("docker.io/nginx", "registry-1.docker.io", "library/nginx", "latest", None,
     "registry-1.docker.io/library/nginx:latest"),
    ("index.docker.io/library/nginx", "registry-1.docker.io", "library/nginx", "latest", None,
     "registry-1.docker.io/library/nginx:latest"),
    ("user/app", "registry-1.docker.io", "user/app", "latest", None, "registry-1.docker.io/user/app:latest"),
    ("docker.io/user/app:v2", "registry-1.docker.io", "user/app", "v2", None,
     "registry-1.docker.io/user/app:v2"),
    ("localhost/app", "localhost", "app", "latest", None, "localhost/app:latest"),
    ("localhost:5000/a/b/c:t", "localhost:5000", "a/b/c", "t", None, "localhost:5000/a/b/c:t"),
    ("127.0.0.1:5000/repo", "127.0.0.1:5000", "repo", "latest", None, "127.0.0.1:5000/repo:latest"),
    ("[::1]:5000/repo:x", "[::1]:5000", "repo", "x", None, "[::1]:5000/repo:x"),
    ("ghcr.io/o/r@" + DIGEST, "ghcr.io", "o/r", None, DIGEST, "ghcr.io/o/r@" + DIGEST),
    ("ghcr.io/o/r:v1@" + DIGEST, "ghcr.io", "o/r", "v1", DIGEST, "ghcr.io/o/r:v1@" + DIGEST),
    ("quay.io/a.b/c_d__e-f--g:T_1.x-y", "quay.io", "a.b/c_d__e-f--g", "T_1.x-y", None,
     "quay.io/a.b/c_d__e-f--g:T_1.x-y"),
    ("Registry/app", "Registry", "app", "latest", None, "Registry/app:latest"),
])
def test_parse(text: str, registry: str, repository: str, tag: str | None, digest: str | None,
               canonical: str) -> None:
    ref = Reference.parse(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (registry, repository, tag, digest)
    assert str(ref) == canonical
    assert Reference.parse(str(ref)) == ref
    assert ref.reference == (digest or tag)


@pytest.mark.parametrize("text, words", [
    ("", ["empty"]),
    (" nginx", ["spaces"]),
    ("Nginx", ["must be lowercase"]),
    ("host.io/Repo", ["must be lowercase"]),
    ("nginx:", ["bad tag"]),
    ("nginx:-x", ["bad tag"]),
    ("nginx:" + "a" * 129, ["bad tag"]),
    ("nginx@sha256:abc", ["digest"]),
    ("nginx@sha512:" + "ab" * 64, ["only sha256"]),
    ("nginx@" + DIGEST.upper(), ["digest"]),
    ("host.io//repo", ["bad repository component"]),
    ("host.io/repo/", ["bad repository component"]),
    ("host.io/re..po", ["bad repository component"]),
    ("-bad.io/repo", ["bad registry host"]),
    ("host.io:port/repo", ["bad registry host"]),
    ("host.io/" + "a" * 260, ["longer than 255"]),
    (":tag", ["no repository"]),
])
def test_invalid(text: str, words: list[str]) -> None:
    with pytest.raises(SpecError) as info:
        Reference.parse(text)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message


def test_with_digest_keeps_tag() -> None:
    ref = Reference.parse("127.0.0.1:5000/a:v1").with_digest(DIGEST)
    assert str(ref) == f"127.0.0.1:5000/a:v1@{DIGEST}"
    assert ref.reference == DIGEST
    assert ref.name == "127.0.0.1:5000/a"
