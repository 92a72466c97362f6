"""Tests of the pinned codecs: chunking independence, validity, pinned bytes."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import random
import shutil
import subprocess
import zlib

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


def test_gzip_roundtrip_and_header() -> None:
    out = compress_bytes("gzip", DATA)
    assert out[:10] == b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # no name, mtime 0, OS unknown
    assert gzip.decompress(out) == DATA
    assert zlib.decompress(out, 31) == DATA
    assert len(out) < len(DATA)


def test_gzip_roundtrip_with_host_gzip_tool(tmp_path: os.PathLike[str]) -> None:
    if shutil.which("gzip") is None:
        pytest.skip("gzip tool not installed")
    path = os.path.join(tmp_path, "x.gz")
    with open(path, "wb") as handle:
        handle.write(compress_bytes("gzip", DATA))
    result = subprocess.run(["gzip", "-dc", path], capture_output=True, check=True)
    assert result.stdout == DATA


PINNED_INPUT = b"".join(b"%d microcontainer\n" % i for i in range(300000))
PINNED = {
    "gzip": "d3fd16dd55cfec674900e48a2a84d473f9e8d1d340d1030f16728ca1ce497dc8",
    "zstd": "d108a61b8c21fa2558196ba487e24aaaeed3eaf48285f0136a3560d7c137b4ad",
}


@pytest.mark.parametrize("kind", ["gzip", "zstd"])
def test_pinned_bytes(kind: str) -> None:
    """The codec output is part of the image identity: it must never change silently.

    A failure here means the isal/zstandard pin or the codec mode changed, which
    changes every layer digest.
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
    assert gzip.decompress(reference) == big
