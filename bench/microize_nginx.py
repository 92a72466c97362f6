#!/usr/bin/env python3
"""Microize nginx out of a real fat image (Debian bookworm + nginx): sizes, and time vs `umoci unpack`.

The fat image is the one the tests use (``tests/fatimage.py``: debootstrap
minbase + ``apt-get install nginx``, packed with umoci; built once and cached
in ``/var/cache/microcontainer-tool-tests`` or ``$MCT_TEST_CACHE``). The micro
image is cut out of it with ``microcontainer build`` from a spec like the
test's (``/usr/sbin/nginx``, ``mime.types``, ``/var/www/html``, an nginx.conf
for a read-only root, and the ELF closure).

Prints a markdown table of sizes (compressed layers, unpacked file bytes,
regular files) and one of wall times, each a separate process, medians over
``--rounds`` alternating rounds (round 0 warms the page cache and is not
counted): ``umoci unpack`` of the fat image, and our microize build with a
cold and with a warm layer cache.

Usage (as root): .venv/bin/python bench/microize_nginx.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))

import fatimage  # noqa: E402

SPEC = """\
from: {source}
paths: [/usr/sbin/nginx, /etc/nginx/mime.types, /var/www/html]
files:
  /etc/nginx/nginx.conf: nginx.conf
user: nginx:nginx
cmd: [/usr/sbin/nginx, -e, stderr]
ports: [8080]
"""
NGINX_CONF = """\
daemon off;
pid /run/nginx.pid;
error_log stderr;
events { worker_connections 64; }
http {
    include /etc/nginx/mime.types;
    access_log off;
    client_body_temp_path /tmp/client_body;
    proxy_temp_path /tmp/proxy;
    fastcgi_temp_path /tmp/fastcgi;
    uwsgi_temp_path /tmp/uwsgi;
    scgi_temp_path /tmp/scgi;
    server { listen 127.0.0.1:8080; root /var/www/html; }
}
"""


def timed(argv: list[str]) -> float:
    """Wall seconds of one run of ``argv`` (which must succeed)."""
    env = {**os.environ, "PYTHONPATH": REPO}
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{proc.stderr[-2000:]}")
    return elapsed


def mb(size: int) -> str:
    return f"{size / 1e6:.2f} MB"


def main() -> int:
    from benchsetup import compile_package  # bench/ is sys.path[0] when run as a script

    compile_package()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    reason = fatimage.missing_reason()
    if reason:
        print(reason, file=sys.stderr)
        return 1
    start = time.perf_counter()
    fat = fatimage.fat_nginx_image(log=lambda *a: print(*a, file=sys.stderr))
    got_fat = time.perf_counter() - start
    build = [sys.executable, "-m", "microcontainer_tool", "build", "-q"]
    times: dict[str, list[float]] = {"umoci unpack (fat)": [], "microize, cold cache": [],
                                     "microize, warm cache": []}
    with tempfile.TemporaryDirectory(prefix="microize-nginx-bench.") as work:
        spec_dir = os.path.join(work, "spec")
        os.mkdir(spec_dir)
        with open(os.path.join(spec_dir, "microimage.yaml"), "w") as handle:
            handle.write(SPEC.format(source=fat.ref))
        with open(os.path.join(spec_dir, "nginx.conf"), "w") as handle:
            handle.write(NGINX_CONF)
        micro = os.path.join(work, "micro")
        for number in range(args.rounds + 1):
            bundle = os.path.join(work, "bundle")
            cache = os.path.join(work, "cache")
            shutil.rmtree(cache, ignore_errors=True)
            runs = [
                ("umoci unpack (fat)", ["umoci", "unpack", "--image", fat.ref, bundle]),
                ("microize, cold cache", [*build, "-c", spec_dir, "-o", micro, "--cache-dir", cache]),
                ("microize, warm cache", [*build, "-c", spec_dir, "-o", micro, "--cache-dir", cache]),
            ]
            for name, argv in runs:
                elapsed = timed(argv)
                if number:
                    times[name].append(elapsed)
            shutil.rmtree(bundle, ignore_errors=True)
        small = fatimage.layer_stats(micro, "latest")
    big = fat.facts
    print(f"Fat image: Debian {big['suite']} minbase + {big['package']} {big['nginx_version']}"
          f" (built in {big['build_seconds']} s on first use, cached in {fat.layout.parent};"
          f" {got_fat:.1f} s to get it now). {args.rounds} rounds, medians.\n")
    print("| image | compressed layers | unpacked (file bytes) | files |")
    print("|---|---:|---:|---:|")
    print(f"| fat | {mb(big['layer_bytes'])} | {mb(big['file_bytes'])} | {big['files']} |")
    print(f"| micro | {mb(small['layer_bytes'])} | {mb(small['file_bytes'])} | {small['files']} |")
    print(f"| fat / micro | {big['layer_bytes'] / small['layer_bytes']:.1f}x"
          f" | {big['file_bytes'] / small['file_bytes']:.1f}x | {big['files'] / small['files']:.1f}x |")
    print()
    base = statistics.median(times["umoci unpack (fat)"])
    print("| run | median wall s | min | max | vs umoci unpack |")
    print("|---|---:|---:|---:|---:|")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.3f} | {min(values):.3f} | {max(values):.3f} | {median / base:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
