"""Real registries for tests: Debian's ``docker-registry`` on 127.0.0.1 and a token server.

``Env`` starts three registries, each with its own storage directory and a
free port: one open, one with htpasswd (bcrypt) basic auth, one with token
auth served by :class:`TokenServer` (JWTs signed RS256 with ``openssl``, the
self-signed certificate in the ``x5c`` header, trusted by the registry through
``rootcertbundle``), plus one behind TLS with a self-signed certificate.
"""

from __future__ import annotations

import base64
import http.server
import json
import re
import secrets
import socket
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from microcontainer_tool.registry.auth import Credentials, normalize_scopes
from microcontainer_tool.registry.client import RegistryClient
from microcontainer_tool.registry.reference import Reference

USER = "alice"
SERVICE = "mct-test-registry"
ISSUER = "mct-test-issuer"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class TokenServer:
    """A distribution token service: Basic auth for ``alice``, RS256 JWTs with an ``x5c`` header."""

    def __init__(self, workdir: Path, password: str) -> None:
        self.key = workdir / "token.key"
        self.cert = workdir / "token.pem"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(self.key),
                        "-out", str(self.cert), "-days", "2", "-subj", "/CN=mct-test-token-issuer"],
                       check=True, capture_output=True)
        pem = self.cert.read_text().splitlines()
        self.x5c = "".join(line for line in pem if not line.startswith("-----"))
        self.password = password
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                query = urllib.parse.parse_qs(url.query)
                user = server.check(self.headers.get("Authorization", ""))
                with server.lock:
                    server.requests.append({"scopes": query.get("scope", []), "user": user,
                                            "service": query.get("service", [""])[0]})
                if user is None:
                    self.send_response(401)
                    self.send_header("Content-Type", "application/json")
                    self.end_headers()
                    self.wfile.write(b'{"details":"invalid credentials"}')
                    return
                body = json.dumps({"token": server.token(user, query.get("scope", [])), "expires_in": 300})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body.encode())

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.realm = f"http://127.0.0.1:{self.httpd.server_address[1]}/token"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def check(self, header: str) -> str | None:
        """The user name for good Basic credentials, "" for none, ``None`` for bad ones."""
        if not header:
            return ""
        try:
            user, _, password = base64.b64decode(header.split(" ", 1)[1]).decode().partition(":")
        except (ValueError, IndexError):
            return None
        return user if (user, password) == (USER, self.password) else None

    def token(self, user: str, scopes: list[str]) -> str:
        access = []
        for scope in " ".join(scopes).split():
            kind, name, actions = scope.split(":")[0], ":".join(scope.split(":")[1:-1]), scope.split(":")[-1]
            access.append({"type": kind, "name": name, "actions": actions.split(",") if user else []})
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]}
        claims = {"iss": ISSUER, "sub": user, "aud": SERVICE, "exp": now + 300, "nbf": now - 10,
                  "iat": now, "jti": secrets.token_hex(8), "access": access}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        signature = subprocess.run(["openssl", "dgst", "-sha256", "-sign", str(self.key)],
                                   input=signing_input.encode(), capture_output=True, check=True).stdout
        return f"{signing_input}.{_b64url(signature)}"

    def scope_requests(self) -> list[tuple[str, ...]]:
        with self.lock:
            return [normalize_scopes(r["scopes"]) for r in self.requests]

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


class Registry:
    """A ``docker-registry serve CONFIG`` process on 127.0.0.1."""

    def __init__(self, workdir: Path, name: str, auth: dict[str, Any] | None,
                 tls: dict[str, str] | None = None, access_log: bool = False) -> None:
        self.dir = workdir / name
        self.storage = self.dir / "storage"
        self.storage.mkdir(parents=True)
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        config: dict[str, Any] = {
            "version": 0.1,
            "log": {"level": "warn", "accesslog": {"disabled": not access_log}},
            "storage": {"filesystem": {"rootdirectory": str(self.storage)}, "delete": {"enabled": True}},
            "http": {"addr": self.host, "secret": secrets.token_hex(16)},
        }
        if auth:
            config["auth"] = auth
        if tls:
            config["http"]["tls"] = tls
        self.config = self.dir / "config.yml"
        self.config.write_text(json.dumps(config))  # JSON is YAML
        self.log = open(self.dir / "registry.log", "wb")
        self.proc = subprocess.Popen(["docker-registry", "serve", str(self.config)], stdout=self.log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"docker-registry {name} did not start: "
                                   + (self.dir / "registry.log").read_text()[-2000:])
            time.sleep(0.05)

    def requests_logged(self) -> list[tuple[str, str]]:
        """``(method, path)`` of every request in the access log (``access_log=True``), oldest first."""
        self.log.flush()
        text = (self.dir / "registry.log").read_text(errors="replace")
        return [(m, p) for m, p in re.findall(r'"(GET|HEAD|POST|PUT|PATCH|DELETE) (\S+) HTTP/[\d.]+"', text)]

    def client(self, **kwargs: Any) -> RegistryClient:
        return RegistryClient(self.host, plain_http=True, backoff=0.01, **kwargs)

    def ref(self, text: str) -> Reference:
        return Reference.parse(f"{self.host}/{text}")

    def blob_data_path(self, digest: str) -> Path:
        hexd = digest.split(":", 1)[1]
        return self.storage / "docker/registry/v2/blobs/sha256" / hexd[:2] / hexd / "data"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


class Env:
    """Everything the session started."""

    def __init__(self, workdir: Path) -> None:
        self.password = secrets.token_urlsafe(18)
        self.started: list[Registry] = []
        htpasswd = subprocess.run(["htpasswd", "-Bbn", USER, self.password], capture_output=True, text=True,
                                  check=True).stdout.strip()
        (workdir / "htpasswd").write_text(htpasswd + "\n")
        self.tokens = TokenServer(workdir, self.password)
        try:
            self.open = self._start(workdir, "open", None)
            self.basic = self._start(workdir, "basic", {"htpasswd": {"realm": "mct-basic",
                                                                    "path": str(workdir / "htpasswd")}})
            self.token = self._start(workdir, "token", {"token": {
                "realm": self.tokens.realm, "service": SERVICE, "issuer": ISSUER,
                "rootcertbundle": str(self.tokens.cert)}})
            subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                            "-keyout", str(workdir / "tls.key"), "-out", str(workdir / "tls.pem"),
                            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                           check=True, capture_output=True)
            self.tls_cert = workdir / "tls.pem"
            self.tls = self._start(workdir, "tls", None, {"certificate": str(workdir / "tls.pem"),
                                                          "key": str(workdir / "tls.key")})
        except BaseException:
            self.stop()
            raise

    def _start(self, workdir: Path, name: str, auth: dict[str, Any] | None,
               tls: dict[str, str] | None = None) -> Registry:
        registry = Registry(workdir, name, auth, tls)
        self.started.append(registry)
        return registry

    def creds(self, password: str | None = None) -> Credentials:
        return Credentials(USER, password or self.password, source="the test")

    def stop(self) -> None:
        for registry in self.started:
            registry.stop()
        self.tokens.stop()


def running_registries(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    """The body of an ``env`` fixture: the registries started in a fresh directory, stopped after."""
    import shutil

    if not all(shutil.which(tool) for tool in ("docker-registry", "htpasswd", "openssl")):
        pytest.skip("needs docker-registry, htpasswd (apache2-utils) and openssl")
    environment = Env(tmp_path_factory.mktemp("registries"))
    try:
        yield environment
    finally:
        environment.stop()
