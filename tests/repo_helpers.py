"""Helpers for the repository, resolver and lock tests: real repos, a real HTTP server.

* :class:`RepoServer` -- ``http.server.ThreadingHTTPServer`` on 127.0.0.1 (port 0)
  in a thread, serving a directory; it records every request path and can be
  told to answer a path with error statuses first (``fail(path, 503, 503)``).
* :func:`createrepo` -- ``createrepo_c`` over a directory of RPMs.
* :func:`rewrite_metadata` -- recompress / corrupt one metadata file and fix (or
  not) its checksum in ``repomd.xml``, as a broken mirror would serve it.
* :func:`fixture_rpms` -- the fixture packages (rpmbuild) the resolver tests use.
"""

from __future__ import annotations

import bz2
import functools
import gzip
import hashlib
import http.server
import lzma
import re
import shutil
import subprocess
import threading
from pathlib import Path

import zstandard
from rpmbuild_fixtures import build_rpm

COMPRESS = {
    "gz": lambda data: gzip.compress(data, mtime=0),
    "xz": lzma.compress,
    "zst": lambda data: zstandard.ZstdCompressor().compress(data),
    "bz2": bz2.compress,
    "plain": lambda data: data,
}


class RepoServer:
    """A real HTTP server on 127.0.0.1 serving ``root``; records request paths."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.requests: list[str] = []
        self.faults: dict[str, list[int]] = {}
        self._lock = threading.Lock()
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                with server._lock:
                    server.requests.append(self.path)
                    pending = server.faults.get(self.path)
                    status = pending.pop(0) if pending else None
                if status is not None:
                    self.send_error(status)
                    return
                super().do_GET()

        self.httpd = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(Handler, directory=str(self.root)))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def fail(self, path: str, *statuses: int) -> None:
        """Answer the next GETs of ``path`` (``/a/b``) with these statuses, then normally."""
        with self._lock:
            self.faults[path] = list(statuses)

    def fetched(self, pattern: str) -> list[str]:
        """Recorded request paths matching a regular expression."""
        with self._lock:
            return [p for p in self.requests if re.search(pattern, p)]

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


def createrepo(directory: Path, rpms: list[Path] | None = None) -> Path:
    """Copy ``rpms`` into ``directory`` (if given) and run ``createrepo_c`` there."""
    directory.mkdir(parents=True, exist_ok=True)
    for rpm in rpms or []:
        shutil.copy(rpm, directory / rpm.name)
    subprocess.run(["createrepo_c", "--quiet", "--no-database", "--update", str(directory)],
                   check=True)
    return directory


def metadata_file(repo: Path, kind: str) -> Path:
    """The file ``repomd.xml`` lists for ``kind`` (``primary``, ``filelists``)."""
    text = (repo / "repodata" / "repomd.xml").read_text()
    block = re.search(rf'<data type="{kind}">.*?</data>', text, re.DOTALL)
    assert block, kind
    href = re.search(r'<location href="([^"]+)"', block.group(0))
    assert href
    return repo / href.group(1)


def rewrite_metadata(repo: Path, kind: str, codec: str | None = None, *,
                     content: bytes | None = None, raw: bytes | None = None,
                     fix_checksum: bool = True) -> Path:
    """Replace one metadata file of a repo, as a (broken) mirror would.

    Args:
        repo: the repository directory.
        kind: ``primary`` or ``filelists``.
        codec: recompress with ``gz``/``xz``/``zst``/``bz2``/``plain`` (new
            file name suffix accordingly; ``plain`` gets ``.xml``).
        content: the decompressed XML to store (default: the current one).
        raw: store exactly these bytes (overrides codec/content).
        fix_checksum: update ``checksum`` (and open-checksum/size) in
            ``repomd.xml``; if False, the stale values stay.

    Returns:
        The new metadata file.
    """
    old = metadata_file(repo, kind)
    old_bytes = old.read_bytes()
    if content is None:
        content = gzip.decompress(old_bytes) if old.name.endswith(".gz") else old_bytes
    suffix = {"gz": ".xml.gz", "xz": ".xml.xz", "zst": ".xml.zst", "bz2": ".xml.bz2",
              "plain": ".xml"}[codec or "gz"]
    data = raw if raw is not None else COMPRESS[codec or "gz"](content)
    if raw is not None and codec == "plain":
        content = raw
    new = old.parent / f"{kind}-rewritten{suffix}"
    old.unlink()
    new.write_bytes(data)
    repomd = repo / "repodata" / "repomd.xml"
    text = repomd.read_text()
    block = re.search(rf'<data type="{kind}">.*?</data>', text, re.DOTALL)
    assert block
    entry = block.group(0)
    entry = re.sub(r'<location href="[^"]+"', f'<location href="repodata/{new.name}"', entry)
    if fix_checksum:
        entry = re.sub(r'(<checksum type="sha256">)[0-9a-f]+', rf"\g<1>{hashlib.sha256(data).hexdigest()}",
                       entry)
        entry = re.sub(r'(<open-checksum type="sha256">)[0-9a-f]+',
                       rf"\g<1>{hashlib.sha256(content).hexdigest()}", entry)
        entry = re.sub(r"<size>\d+</size>", f"<size>{len(data)}</size>", entry)
    repomd.write_text(text.replace(block.group(0), entry))
    return new


def fixture_rpms(work: Path) -> dict[str, Path]:
    """Build the resolver's fixture packages (all noarch; ~3 s). Keys: ``name-version``."""
    specs: list[dict] = [
        # two versions of one package
        dict(name="app", version="1.0", files={"/usr/share/app/v": b"1"}),
        dict(name="app", version="2.0", files={"/usr/share/app/v": b"2"}),
        dict(name="usesapp", requires=["app >= 1.5"]),
        dict(name="blocker", conflicts=["app >= 2"]),
        # a conflict
        dict(name="c1", conflicts=["c2"]),
        dict(name="c2"),
        # obsoletes: newthing replaces oldthing
        dict(name="oldthing"),
        dict(name="newthing", version="2.0", provides=["oldthing = 2.0"],
             obsoletes=["oldthing < 2.0"]),
        dict(name="wantsold", requires=["oldthing"]),
        # weak dependencies
        dict(name="w", recommends=["wextra"]),
        dict(name="wextra"),
        dict(name="wsupp", supplements=["w"]),
        # a file dependency only filelists can satisfy (/opt is not in primary)
        dict(name="fdep", requires=["/opt/tool/data.bin"]),
        dict(name="fprov", files={"/opt/tool/data.bin": b"data"}),
        # an epoch beats a higher version
        dict(name="ep", version="1.0", epoch=1),
        dict(name="ep", version="9.0"),
        # rich dependencies
        dict(name="rich", requires=["(ra or rb)"]),
        dict(name="rb"),
        dict(name="richbad", requires=["(rc or rd)"]),
        # unresolvable
        dict(name="broken", requires=["libfoo.so.1()(64bit)"]),
        # for local packages
        dict(name="lonely", requires=["app"]),
    ]
    built = {}
    for spec in specs:
        spec.setdefault("arch", "noarch")
        spec.setdefault("autoreqprov", False)
        spec.setdefault("files", {f"/usr/share/{spec['name']}/README": spec["name"].encode()})
        path = build_rpm(work, **spec)
        built[f"{spec['name']}-{spec.get('version', '1.0')}"] = path
    return built
