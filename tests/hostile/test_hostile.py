"""Hostile inputs through the real CLI: one clear line, non-zero exit, no traceback, nothing written.

Each case of the corpus (``corpus.py``) crafts an input — an OCI layout whose
layers slip out of the root, lie about digests or are corrupt, JSON nested
200,000 levels deep, a YAML bomb, a registry that trickles — and runs
``python -m microcontainer_tool`` on it. The output goes into a directory that
also holds a canary: afterwards that directory holds the canary, untouched,
and nothing else (no output, no temporary sibling).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import corpus
import pytest
import zstandard
from conftest import assert_one_line_error, run_cli
from corpus import (
    BASE,
    DEEP_JSON,
    Layout,
    gzip_bytes,
    image_of,
    sha256,
    tar_bytes,
    write_spec,
    zeros_layer,
    zeros_tar_chunks,
)

CANARY = {"canary": None, "canary/keep": b"do not touch"}


Maker = Callable[[Path, Path], list[str]]


@dataclass(frozen=True)
class Case:
    """One hostile input: ``make(inputs, work)`` writes it and returns the CLI arguments."""

    name: str
    make: Callable[[Path, Path], list[str]]
    words: tuple[str, ...] = ()


def build_from(*layers: list, paths: str = "[/usr/bin/hello]", **lies: object) -> Maker:
    """A case: ``build`` with ``from:`` a layout of ``layers`` (gzip tars), ``lies`` as for Layout."""
    def make(inputs: Path, work: Path) -> list[str]:
        image = image_of(inputs / "image", *layers, **lies)
        spec = write_spec(inputs / "spec", f"from: {image}\npaths: {paths}\n")
        return ["build", "-c", str(spec), "-o", str(work / "img")]
    return make


def build_layout(layout: Callable[[], Layout], then: Callable[[Path], None] | None = None
                 ) -> Callable[[Path, Path], list[str]]:
    """A case: ``build`` with ``from:`` a raw :class:`Layout` (changed by ``then`` after writing)."""
    def make(inputs: Path, work: Path) -> list[str]:
        image = layout().write(inputs / "image")
        if then is not None:
            then(image)
        spec = write_spec(inputs / "spec", f"from: {image}\npaths: [/usr/bin/hello]\n")
        return ["build", "-c", str(spec), "-o", str(work / "img")]
    return make


def spec_case(text: str) -> Callable[[Path, Path], list[str]]:
    def make(inputs: Path, work: Path) -> list[str]:
        return ["build", "-c", str(write_spec(inputs / "spec", text)), "-o", str(work / "img")]
    return make


def base_layer() -> bytes:
    return gzip_bytes(tar_bytes(BASE))


def deep_manifest_layout() -> Layout:
    return Layout([base_layer()], manifest=DEEP_JSON)


def deep_config_layout() -> Layout:
    return Layout([base_layer()], config=DEEP_JSON)


def deep_index_layout() -> Layout:
    return Layout([base_layer()], index=DEEP_JSON)


def inspect_deep_index(inputs: Path, work: Path) -> list[str]:
    return ["inspect", str(deep_index_layout().write(inputs / "image"))]


def sbom_deep_provenance(inputs: Path, work: Path) -> list[str]:
    record = [("dir", "var"), ("dir", "var/lib"), ("dir", "var/lib/microcontainer"),
              ("file", "var/lib/microcontainer/provenance.json", DEEP_JSON)]
    image = image_of(inputs / "image", BASE + record)
    return ["sbom", "-o", str(work / "sbom.json"), str(image)]


def pull_with_deep_docker_config(inputs: Path, work: Path) -> list[str]:
    inputs.mkdir(parents=True, exist_ok=True)
    (inputs / "config.json").write_bytes(DEEP_JSON)
    return ["pull", "--docker-config", str(inputs / "config.json"), "--plain-http",
            "127.0.0.1:9/hostile:latest", "-o", str(work / "img")]


def corrupt_blob(image: Path) -> None:
    """Replace the layer blob's bytes (same length) so they no longer match their name."""
    index = json.loads((image / "index.json").read_text())
    manifest = json.loads(_blob(image, index["manifests"][0]["digest"]))
    path = image / "blobs" / "sha256" / manifest["layers"][0]["digest"].split(":")[1]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


OTHER_DIGEST = sha256(b"another layer")


def lie_about_manifest_size(image: Path) -> None:
    """index.json claims the manifest is bigger than it is."""
    index = image / "index.json"
    index.write_text(index.read_text().replace('"size": ', '"size": 1'))


def misname_layer(image: Path) -> None:
    """Store the layer under the digest the manifest claims for it (which is not its own)."""
    blobs = image / "blobs" / "sha256"
    true_name = sha256(base_layer()).split(":")[1]
    (blobs / OTHER_DIGEST.split(":")[1]).write_bytes((blobs / true_name).read_bytes())


def _blob(image: Path, digest: str) -> bytes:
    return (image / "blobs" / "sha256" / digest.split(":")[1]).read_bytes()


def truncated_gzip_layout() -> Layout:
    layer = gzip_bytes(tar_bytes(BASE + [("file", "usr/bin/big", os.urandom(64 << 10))]))
    return Layout([layer[:len(layer) // 2]], diff_ids=[sha256(b"whatever")])


def garbage_gzip_layout() -> Layout:
    layer = bytearray(gzip_bytes(tar_bytes(BASE + [("file", "usr/bin/big", os.urandom(64 << 10))])))
    layer[40:200] = bytes(160)
    return Layout([bytes(layer)], diff_ids=[sha256(b"whatever")])


def bomb(size: int, *options: str, diff_id: str | None = None, zstd: bool = False) -> Maker:
    """A case: ``build`` from an image whose second layer is ``size`` zeros (nothing of it selected)."""
    def make(inputs: Path, work: Path) -> list[str]:
        if zstd:
            compressor = zstandard.ZstdCompressor(level=19).compressobj()
            chunks = zeros_tar_chunks("usr/bin/zeros", size)
            blob = b"".join(compressor.compress(c) for c in chunks) + compressor.flush()
            real = "sha256:" + "0" * 64
        else:
            blob, real = zeros_layer("usr/bin/zeros", size)
        image = Layout([base_layer(), blob], diff_ids=[sha256(tar_bytes(BASE)), diff_id or real]
                       ).write(inputs / "image")
        spec = write_spec(inputs / "spec", f"from: {image}\narch: amd64\npaths: [/usr/bin/hello]\n")
        return ["build", "-c", str(spec), "-o", str(work / "img"), *options]
    return make


def bomb_for(command: str) -> Maker:
    """A case: ``sbom`` or ``run`` of an image with a zstd bomb layer, under the default limits."""
    def make(inputs: Path, work: Path) -> list[str]:
        build_args = bomb(256 << 20, zstd=True)(inputs, work)
        image = build_args[2].replace("/spec", "/image")
        if command == "sbom":
            return ["sbom", "-o", str(work / "sbom.json"), image]
        return ["run", "--state-dir", str(inputs / "state"), "--cache-dir", str(inputs / "cache"), image,
                "--", "/usr/bin/hello"]
    return make


def rpm_case(damage: Callable[[Path, Path], Path]) -> Maker:
    """A case: ``build`` of ``packages: [./x.rpm]``, a small real rpm (no payload compression) damaged."""
    def make(inputs: Path, work: Path) -> list[str]:
        from rpmbuild_fixtures import build_rpm

        files: dict[str, bytes | Path] = {"/usr/bin/hello": b"#!/bin/sh\necho hi\n",
                                          "/usr/share/hostile/data": os.urandom(64 << 10)}
        rpm = build_rpm(inputs / "rpmbuild", "hostile", files=files,
                        dirs=["/usr/share/hostile"], payload="none", autoreqprov=False)
        spec = write_spec(inputs / "spec", "arch: amd64\npackages: [./x.rpm]\npaths: [/usr/bin/hello]\n")
        damage(rpm, spec / "x.rpm")
        return ["build", "-c", str(spec), "-o", str(work / "img")]
    return make


def truncate_payload(rpm: Path, out: Path) -> Path:
    from test_rpm import payload_of

    data = rpm.read_bytes()
    out.write_bytes(data[:len(data) - len(payload_of(rpm)) // 2])
    return out


def rename_cpio_member(rpm: Path, out: Path) -> Path:
    """A cpio member renamed to a path the header does not list (digests fixed, so only cpio is wrong)."""
    from test_rpm import parse_newc, payload_of, rewrite_payload, write_newc

    members = parse_newc(payload_of(rpm))
    member = next(m for m in members if m["name"] == b"./usr/share/hostile/data")
    member["name"] = b"./usr/share/hostile/dat\xff"
    return rewrite_payload(rpm, out, write_newc(members))


def inflate_cpio_dir(rpm: Path, out: Path) -> Path:
    """A directory member carrying 8 MiB of data in the payload (the header says none)."""
    from test_rpm import parse_newc, payload_of, rewrite_payload, write_newc

    members = parse_newc(payload_of(rpm))
    member = next(m for m in members if m["name"] == b"./usr/share/hostile")
    member["data"] = bytes(8 << 20)
    return rewrite_payload(rpm, out, write_newc(members))


def elf_case(**damage: int) -> Maker:
    """A case: ``build`` selecting a copy of ``cat`` with damaged program headers (``corpus.elf_with``)."""
    return build_from(BASE + [("file", "usr/bin/broken", corpus.elf_with(CAT, **damage), 0o755)],
                      paths="[/usr/bin/broken]")


NOT_UTF8 = b"usr/bin/h\xffllo".decode("utf-8", "surrogateescape")
CAT = Path("/usr/bin/cat").read_bytes()
ELF_HEAD = CAT[:200]  # a valid ELF header, then nothing

CASES = [
    # JSON nested 200,000 levels deep, wherever JSON is read
    Case("deep-index-build", build_layout(deep_index_layout), ("index.json", "nested deeper than 256")),
    Case("deep-manifest-build", build_layout(deep_manifest_layout), ("nested deeper than 256",)),
    Case("deep-config-build", build_layout(deep_config_layout), ("nested deeper than 256",)),
    Case("deep-index-inspect", inspect_deep_index, ("index.json", "nested deeper than 256")),
    Case("deep-provenance-sbom", sbom_deep_provenance, ("provenance.json", "nested deeper than 256")),
    Case("deep-docker-config-pull", pull_with_deep_docker_config, ("config.json", "nested deeper than 256")),
    Case("index-not-json", build_layout(lambda: Layout([base_layer()], index=b"{not json")), ("index.json",)),
    # members that climb out of the root
    Case("tar-slip", build_from(BASE, [("file", "../evil", b"x")]), ("'../evil'", "climbs above the root")),
    Case("tar-slip-inner", build_from(BASE, [("file", "usr/../../evil", b"x")]), ("climbs above the root",)),
    Case("absolute-member", build_from(BASE, [("file", "/etc/evil", b"x")]),
         ("'/etc/evil'", "absolute path")),
    Case("symlink-escape", build_from(BASE + [("symlink", "usr/bin/evil", "../../../../../etc/passwd")],
                                      paths="[/usr/bin/evil]"), ("/usr/bin/evil",)),
    Case("symlink-dir-escape", build_from(BASE + [("symlink", "usr/lib", "../../../../../etc")],
                                          paths="[/usr/lib/passwd]"), ("/usr/lib/passwd",)),
    Case("hardlink-escape", build_from(BASE, [("hardlink", "usr/bin/shadow", "../../etc/shadow")]),
         ("climbs above the root",)),
    Case("hardlink-absolute", build_from(BASE, [("hardlink", "usr/bin/shadow", "/etc/shadow")]),
         ("'/etc/shadow'", "absolute path")),
    Case("whiteout-escape", build_from(BASE, [("file", "../.wh.etc", b"")]), ("climbs above the root",)),
    Case("whiteout-malformed", build_from(BASE, [("file", "usr/.wh..", b"")]), ("malformed whiteout",)),
    # special files and bits (README: device nodes refused, setuid bits dropped — see the tests below)
    Case("char-device", build_from(BASE + [("dir", "dev"), ("char", "dev/mem", 1, 1)], paths="[/dev/mem]"),
         ("/dev/mem", "device node")),
    Case("block-device", build_from(BASE + [("dir", "dev"), ("block", "dev/sda", 8, 0)], paths="[/dev/sda]"),
         ("/dev/sda",)),
    Case("fifo", build_from(BASE + [("dir", "run"), ("fifo", "run/pipe")], paths="[/run/pipe]"),
         ("/run/pipe", "fifo")),
    # a member name that is not UTF-8, selected (README: refused, naming the layer and the member)
    Case("non-utf8-name-selected", build_from(BASE + [("file", NOT_UTF8, b"x", 0o755)], paths="[/usr/bin]"),
         ("not UTF-8", "'/usr/bin/h\\xffllo'", ": layer sha256:")),
    # digests and sizes that lie
    Case("blob-bytes-flipped", build_layout(lambda: Layout([base_layer()]), corrupt_blob),
         ("corrupt layer blob",)),
    Case("blob-digest-lie", build_layout(lambda: Layout([base_layer()], layer_digests=[OTHER_DIGEST]),
                                         misname_layer),
         ("does not match",)),
    Case("blob-size-lie", build_layout(lambda: Layout([base_layer()], layer_sizes=[len(base_layer()) + 7])),
         ("does not match its digest",)),
    Case("diff-id-lie", build_layout(lambda: Layout([base_layer()], diff_ids=[sha256(b"other")])),
         ("config says",)),
    Case("manifest-size-lie", build_layout(lambda: Layout([base_layer()]), lie_about_manifest_size),
         ("does not match its content",)),
    # decompression bombs: stopped at the limit, whatever the diff_id says
    Case("bomb-size", bomb(64 << 20, "--max-layer-size", "16M"),
         (": layer sha256:", "expands past the limit of 16 MiB", "--max-layer-size")),
    Case("bomb-size-lying-diff-id", bomb(64 << 20, "--max-layer-size", "16M", diff_id=sha256(b"x")),
         ("expands past the limit of 16 MiB",)),
    Case("bomb-ratio", bomb(96 << 20, "--max-layer-ratio", "10"),
         (": layer sha256:", "more than 10 times its compressed size", "--max-layer-ratio")),
    Case("bomb-zstd-default-limits", bomb(256 << 20, zstd=True),
         (": layer sha256:", "more than 1000 times its compressed size")),
    Case("bomb-zstd-sbom", bomb_for("sbom"), ("more than 1000 times its compressed size",)),
    Case("bomb-zstd-run", bomb_for("run"), ("more than 1000 times its compressed size",)),
    # corrupt content
    Case("truncated-gzip", build_layout(truncated_gzip_layout), ("corrupt layer blob",)),
    Case("garbage-gzip", build_layout(garbage_gzip_layout), ("corrupt layer blob",)),
    Case("not-gzip", build_layout(lambda: Layout([b"\x1f\x8b" + bytes(100)], diff_ids=[sha256(b"x")])),
         ("corrupt layer blob",)),
    Case("truncated-elf", build_from(BASE + [("file", "usr/bin/broken", ELF_HEAD, 0o755)],
                                     paths="[/usr/bin/broken]"), ("/usr/bin/broken",)),
    Case("elf-phdrs-outside", elf_case(phoff=1 << 40), ("/usr/bin/broken",)),
    Case("elf-phdrs-past-end", elf_case(phoff=len(CAT) - 8), ("/usr/bin/broken",)),
    Case("elf-dynamic-outside", elf_case(dynamic_offset=len(CAT) + 4096), ("/usr/bin/broken",)),
    Case("corrupt-rpm", lambda inputs, work: (
        write_spec(inputs / "spec", "packages: [./broken.rpm]\n")
        and (inputs / "spec" / "broken.rpm").write_bytes(b"\xed\xab\xee\xdb" + os.urandom(300))
        and ["build", "-c", str(inputs / "spec"), "-o", str(work / "img")]), ("broken.rpm",)),
    Case("rpm-truncated-payload", rpm_case(truncate_payload), ("x.rpm",)),
    Case("rpm-cpio-member-not-in-header", rpm_case(rename_cpio_member), ("x.rpm", "is not in the header")),
    Case("rpm-cpio-dir-with-data", rpm_case(inflate_cpio_dir),
         ("x.rpm", "/usr/share/hostile: payload has 8388608 bytes, the header says")),
    # YAML bombs in the spec
    Case("yaml-billion-laughs", spec_case(corpus.billion_laughs()), ("microimage.yaml",)),
    Case("yaml-billion-laughs-in-paths", spec_case(
        "paths:\n" + "".join(f"  - &a{n} [{', '.join([f'*a{n - 1}'] * 10) if n else 'lol'}]\n"
                              for n in range(12))),
        ("microimage.yaml",)),
    Case("yaml-deep-nesting", spec_case("paths: " + "[" * 200_000 + "]" * 200_000 + "\n"),
         ("microimage.yaml", "nesting depth")),
]


def run_case(case: Case, tmp_path: Path) -> subprocess.CompletedProcess:
    inputs, work = tmp_path / "in", tmp_path / "work"
    (work / "canary").mkdir(parents=True)
    (work / "canary" / "keep").write_bytes(CANARY["canary/keep"])  # type: ignore[arg-type]
    args = case.make(inputs, work)
    proc = run_cli(*args, "--cache-dir", str(tmp_path / "cache")) if args[0] == "build" else run_cli(*args)
    return proc


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_input_is_refused_in_one_line(case: Case, tmp_path: Path) -> None:
    proc = run_case(case, tmp_path)
    assert_one_line_error(proc, *case.words)
    assert corpus.listing(tmp_path / "work") == CANARY


def test_the_corpus_is_counted() -> None:
    assert len(CASES) == len({c.name for c in CASES}) >= 45


def test_an_unselected_member_named_in_no_utf8_does_not_break_a_build(tmp_path: Path) -> None:
    image = image_of(tmp_path / "image", BASE + [("file", NOT_UTF8, b"x", 0o755)])
    spec = write_spec(tmp_path / "spec", f"from: {image}\narch: amd64\npaths: [/usr/bin/hello]\n")
    proc = run_cli("build", "-c", str(spec), "-o", str(tmp_path / "img"),
                   "--cache-dir", str(tmp_path / "cache"))
    assert proc.returncode == 0, proc.stderr
    listed = run_cli("inspect", str(tmp_path / "img"))
    assert "/usr/bin/hello" in listed.stdout and "llo" not in listed.stdout.replace("/usr/bin/hello", "")


def test_a_bomb_leaves_nothing_in_the_cache_but_the_good_layer(tmp_path: Path) -> None:
    proc = run_case(Case("bomb", bomb(64 << 20, "--max-layer-size", "16M")), tmp_path)
    assert_one_line_error(proc, "expands past the limit of 16 MiB")
    base = sha256(tar_bytes(BASE)).split(":")[1]
    assert sorted(os.listdir(tmp_path / "cache" / "layertars")) == [base + ".json"]


def test_a_raised_limit_lets_a_big_layer_through(tmp_path: Path) -> None:
    proc = run_case(Case("big", bomb(64 << 20, "--max-layer-size", "65M", "--max-layer-ratio", "2000")),
                    tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "work" / "img" / "index.json").is_file()


def test_the_layer_stream_returns_nothing_past_the_limit() -> None:
    import io

    from microcontainer_tool.errors import LayerLimitError
    from microcontainer_tool.oci.layer import LayerLimits, open_layer_stream

    blob, _ = zeros_layer("zeros", 8 << 20)
    stream = open_layer_stream(io.BytesIO(blob), LayerLimits(max_size=3 << 20, max_ratio=10**9), "L")
    returned = 0
    with pytest.raises(LayerLimitError, match="^L: expands past the limit of 3 MiB"):
        while chunk := stream.read(100_000):
            returned += len(chunk)
    assert 0 < returned <= 3 << 20


@pytest.mark.parametrize(("text", "size"), [("16G", 16 << 30), ("16GiB", 16 << 30), ("512m", 512 << 20),
                                            ("1000", 1000), ("4KB", 4096)])
def test_sizes_are_parsed(text: str, size: int) -> None:
    from microcontainer_tool.oci.layer import parse_size

    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "0", "-1", "1.5G", "G", "16X", "lots"])
def test_bad_sizes_are_refused_by_the_cli(text: str, tmp_path: Path) -> None:
    proc = run_cli("build", "-c", str(tmp_path), "-o", str(tmp_path / "img"), f"--max-layer-size={text}")
    assert proc.returncode == 2 and "--max-layer-size" in proc.stderr and "Traceback" not in proc.stderr


def _output_layer_members(layout: Path) -> list:
    import tarfile

    blobs = layout / "blobs" / "sha256"
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads((blobs / index["manifests"][0]["digest"].split(":")[1]).read_text())
    with tarfile.open(blobs / manifest["layers"][-1]["digest"].split(":")[1], "r:*") as tar:
        return tar.getmembers()


def test_setuid_bits_and_capability_xattrs_of_a_source_image_are_dropped(tmp_path: Path) -> None:
    capability = "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
    xattrs = {"SCHILY.xattr.security.capability": capability, "SCHILY.xattr.user.note": "x"}
    layer = BASE + [("dir", "usr/shared", 0o1777),
                    ("file", "usr/bin/suid", b"#!/bin/sh\n", 0o6755, xattrs),
                    ("file", "usr/bin/sgid", b"#!/bin/sh\n", 0o2755),
                    ("file", "usr/bin/capped", b"#!/bin/sh\n", 0o755, xattrs)]
    source = corpus.tar_bytes(layer)
    assert b"security.capability" in source and b"0006755" in source  # the input really carries them
    image = image_of(tmp_path / "image", layer)
    spec = write_spec(tmp_path / "spec", f"from: {image}\narch: amd64\n"
                      "paths: [/usr/bin/suid, /usr/bin/sgid, /usr/bin/capped, /usr/shared]\n")
    proc = run_cli("build", "-c", str(spec), "-o", str(tmp_path / "img"),
                   "--cache-dir", str(tmp_path / "cache"))
    assert proc.returncode == 0, proc.stderr
    members = {m.name: m for m in _output_layer_members(tmp_path / "img")}
    assert {"usr/bin/suid", "usr/bin/sgid", "usr/bin/capped", "usr/shared"} <= set(members)
    for name in ("usr/bin/suid", "usr/bin/sgid", "usr/bin/capped"):
        assert members[name].mode & 0o7000 == 0, (name, oct(members[name].mode))
    assert members["usr/shared"].mode == 0o755, oct(members["usr/shared"].mode)  # (only /tmp, /run: 1777)
    assert not [(m.name, key) for m in members.values() for key in m.pax_headers if "xattr" in key.lower()]


@pytest.mark.parametrize(("variables", "words"), [
    ("MCT_MAX_LAYER_SIZE='16M'", ("expands past the limit of 16 MiB", "MCT_MAX_LAYER_SIZE")),
    ("MCT_MAX_LAYER_RATIO=10", ("more than 10 times its compressed size",)),
    ("MCT_MAX_LAYER_SIZE='lots'", ("MCT_MAX_LAYER_SIZE", "'lots' is not a size")),
    ("MCT_MAX_LAYER_RATIO='0'", ("MCT_MAX_LAYER_RATIO='0' is not a positive whole number",)),
], ids=["size", "ratio", "bad-size", "bad-ratio"])
def test_scons_variables_set_the_layer_limits(tmp_path: Path, variables: str, words: tuple[str, ...]) -> None:
    from test_scons import TOOL_DIR, assert_scons_error, scons

    blob, diff_id = zeros_layer("usr/bin/zeros", 96 << 20)
    layout = Layout([base_layer(), blob], diff_ids=[sha256(tar_bytes(BASE)), diff_id])
    image = layout.write(tmp_path / "image")
    project = tmp_path / "project"
    project.mkdir()
    (project / "SConstruct").write_text(
        f"env = Environment(tools=['default', 'microimage'], toolpath=[{str(TOOL_DIR)!r}], {variables})\n"
        f"env.MicroImage('img', FROM={str(image)!r}, ARCH='amd64', PATHS=['/usr/bin/hello'])\n")
    assert_scons_error(scons(project), *words)
    assert not (project / "img.tar").exists()
