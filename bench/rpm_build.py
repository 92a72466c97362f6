#!/usr/bin/env python3
"""Lock and build times of an image from real RPMs over a local HTTP repository.

Uses the Rocky Linux 9 closure of curl in ../shared/rpms/rocky9-curl (indexed
with createrepo_c, served on 127.0.0.1). Prints a table of medians over
rounds (nothing is asserted):

* lock, cold: metadata fetched and parsed (fresh cache);
* lock, warm: ``lock --update`` with the .solv cache;
* build, cold: download + verify + extract every locked package + image;
* build, warm: everything cached (extracted sysroot reused);
* build --offline: the same, without the server.

Each step is a whole ``microcontainer`` process. Extraction throughput next to
rpm2cpio is bench/rpm_extract.py.

Usage: python bench/rpm_build.py [--rounds 3] [--package curl]
"""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RPMS = os.path.join(os.path.dirname(REPO), "shared", "rpms", "rocky9-curl")


def cli(*args: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "microcontainer_tool", *args], check=True,
                   capture_output=True, env={**os.environ, "PYTHONPATH": REPO})
    return time.perf_counter() - start


def serve(directory: str) -> tuple[http.server.ThreadingHTTPServer, str]:
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=directory))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}/"


def main() -> int:
    from benchsetup import compile_package  # bench/ is sys.path[0] when run as a script

    compile_package()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--package", default="curl")
    args = parser.parse_args()
    if not os.path.isdir(RPMS) or not shutil.which("createrepo_c"):
        print("needs ../shared/rpms/rocky9-curl and createrepo_c", file=sys.stderr)
        return 1
    times: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as work:
        repo = os.path.join(work, "repo")
        shutil.copytree(RPMS, repo)
        subprocess.run(["createrepo_c", "--quiet", repo], check=True)
        httpd, url = serve(repo)
        spec = os.path.join(work, "spec")
        os.makedirs(spec)
        with open(os.path.join(spec, "microimage.yaml"), "w") as handle:
            handle.write(f"packages: [{args.package}]\nrepos: [{{baseurl: '{url}'}}]\n"
                         f"paths: [/usr/bin/{args.package}]\n")
        count = 0
        for round_no in range(args.rounds):
            cache = os.path.join(work, f"cache{round_no}")
            lock = os.path.join(spec, "microimage.lock")
            if os.path.exists(lock):
                os.unlink(lock)
            times.setdefault("lock, cold", []).append(cli("lock", "-c", spec, "--cache-dir", cache))
            times.setdefault("lock --update, warm", []).append(
                cli("lock", "-c", spec, "--cache-dir", cache, "--update"))
            out = os.path.join(work, f"img{round_no}")
            times.setdefault("build, cold (fetch+extract)", []).append(
                cli("build", "-c", spec, "-o", out, "--cache-dir", cache))
            warm = cli("build", "-c", spec, "-o", out, "--cache-dir", cache)
            times.setdefault("build, warm", []).append(warm)
            times.setdefault("build --offline, warm", []).append(
                cli("build", "-c", spec, "-o", out, "--cache-dir", cache, "--offline"))
            with open(lock) as handle:
                count = len(json.load(handle)["packages"])
        httpd.shutdown()
        payload = sum(os.path.getsize(os.path.join(RPMS, f)) for f in os.listdir(RPMS))
    print(f"{args.package}: {count}-package closure, {payload / 1e6:.1f} MB of RPMs, {args.rounds} rounds")
    print(f"{'step':<30}{'median s':>10}{'min':>8}{'max':>8}")
    for name, values in times.items():
        print(f"{name:<30}{statistics.median(values):>10.3f}{min(values):>8.3f}{max(values):>8.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
