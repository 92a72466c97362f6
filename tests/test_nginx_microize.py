"""Microize a real fat image: nginx out of Debian bookworm, served read-only over loopback.

The fat image (debootstrap minbase + ``apt-get install nginx``, packed with
umoci, plus a docker-archive copy) is built once by ``tests/fatimage.py`` and
cached in ``/var/cache/microcontainer-tool-tests`` (``$MCT_TEST_CACHE``).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import fatimage
import pytest
from conftest import run_cli, runc_bundle

_reason = fatimage.missing_reason("runc")
if _reason:
    pytest.skip(_reason, allow_module_level=True)

INDEX = "<h1>served by a microcontainer</h1>\n"
NGINX_CONF = """\
# nginx for a read-only root, no capabilities, a non-root user: nothing is written
# outside the tmpfs /run and /tmp, nothing needs setuid, the port is above 1024.
daemon off;
master_process on;
worker_processes 1;
pid /run/nginx.pid;
error_log stderr notice;
events {{ worker_connections 64; }}
http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log /dev/stdout;
    client_body_temp_path /tmp/client_body;
    proxy_temp_path /tmp/proxy;
    fastcgi_temp_path /tmp/fastcgi;
    uwsgi_temp_path /tmp/uwsgi;
    scgi_temp_path /tmp/scgi;
    server {{
        listen 127.0.0.1:{port};
        root /var/www/html;
        index index.html;
    }}
}}
"""
SPEC = """\
from: {source}
paths:
  - /usr/sbin/nginx
  - /etc/nginx/mime.types
  - /var/www/html            # Debian's index.nginx-debian.html, from the fat image
# bookworm's nginx package enables no dynamic modules (/etc/nginx/modules-enabled is empty);
# with libnginx-mod-* they would go in paths (/usr/lib/nginx/modules/*.so, modules-enabled).
files:
  /etc/nginx/nginx.conf: nginx.conf
  /var/www/html/index.html: index.html
user: nginx:nginx
cmd: [/usr/sbin/nginx, -e, stderr]
ports: [{port}]
"""
PROVENANCE = "var/lib/microcontainer/provenance.json"
NO_SHELL_OR_PACKAGE_MANAGER = ("/bin/sh", "/usr/bin/sh", "/bin/dash", "/usr/bin/dash", "/bin/bash",
                               "/usr/bin/bash", "/usr/bin/dpkg", "/usr/bin/apt", "/usr/bin/apt-get",
                               "/var/lib/dpkg/status")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def fat() -> fatimage.FatImage:
    return fatimage.fat_nginx_image(log=print)  # a failed build raises with its log: no skip


@pytest.fixture(scope="module")
def spec_dir(tmp_path_factory, fat) -> Path:
    """The spec from the OCI layout (``microimage.yaml``) and from the docker-archive (``archive.yaml``)."""
    directory = tmp_path_factory.mktemp("nginx-spec")
    port = free_port()
    (directory / "nginx.conf").write_text(NGINX_CONF.format(port=port))
    (directory / "index.html").write_text(INDEX)
    (directory / "microimage.yaml").write_text(SPEC.format(source=fat.ref, port=port))
    (directory / "archive.yaml").write_text(SPEC.format(source=fat.archive, port=port))
    (directory / "port").write_text(str(port))
    return directory


def build(spec: Path, out: Path, cache: Path) -> float:
    start = time.monotonic()
    proc = run_cli("build", "-c", str(spec), "-o", str(out), "--cache-dir", str(cache))
    elapsed = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr
    return elapsed


@pytest.fixture(scope="module")
def micro(tmp_path_factory, spec_dir) -> tuple[Path, float]:
    """The micro image built from the fat OCI layout, and the build's wall time."""
    work = tmp_path_factory.mktemp("nginx-micro")
    out = work / "nginx-micro"
    return out, build(spec_dir / "microimage.yaml", out, work / "cache")


def inspect(image: Path) -> dict:
    proc = run_cli("inspect", "--json", str(image))
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def get(url: str) -> tuple[int, str]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never a proxy
    with opener.open(url, timeout=2) as response:
        return response.status, response.read().decode()


def test_nginx_micro_serves_over_loopback_read_only(micro, spec_dir, tmp_path):
    image, _ = micro
    port = int((spec_dir / "port").read_text())
    # the host's network namespace, so nginx listens on the host's loopback
    bundle, config = runc_bundle(image, "latest", tmp_path, host_network=True)
    assert config["process"]["user"]["uid"] == 10  # nginx:nginx from the image's own /etc/passwd
    name = f"mct-nginx-{uuid.uuid4().hex[:10]}"
    stdout, stderr = tmp_path / "stdout", tmp_path / "stderr"
    with open(stdout, "wb") as out, open(stderr, "wb") as err:
        runc = subprocess.Popen(["runc", "run", "--bundle", str(bundle), name],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=err)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                status, body = get(f"http://127.0.0.1:{port}/")
                break
            except (TimeoutError, urllib.error.URLError, ConnectionError) as error:
                if runc.poll() is not None:
                    pytest.fail(f"nginx exited ({runc.returncode}) before answering:\n{stderr.read_text()}")
                if time.monotonic() > deadline:
                    pytest.fail(f"no answer from nginx on port {port} in 20 s ({error}):\n"
                                f"{stderr.read_text()}")
                time.sleep(0.1)
        assert status == 200 and body == INDEX
        status, body = get(f"http://127.0.0.1:{port}/index.nginx-debian.html")
        assert status == 200 and "Welcome to nginx!" in body  # a file taken from the fat image
        with pytest.raises(urllib.error.HTTPError) as missing:
            get(f"http://127.0.0.1:{port}/no-such-page")
        assert missing.value.code == 404
    finally:
        subprocess.run(["runc", "kill", name, "TERM"], capture_output=True)
        try:
            runc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            subprocess.run(["runc", "kill", name, "KILL"], capture_output=True)
        subprocess.run(["runc", "delete", "--force", name], capture_output=True)
        if runc.poll() is None:
            runc.kill()
            runc.wait()
        shutil.rmtree(bundle, ignore_errors=True)
    assert '"GET / HTTP/1.1" 200' in stdout.read_text()  # the access log, on stdout
    assert "[emerg]" not in stderr.read_text() and "[alert]" not in stderr.read_text(), stderr.read_text()


def test_nginx_micro_is_bare_and_much_smaller(micro, fat, tmp_path):
    image, build_seconds = micro
    info = inspect(image)
    paths = {f["path"] for f in info["files"]}
    assert {"/usr/sbin/nginx", "/etc/nginx/nginx.conf", "/etc/nginx/mime.types",
            "/var/www/html/index.nginx-debian.html"} <= paths
    assert any(p.startswith("/usr/lib/x86_64-linux-gnu/libpcre2-8.so") for p in paths)  # the ELF closure
    assert not paths & set(NO_SHELL_OR_PACKAGE_MANAGER), sorted(paths & set(NO_SHELL_OR_PACKAGE_MANAGER))
    assert not any(p.startswith(("/usr/bin/apt", "/usr/lib/apt", "/var/lib/apt")) for p in paths)
    micro_stats = fatimage.layer_stats(image, "latest")
    fat_stats = fat.facts
    sizes = {
        "fat": {k: fat_stats[k] for k in ("layer_bytes", "diff_bytes", "files", "file_bytes")},
        "micro": {k: micro_stats[k] for k in ("layer_bytes", "diff_bytes", "files", "file_bytes")},
        "ratio_compressed": round(fat_stats["layer_bytes"] / micro_stats["layer_bytes"], 1),
        "ratio_unpacked": round(fat_stats["file_bytes"] / micro_stats["file_bytes"], 1),
        "ratio_files": round(fat_stats["files"] / micro_stats["files"], 1),
        "nginx_version": fat_stats["nginx_version"],
        "fat_image_build_seconds": fat_stats["build_seconds"],
        "microize_build_seconds": round(build_seconds, 2),
    }
    report = tmp_path / "nginx-microize-sizes.json"
    report.write_text(json.dumps(sizes, indent=2) + "\n")
    print(f"\nnginx {sizes['nginx_version']}: fat {fat_stats['layer_bytes'] / 1e6:.1f} MB compressed,"
          f" {fat_stats['file_bytes'] / 1e6:.1f} MB unpacked, {fat_stats['files']} files;"
          f" micro {micro_stats['layer_bytes'] / 1e6:.2f} MB compressed,"
          f" {micro_stats['file_bytes'] / 1e6:.2f} MB unpacked, {micro_stats['files']} files;"
          f" {sizes['ratio_compressed']}x / {sizes['ratio_unpacked']}x / {sizes['ratio_files']}x smaller"
          f" (compressed / unpacked / files); microize took {build_seconds:.2f} s; {report}")
    assert sizes["ratio_compressed"] >= 5 and sizes["ratio_unpacked"] >= 5, sizes


def layer_members(image: Path) -> tuple[dict[str, tuple], str]:
    """Every member of an image's one layer (header fields, sha256 of the content), and the
    source image its provenance record names; that digest is replaced by ``SOURCE`` in the record."""
    (desc,) = fatimage.manifest_of(image, "latest")["layers"]
    algorithm, _, hexdigest = desc["digest"].partition(":")
    members, source = {}, ""
    with tarfile.open(image / "blobs" / algorithm / hexdigest, "r:gz") as tar:
        for member in tar:
            handle = tar.extractfile(member) if member.isreg() else None
            data = handle.read() if handle is not None else b""
            if member.name.lstrip("./") == PROVENANCE:
                source = json.loads(data)["image"]["from_image"]
                data = data.replace(source.encode(), b"SOURCE")
            members[member.name] = (member.type, member.mode, member.uid, member.gid, member.mtime,
                                    member.linkname, hashlib.sha256(data).hexdigest())
    return members, source


def test_nginx_micro_from_docker_archive_is_the_same_layer(micro, fat, spec_dir, tmp_path):
    image, _ = micro
    out = tmp_path / "from-archive"
    build(spec_dir / "archive.yaml", out, tmp_path / "cache")  # its own cache: the archive is really read
    (from_layout, layout_source), (from_archive, archive_source) = layer_members(image), layer_members(out)
    assert from_layout == from_archive  # the same files, the same bytes, the same headers
    assert inspect(out)["config"]["config"] == inspect(image)["config"]["config"]
    # Provenance names a local source image by its config digest (Docker's image ID), the same
    # for the umoci layout and the skopeo docker-archive: the layers are identical, byte for byte.
    image_id = fatimage.manifest_of(fat.layout, fatimage.TAG)["config"]["digest"]
    assert layout_source == archive_source == image_id
    layers = [fatimage.manifest_of(path, "latest")["layers"] for path in (image, out)]
    assert layers[0] == layers[1]
