"""The cache kept for a `from:` image: indexes and the files taken out, never the decompressed layers."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from test_imageroot import BASE, CURL_SPEC, MIDDLE, TOP, content, host_image, make_image  # noqa: F401

from microcontainer_tool.assembly.assemble import assemble
from microcontainer_tool.errors import DigestMismatchError, SourceError
from microcontainer_tool.oci.layer import write_layer
from microcontainer_tool.sources.image.root import ImageRoot
from microcontainer_tool.spec.imagespec import ImageSpec


@pytest.fixture(scope="module")
def curl_image(request: pytest.FixtureRequest) -> tuple[Path, int]:
    """test_imageroot's image of host files: curl's closure and 40 MB of libraries (gzip), programs (zstd).

    (``host_image`` is imported only so that pytest finds it here.)
    """
    image: tuple[Path, int] = request.getfixturevalue("host_image")
    return image


def kept_bytes(top: Path) -> int:
    """Bytes of the regular files under ``top`` (each inode once)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for path in top.rglob("*"):
        st = path.lstat()
        if path.is_file() and not path.is_symlink() and (st.st_dev, st.st_ino) not in seen:
            seen.add((st.st_dev, st.st_ino))
            total += st.st_size
    return total


def curl_diff_id(root: ImageRoot, tmp_path: Path) -> str:
    assembly = assemble(ImageSpec(base_dir=str(tmp_path), **CURL_SPEC), sysroot=root)
    with open(os.devnull, "wb") as null:
        return write_layer(assembly.tree, null, "none", 0).diff_id


def open_scratch_tars() -> list[str]:
    """Targets of this process's descriptors that name deleted files."""
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.endswith(" (deleted)"):
            out.append(target)
    return out


def test_cache_kept_is_no_larger_than_the_compressed_layers(curl_image, tmp_path: Path) -> None:
    image, compressed = curl_image
    cache = tmp_path / "cache"
    with ImageRoot.open(str(image), str(cache)) as root:
        assert root.layers_decompressed == 2
        uncompressed = sum(layer.tar_size for layer in root.layers)
        curl_diff_id(root, tmp_path)
        assert root.files_materialized > 10
    assert uncompressed > 2 * compressed  # the layers a cache of decompressed tars would keep
    assert not list(cache.rglob("*.tar"))
    assert kept_bytes(cache) <= compressed
    assert not [t for t in open_scratch_tars() if str(cache) in t]  # closing deleted the scratch tars


def test_second_build_reuses_the_cache(curl_image, tmp_path: Path) -> None:
    image, _ = curl_image
    cache = tmp_path / "cache"
    with ImageRoot.open(str(image), str(cache)) as first:
        first_id = curl_diff_id(first, tmp_path)
        taken = first.files_materialized
    assert taken > 10
    before = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in cache.rglob("*") if p.is_file()}
    with ImageRoot.open(str(image), str(cache)) as second:
        assert [layer.reused for layer in second.layers] == [True, True]
        assert curl_diff_id(second, tmp_path) == first_id
        assert second.layers_decompressed == 0  # no layer read at all: indexes and files came from the cache
        assert second.files_materialized == 0
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in cache.rglob("*") if p.is_file()} == before


def test_files_not_taken_out_yet_are_found(tmp_path: Path) -> None:
    image = tmp_path / "fat"
    make_image(image, [BASE, MIDDLE, TOP], ["gzip", "zstd", "none"])
    cache = str(tmp_path / "cache")
    with ImageRoot.open(str(image), cache) as first:
        assert content(first, "/usr/bin/tool") == b"tool-v2"
        assert first.layers_decompressed == 3
    with ImageRoot.open(str(image), cache) as second:
        assert content(second, "/usr/bin/tool") == b"tool-v2"  # taken out before
        assert second.layers_decompressed == 0
        assert content(second, "/usr/bin/tool3") == b"t3"      # top layer (uncompressed)
        assert content(second, "/usr/bin/tool4") == b"t3"
        assert second.layers_decompressed == 1
        assert content(second, "/srv/twice") == b"second!"    # bottom layer (gzip), the same path twice
        assert content(second, "/srv/first") == b"first"
        assert content(second, "/data/link") == b"shared bytes"  # a hardlink into a lower layer
        assert content(second, "/etc/old.conf") == b"back"
        assert second.layers_decompressed == 2  # each layer read once, however many files it gives
        assert second.files_materialized == 5  # tool4 shares tool3's copy
    with ImageRoot.open(str(image), cache) as third:
        for path in ("/usr/bin/tool3", "/srv/twice", "/srv/first", "/data/link"):
            content(third, path)
        assert third.layers_decompressed == third.files_materialized == 0


def test_a_layer_read_again_is_verified_again(tmp_path: Path) -> None:
    image = tmp_path / "fat"
    descs = make_image(image, [BASE, MIDDLE, TOP], ["gzip", "zstd", "none"])
    cache = str(tmp_path / "cache")
    ImageRoot.open(str(image), cache).close()
    blob = image / "blobs/sha256" / descs[2].hex
    data = blob.read_bytes()
    assert data.count(b"t3") == 1
    blob.write_bytes(data.replace(b"t3", b"X3"))  # the same size, the digest no longer matches
    with ImageRoot.open(str(image), cache) as root:
        assert root.layers[2].reused  # the index is trusted; the bytes are not
        with pytest.raises(DigestMismatchError, match=descs[2].digest):
            root.host_path("/usr/bin/tool3")
    assert not [p for p in (Path(cache) / "files").rglob("*") if p.is_file()]  # nothing taken from it


def test_an_image_changed_under_a_build_is_refused(tmp_path: Path) -> None:
    image = tmp_path / "fat"
    descs = make_image(image, [BASE, TOP], ["gzip", "gzip"])
    root = ImageRoot.open(str(image), str(tmp_path / "cache"))
    root.close()  # the scratch tars are gone: reading a file means reading the image again
    shutil.rmtree(image)
    make_image(image, [BASE, [("file", "usr/bin/tool3", b"other")]], ["gzip", "gzip"])
    assert content(root, "/srv/twice") == b"second!"  # the bottom layer is still in the image
    with pytest.raises(SourceError, match=f"layer {descs[1].digest} is no longer in the image"):
        root.host_path("/usr/bin/tool3")


def test_a_version_1_entry_is_rebuilt_and_its_tar_deleted(tmp_path: Path) -> None:
    image = tmp_path / "img"
    make_image(image, [BASE])
    cache = tmp_path / "cache"
    with ImageRoot.open(str(image), str(cache)) as root:
        hex_ = root.layers[0].diff_id.split(":")[1]
    index = cache / "layertars" / f"{hex_}.json"
    old = json.loads(index.read_text())
    old["version"] = 1
    index.write_text(json.dumps(old))
    (cache / "layertars" / f"{hex_}.tar").write_bytes(bytes(4096))
    with ImageRoot.open(str(image), str(cache)) as root:
        assert not root.layers[0].reused and content(root, "/srv/twice") == b"second!"
    assert sorted(p.name for p in (cache / "layertars").iterdir()) == [f"{hex_}.json"]
    assert json.loads(index.read_text())["version"] == 2


def test_a_build_from_an_image_closes_its_scratch_tars(curl_image, tmp_path: Path) -> None:
    """And a second build reuses its cache: no layer read, no file taken out."""
    from microcontainer_tool.build import build_image

    image, compressed = curl_image
    cache = tmp_path / "cache"
    spec = ImageSpec(base_dir=str(tmp_path), from_=str(image), **CURL_SPEC)
    first = build_image(spec, str(tmp_path / "one"), cache_dir=str(cache))
    assert isinstance(first.sysroot, ImageRoot) and first.sysroot.layers_decompressed == 2
    assert not [t for t in open_scratch_tars() if str(cache) in t]  # the build closed them
    assert kept_bytes(cache / "layertars") + kept_bytes(cache / "files") <= compressed
    second = build_image(spec, str(tmp_path / "two"), cache_dir=str(cache))
    assert isinstance(second.sysroot, ImageRoot)
    assert second.sysroot.layers_decompressed == second.sysroot.files_materialized == 0
    assert second.layer.diff_id == first.layer.diff_id
