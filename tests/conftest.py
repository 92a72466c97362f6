"""Shared fixtures: the CLI as a real process, and running images with runc."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from allowed_skips import ALLOWED_SKIPS
from hostfiles import copy_closure, ldd_files, with_links  # noqa: F401  (re-exported)

REPO = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- strict skips (CI)

_STRICT_SKIPS_ENV = "MCT_STRICT_SKIPS"
_skips: list[tuple[str, str]] = []  # (node id, reason) of every skip this session


def _skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    """The reason a skipped report gives (pytest's "Skipped: " prefix removed)."""
    longrepr = report.longrepr
    text = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return text.removeprefix("Skipped: ")


def _record_skip(report: pytest.TestReport | pytest.CollectReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        _skips.append((report.nodeid, _skip_reason(report)))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Record each skipped test (in setup, call or a fixture) with its reason."""
    _record_skip(report)


def pytest_collectreport(report: pytest.CollectReport) -> None:
    """Record modules skipped at collection (``pytest.skip(..., allow_module_level=True)``)."""
    _record_skip(report)


def unexpected_skips() -> list[tuple[str, str]]:
    """The skips of this session whose reason is not in :data:`allowed_skips.ALLOWED_SKIPS`."""
    return [(nodeid, reason) for nodeid, reason in _skips if reason not in ALLOWED_SKIPS]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """With ``MCT_STRICT_SKIPS=1``, list every skip that is not on the allow-list."""
    unexpected = unexpected_skips()
    if os.environ.get(_STRICT_SKIPS_ENV) != "1" or not unexpected:
        return
    terminalreporter.section("unexpected skips (MCT_STRICT_SKIPS=1; allow-list: tests/allowed_skips.py)",
                             sep="=", red=True, bold=True)
    for nodeid, reason in unexpected:
        terminalreporter.line(f"UNEXPECTED SKIP {nodeid}: {reason}", red=True)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """With ``MCT_STRICT_SKIPS=1``, an unexpected skip fails the session (exit status 1)."""
    if os.environ.get(_STRICT_SKIPS_ENV) == "1" and unexpected_skips() and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def run_cli(*args: str, cwd: str | os.PathLike | None = None, env: dict | None = None,
            umask: int | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m microcontainer_tool ARGS`` as a real process."""
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = str(REPO) + os.pathsep + full_env.get("PYTHONPATH", "")
    if env:
        full_env.update(env)

    def set_umask() -> None:
        if umask is not None:
            os.umask(umask)

    return subprocess.run(
        [sys.executable, "-m", "microcontainer_tool", *args],
        cwd=cwd, env=full_env, capture_output=True, text=True, preexec_fn=set_umask,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess, *words: str) -> None:
    """A user error: non-zero exit, one line on stderr, no traceback."""
    assert proc.returncode != 0, proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert lines[0].startswith("microcontainer: error: "), lines[0]
    for word in words:
        assert word in lines[0], lines[0]


def have(*tools: str) -> bool:
    return all(shutil.which(t) for t in tools)


def runc_bundle(layout: str | os.PathLike, tag: str, workdir: Path, args: list[str] | None = None,
                write_dir: str | None = None, host_network: bool = False) -> tuple[Path, dict]:
    """Unpack an image with umoci into a runc bundle configured the manifesto's way.

    The container has a read-only root, no capabilities, noNewPrivileges, the
    image's user, all mounts of umoci's default runtime config, tmpfs on /run
    and /tmp, optionally a host dir bind-mounted read-write at /write, and its
    own network namespace (no network) unless ``host_network``.

    Returns:
        The bundle directory and its runtime config (already written).
    """
    if os.geteuid() != 0 or not have("runc", "umoci"):
        pytest.skip("runc and umoci as root are needed to run images")
    bundle = workdir / f"bundle-{uuid.uuid4().hex[:8]}"
    subprocess.run(["umoci", "unpack", "--image", f"{layout}:{tag}", str(bundle)],
                   check=True, capture_output=True)
    config_path = bundle / "config.json"
    config = json.loads(config_path.read_text())
    config["root"]["readonly"] = True
    config["process"]["terminal"] = False
    config["process"]["noNewPrivileges"] = True
    config["process"]["capabilities"] = {k: [] for k in ("bounding", "effective", "inheritable",
                                                         "permitted", "ambient")}
    if args is not None:
        config["process"]["args"] = args
    if host_network:
        namespaces = config["linux"]["namespaces"]
        config["linux"]["namespaces"] = [ns for ns in namespaces if ns["type"] != "network"]
    # the image has /run and /tmp 1777, and runc gives a tmpfs the mode of the directory it covers
    for target in ("/run", "/tmp"):
        config["mounts"].append({"destination": target, "type": "tmpfs", "source": "tmpfs",
                                 "options": ["nosuid", "nodev", "mode=1777"]})
    if write_dir is not None:
        config["mounts"].append({"destination": "/write", "type": "bind", "source": write_dir,
                                 "options": ["rbind", "rw"]})
    config_path.write_text(json.dumps(config))
    return bundle, config


def runc_run(layout: str | os.PathLike, tag: str, workdir: Path, args: list[str] | None = None,
             write_dir: str | None = None, timeout: int = 60,
             text: bool = True) -> subprocess.CompletedProcess:
    """Run an image to completion with runc in a :func:`runc_bundle` (read-only root, no network).

    ``text=False`` keeps stdout and stderr as bytes (output in another encoding).
    """
    bundle, _config = runc_bundle(layout, tag, workdir, args, write_dir)
    name = f"mct-test-{uuid.uuid4().hex[:10]}"
    try:
        return subprocess.run(["runc", "run", "--bundle", str(bundle), name],
                              capture_output=True, text=text, timeout=timeout, stdin=subprocess.DEVNULL)
    finally:
        subprocess.run(["runc", "delete", "--force", name], capture_output=True)
        shutil.rmtree(bundle, ignore_errors=True)


class _QuietHandler:
    """Factory of a SimpleHTTPRequestHandler serving one directory without logging."""

    @staticmethod
    def make(directory: str):
        import functools
        import http.server

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep pytest output clean
                pass

        return functools.partial(Handler, directory=directory)


class HttpServer:
    """A real HTTP server on 127.0.0.1 serving a directory, in a thread."""

    def __init__(self, directory: str) -> None:
        import http.server
        import threading

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _QuietHandler.make(directory))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


SHARED_RPMS = REPO.parent / "shared" / "rpms" / "rocky9-curl"
"""The 67 signed Rocky Linux 9 RPMs (curl's closure) in ``../shared/rpms`` beside the repository root."""

SHARED_RPMS_REASON = "needs ../shared/rpms/rocky9-curl (the shared Rocky Linux 9 RPMs beside the checkout)"

needs_shared_rpms = pytest.mark.skipif(not SHARED_RPMS.is_dir(), reason=SHARED_RPMS_REASON)
"""Marks a test that reads the shared Rocky RPMs: it skips (with that reason) where they are absent."""


def require_shared_rpms() -> Path:
    """The shared Rocky RPM directory; skips the calling test or fixture where it is absent."""
    if not SHARED_RPMS.is_dir():
        pytest.skip(SHARED_RPMS_REASON)
    return SHARED_RPMS


def p256_keys(directory: Path, *names: str) -> dict[str, Path]:
    """ECDSA P-256 key pairs made by openssl, as cosign users make them: ``NAME`` and ``NAME.pub``."""
    out = {}
    for name in names:
        key, pub = directory / f"{name}.key", directory / f"{name}.pub"
        subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                        "-out", str(key)], check=True, capture_output=True)
        subprocess.run(["openssl", "pkey", "-in", str(key), "-pubout", "-out", str(pub)], check=True,
                       capture_output=True)
        out[name], out[f"{name}.pub"] = key, pub
    return out


def make_repo(directory: Path, rpms: list[Path]) -> Path:
    """Copy RPMs into ``directory`` and index them with createrepo_c."""
    if not have("createrepo_c"):
        pytest.skip("createrepo_c not installed")
    directory.mkdir(parents=True, exist_ok=True)
    for rpm in rpms:
        shutil.copy(rpm, directory / rpm.name)
    subprocess.run(["createrepo_c", "--quiet", str(directory)], check=True)
    return directory


def dpkg_owner(path: str) -> str | None:
    """The package dpkg says owns a host file (through merged-/usr aliases too), or ``None``."""
    for candidate in (path, path.replace("/usr/lib/", "/lib/", 1), path.replace("/usr/bin/", "/bin/", 1)):
        proc = subprocess.run(["dpkg-query", "-S", candidate], capture_output=True, text=True)
        if proc.returncode == 0:
            line = proc.stdout.splitlines()[0]
            if not line.startswith("diversion"):
                return line.split(": ", 1)[0].split(",")[0]
    return None
