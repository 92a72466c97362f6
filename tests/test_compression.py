"""Tests of the pinned codecs: chunking independence, validity, pinned bytes, CPU independence."""

from __future__ import annotations

import glob
import gzip
import hashlib
import io
import os
import platform
import random
import shutil
import subprocess
import sys
import sysconfig
import zlib
from pathlib import Path

import pytest
import zstandard

from microcontainer_tool.errors import LayoutError
from microcontainer_tool.oci import compression
from microcontainer_tool.oci.compression import (
    BLOCK_SIZE,
    COMPRESSIONS,
    compress_bytes,
    media_type_suffix,
    open_compressor,
)


def _sample(size: int = 3 * BLOCK_SIZE + 12345) -> bytes:
    rng = random.Random(1234)
    words = [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 12))) for _ in range(500)]
    out = bytearray()
    while len(out) < size:
        out += rng.choice(words)
        if rng.random() < 0.05:
            out += rng.randbytes(200)
    return bytes(out[:size])


DATA = _sample()


def _chunked(kind: str, data: bytes, chunk: int) -> bytes:
    sink = io.BytesIO()
    writer = open_compressor(kind, sink)
    view = memoryview(data)
    for start in range(0, len(data), chunk):
        writer.write(view[start:start + chunk])
    writer.close()
    return sink.getvalue()


@pytest.mark.parametrize("kind", COMPRESSIONS)
def test_output_independent_of_write_sizes(kind: str) -> None:
    data = DATA[: BLOCK_SIZE + 70001] if kind != "none" else DATA
    reference = _chunked(kind, data, 64 * 1024)
    assert _chunked(kind, data, 7) == reference
    if kind != "none":
        assert _chunked(kind, data, 1) == reference
    assert _chunked(kind, data, len(data)) == reference
    assert _chunked(kind, data, BLOCK_SIZE) == reference
    assert _chunked(kind, data, BLOCK_SIZE + 1) == reference
    assert compress_bytes(kind, data) == reference


def test_gzip_one_byte_writes_over_block_boundary() -> None:
    data = DATA[: BLOCK_SIZE + 4099]
    reference = _chunked("gzip", data, 65536)
    assert _chunked("gzip", data, 1) == reference
    assert _chunked("gzip", data, 3 * BLOCK_SIZE) == reference


_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # no name, mtime 0, XFL 0, OS unknown


def _zlib_members(data: bytes) -> tuple[bytes, int]:
    """Decompress a multi-member gzip stream with plain ``zlib``; the bytes and the member count.

    One ``decompressobj(wbits=31)`` stops after the first member; a reader
    must start a new one on its ``unused_data`` until nothing is left.
    """
    out, members = bytearray(), 0
    while data:
        assert data[:10] == _GZIP_HEADER
        obj = zlib.decompressobj(wbits=31)
        out += obj.decompress(data)
        assert obj.eof
        members += 1
        data = obj.unused_data
    return bytes(out), members


def test_gzip_roundtrip_and_header() -> None:
    out = compress_bytes("gzip", DATA)
    assert out[:10] == _GZIP_HEADER
    assert gzip.decompress(out) == DATA
    assert _zlib_members(out) == (DATA, -(-len(DATA) // BLOCK_SIZE))  # one member per 1 MiB block
    assert len(out) < len(DATA)


def test_gzip_members_are_independent_blocks() -> None:
    out = compress_bytes("gzip", DATA)
    first = zlib.decompressobj(wbits=31)
    assert first.decompress(out) == DATA[:BLOCK_SIZE]
    assert first.unused_data == compress_bytes("gzip", DATA[BLOCK_SIZE:])


def test_gzip_roundtrip_with_host_gzip_tool(tmp_path: os.PathLike[str]) -> None:
    if shutil.which("gzip") is None:
        pytest.skip("gzip tool not installed")
    path = os.path.join(tmp_path, "x.gz")
    with open(path, "wb") as handle:
        handle.write(compress_bytes("gzip", DATA))
    result = subprocess.run(["gzip", "-dc", path], capture_output=True, check=True)
    assert result.stdout == DATA
    with open(path, "wb") as handle:
        handle.write(compress_bytes("gzip", b""))
    result = subprocess.run(["gzip", "-dc", path], capture_output=True, check=True)
    assert result.stdout == b""


PINNED_INPUT = b"".join(b"%d microcontainer\n" % i for i in range(300000))
PINNED = {
    "gzip": "99ebe19aae5dd1aa3128cc1f31757d462ca47187ba363bea183808851ee933a6",
    "gzip-fast": "f9a2a856103e2999a4a1d1bff7d5f52b7c1db525bee97807a2e21d6559d031e6",
    "zstd": "d108a61b8c21fa2558196ba487e24aaaeed3eaf48285f0136a3560d7c137b4ad",
}


@pytest.mark.parametrize("kind", ["gzip", "gzip-fast", "zstd"])
def test_pinned_bytes(kind: str) -> None:
    """The codec output is part of the image identity: it must never change silently.

    A failure here means the deflate/zstandard pin or the codec mode changed, which
    changes every layer digest (bump ``FORMAT_VERSION``).
    """
    assert hashlib.sha256(compress_bytes(kind, PINNED_INPUT)).hexdigest() == PINNED[kind]


def test_zstd_roundtrip_single_frame_with_checksum() -> None:
    out = compress_bytes("zstd", DATA)
    assert out[:4] == b"\x28\xb5\x2f\xfd"
    params = zstandard.get_frame_parameters(out)
    assert params.has_checksum
    assert params.content_size == zstandard.CONTENTSIZE_UNKNOWN
    assert zstandard.ZstdDecompressor().stream_reader(io.BytesIO(out)).read() == DATA


def test_none_is_identity() -> None:
    assert compress_bytes("none", DATA) == DATA


def test_empty_input_is_valid() -> None:
    assert gzip.decompress(compress_bytes("gzip", b"")) == b""
    assert _zlib_members(compress_bytes("gzip", b"")) == (b"", 1)
    assert zstandard.ZstdDecompressor().stream_reader(io.BytesIO(compress_bytes("zstd", b""))).read() == b""


def test_close_leaves_sink_open_and_is_idempotent() -> None:
    sink = io.BytesIO()
    writer = open_compressor("gzip", sink)
    writer.write(b"abc")
    writer.close()
    writer.close()
    assert not sink.closed
    assert gzip.decompress(sink.getvalue()) == b"abc"
    with pytest.raises(ValueError):
        writer.write(b"more")


def test_gzip_fast_is_gzip_at_a_lower_level() -> None:
    """``gzip-fast``: the same multi-member gzip, read by any gzip reader, larger than ``gzip``."""
    fast, default = compress_bytes("gzip-fast", PINNED_INPUT), compress_bytes("gzip", PINNED_INPUT)
    assert gzip.decompress(fast) == PINNED_INPUT
    assert fast[:10] == default[:10]  # our fixed member header
    assert len(default) < len(fast)
    assert media_type_suffix("gzip-fast") == media_type_suffix("gzip") == "+gzip"


def test_media_type_suffixes_and_unknown_codec() -> None:
    assert media_type_suffix("gzip") == "+gzip"
    assert media_type_suffix("zstd") == "+zstd"
    assert media_type_suffix("none") == ""
    with pytest.raises(LayoutError) as info:
        open_compressor("bzip2", io.BytesIO())
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_gzip_output_does_not_depend_on_thread_count(monkeypatch, threads):
    big = DATA
    reference = compress_bytes("gzip", big)
    monkeypatch.setattr(compression, "GZIP_THREADS", threads)
    assert compress_bytes("gzip", big) == reference
    assert _chunked("gzip", big, 100_000) == reference
    assert gzip.decompress(reference) == big


def _real_sample(size: int = 4 << 20) -> bytes:
    """~``size`` bytes of real data, the same on every call: ELF libraries, then Python sources."""
    out = bytearray()
    for directory in ("/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib"):
        for path in sorted(glob.glob(os.path.join(directory, "*.so*"))):
            if len(out) >= size * 3 // 5:
                break
            if os.path.isfile(path) and not os.path.islink(path):
                with open(path, "rb") as handle:
                    out += handle.read(512 * 1024)
    del out[size * 3 // 5:]
    for path in sorted(glob.glob(os.path.join(sysconfig.get_paths()["stdlib"], "*.py"))):
        if len(out) >= size:
            break
        with open(path, "rb") as handle:
            out += handle.read()
    while len(out) < size:  # a host short of files: pad deterministically
        out += DATA
    return bytes(out[:size])


_CPU_PROBE = """
import hashlib, sys
from isal import isal_zlib
from microcontainer_tool.oci import compression
data = open(sys.argv[1], "rb").read()
print(hashlib.sha256(compression.compress_bytes("gzip", data)).hexdigest())
print(hashlib.sha256(compression.compress_bytes("gzip-fast", data)).hexdigest())
for level in (2, 3):
    print(hashlib.sha256(isal_zlib.compress(data, level)).hexdigest())
"""
#: QEMU CPU models whose SIMD paths differ: none beyond SSE2 (qemu64, QEMU's
#: default), SSE4.2 only, AVX2 (Intel), and everything TCG has (AVX2,
#: AMD-like); the host adds its own (AVX-512 here).
CPU_MODELS = ("qemu64", "Nehalem", "Haswell-v4", "max")


def test_gzip_bytes_do_not_depend_on_the_cpu(tmp_path: Path) -> None:
    """The default gzip gives the same bytes natively and as other x86-64 CPUs (under QEMU).

    libdeflate's CPU-specific code (checksums, table set-up) does not shape
    the bitstream. ISA-L, which does pick its deflate code by CPU, is run too
    as a witness that the models really take different paths: its level 2
    differs between qemu64 (no SSE4.2) and the others, its level 3 between
    SSE4.2 and AVX2 models.
    """
    qemu = shutil.which("qemu-x86_64-static")
    if qemu is None or platform.machine() != "x86_64":
        pytest.skip("needs an x86-64 host and qemu-x86_64-static (apt-get install qemu-user-static)")
    # The venv's interpreter path (a symlink): run as is, so its pyvenv.cfg is
    # found; its target must be a native ELF program for QEMU to run it.
    with open(os.path.realpath(sys.executable), "rb") as handle:
        if handle.read(4) != b"\x7fELF":
            pytest.skip(f"{sys.executable} is not an ELF program")
    sample = tmp_path / "sample"
    sample.write_bytes(_real_sample())
    data = sample.read_bytes()
    assert gzip.decompress(compress_bytes("gzip", data)) == data
    default = hashlib.sha256(compress_bytes("gzip", data)).hexdigest()
    fast = hashlib.sha256(compress_bytes("gzip-fast", data)).hexdigest()
    outputs = {"native": default}
    fast_outputs = {"native": fast}
    isal2: dict[str, str] = {}
    isal3: dict[str, str] = {}
    top = Path(compression.__file__).resolve().parents[2]
    for model in CPU_MODELS:
        proc = subprocess.run([qemu, "-cpu", model, sys.executable, "-c", _CPU_PROBE, str(sample)],
                              capture_output=True, text=True, timeout=300, cwd=top)
        assert proc.returncode == 0, proc.stderr
        outputs[model], fast_outputs[model], isal2[model], isal3[model] = proc.stdout.split()
    assert set(outputs.values()) == {default}, outputs
    assert set(fast_outputs.values()) == {fast} and fast != default, fast_outputs
    assert isal2["qemu64"] != isal2["Nehalem"], isal2
    assert isal3["Nehalem"] != isal3["Haswell-v4"], isal3
