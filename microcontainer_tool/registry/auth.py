"""Registry credentials and the distribution auth protocol (basic and bearer tokens).

Where credentials come from (first match wins):

1. explicit: ``--username`` with the password read from standard input;
2. ``config.json`` in ``$DOCKER_CONFIG`` or ``~/.docker`` (or a given path):
   ``credHelpers[host]`` (``docker-credential-NAME get``), then ``credsStore``,
   then ``auths[host]`` (base64 ``user:password`` in ``auth``, or ``identitytoken``);
3. anonymous.

How they are used (:class:`Authenticator`): a request goes out with whatever
authorization is known for its scopes; a ``401`` carries a
``WWW-Authenticate`` challenge. ``Basic`` means the credentials go in every
request. ``Bearer realm=…,service=…,scope=…`` means a token is fetched from the
realm (with basic credentials if there are any, or an OAuth2 refresh-token
grant for an identity token) for the union of the scopes the operation needs
and the scopes the registry asked for. Tokens are cached **per scope set**:
a push needs ``repository:R:pull,push``, a cross-repository mount also
``repository:SRC:pull``; a cached token whose scopes cover a request's scopes
is reused until it expires.

Secrets (passwords, identity tokens, bearer tokens) never appear in messages,
exceptions, logs or ``repr()``: errors name where credentials came from, not
what they are.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

from microcontainer_tool import jsontext
from microcontainer_tool.errors import RegistryError, SpecError
from microcontainer_tool.registry.reference import DOCKER_HUB, normalize_registry

log = logging.getLogger(__name__)

DOCKER_HUB_CONFIG_KEY = "https://index.docker.io/v1/"
"""The key Docker uses for Docker Hub in ``config.json`` and credential helpers."""

HELPER_TIMEOUT = 30
"""Seconds a ``docker-credential-*`` helper may take."""

TOKEN_EXPIRY_MARGIN = 10
"""Seconds before a token's expiry at which it is no longer used."""

DEFAULT_TOKEN_LIFETIME = 60
"""Token lifetime when the token service does not say (the spec's default)."""

CLIENT_ID = "microcontainer-tool"


@dataclass(frozen=True)
class Credentials:
    """Credentials for one registry; secrets are excluded from ``repr()``.

    Attributes:
        username: user name ("" for anonymous or identity-token access).
        password: password or access token.
        identity_token: an OAuth2 refresh token (``identitytoken`` in ``config.json``).
        source: where they came from, for messages (never the secret itself).
    """

    username: str = ""
    password: str = field(default="", repr=False)
    identity_token: str = field(default="", repr=False)
    source: str = "anonymous"

    @property
    def anonymous(self) -> bool:
        """Whether there is nothing to authenticate with."""
        return not (self.username or self.password or self.identity_token)

    @property
    def has_basic(self) -> bool:
        """Whether basic (user name + password) authentication is possible."""
        return bool(self.username) and bool(self.password)

    def describe(self) -> str:
        """A secret-free phrase for messages: ``credentials from …`` or ``anonymous access``."""
        return "anonymous access" if self.anonymous else f"the credentials from {self.source}"


ANONYMOUS = Credentials()


# --- credential sources -------------------------------------------------------------------------


def config_key(registry: str) -> str:
    """The ``config.json``/credential-helper key for a registry host."""
    return DOCKER_HUB_CONFIG_KEY if normalize_registry(registry) == DOCKER_HUB else registry


def _normalize_key(key: str) -> str:
    text = key.strip()
    if "://" in text:
        text = urlsplit(text).netloc or text
    text = text.split("/", 1)[0]
    return normalize_registry(text.lower())


def docker_config_path(docker_config: str | None = None) -> str:
    """Return the ``config.json`` path to read.

    Args:
        docker_config: a directory (as ``$DOCKER_CONFIG``) or a ``.json`` file;
            default ``$DOCKER_CONFIG`` or ``~/.docker``.
    """
    base = (docker_config or os.environ.get("DOCKER_CONFIG")
            or os.path.join(os.path.expanduser("~"), ".docker"))
    return base if base.endswith(".json") else os.path.join(base, "config.json")


def read_password(stream: Any) -> str:
    """Read a password from a text stream (``--password-stdin``), without its final newline.

    Raises:
        SpecError: the stream is empty.
    """
    text = str(stream.read()).removesuffix("\n").removesuffix("\r")
    if not text:
        raise SpecError("no password on standard input")
    return text


def load_credentials(registry: str, *, username: str | None = None, password: str | None = None,
                     docker_config: str | None = None) -> Credentials:
    """Find the credentials for ``registry``.

    Args:
        registry: the registry host (``Reference.registry``).
        username: explicit user name; needs ``password``.
        password: explicit password (read from standard input by the CLI).
        docker_config: ``config.json`` directory or file (default ``$DOCKER_CONFIG`` or ``~/.docker``).

    Returns:
        The credentials, or :data:`ANONYMOUS`.

    Raises:
        SpecError: only one of ``username``/``password`` is given.
        RegistryError: ``config.json`` is malformed or a credential helper fails.
    """
    if username is not None or password is not None:
        if not username or not password:
            raise SpecError("--username needs a password on standard input (and a password needs --username)")
        return Credentials(username, password, source="--username")
    path = docker_config_path(docker_config)
    try:
        config = jsontext.load_file(path)
    except FileNotFoundError:
        return ANONYMOUS
    except OSError as error:
        raise RegistryError(f"{path}: cannot read: {error.strerror or error}") from None
    except ValueError as error:
        # A parse error: only its class (stay safe); a bound exceeded: its own text (no content).
        detail = str(error) if isinstance(error, jsontext.JsonLimitError) else error.__class__.__name__
        raise RegistryError(f"{path}: not valid JSON ({detail})") from None
    if not isinstance(config, dict):
        raise RegistryError(f"{path}: not a JSON object")
    return _from_config(registry, config, path)


def _from_config(registry: str, config: Mapping[str, Any], path: str) -> Credentials:
    wanted = normalize_registry(registry)
    helpers = config.get("credHelpers")
    if isinstance(helpers, dict):
        for key, helper in helpers.items():
            if isinstance(helper, str) and helper and _normalize_key(key) == wanted:
                found = run_credential_helper(helper, config_key(registry))
                if found is not None:
                    return found
    store = config.get("credsStore")
    if isinstance(store, str) and store:
        found = run_credential_helper(store, config_key(registry))
        if found is not None:
            return found
    auths = config.get("auths")
    if isinstance(auths, dict):
        for key, entry in auths.items():
            if isinstance(entry, dict) and _normalize_key(key) == wanted:
                found = _from_auths_entry(entry, f"{path} auths[{key!r}]")
                if found is not None:
                    return found
    return ANONYMOUS


def _from_auths_entry(entry: Mapping[str, Any], source: str) -> Credentials | None:
    identity = entry.get("identitytoken")
    encoded = entry.get("auth")
    username, password = entry.get("username"), entry.get("password")
    if isinstance(encoded, str) and encoded:
        try:
            decoded = base64.b64decode(encoded, validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            raise RegistryError(f"{source}: malformed base64 in 'auth'") from None
        username, sep, password = decoded.partition(":")
        if not sep:
            raise RegistryError(f"{source}: 'auth' is not base64 of user:password")
    if isinstance(identity, str) and identity:
        return Credentials(username if isinstance(username, str) else "", "", identity, source)
    if isinstance(username, str) and isinstance(password, str) and username and password:
        return Credentials(username, password, source=source)
    return None


def run_credential_helper(name: str, server: str) -> Credentials | None:
    """Ask ``docker-credential-NAME get`` for ``server``'s credentials.

    Returns:
        The credentials, or ``None`` when the helper has none for ``server``.

    Raises:
        RegistryError: the helper is missing, fails, or prints malformed output
            (the message never includes the helper's output).
    """
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise RegistryError(f"invalid credential helper name {name!r}")
    program = f"docker-credential-{name}"
    path = shutil.which(program)
    if path is None:
        raise RegistryError(f"credential helper {program} is not on PATH")
    try:
        proc = subprocess.run([path, "get"], input=server.encode(), capture_output=True,
                              timeout=HELPER_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise RegistryError(f"credential helper {program} timed out after {HELPER_TIMEOUT} s") from None
    except OSError as error:
        raise RegistryError(f"credential helper {program} cannot run: {error.strerror or error}") from None
    if proc.returncode != 0:
        said = (proc.stdout + proc.stderr).decode("utf-8", "replace").lower()
        if "credentials not found" in said or "not found in" in said:
            return None
        raise RegistryError(f"credential helper {program} failed for {server} (exit {proc.returncode})")
    try:
        data = jsontext.loads(proc.stdout)
        username, secret = data["Username"], data["Secret"]
    except (ValueError, KeyError, TypeError):
        raise RegistryError(f"credential helper {program} printed malformed output for {server}") from None
    if not isinstance(username, str) or not isinstance(secret, str) or not secret:
        return None
    if username == "<token>":
        return Credentials("", "", secret, f"credential helper {program}")
    return Credentials(username, secret, source=f"credential helper {program}")


# --- scopes and challenges ----------------------------------------------------------------------


def pull_scope(repository: str) -> str:
    """The token scope that allows reading ``repository``."""
    return f"repository:{repository}:pull"


def push_scope(repository: str) -> str:
    """The token scope that allows writing ``repository``."""
    return f"repository:{repository}:pull,push"


def normalize_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    """Merge scope strings (``type:name:a,b``, space-separated lists too) into a sorted tuple.

    Actions of the same resource are merged: ``repository:r:pull`` and
    ``repository:r:push`` give ``repository:r:pull,push``.
    """
    merged: dict[str, set[str]] = {}
    for text in scopes:
        for scope in text.split():
            resource, sep, actions = scope.rpartition(":")
            if not sep or not resource:
                merged.setdefault(scope, set())
                continue
            merged.setdefault(resource, set()).update(a for a in actions.split(",") if a)
    return tuple(sorted(f"{res}:{','.join(sorted(acts))}" if acts else res for res, acts in merged.items()))


def _covers(have: tuple[str, ...], want: tuple[str, ...]) -> bool:
    held: dict[str, set[str]] = {}
    for scope in have:
        resource, _, actions = scope.rpartition(":")
        held.setdefault(resource, set()).update(actions.split(","))
    for scope in want:
        resource, _, actions = scope.rpartition(":")
        if not set(actions.split(",")) <= held.get(resource, set()) and "*" not in held.get(resource, set()):
            return False
    return True


_PARAM_RE = re.compile(r'\s*([A-Za-z][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,"]*))\s*(?:,|$)')


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """Parse a ``WWW-Authenticate`` header into ``(scheme, params)`` (scheme lower-case).

    >>> parse_challenge('Bearer realm="https://a/token",service="r",scope="repository:x:pull"')
    ('bearer', {'realm': 'https://a/token', 'service': 'r', 'scope': 'repository:x:pull'})
    """
    scheme, _, rest = header.strip().partition(" ")
    params: dict[str, str] = {}
    pos = 0
    while pos < len(rest):
        match = _PARAM_RE.match(rest, pos)
        if not match or match.end() == pos:
            break
        quoted = match.group(2)
        value = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else match.group(3)
        params[match.group(1).lower()] = value
        pos = match.end()
    return scheme.lower(), params


# --- the authenticator --------------------------------------------------------------------------


class Response(Protocol):
    """What :class:`Authenticator` needs of an HTTP response (``requests.Response``)."""

    @property
    def status_code(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    def json(self) -> Any: ...


RequestFn = Callable[..., Any]
"""``request(method, url, *, headers=..., params=..., data=..., auth=...) -> Response``,
with the client's timeouts, retries and TLS policy (see :class:`~.registry.RegistryClient`)."""


@dataclass
class _Token:
    value: str = field(repr=False)
    scopes: tuple[str, ...]
    expires: float


class Authenticator:
    """Authorization for one registry: basic credentials or bearer tokens cached per scope set.

    Attributes:
        registry: the registry host (for messages).
        credentials: what to authenticate with.
        token_fetches: how many tokens were fetched (one per new scope set).
    """

    def __init__(self, registry: str, credentials: Credentials, request: RequestFn) -> None:
        """Create an authenticator.

        Args:
            registry: the registry host.
            credentials: credentials (:data:`ANONYMOUS` for none).
            request: sends an HTTP request with the client's policy.
        """
        self.registry = registry
        self.credentials = credentials
        self._request = request
        self._scheme: str | None = None
        self._realm = ""
        self._service: str | None = None
        self._tokens: list[_Token] = []
        self.token_fetches = 0

    def __repr__(self) -> str:
        return f"Authenticator({self.registry!r}, {self.credentials!r}, scheme={self._scheme!r})"

    def headers(self, scopes: Iterable[str]) -> dict[str, str]:
        """Return the ``Authorization`` header for a request needing ``scopes`` ({} if none known).

        Once the registry has asked for bearer tokens, a token for a new scope
        set is fetched here, before the request, saving a ``401`` round trip.
        """
        if self._scheme == "basic" and self.credentials.has_basic:
            return {"Authorization": "Basic " + _basic(self.credentials)}
        if self._scheme == "bearer":
            wanted = normalize_scopes(scopes)
            token = self._cached(wanted) or self._fetch(wanted)
            return {"Authorization": f"Bearer {token.value}"} if token.value else {}
        return {}

    def on_unauthorized(self, response: Response, scopes: Iterable[str]) -> bool:
        """Handle a ``401``: learn the scheme from its challenge and get authorization.

        Returns:
            Whether retrying the request can succeed (new authorization was obtained).

        Raises:
            RegistryError: the token service refuses or fails.
        """
        header = response.headers.get("WWW-Authenticate", "")
        scheme, params = parse_challenge(header) if header else ("", {})
        if scheme == "basic":
            first = self._scheme != "basic"
            self._scheme = "basic"
            return first and self.credentials.has_basic
        if scheme != "bearer" or not params.get("realm"):
            return False
        realm = params["realm"]
        if urlsplit(realm).scheme not in ("http", "https"):
            raise RegistryError(f"{self.registry}: unsupported token realm {realm!r}")
        wanted = normalize_scopes([*scopes, params.get("scope", "")])
        stale = self._cached(wanted)
        changed = (self._scheme, self._realm, self._service) != ("bearer", realm, params.get("service"))
        self._scheme, self._realm, self._service = "bearer", realm, params.get("service")
        if stale is not None and not changed:
            # The registry refused a token we thought valid: fetch a fresh one, once.
            self._tokens.remove(stale)
        self._fetch(wanted)
        return True

    def _cached(self, wanted: tuple[str, ...]) -> _Token | None:
        now = time.monotonic()
        self._tokens = [t for t in self._tokens if t.expires > now]
        for token in self._tokens:
            if _covers(token.scopes, wanted):
                return token
        return None

    def _fetch(self, scopes: tuple[str, ...]) -> _Token:
        creds = self.credentials
        realm_host = urlsplit(self._realm).netloc
        started = time.monotonic()
        if creds.identity_token:
            form = {"grant_type": "refresh_token", "refresh_token": creds.identity_token,
                    "client_id": CLIENT_ID, "scope": " ".join(scopes)}
            if self._service:
                form["service"] = self._service
            response = self._request("POST", self._realm, data=form)
        else:
            params: list[tuple[str, str]] = []
            if self._service:
                params.append(("service", self._service))
            params += [("scope", s) for s in scopes]
            if creds.username:
                params.append(("account", creds.username))
            response = self._request("GET", self._realm, params=params,
                                     auth=(creds.username, creds.password) if creds.has_basic else None)
        self.token_fetches += 1
        log.debug("token for %s from %s: HTTP %s", " ".join(scopes) or "(no scope)", realm_host,
                  response.status_code)
        if response.status_code in (401, 403):
            raise RegistryError(f"{self.registry}: the token service {realm_host} refused "
                                f"{creds.describe()} (HTTP {response.status_code})")
        if response.status_code != 200:
            raise RegistryError(f"{self.registry}: the token service {realm_host} failed "
                                f"(HTTP {response.status_code})")
        try:
            body = jsontext.loads(response.content)
            value = body.get("token") or body.get("access_token") or ""
            lifetime = int(body.get("expires_in") or DEFAULT_TOKEN_LIFETIME)
        except (ValueError, AttributeError, TypeError):
            raise RegistryError(
                f"{self.registry}: the token service {realm_host} sent a malformed reply") from None
        if not isinstance(value, str):
            raise RegistryError(f"{self.registry}: the token service {realm_host} sent a malformed token")
        token = _Token(value, scopes, started + max(lifetime - TOKEN_EXPIRY_MARGIN, 1))
        self._tokens.append(token)
        return token


def _basic(creds: Credentials) -> str:
    return base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode("ascii")
