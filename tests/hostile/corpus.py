"""A generator of hostile inputs: OCI layouts, layers and specs crafted the way an attacker would.

Every file is written byte by byte here (tarfile, gzip, json), never through the
tool's own writers, so a layout can lie: a wrong digest, a wrong size, a wrong
diff_id, a truncated blob, JSON nested 200,000 levels deep.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"

DEEP_JSON = b"[" * 200_000
"""JSON nested 200,000 levels: Python's parser raises RecursionError on it."""

Member = tuple
"""("file", name, data[, mode[, pax records]]) ("dir", name[, mode]) ("symlink", name, target)
("hardlink", name, target) ("char", name, major, minor) ("block", name, major, minor) ("fifo", name)"""


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def tar_bytes(members: Iterable[Member]) -> bytes:
    """An uncompressed PAX tar of ``members`` (names taken as given: ``../``, ``/``, non-UTF-8 bytes)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT, encoding="utf-8",
                      errors="surrogateescape") as tar:
        for kind, name, *rest in members:
            info = tarfile.TarInfo(name)
            info.mtime = 1_700_000_000
            data = b""
            if kind == "file":
                data = rest[0]
                info.size = len(data)
                info.mode = rest[1] if len(rest) > 1 else 0o644
                info.pax_headers = rest[2] if len(rest) > 2 else {}
            elif kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, rest[0] if rest else 0o755
            elif kind == "symlink":
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, rest[0], 0o777
            elif kind == "hardlink":
                info.type, info.linkname, info.mode = tarfile.LNKTYPE, rest[0], 0o644
            elif kind in ("char", "block"):
                info.type = tarfile.CHRTYPE if kind == "char" else tarfile.BLKTYPE
                info.devmajor, info.devminor, info.mode = rest[0], rest[1], 0o666
            elif kind == "fifo":
                info.type, info.mode = tarfile.FIFOTYPE, 0o644
            tar.addfile(info, io.BytesIO(data) if data else None)
    return out.getvalue()


def gzip_bytes(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=9, mtime=0)


def gzip_stream(chunks: Iterable[bytes]) -> bytes:
    """Gzip of the concatenated ``chunks``, compressed piece by piece (for bombs of zeros)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    return b"".join(compressor.compress(chunk) for chunk in chunks) + compressor.flush()


def zeros_tar_chunks(name: str, size: int, chunk: int = 1 << 20) -> Iterable[bytes]:
    """A tar holding one file of ``size`` zero bytes, as chunks (never all in memory)."""
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o644, 1_700_000_000
    yield info.tobuf(tarfile.PAX_FORMAT)
    for start in range(0, size, chunk):
        yield bytes(min(chunk, size - start))
    yield bytes(-size % tarfile.BLOCKSIZE) + bytes(2 * tarfile.BLOCKSIZE)


def zeros_layer(name: str, size: int) -> tuple[bytes, str]:
    """A gzip layer of one file of ``size`` zeros (a decompression bomb) and its diff_id."""
    sha = hashlib.sha256()

    def hashed() -> Iterable[bytes]:
        for piece in zeros_tar_chunks(name, size):
            sha.update(piece)
            yield piece

    blob = gzip_stream(hashed())
    return blob, "sha256:" + sha.hexdigest()


@dataclass
class Layout:
    """An OCI layout to write, each part replaceable by raw (possibly lying) bytes.

    Attributes:
        layers: the compressed layer blobs.
        diff_ids: the config's diff_ids (default: the gunzipped layers' digests).
        config: raw config bytes (default: a valid config over ``diff_ids``).
        manifest: raw manifest bytes (default: a valid manifest).
        index: raw index.json bytes (default: a valid index).
        layer_sizes: sizes declared for the layers (default: their true sizes).
        layer_digests: digests declared for the layers (default: their true digests).
    """

    layers: list[bytes]
    diff_ids: list[str] | None = None
    config: bytes | None = None
    manifest: bytes | None = None
    index: bytes | None = None
    layer_sizes: list[int] | None = None
    layer_digests: list[str] | None = None
    extra_blobs: list[bytes] = field(default_factory=list)

    def write(self, out: Path) -> Path:
        blobs = out / "blobs" / "sha256"
        blobs.mkdir(parents=True)
        (out / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')

        def put(data: bytes) -> str:
            digest = sha256(data)
            (blobs / digest.split(":")[1]).write_bytes(data)
            return digest

        for blob in self.extra_blobs:
            put(blob)
        digests = [put(layer) for layer in self.layers]
        diff_ids = self.diff_ids
        if diff_ids is None:
            diff_ids = [sha256(gzip.decompress(layer)) for layer in self.layers]
        config = self.config if self.config is not None else json.dumps({
            "architecture": "amd64", "os": "linux", "config": {"Env": ["PATH=/usr/bin"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
        config_digest = put(config)
        sizes = self.layer_sizes or [len(layer) for layer in self.layers]
        declared = self.layer_digests or digests
        manifest = self.manifest if self.manifest is not None else json.dumps({
            "schemaVersion": 2, "mediaType": MEDIA_MANIFEST,
            "config": {"mediaType": MEDIA_CONFIG, "digest": config_digest, "size": len(config)},
            "layers": [{"mediaType": MEDIA_LAYER_GZIP, "digest": d, "size": s}
                       for d, s in zip(declared, sizes, strict=True)]}).encode()
        manifest_digest = put(manifest)
        index = self.index if self.index is not None else json.dumps({
            "schemaVersion": 2, "mediaType": MEDIA_INDEX,
            "manifests": [{"mediaType": MEDIA_MANIFEST, "digest": manifest_digest, "size": len(manifest),
                           "annotations": {"org.opencontainers.image.ref.name": "latest"}}]}).encode()
        (out / "index.json").write_bytes(index)
        return out


def image_of(out: Path, *layers: list[Member], **lies: object) -> Path:
    """Write a layout of gzip layers of ``layers`` (``lies`` as for :class:`Layout`)."""
    return Layout([gzip_bytes(tar_bytes(members)) for members in layers], **lies).write(out)  # type: ignore[arg-type]


BASE: list[Member] = [("dir", "usr"), ("dir", "usr/bin"),
                      ("file", "usr/bin/hello", b"#!/bin/sh\necho hi\n", 0o755)]
"""A harmless first layer."""


def write_spec(directory: Path, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "microimage.yaml").write_text(text)
    return directory


def billion_laughs(levels: int = 12, width: int = 10) -> str:
    """A YAML document whose aliases expand to ``width ** levels`` strings."""
    lines = ['a0: &a0 ["lol"]']
    for level in range(1, levels + 1):
        refs = ", ".join(f"*a{level - 1}" for _ in range(width))
        lines.append(f"a{level}: &a{level} [{refs}]")
    lines.append(f"paths: *a{levels}")
    return "\n".join(lines) + "\n"


def elf_with(data: bytes, *, phoff: int | None = None, dynamic_offset: int | None = None) -> bytes:
    """A 64-bit little-endian ELF file with its program header table moved to ``phoff``, or its
    PT_DYNAMIC's file offset set to ``dynamic_offset``."""
    import struct

    out = bytearray(data)
    assert out[:4] == b"\x7fELF" and out[4] == 2 and out[5] == 1
    table, = struct.unpack_from("<Q", out, 0x20)
    size, count = struct.unpack_from("<HH", out, 0x36)
    if phoff is not None:
        struct.pack_into("<Q", out, 0x20, phoff)
    if dynamic_offset is not None:
        for entry in range(table, table + size * count, size):
            if struct.unpack_from("<I", out, entry)[0] == 2:  # PT_DYNAMIC
                struct.pack_into("<Q", out, entry + 8, dynamic_offset)
                break
        else:
            raise AssertionError("no PT_DYNAMIC")
    return bytes(out)


def truncated(data: bytes, keep: float = 0.5) -> bytes:
    return data[:max(1, int(len(data) * keep))]


def listing(directory: Path) -> dict[str, bytes | None]:
    """Every path under ``directory`` with its content (``None`` for a directory)."""
    found: dict[str, bytes | None] = {}
    for dirpath, dirnames, filenames in os.walk(directory):
        for name in dirnames:
            found[os.path.relpath(os.path.join(dirpath, name), directory)] = None
        for name in filenames:
            path = os.path.join(dirpath, name)
            found[os.path.relpath(path, directory)] = Path(path).read_bytes()
    return found
