"""A hostile registry: it trickles one byte at a time, or sends JSON nested 200,000 levels deep.

The registry is a real HTTP server on 127.0.0.1 (``http.server`` in a thread)
speaking just enough of the distribution API; ``pull`` and ``build`` (``from:``
the registry image) run as real processes. Before the transfer deadline, a
server that promises a gigabyte and sends a byte every half second held a pull
forever (``--timeout`` bounds each read only). The subprocess timeout is only
the guard that keeps a regression from hanging the suite.
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import corpus
import pytest
from conftest import REPO, assert_one_line_error
from corpus import BASE, DEEP_JSON, gzip_bytes, sha256, tar_bytes

GUARD = 120
"""Seconds after which a hung command fails the test (it ends in a few seconds with the deadline)."""

CANARY = {"canary": None, "canary/keep": b"do not touch"}


class HostileRegistry:
    """A registry serving one image ``hostile:latest``; ``trickle`` names what it trickles."""

    def __init__(self, trickle: str = "layer", manifest: bytes | None = None) -> None:
        layer = gzip_bytes(tar_bytes(BASE))
        config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                             "rootfs": {"type": "layers", "diff_ids": [sha256(tar_bytes(BASE))]}}).encode()
        self.blobs = {sha256(config): config, sha256(layer): layer}
        self.layer_digest = sha256(layer)
        self.manifest = manifest if manifest is not None else json.dumps({
            "schemaVersion": 2, "mediaType": corpus.MEDIA_MANIFEST,
            "config": {"mediaType": corpus.MEDIA_CONFIG, "digest": sha256(config), "size": len(config)},
            "layers": [{"mediaType": corpus.MEDIA_LAYER_GZIP, "digest": sha256(layer), "size": len(layer)}],
        }).encode()
        self.trickle = trickle
        self.stopping = threading.Event()
        registry = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                if self.path == "/v2/":
                    self.reply(b"{}", "application/json")
                elif self.path in ("/v2/hostile/manifests/latest",
                                   f"/v2/hostile/manifests/{sha256(registry.manifest)}"):
                    self.reply(registry.manifest, corpus.MEDIA_MANIFEST, registry.trickle == "manifest")
                elif self.path.startswith("/v2/hostile/blobs/"):
                    digest = self.path.rsplit("/", 1)[1]
                    data = registry.blobs.get(digest)
                    if data is None:
                        self.send_error(404)
                        return
                    self.reply(data, "application/octet-stream",
                               registry.trickle == "layer" and digest == registry.layer_digest)
                else:
                    self.send_error(404)

            def reply(self, data: bytes, content_type: str, trickle: bool = False) -> None:
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(1 << 30 if trickle else len(data)))
                self.end_headers()
                if not trickle:
                    self.wfile.write(data)
                    return
                sent = 0
                try:  # a byte every half second (then spaces), for as long as anyone listens
                    while not registry.stopping.is_set():
                        self.wfile.write(data[sent:sent + 1] or b" ")
                        self.wfile.flush()
                        sent += 1
                        time.sleep(0.5)
                except OSError:
                    return

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.host = f"127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


@pytest.fixture()
def registry(request: pytest.FixtureRequest) -> Iterator[HostileRegistry]:
    server = HostileRegistry(**getattr(request, "param", {}))
    yield server
    server.stop()


def cli(*args: str) -> subprocess.CompletedProcess:
    """``python -m microcontainer_tool ARGS``, failed by the guard if it hangs."""
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "microcontainer_tool", *args], env=env,
                          capture_output=True, text=True, timeout=GUARD, stdin=subprocess.DEVNULL)


def work_dir(tmp_path: Path) -> Path:
    work = tmp_path / "work"
    (work / "canary").mkdir(parents=True)
    (work / "canary" / "keep").write_bytes(CANARY["canary/keep"])  # type: ignore[arg-type]
    return work


def temporaries(directory: Path) -> list[str]:
    return sorted(p for p in corpus.listing(directory) if ".tmp" in p or "tmp-" in p)


@pytest.mark.parametrize("registry", [{"trickle": "layer"}, {"trickle": "manifest"}], indirect=True,
                         ids=["layer", "manifest"])
def test_pull_from_a_trickling_registry_ends(registry: HostileRegistry, tmp_path: Path) -> None:
    work = work_dir(tmp_path)
    proc = cli("pull", "--plain-http", "--deadline", "2", "--timeout", "30", "--retries", "0",
               f"{registry.host}/hostile:latest", "-o", str(work / "img"),
               "--docker-config", str(tmp_path / "no-docker-config"))
    assert_one_line_error(proc, "transfer deadline of 2 s")
    assert corpus.listing(work) == CANARY  # no output, no temporary sibling


def test_build_from_a_trickling_registry_ends(registry: HostileRegistry, tmp_path: Path) -> None:
    work = work_dir(tmp_path)
    spec = corpus.write_spec(tmp_path / "spec", f"from: http://{registry.host}/hostile:latest\n"
                                                "paths: [/usr/bin/hello]\n")
    cache = tmp_path / "cache"
    proc = cli("build", "-c", str(spec), "-o", str(work / "img"), "--cache-dir", str(cache),
               "--deadline", "2", "--docker-config", str(tmp_path / "no-docker-config"))
    assert_one_line_error(proc, registry.layer_digest, "transfer deadline of 2 s")
    assert corpus.listing(work) == CANARY
    assert temporaries(cache) == []
    assert not list((cache / "images").glob("*/index.json"))  # nothing cached as if pulled


@pytest.mark.parametrize("registry", [{"trickle": "", "manifest": DEEP_JSON}], indirect=True)
def test_pull_of_a_manifest_nested_too_deeply_is_refused(registry: HostileRegistry, tmp_path: Path) -> None:
    work = work_dir(tmp_path)
    proc = cli("pull", "--plain-http", f"{registry.host}/hostile:latest", "-o", str(work / "img"),
               "--docker-config", str(tmp_path / "no-docker-config"))
    assert_one_line_error(proc, "nested deeper than 256 levels")
    assert corpus.listing(work) == CANARY


def test_the_same_registry_serves_a_good_pull(tmp_path: Path) -> None:
    """Without trickling, the fake registry is a working one: the failures above are the deadline's."""
    server = HostileRegistry(trickle="")
    try:
        proc = cli("pull", "--plain-http", "--deadline", "2", f"{server.host}/hostile:latest",
                   "-o", str(tmp_path / "img"), "--docker-config", str(tmp_path / "no-docker-config"))
    finally:
        server.stop()
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "img" / "blobs" / "sha256" / server.layer_digest.split(":")[1]).is_file()


def test_deadline_must_be_positive(tmp_path: Path) -> None:
    proc = cli("pull", "--deadline", "0", "127.0.0.1:9/x:y", "-o", str(tmp_path / "img"))
    assert proc.returncode == 2 and "positive number of seconds" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_pull_killed_by_a_signal_removes_its_temporary_output(registry: HostileRegistry, tmp_path: Path,
                                                                 signum: int) -> None:
    work = work_dir(tmp_path)
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "microcontainer_tool", "pull", "--plain-http",
                             "--deadline", "100", "--timeout", "100", "--retries", "0",
                             f"{registry.host}/hostile:latest", "-o", str(work / "img"),
                             "--docker-config", str(tmp_path / "no-docker-config")],
                            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        for _ in range(GUARD * 10):  # until the layer is trickling into the temporary sibling
            if temporaries(work) and proc.poll() is None:
                break
            time.sleep(0.1)
        assert temporaries(work), "the pull wrote no temporary sibling"
        time.sleep(1)
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=GUARD)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + signum if signum == signal.SIGTERM else proc.returncode == 130
    assert err.strip() in ("microcontainer: terminated", "microcontainer: interrupted"), err
    assert "Traceback" not in err
    assert corpus.listing(work) == CANARY
