#!/usr/bin/env python3
"""Microize curl out of a fat image vs `umoci unpack` of the same image, in the same run.

Makes a fat OCI image from host files (about ``--size-mb`` MB of gzip layers:
libraries, programs, /usr/share, and a small top layer with a whiteout), then times, each
in its own process (wall time and peak RSS):

* ``umoci unpack`` of the fat image (what a user would do first to use it as a sysroot);
* microize, cold cache: ImageRoot.open (decompress + index every layer once),
  assemble curl's spec (materializing only the files it needs), write the
  micro image;
* microize, warm cache: the same with the layer indexes and curl's files already cached;
* microize, warm cache, new program: ``--other`` (default ``/usr/bin/cat``) from the
  same warm cache: its files were not taken out yet, so the layer holding them is
  decompressed again (verified) once.

The size of the cache kept is measured after the warm run of ``--program``.

Peak RSS is what GNU ``/usr/bin/time`` reports for the measured process.
Prints a table of medians over ``--rounds`` alternating rounds.

Usage: python bench/microize.py [--rounds N] [--size-mb 60] [--program /usr/bin/curl] [--other /usr/bin/cat]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from typing import Any, BinaryIO, cast

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from microcontainer_tool.oci import model as oci  # noqa: E402
from microcontainer_tool.oci.compression import media_type_suffix, open_compressor  # noqa: E402
from microcontainer_tool.oci.layer import HashingWriter  # noqa: E402
from microcontainer_tool.oci.store import LayoutStore  # noqa: E402

sys.path.insert(0, os.path.join(REPO, "tests"))
from hostfiles import ldd_files, with_links  # noqa: E402  (the tests' ldd oracle)

LIBDIR = "/usr/lib/x86_64-linux-gnu"
MAX_BULK_FILE = 8 << 20
"""Larger host files are left out of the bulk, so layers end near their budget."""


def walk(top: str) -> list[str]:
    """Directories, files and symlinks under ``top`` (sorted, parents first), no other types."""
    out = []
    for directory, dirs, files in os.walk(top):
        dirs.sort()
        out.append(directory)
        for name in sorted(files):
            path = os.path.join(directory, name)
            if os.path.islink(path) or os.path.isfile(path):
                out.append(path)
    return out


class _Counter:
    """A sink that counts compressed bytes on their way to a file."""

    def __init__(self, sink: BinaryIO) -> None:
        self.sink = sink
        self.size = 0

    def write(self, data: bytes) -> int:
        self.size += len(data)
        return self.sink.write(data)


def host_layer(store: LayoutStore, work: str, paths: list[str], extra: list[str],
               budget: int) -> tuple[oci.Descriptor, str]:
    """A gzip layer of ``paths``, then of ``extra`` files until ``budget`` compressed bytes."""
    fd, tmp = tempfile.mkstemp(dir=work)
    with os.fdopen(fd, "wb") as raw:
        counter = _Counter(raw)
        writer = open_compressor("gzip", cast(BinaryIO, counter))
        diff = HashingWriter(cast(BinaryIO, writer))
        with tarfile.open(fileobj=cast(BinaryIO, diff), mode="w|", format=tarfile.PAX_FORMAT) as tar:
            for path in paths:
                tar.add(path, arcname="." + path, recursive=False)
            for path in extra:
                if counter.size >= budget:
                    break
                if os.path.isdir(path) or os.path.getsize(path) <= MAX_BULK_FILE:
                    tar.add(path, arcname="." + path, recursive=False)
        writer.close()
    desc = store.put_file(tmp, oci.MEDIA_TYPE_LAYER + media_type_suffix("gzip"))
    os.unlink(tmp)
    return desc, diff.digest


def top_layer(store: LayoutStore) -> tuple[oci.Descriptor, str]:
    """A small layer that deletes and replaces things, as later Dockerfile steps do."""
    import io

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in (("usr/bin/.wh.ls", b""), ("etc/motd", b"microize bench\n")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    blob = io.BytesIO()
    with open_compressor("gzip", blob) as writer:
        writer.write(raw.getvalue())
    desc = store.put_blob(blob.getvalue(), oci.MEDIA_TYPE_LAYER + media_type_suffix("gzip"))
    return desc, oci.sha256_digest(raw.getvalue())


def make_fat_image(out: str, work: str, program: str, size_mb: int) -> tuple[int, int, int]:
    """Write the fat image; returns (layers, compressed bytes, uncompressed bytes)."""
    needed: dict[str, None] = {}
    for path in ["/etc/ld.so.cache", "/etc/ld.so.conf",
                 *sorted(os.path.join("/etc/ld.so.conf.d", n) for n in os.listdir("/etc/ld.so.conf.d")),
                 *ldd_files(program)[1:]]:
        needed.update(dict.fromkeys(with_links(path)))
    links = [f"{LIBDIR}/{n}" for n in sorted(os.listdir(LIBDIR)) if os.path.islink(f"{LIBDIR}/{n}")]
    needed.update(dict.fromkeys(links))
    libs = [p for p in walk(LIBDIR) if p not in needed]
    programs = [p for p in with_links(program) if p not in needed]
    bins = [p for p in walk("/usr/bin") if p not in programs]
    store = LayoutStore(out)
    budget = (size_mb << 20) * 9 // 10  # the compressor's buffers overshoot each layer a little
    layers = [host_layer(store, work, [p for p in needed if os.path.lexists(p)], libs, budget // 2),
              host_layer(store, work, programs, bins, budget // 4),
              host_layer(store, work, [], list(walk("/usr/share")), budget // 4),
              top_layer(store)]
    config = oci.image_config(architecture="amd64", diff_ids=[d for _, d in layers],
                              env=["PATH=/usr/local/bin:/usr/bin:/bin"])
    config_desc = store.put_json(config, oci.MEDIA_TYPE_CONFIG)
    manifest_desc = store.put_json(oci.manifest(config_desc, [d for d, _ in layers]), oci.MEDIA_TYPE_MANIFEST)
    store.write_index([manifest_desc.with_annotations({oci.ANNOTATION_REF_NAME: "latest"})])
    uncompressed = 0
    for desc, _ in layers:
        with open(store.blob_path(desc.digest), "rb") as handle:
            from microcontainer_tool.oci.layer import open_layer_stream

            stream = open_layer_stream(handle)
            while chunk := stream.read(1 << 20):
                uncompressed += len(chunk)
    return len(layers), sum(d.size for d, _ in layers), uncompressed


def measure(argv: list[str], log: str) -> tuple[float, int]:
    """Run ``argv`` as a child; (wall seconds, peak RSS bytes) of that child alone.

    The peak RSS comes from GNU ``/usr/bin/time``: a process spawned straight
    from this one would report this (large) process's RSS, which Linux carries
    into the child's ``ru_maxrss`` when it execs.
    """
    report = log + ".time"
    command = ["/usr/bin/time", "-f", "%M", "-o", report, *argv]
    env = {**os.environ, "PYTHONPATH": REPO}
    start = time.perf_counter()
    with open(log, "wb") as out, open(log + ".err", "wb") as err:
        proc = subprocess.run(command, stdout=out, stderr=err, env=env)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        with open(log + ".err") as handle:
            raise SystemExit(f"{' '.join(argv)} failed: {handle.read()[-2000:]}")
    with open(report) as handle:
        return elapsed, int(handle.read().split()[-1]) * 1024


def child(image: str, cache: str, out: str, program: str) -> None:
    """One microize: open (index), assemble (materialize), write the micro image; JSON stats on stdout."""
    start = time.perf_counter()
    from microcontainer_tool.assembly.assemble import assemble
    from microcontainer_tool.build import config_for
    from microcontainer_tool.oci.layout import write_tree_image
    from microcontainer_tool.sources.image.root import ImageRoot
    from microcontainer_tool.spec.imagespec import ImageSpec

    imported = time.perf_counter()
    root = ImageRoot.open(image, cache)
    opened = time.perf_counter()
    spec = ImageSpec(base_dir=os.path.dirname(out), paths=(program,), entrypoint=(program,))
    assembly = assemble(spec, sysroot=root)
    assembled = time.perf_counter()
    result = write_tree_image(out, "oci", assembly.tree, "gzip", 0,
                              lambda layer: config_for(spec, assembly, layer, 0), "latest", "micro")
    done = time.perf_counter()
    json.dump({"import": imported - start, "open": opened - imported, "assemble": assembled - opened,
               "write": done - assembled, "entries": root.path_count, "files": len(assembly.tree),
               "materialized": root.files_materialized, "materialized_bytes": root.bytes_materialized,
               "reused": sum(layer.reused for layer in root.layers), "layer_bytes": result.layer.size,
               "decompressed": getattr(root, "layers_decompressed", -1)},
              sys.stdout)


def main() -> int:
    from benchsetup import compile_package  # bench/ is sys.path[0] when run as a script

    compile_package()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size-mb", type=int, default=60, help="compressed size of the fat image")
    parser.add_argument("--program", default="/usr/bin/curl")
    parser.add_argument("--other", default="/usr/bin/cat", help="a program built from the warm cache")
    parser.add_argument("--child", nargs=3, metavar=("IMAGE", "CACHE", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        image, cache, out = args.child
        child(image, cache, out, args.program)
        return 0
    if not shutil.which("umoci") or not os.path.exists("/usr/bin/time"):
        print("umoci and GNU time are needed (apt-get install umoci time)", file=sys.stderr)
        return 1
    rows: dict[str, list[tuple[float, int]]] = {"umoci unpack": [], "microize, cold cache": [],
                                                "microize, warm cache": [], "microize, warm, new program": []}
    stats: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="microize-bench.") as work:
        image = os.path.join(work, "fat")
        start = time.perf_counter()
        layers, compressed, uncompressed = make_fat_image(image, work, args.program, args.size_mb)
        made = time.perf_counter() - start
        me = [sys.executable, os.path.abspath(__file__), "--program", args.program, "--child"]
        other = [sys.executable, os.path.abspath(__file__), "--program", args.other, "--child"]
        kept: dict[str, int] = {}
        for number in range(args.rounds + 1):  # round 0 warms the page cache and is not counted
            bundle = os.path.join(work, "bundle")
            shutil.rmtree(bundle, ignore_errors=True)
            cache = os.path.join(work, "cache")
            shutil.rmtree(cache, ignore_errors=True)
            runs = [
                ("umoci unpack", ["umoci", "unpack", "--image", f"{image}:latest", bundle]),
                ("microize, cold cache", [*me, image, cache, os.path.join(work, f"micro-cold-{number}")]),
                ("microize, warm cache", [*me, image, cache, os.path.join(work, f"micro-warm-{number}")]),
                ("microize, warm, new program",
                 [*other, image, cache, os.path.join(work, f"micro-new-{number}")]),
            ]
            for name, argv in runs:
                log = os.path.join(work, "log")
                result = measure(argv, log)
                if number:
                    rows[name].append(result)
                    if name != "umoci unpack":
                        with open(log) as handle:
                            stats[name] = json.load(handle)
                if name == "microize, warm cache":
                    kept = {part: tree_bytes(os.path.join(cache, part)) for part in os.listdir(cache)}
            shutil.rmtree(bundle, ignore_errors=True)
    print(f"fat image: {layers} gzip layers, {compressed / 1e6:.1f} MB compressed,"
          f" {uncompressed / 1e6:.1f} MB uncompressed, {stats['microize, cold cache']['entries']} paths"
          f" (made in {made:.1f} s); program {args.program}; {args.rounds} rounds, medians")
    print(f"{'run':<30}{'wall s':>9}{'min':>8}{'max':>8}{'peak RSS MB':>13}  phases (s): open/assemble/write")
    for name, results in rows.items():
        times = [t for t, _ in results]
        rss = max(r for _, r in results)
        phases = ""
        if name in stats:
            s = stats[name]
            phases = (f"  {s['open']:.2f}/{s['assemble']:.2f}/{s['write']:.2f}"
                      f" ({s['materialized']} files, {s['materialized_bytes'] / 1e6:.1f} MB copied out,"
                      f" {s['decompressed']} layers decompressed)")
        print(f"{name:<30}{statistics.median(times):>9.3f}{min(times):>8.3f}{max(times):>8.3f}"
              f"{rss / 1e6:>13.1f}{phases}")
    base = statistics.median(t for t, _ in rows["umoci unpack"])
    for name in ("microize, cold cache", "microize, warm cache", "microize, warm, new program"):
        print(f"{'ratio ' + name.split(', ', 1)[1] + '/unpack':<30}"
              f"{statistics.median(t for t, _ in rows[name]) / base:>9.3f}")
    total = sum(kept.values())
    print(f"cache kept: {total / 1e6:.1f} MB ("
          + ", ".join(f"{part} {size / 1e6:.1f} MB" for part, size in sorted(kept.items()))
          + f") = {total / compressed:.2f}x the compressed layers (target: <= 1.00x:"
          f" {'met' if total <= compressed else 'NOT met'})")
    return 0


def tree_bytes(top: str) -> int:
    """Bytes of the regular files under ``top`` (each inode once)."""
    seen, total = set(), 0
    for dirpath, _dirs, files in os.walk(top):
        for name in files:
            st = os.lstat(os.path.join(dirpath, name))
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total


if __name__ == "__main__":
    sys.exit(main())
