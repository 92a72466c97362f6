"""The gzip workers: plain threads that end with their writer, however it ends."""

from __future__ import annotations

import gc
import gzip
import io
import os
import threading

import pytest

from microcontainer_tool.oci import compression
from microcontainer_tool.oci.compression import BLOCK_SIZE, open_compressor


def workers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("mct-gzip-")]


def wait_for_no_workers() -> None:
    for thread in workers():
        thread.join(timeout=30)
    assert workers() == []


DATA = os.urandom(BLOCK_SIZE) + bytes(3 * BLOCK_SIZE + 12345)


@pytest.fixture(autouse=True)
def two_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compression, "GZIP_THREADS", 2)
    wait_for_no_workers()


def test_workers_end_when_the_writer_closes() -> None:
    out = io.BytesIO()
    writer = open_compressor("gzip", out)
    writer.write(DATA)
    assert len(workers()) == 2  # compressing on worker threads
    writer.close()
    wait_for_no_workers()
    assert gzip.decompress(out.getvalue()) == DATA


def test_workers_end_when_the_writer_is_left_by_an_error() -> None:
    with pytest.raises(RuntimeError), open_compressor("gzip", io.BytesIO()) as writer:
        writer.write(DATA)
        assert len(workers()) == 2
        raise RuntimeError("the tar failed")
    wait_for_no_workers()


def test_workers_end_when_an_unfinished_writer_is_dropped() -> None:
    writer = open_compressor("gzip", io.BytesIO())
    writer.write(DATA)
    assert len(workers()) == 2
    del writer
    gc.collect()
    wait_for_no_workers()
