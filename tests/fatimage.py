"""A real fat image to microize: Debian bookworm (debootstrap minbase) plus nginx.

Not a test module: :func:`fat_nginx_image` builds the image once and caches it
outside the repository, so fresh clones on the same machine (the CI) reuse it.

Cache: ``$MCT_TEST_CACHE`` or ``/var/cache/microcontainer-tool-tests``; the
image lives in ``fat-nginx-<VERSION>/`` there:

* ``oci/`` — an OCI layout made with umoci, tag ``fat`` (one gzip layer, a
  Docker-like config: ``PATH``, ``Cmd [nginx -g "daemon off;"]``, port 80);
* ``fat-nginx.tar`` — the same image as a docker-archive (``skopeo copy``),
  ``RepoTags`` ``fat/nginx:latest``;
* ``facts.json`` — sizes, package version, how long the build took.

The build runs in a temporary sibling directory under an exclusive ``flock``
and is renamed into place when complete, so concurrent callers wait for one
build and a killed build leaves nothing half-made behind. Bump
:data:`VERSION` to rebuild (old entries can be deleted by hand).

Building needs root, network access to deb.debian.org, and ``debootstrap``,
``umoci``, ``skopeo``; :func:`missing_reason` says what is missing so callers
can skip.
"""

from __future__ import annotations

import fcntl
import gzip
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

VERSION = "1"
"""Cache key: bump when the recipe below changes."""
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
PACKAGE = "nginx"
"""Bookworm's ``nginx`` is the server binary with no dynamic modules (``nginx-light``
is ``nginx`` plus the echo module there)."""
TAG = "fat"
ARCHIVE_NAME = "fat/nginx:latest"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
TOOLS = ("debootstrap", "umoci", "skopeo")
DEFAULT_CACHE = "/var/cache/microcontainer-tool-tests"


@dataclass(frozen=True)
class FatImage:
    """The cached fat image.

    Attributes:
        layout: the OCI layout directory (tag :data:`TAG`).
        archive: the docker-archive copy.
        facts: ``facts.json``: ``layer_bytes`` (compressed layers), ``diff_bytes``
            (uncompressed layer tars), ``files`` and ``file_bytes`` (regular files
            and their sizes, hardlinks once), ``entries``, ``nginx_version``,
            ``build_seconds``...
    """

    layout: Path
    archive: Path
    facts: dict[str, Any]

    @property
    def ref(self) -> str:
        """``LAYOUT:TAG``, as ``from:`` and umoci spell it."""
        return f"{self.layout}:{TAG}"


def cache_root() -> Path:
    return Path(os.environ.get("MCT_TEST_CACHE") or DEFAULT_CACHE)


def missing_reason(*extra_tools: str) -> str | None:
    """Why the fat image cannot be built or used here, or ``None``."""
    if os.geteuid() != 0:
        return "the fat nginx image needs root (debootstrap, chroot)"
    missing = [t for t in (*TOOLS, *extra_tools) if not shutil.which(t)]
    if missing:
        return f"missing tools: {' '.join(missing)} (apt-get install {' '.join(missing)})"
    return None


def fat_nginx_image(log: Any = None) -> FatImage:
    """The fat nginx image, built on first use and cached (see the module doc).

    Args:
        log: a ``print``-like function for progress messages (default: none).

    Raises:
        RuntimeError: a build step failed (the message has the tail of its log).
    """
    say = log or (lambda *args: None)
    root = cache_root()
    final = root / f"fat-nginx-{VERSION}"
    if (final / "facts.json").is_file():
        return _load(final)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"fat-nginx-{VERSION}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (final / "facts.json").is_file():  # built by another process while we waited
            return _load(final)
        for stale in root.glob(f".tmp-fat-nginx-{VERSION}-*"):  # a killed build's leftovers
            shutil.rmtree(stale, ignore_errors=True)
        if final.exists():  # incomplete: never renamed into place with facts.json
            shutil.rmtree(final)
        work = Path(tempfile.mkdtemp(prefix=f".tmp-fat-nginx-{VERSION}-", dir=root))
        try:
            say(f"fatimage: building {final} (debootstrap {SUITE} + {PACKAGE}; a few minutes)")
            _build(work, say)
            os.rename(work / "image", final)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return _load(final)


def _load(final: Path) -> FatImage:
    facts = json.loads((final / "facts.json").read_text())
    return FatImage(layout=final / "oci", archive=final / "fat-nginx.tar", facts=facts)


def _run(argv: list[str], what: str, log_file: Path | None = None, **kwargs: Any) -> str:
    """Run a build step; on failure raise with the tail of its output (and ``log_file``)."""
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, errors="replace", **kwargs)
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.splitlines()[-30:])
        if log_file is not None and log_file.is_file():
            lines = log_file.read_text(errors="replace").splitlines()[-30:]
            tail += f"\n--- tail of {log_file}:\n" + "\n".join(lines)
        raise RuntimeError(f"fat image: {what} failed (exit {proc.returncode}): {' '.join(argv)}\n{tail}")
    return proc.stdout


def _chroot_env() -> dict[str, str]:
    return {"PATH": PATH_ENV.split("=", 1)[1], "DEBIAN_FRONTEND": "noninteractive",
            "LANG": "C", "LC_ALL": "C", "HOME": "/root"}


def _build(work: Path, say: Any) -> None:
    start = time.monotonic()
    rootfs = work / "rootfs"
    _run(["debootstrap", "--variant=minbase", SUITE, str(rootfs), MIRROR], "debootstrap",
         log_file=rootfs / "debootstrap" / "debootstrap.log")
    say(f"fatimage: debootstrap done in {time.monotonic() - start:.0f} s")
    policy = rootfs / "usr/sbin/policy-rc.d"  # no service may start in the chroot (nginx on port 80!)
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    try:
        _run(["chroot", str(rootfs), "apt-get", "install", "-y", "-q", "--no-install-recommends", PACKAGE],
             f"apt-get install {PACKAGE}", env=_chroot_env())
        version = _run(["chroot", str(rootfs), "dpkg-query", "-W", "-f=${Version}", PACKAGE],
                       "dpkg-query", env=_chroot_env()).strip()
        _run(["chroot", str(rootfs), "apt-get", "clean"], "apt-get clean", env=_chroot_env())
    finally:
        policy.unlink()
    lists = rootfs / "var/lib/apt/lists"
    for entry in lists.iterdir():
        if entry.is_file() or entry.is_symlink():
            entry.unlink()
    for host_file in ("etc/resolv.conf", "etc/hostname"):  # debootstrap copied the host's
        (rootfs / host_file).unlink(missing_ok=True)
    shutil.rmtree(rootfs / "debootstrap", ignore_errors=True)
    say(f"fatimage: {PACKAGE} {version} installed at {time.monotonic() - start:.0f} s")

    image = work / "image"
    image.mkdir()
    layout = image / "oci"
    bundle = work / "bundle"
    _run(["umoci", "init", "--layout", str(layout)], "umoci init")
    _run(["umoci", "new", "--image", f"{layout}:{TAG}"], "umoci new")
    _run(["umoci", "unpack", "--image", f"{layout}:{TAG}", str(bundle)], "umoci unpack")
    # Copy the tree in with ownership, modes, links, hardlinks and device nodes.
    _run(["cp", "-a", "--", f"{rootfs}/.", str(bundle / "rootfs")], "copy rootfs")
    shutil.rmtree(rootfs)
    _run(["umoci", "repack", "--image", f"{layout}:{TAG}", str(bundle)], "umoci repack")
    shutil.rmtree(bundle)
    _run(["umoci", "config", "--image", f"{layout}:{TAG}", "--config.env", PATH_ENV,
          "--config.cmd", "nginx", "--config.cmd", "-g", "--config.cmd", "daemon off;",
          "--config.exposedports", "80/tcp", "--config.stopsignal", "SIGQUIT",
          "--architecture", "amd64", "--os", "linux"], "umoci config")
    _run(["umoci", "gc", "--layout", str(layout)], "umoci gc")
    _run(["skopeo", "copy", "--quiet", f"oci:{layout}:{TAG}",
          f"docker-archive:{image / 'fat-nginx.tar'}:{ARCHIVE_NAME}"], "skopeo copy")
    facts = layer_stats(layout, TAG)
    facts.update(suite=SUITE, package=PACKAGE, nginx_version=version, version=VERSION,
                 build_seconds=round(time.monotonic() - start, 1),
                 built_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    (image / "facts.json").write_text(json.dumps(facts, indent=2, sort_keys=True) + "\n")
    say(f"fatimage: built in {facts['build_seconds']} s: {facts['layer_bytes'] / 1e6:.1f} MB compressed")


def manifest_digest(layout: Path, tag: str) -> str:
    """The digest of the manifest tagged ``tag`` in an OCI layout."""
    index = json.loads((Path(layout) / "index.json").read_text())
    for desc in index["manifests"]:
        if desc.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag:
            return desc["digest"]
    raise LookupError(f"{layout}: no manifest tagged {tag!r}")


def manifest_of(layout: Path, tag: str) -> dict[str, Any]:
    """The manifest tagged ``tag`` in an OCI layout."""
    return json.loads(_blob(Path(layout), manifest_digest(layout, tag)).read_bytes())


def _blob(layout: Path, digest: str) -> Path:
    algorithm, _, hexdigest = digest.partition(":")
    return layout / "blobs" / algorithm / hexdigest


def layer_stats(layout: Path, tag: str) -> dict[str, Any]:
    """Sizes of an image's layers, read from the layer tars (as a runtime would unpack them).

    ``file_bytes`` and ``files`` count each regular file of the final tree once
    (later layers replace earlier ones; whiteouts are not followed, the images
    here have one layer); hardlinks add nothing.
    """
    layout = Path(layout)
    manifest = manifest_of(layout, tag)
    layer_bytes = sum(d["size"] for d in manifest["layers"])
    diff_bytes = entries = 0
    files: dict[str, int] = {}
    for desc in manifest["layers"]:
        path = _blob(layout, desc["digest"])
        opener = gzip.open if desc["mediaType"].endswith("+gzip") else open
        with opener(path, "rb") as raw:
            counter = _CountingReader(raw)
            with tarfile.open(fileobj=counter, mode="r|") as tar:
                for member in tar:
                    entries += 1
                    if member.isreg():
                        files[os.path.normpath(member.name).lstrip("/")] = member.size
            while counter.read(1 << 20):  # the zero blocks and padding after the last member
                pass
            diff_bytes += counter.count
    return {"layers": len(manifest["layers"]), "layer_bytes": layer_bytes, "diff_bytes": diff_bytes,
            "entries": entries, "files": len(files), "file_bytes": sum(files.values())}


class _CountingReader:
    def __init__(self, raw: Any) -> None:
        self.raw = raw
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.count += len(data)
        return data


if __name__ == "__main__":  # build (or show) the cached image: python tests/fatimage.py
    reason = missing_reason()
    if reason:
        raise SystemExit(reason)
    fat = fat_nginx_image(log=print)
    print(json.dumps({"layout": str(fat.layout), "archive": str(fat.archive), **fat.facts}, indent=2))
