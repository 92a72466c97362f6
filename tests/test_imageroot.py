"""ImageRoot: an existing image's merged layers as a sysroot, indexed once, read lazily.

The images are written here with our own writers (tarfile layers through the
pinned codecs, stored with LayoutStore, OCI config/manifest/index from oci.py),
several layers each: replaced files, whiteouts, an opaque directory, hardlinks,
a symlink chain across layers, a device node, and malicious layers. The last
tests microize curl out of a fat image made of host files, run it with runc,
and compare it with the same spec built from /.
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
import tempfile
from collections.abc import Iterable
from pathlib import Path

import pytest
from conftest import ldd_files, runc_run, with_links

from microcontainer_tool.assembly.assemble import assemble
from microcontainer_tool.build import config_for
from microcontainer_tool.errors import DigestMismatchError, LayoutError, PathEscapeError, SourceError
from microcontainer_tool.model.tree import EntryKind
from microcontainer_tool.oci import model as oci
from microcontainer_tool.oci.compression import media_type_suffix, open_compressor
from microcontainer_tool.oci.layer import HashingWriter, write_layer
from microcontainer_tool.oci.layout import write_tree_image
from microcontainer_tool.oci.store import LayoutStore
from microcontainer_tool.sources.image.layertars import index_layer_tar
from microcontainer_tool.sources.image.root import IMAGE_DEV, ImageRoot, _copy_range
from microcontainer_tool.sources.sysroot import LayeredRoot
from microcontainer_tool.spec.imagespec import ImageSpec

TAG = "latest"
Member = tuple  # ("file", name, data[, mode]) ("dir", name) ("symlink", name, target)
#                ("hardlink", name, target) ("char", name, major, minor) ("whiteout", name)


def tar_bytes(members: Iterable[Member]) -> bytes:
    """An uncompressed PAX tar of ``members``, as another tool would write a layer."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for kind, name, *rest in members:
            info = tarfile.TarInfo(name)
            info.mtime = 1_700_000_000
            data = b""
            if kind == "file":
                data = rest[0]
                info.size = len(data)
                info.mode = rest[1] if len(rest) > 1 else 0o644
            elif kind == "whiteout":
                info.mode = 0o644
            elif kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, rest[0] if rest else 0o755
            elif kind == "symlink":
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, rest[0], 0o777
            elif kind == "hardlink":
                info.type, info.linkname, info.mode = tarfile.LNKTYPE, rest[0], 0o644
            elif kind == "char":
                info.type, info.devmajor, info.devminor, info.mode = tarfile.CHRTYPE, rest[0], rest[1], 0o666
            tar.addfile(info, io.BytesIO(data) if data else None)
    return out.getvalue()


def store_layer(store: LayoutStore, raw: bytes, compression: str) -> tuple[oci.Descriptor, str]:
    blob = io.BytesIO()
    with open_compressor(compression, blob) as writer:
        writer.write(raw)
    desc = store.put_blob(blob.getvalue(), oci.MEDIA_TYPE_LAYER + media_type_suffix(compression))
    return desc, oci.sha256_digest(raw)


def write_image(out: Path, layers: list[tuple[oci.Descriptor, str]], store: LayoutStore,
                diff_ids: list[str] | None = None) -> str:
    """Config, manifest and index over stored layers; returns the manifest digest."""
    config = oci.image_config(architecture="amd64", diff_ids=diff_ids or [d for _, d in layers],
                              env=["PATH=/opt/bin:/usr/bin", "LD_LIBRARY_PATH=/opt/lib"], workdir="/srv")
    config_desc = store.put_json(config, oci.MEDIA_TYPE_CONFIG)
    manifest_desc = store.put_json(oci.manifest(config_desc, [d for d, _ in layers]), oci.MEDIA_TYPE_MANIFEST)
    store.write_index([manifest_desc.with_annotations({oci.ANNOTATION_REF_NAME: TAG})])
    return manifest_desc.digest


def make_image(out: Path, layers: list[list[Member]], compressions: list[str] | None = None,
               diff_ids: list[str] | None = None) -> list[oci.Descriptor]:
    store = LayoutStore(str(out))
    stored = [store_layer(store, tar_bytes(members), compression)
              for members, compression in zip(layers, compressions or ["gzip"] * len(layers), strict=True)]
    write_image(out, stored, store, diff_ids)
    return [d for d, _ in stored]


BASE = [
    ("dir", "./"), ("dir", "./usr"), ("dir", "./usr/lib"), ("dir", "./usr/bin"),
    ("file", "./usr/lib/libx.so.1", b"libx-v1"),
    ("file", "./usr/bin/tool", b"tool-v1", 0o4755),
    ("symlink", "./lib", "usr/lib"),
    ("file", "./etc/old.conf", b"old"),           # parent directory only implied
    ("file", "./var/cache/junk/a", b"a"),
    ("file", "./var/cache/junk/b/c", b"c"),
    ("file", "./opt/app/keep", b"keep"),
    ("file", "./opt/app/sub/deep", b"deep"),
    ("file", "./data/orig", b"shared bytes", 0o600),
    ("char", "./dev/null", 1, 3),
    ("file", "./srv/twice", b"first"),
    ("hardlink", "./srv/first", "./srv/twice"),   # keeps the first copy's data
    ("file", "./srv/twice", b"second!"),          # the same path twice in one layer: last wins
]
MIDDLE = [
    ("file", "usr/bin/tool", b"tool-v2", 0o4755),  # replaced in an upper layer
    ("whiteout", "etc/.wh.old.conf"),             # a file deleted
    ("whiteout", "var/cache/.wh.junk"),           # a directory deleted, with its subtree
    ("dir", "opt/app"),
    ("whiteout", "opt/app/.wh..wh..opq"),         # opaque: lower children hidden
    ("file", "opt/app/new", b"new"),
    ("hardlink", "data/link", "data/orig"),       # a hardlink to a lower layer's file
    ("symlink", "usr/lib/libx.so", "libx.so.1"),  # the chain /lib -> usr/lib -> libx.so.1 spans layers
    ("symlink", "abs", "/lib/libx.so"),           # absolute: means the image's root
    ("whiteout", "nothing/.wh.here"),             # a whiteout of something absent is harmless
]
TOP = [
    ("file", "etc/old.conf", b"back"),            # re-added above its whiteout
    ("hardlink", "usr/bin/tool2", "usr/bin/tool"),
    ("file", "usr/bin/tool3", b"t3", 0o755),
    ("hardlink", "usr/bin/tool4", "usr/bin/tool3"),  # a hardlink within its own layer
]


@pytest.fixture()
def fat(tmp_path: Path) -> tuple[Path, list[oci.Descriptor]]:
    image = tmp_path / "fat"
    descs = make_image(image, [BASE, MIDDLE, TOP], ["gzip", "zstd", "none"])
    return image, descs


def content(root: ImageRoot, path: str) -> bytes:
    return Path(root.host_path(path)).read_bytes()


def one_line(error: pytest.ExceptionInfo[BaseException]) -> str:
    text = str(error.value)
    assert text and "\n" not in text
    return text


def test_merged_view_applies_layers_and_whiteouts(fat, tmp_path: Path) -> None:
    image, descs = fat
    with ImageRoot.open(str(image), str(tmp_path / "cache")) as root:
        assert root.listdir("/") == ["abs", "data", "dev", "etc", "lib", "opt", "srv", "usr", "var"]
        assert content(root, "/usr/bin/tool") == b"tool-v2"
        assert content(root, "/etc/old.conf") == b"back"
        assert root.lstat("/var/cache/junk") is None and root.lstat("/var/cache/junk/b/c") is None
        assert root.listdir("/var/cache") == []
        assert root.listdir("/opt/app") == ["new"]
        assert root.lstat("/opt/app/sub/deep") is None
        assert content(root, "/srv/first") == b"first"
        assert content(root, "/srv/twice") == b"second!"
        assert content(root, "/srv/first") == b"first"
        assert root.listdir("/usr/bin") == ["tool", "tool2", "tool3", "tool4"]


def test_lstat_readlink_and_symlink_chain(fat, tmp_path: Path) -> None:
    image, _ = fat
    root = ImageRoot.open(str(image), str(tmp_path / "cache"))
    st = root.lstat("/usr/bin/tool")
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o4755
    assert st.st_size == len(b"tool-v2") and st.st_mtime == 0 and st.st_dev == IMAGE_DEV
    assert stat.S_ISDIR(root.lstat("/").st_mode) and stat.S_ISDIR(root.lstat("/etc").st_mode)
    assert stat.S_ISLNK(root.lstat("/lib").st_mode) and root.readlink("/lib") == "usr/lib"
    resolved = root.resolve("/abs")
    assert resolved.path == "/usr/lib/libx.so.1"
    assert resolved.links == (("/abs", "/lib/libx.so"), ("/lib", "usr/lib"),
                              ("/usr/lib/libx.so", "libx.so.1"))
    inos = {root.lstat(p).st_ino for p in ("/usr", "/usr/lib", "/usr/lib/libx.so.1", "/lib", "/abs")}
    assert len(inos) == 5
    with pytest.raises(SourceError):
        root.readlink("/usr/bin/tool")
    with pytest.raises(SourceError):
        root.listdir("/usr/bin/tool")


def test_hardlinks_share_inode_and_data(fat, tmp_path: Path) -> None:
    image, _ = fat
    root = ImageRoot.open(str(image), str(tmp_path / "cache"))
    orig, link = root.lstat("/data/orig"), root.lstat("/data/link")
    assert orig.st_ino == link.st_ino and orig.st_nlink == link.st_nlink == 2
    assert stat.S_IMODE(link.st_mode) == 0o600
    assert root.host_path("/data/link") == root.host_path("/data/orig")
    assert content(root, "/data/link") == b"shared bytes"
    assert root.lstat("/usr/bin/tool2").st_ino == root.lstat("/usr/bin/tool").st_ino
    assert content(root, "/usr/bin/tool2") == b"tool-v2"
    assert root.lstat("/usr/bin/tool4").st_nlink == 2 and content(root, "/usr/bin/tool4") == b"t3"
    assert root.lstat("/etc/old.conf").st_nlink == 1


def test_materialized_files_and_cache_layout(fat, tmp_path: Path) -> None:
    image, descs = fat
    cache = tmp_path / "cache"
    root = ImageRoot.open(str(image), str(cache))
    diff_ids = [layer.diff_id.split(":")[1] for layer in root.layers]
    for hex_ in diff_ids:
        assert not (cache / "layertars" / f"{hex_}.tar").exists()  # no decompressed layer is kept
        assert (cache / "layertars" / f"{hex_}.json").is_file()
    assert not (cache / "files").exists()  # nothing copied out before it is asked for
    tool = root.host_path("/usr/bin/tool")
    assert tool == str(cache / "files" / diff_ids[1] / "usr/bin/tool")
    assert stat.S_IMODE(os.stat(tool).st_mode) == 0o755  # never setuid
    assert stat.S_IMODE(os.stat(root.host_path("/data/orig")).st_mode) == 0o600
    assert root.files_materialized == 2
    directory = root.host_path("/usr")
    assert os.path.isdir(directory) and os.listdir(directory) == []
    assert not os.path.lexists(root.host_path("/lib"))  # a symlink has no host object
    assert not os.path.lexists(root.host_path("/dev/null"))
    assert not os.path.lexists(root.host_path("/no/such"))
    assert sorted(p.name for p in (cache / "layertars").iterdir()) == sorted(
        f"{h}.json" for h in diff_ids)  # no temp files left


def test_device_node_kept_as_special(fat, tmp_path: Path) -> None:
    image, _ = fat
    root = ImageRoot.open(str(image), str(tmp_path / "cache"))
    assert stat.S_ISCHR(root.lstat("/dev/null").st_mode)
    assert root.specials == ["/dev/null"]
    spec = ImageSpec(base_dir=str(tmp_path), paths=("/dev/null",), arch="amd64")
    with pytest.raises(SourceError, match="device node cannot go in a microcontainer"):
        assemble(spec, sysroot=root)


def test_project_files_laid_over_an_image(fat, tmp_path: Path) -> None:
    """assemble's LayeredRoot reads the image through the ImageRoot, and the overlay over it."""
    image, _ = fat
    root = ImageRoot.open(str(image), str(tmp_path / "cache"))
    mine = tmp_path / "mine"
    mine.write_bytes(b"project tool")
    layered = LayeredRoot(root, {"/usr/bin/tool": str(mine), "/app/bin/prog": str(mine)})
    assert layered.host_path("/usr/bin/tool") == str(mine)
    assert stat.S_IMODE(layered.lstat("/usr/bin/tool").st_mode) == stat.S_IMODE(mine.stat().st_mode)
    assert Path(layered.host_path(layered.resolve("/abs").path)).read_bytes() == b"libx-v1"
    assert layered.readlink("/lib") == "usr/lib"
    assert layered.listdir("/opt/app") == ["new"]
    assert stat.S_ISDIR(layered.lstat("/app/bin").st_mode)  # implied by the overlay only
    assert layered.lstat("/usr/bin/tool2").st_ino == root.lstat("/usr/bin/tool2").st_ino


def test_config(fat, tmp_path: Path) -> None:
    image, _ = fat
    root = ImageRoot.open(f"{image}:{TAG}", str(tmp_path / "cache"))
    assert root.config["config"]["Env"] == ["PATH=/opt/bin:/usr/bin", "LD_LIBRARY_PATH=/opt/lib"]
    assert root.config["config"]["WorkingDir"] == "/srv"
    assert root.label == f"image:{image}:{TAG}"


def test_second_open_reuses_tars_indexes_and_files(fat, tmp_path: Path) -> None:
    image, _ = fat
    cache = tmp_path / "cache"
    first = ImageRoot.open(str(image), str(cache))
    assert [layer.reused for layer in first.layers] == [False, False, False]
    first.host_path("/usr/bin/tool")
    before = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in cache.rglob("*") if p.is_file()}
    second = ImageRoot.open(str(image), str(cache))
    assert [layer.reused for layer in second.layers] == [True, True, True]
    assert content(second, "/usr/bin/tool") == b"tool-v2"
    assert second.files_materialized == 0
    after = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in cache.rglob("*") if p.is_file()}
    assert after == before


def test_oci_archive_shares_the_cache_by_diff_id(fat, tmp_path: Path) -> None:
    image, _ = fat
    cache = tmp_path / "cache"
    ImageRoot.open(str(image), str(cache))
    archive = tmp_path / "fat.tar"
    with tarfile.open(archive, "w") as tar:
        for name in ("oci-layout", "index.json", "blobs"):
            tar.add(image / name, arcname=name)
    root = ImageRoot.open(str(archive), str(cache))
    assert all(layer.reused for layer in root.layers)
    assert content(root, "/opt/app/new") == b"new"


def test_cache_is_keyed_by_content_not_by_image_path(tmp_path: Path) -> None:
    """smith's bug: an unpack dir reused for another image at the same path."""
    image, cache = tmp_path / "img", str(tmp_path / "cache")
    make_image(image, [[("file", "etc/version", b"one")]])
    assert content(ImageRoot.open(str(image), cache), "/etc/version") == b"one"
    for child in image.iterdir():
        if child.is_dir():
            for blob in (child / "sha256").iterdir():
                blob.unlink()
        else:
            child.unlink()
    make_image(image, [[("file", "etc/version", b"two")]])
    root = ImageRoot.open(str(image), cache)
    assert not root.layers[0].reused and content(root, "/etc/version") == b"two"


def test_wrong_diff_id_refused_and_nothing_cached(tmp_path: Path) -> None:
    image = tmp_path / "img"
    wrong = oci.sha256_digest(b"something else")
    descs = make_image(image, [[("file", "a", b"a")]], diff_ids=[wrong])
    cache = tmp_path / "cache"
    with pytest.raises(DigestMismatchError) as info:
        ImageRoot.open(str(image), str(cache))
    text = one_line(info)
    assert descs[0].digest in text and wrong in text
    assert list((cache / "layertars").iterdir()) == []


def test_corrupt_blob_refused(tmp_path: Path) -> None:
    image = tmp_path / "img"
    descs = make_image(image, [[("file", "a", b"a" * 4096)]])
    blob = image / "blobs/sha256" / descs[0].hex
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    with pytest.raises(LayoutError) as info:  # DigestMismatchError, or a decode error first
        ImageRoot.open(str(image), str(tmp_path / "cache"))
    assert descs[0].digest in one_line(info)
    assert list((tmp_path / "cache" / "layertars").iterdir()) == []


@pytest.mark.parametrize(("members", "error", "words"), [
    ([("file", "../evil", b"x")], PathEscapeError, ["'../evil'", "climbs above the root"]),
    ([("file", "usr/../../evil", b"x")], PathEscapeError, ["'usr/../../evil'", "climbs above the root"]),
    ([("file", "/abs", b"x")], LayoutError, ["'/abs'", "absolute path"]),
    ([("file", "a", b"x"), ("hardlink", "b", "/a")], LayoutError, ["'/a'", "absolute path"]),
    ([("hardlink", "etc/shadow", "../../etc/shadow")], PathEscapeError, ["climbs above the root"]),
    ([("hardlink", "b", "missing")], LayoutError, ["'b' -> 'missing'", "not present"]),
    ([("hardlink", "b", "c"), ("file", "c", b"x")], LayoutError, ["'b' -> 'c'", "not present"]),
    ([("file", "a", b"x"), ("file", "a/b", b"y")], LayoutError, ["'a/b'", "'a' is not a directory"]),
    ([("whiteout", "dir/.wh..")], LayoutError, ["malformed whiteout"]),
])
def test_malicious_layers_refused(tmp_path: Path, members: list[Member], error: type,
                                  words: list[str]) -> None:
    image = tmp_path / "img"
    descs = make_image(image, [[("file", "ok", b"fine")], members])
    with pytest.raises(error) as info:
        ImageRoot.open(str(image), str(tmp_path / "cache"))
    text = one_line(info)
    assert descs[1].digest in text, text
    for word in words:
        assert word in text, text


def test_hardlink_to_a_path_whited_out_below_is_refused(tmp_path: Path) -> None:
    image = tmp_path / "img"
    descs = make_image(image, [[("file", "a", b"x")], [("whiteout", ".wh.a"), ("hardlink", "b", "a")]])
    with pytest.raises(LayoutError, match="not present") as info:
        ImageRoot.open(str(image), str(tmp_path / "cache"))
    assert descs[1].digest in one_line(info)


@pytest.mark.parametrize("kernel", [True, False])
def test_copy_range(tmp_path: Path, kernel: bool) -> None:
    """Both ways of copying a member's bytes out of a layer tar: copy_file_range and pread/write."""
    data = os.urandom(3 << 20 | 12345)
    (tmp_path / "src").write_bytes(b"head" + data + b"tail")
    src = os.open(tmp_path / "src", os.O_RDONLY)
    try:
        for name, size, expected in (("whole", len(data), data), ("short", len(data) + 100, data + b"tail")):
            dst = os.open(tmp_path / name, os.O_WRONLY | os.O_CREAT)
            try:
                assert _copy_range(src, dst, 4, size, kernel) == len(expected)
            finally:
                os.close(dst)
            assert (tmp_path / name).read_bytes() == expected
    finally:
        os.close(src)


# -- the tar scanner agrees with tarfile ---------------------------------------------------

KINDS = {tarfile.REGTYPE: "f", tarfile.AREGTYPE: "f", tarfile.DIRTYPE: "d", tarfile.SYMTYPE: "l",
         tarfile.LNKTYPE: "h", tarfile.CHRTYPE: "c", tarfile.FIFOTYPE: "p"}


def _rel(name: str) -> str:
    return "/".join(p for p in name.split("/") if p not in ("", "."))


def tarfile_index(path: str) -> list[list]:
    """The reference: what Python's tarfile reads from the same file."""
    out = []
    with tarfile.open(path, encoding="utf-8", errors="surrogateescape") as tar:
        for m in tar:
            kind = KINDS[m.type]
            if not _rel(m.name):
                continue
            link = _rel(m.linkname) if kind == "h" else m.linkname if kind == "l" else ""
            out.append([_rel(m.name), kind, m.mode & 0o7777, m.size if kind == "f" else 0,
                        m.offset_data if kind == "f" else 0, link])
    return out


LONG_DIR = "d" * 60 + "/" + "e" * 60           # 121 characters: ustar needs its prefix field
VERY_LONG = "/".join(["x" * 90] * 4)           # 363 characters: GNU L or PAX path


def odd_members() -> list[tarfile.TarInfo]:
    infos = []
    for name, kind, extra in [
        (".", tarfile.DIRTYPE, ""), ("./etc", tarfile.DIRTYPE, ""), (LONG_DIR, tarfile.DIRTYPE, ""),
        (LONG_DIR + "/file", tarfile.REGTYPE, b"ustar prefix"), (VERY_LONG, tarfile.REGTYPE, b"long"),
        ("link-long", tarfile.SYMTYPE, "../" + VERY_LONG), ("hard", tarfile.LNKTYPE, "./" + VERY_LONG),
        ("caf\udce9", tarfile.REGTYPE, b"latin-1 name"), ("fifo", tarfile.FIFOTYPE, ""),
        ("tty", tarfile.CHRTYPE, ""), ("empty", tarfile.REGTYPE, b""),
        ("big", tarfile.REGTYPE, bytes(70_000)),
    ]:
        info = tarfile.TarInfo(name)
        info.type, info.mode, info.mtime = kind, 0o751, 1_700_000_000.5
        if kind == tarfile.REGTYPE:
            info.size = len(extra)
        elif kind in (tarfile.SYMTYPE, tarfile.LNKTYPE):
            info.linkname = extra
            info.size = 4096  # a size field on a header-only type: readers ignore it (no data follows)
        infos.append((info, extra))
    return infos


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT, tarfile.PAX_FORMAT])
def test_scanner_agrees_with_tarfile(tmp_path: Path, fmt: int) -> None:
    path = tmp_path / "layer.tar"
    with tarfile.open(path, "w", format=fmt, encoding="utf-8", errors="surrogateescape") as tar:
        for info, data in odd_members():
            if fmt == tarfile.USTAR_FORMAT and (VERY_LONG in info.name or VERY_LONG in info.linkname
                                                or "\udce9" in info.name):
                continue  # not representable in plain ustar
            tar.addfile(info, io.BytesIO(data) if isinstance(data, bytes) and data else None)
    expected = tarfile_index(str(path))
    assert len(expected) >= 6
    assert index_layer_tar(str(path), "x") == expected


def test_scanner_agrees_on_host_layers(host_image, tmp_path: Path) -> None:
    image, _ = host_image
    root = ImageRoot.open(str(image), str(tmp_path / "cache"))
    for number, layer in enumerate(root.layers):
        tar = tmp_path / f"layer{number}.tar"
        with open(tar, "wb") as out:
            os.sendfile(out.fileno(), root._tar_fd(number), 0, layer.tar_size)
        assert index_layer_tar(str(tar), "x") == tarfile_index(str(tar)) == layer.members


@pytest.mark.parametrize(("mangle", "words"), [
    (lambda raw: raw[:512 + 100], "truncated"),                                    # cut inside file data
    (lambda raw: raw[:148] + b"0000001\0" + raw[156:], "bad header checksum"),
    (lambda raw: b"\x7fELF" + bytes(2044), "bad header checksum"),                # not a tar at all
])
def test_corrupt_tar_refused(tmp_path: Path, mangle, words: str) -> None:
    raw = mangle(tar_bytes([("file", "a", b"a" * 2000)]))
    image = tmp_path / "img"
    store = LayoutStore(str(image))
    write_image(image, [store_layer(store, raw, "gzip")], store)  # diff_id of the mangled bytes: valid
    with pytest.raises(LayoutError, match=words) as info:
        ImageRoot.open(str(image), str(tmp_path / "cache"))
    one_line(info)


def test_sparse_member_refused(tmp_path: Path) -> None:
    info = tarfile.TarInfo("sparse")
    info.type = tarfile.GNUTYPE_SPARSE
    raw = info.tobuf(tarfile.GNU_FORMAT) + bytes(1024)
    image = tmp_path / "img"
    store = LayoutStore(str(image))
    write_image(image, [store_layer(store, raw, "none")], store)
    with pytest.raises(LayoutError, match="sparse"):
        ImageRoot.open(str(image), str(tmp_path / "cache"))


def test_empty_layers(tmp_path: Path) -> None:
    """Docker's empty layer (1024 zero bytes) and a zero-byte tar hold nothing."""
    image = tmp_path / "img"
    store = LayoutStore(str(image))
    write_image(image, [store_layer(store, bytes(1024), "gzip"), store_layer(store, b"", "none"),
                        store_layer(store, tar_bytes([("file", "a", b"a")]), "gzip")], store)
    root = ImageRoot.open(str(image), str(tmp_path / "cache"))
    assert root.listdir("/") == ["a"]


# -- a real fat image made of host files ------------------------------------------------


def host_layer(store: LayoutStore, directory: Path, paths: Iterable[str],
               compression: str) -> tuple[oci.Descriptor, str]:
    """A layer of host files (tarfile, as any tool would), streamed through ``compression``."""
    fd, tmp = tempfile.mkstemp(dir=directory)
    with os.fdopen(fd, "wb") as sink:
        writer = open_compressor(compression, sink)
        diff = HashingWriter(writer)
        with tarfile.open(fileobj=diff, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            for path in paths:
                tar.add(path, arcname="." + path, recursive=False)
        writer.close()
    desc = store.put_file(tmp, oci.MEDIA_TYPE_LAYER + media_type_suffix(compression))
    os.unlink(tmp)
    return desc, diff.digest


@pytest.fixture(scope="module")
def host_image(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """Two layers: libraries (curl's closure plus bulk), then programs."""
    if not os.path.exists("/usr/bin/curl"):
        pytest.skip("/usr/bin/curl is not installed")
    work = tmp_path_factory.mktemp("host-image")
    libdir = "/usr/lib/x86_64-linux-gnu"
    libs: dict[str, None] = {}
    confs = sorted(str(p) for p in Path("/etc/ld.so.conf.d").iterdir())
    # os-release (and its link chain) too: a build takes the sysroot's, from an image as from /
    for path in ["/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/os-release", *confs,
                 *ldd_files("/usr/bin/curl")[1:]]:
        libs.update(dict.fromkeys(with_links(path)))
    bulk = 0
    for name in sorted(os.listdir(libdir)):  # every soname link, and ~40 MB of other libraries
        path = f"{libdir}/{name}"
        if os.path.islink(path):
            libs[path] = None
        elif os.path.isfile(path) and bulk < 40 << 20 and path not in libs:
            libs[path] = None
            bulk += os.path.getsize(path)
    programs = ["/usr/bin/curl", "/usr/bin/cat", "/usr/bin/ls", "/usr/bin/tar", "/usr/bin/sort"]
    store = LayoutStore(str(work / "fat"))
    layers = [host_layer(store, work, [p for p in libs if os.path.lexists(p)], "gzip"),
              host_layer(store, work, [p for p in programs if os.path.exists(p)], "zstd")]
    write_image(work / "fat", layers, store)
    return work / "fat", sum(d.size for d, _ in layers)


# the fat image carries curl's closure only, not the gconv/ssl files automatic packs take from /
CURL_SPEC = dict(paths=("/usr/bin/curl",), entrypoint=("/usr/bin/curl",), auto_packs=False)


def test_microize_curl_matches_a_build_from_root(host_image, tmp_path: Path) -> None:
    image, blob_bytes = host_image
    spec = ImageSpec(base_dir=str(tmp_path), **CURL_SPEC)
    root = ImageRoot.open(str(image), str(tmp_path / "cache"))
    from_image = assemble(spec, sysroot=root)
    from_host = assemble(spec)
    # the host's dpkg database says which packages contributed (status.d entries); this
    # fat image has no dpkg database, so there is nothing of the kind to carry over
    for path in [p for p in from_host.tree.paths() if p == "/var" or p.startswith("/var/")]:
        from_host.tree.discard(path)
    assert from_image.tree.paths() == from_host.tree.paths()
    kinds = {e.path: (e.kind, e.mode, e.linkname, e.size) for e in from_image.tree}
    assert kinds == {e.path: (e.kind, e.mode, e.linkname, e.size) for e in from_host.tree}
    assert from_image.platform == from_host.platform
    with open(os.devnull, "wb") as null:
        diff_ids = [write_layer(a.tree, null, "none", 0).diff_id for a in (from_image, from_host)]
    assert diff_ids[0] == diff_ids[1]
    # only what the selection needs was copied out of the layers
    files = [e for e in from_image.tree if e.kind is EntryKind.FILE]
    assert root.files_materialized <= len(files) + 8
    assert root.bytes_materialized < sum(e.size for e in files) + (4 << 20) < blob_bytes


def test_microized_curl_runs_with_runc(host_image, tmp_path: Path) -> None:
    image, _ = host_image
    spec = ImageSpec(base_dir=str(tmp_path), **CURL_SPEC)
    root = ImageRoot.open(str(image), str(tmp_path / "cache"))
    assembly = assemble(spec, sysroot=root)
    out = tmp_path / "curl-image"
    write_tree_image(str(out), "oci", assembly.tree, "gzip", 0,
                     lambda layer: config_for(spec, assembly, layer, 0), TAG, "curl")
    proc = runc_run(out, TAG, tmp_path, args=["/usr/bin/curl", "--version"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("curl "), proc.stdout
