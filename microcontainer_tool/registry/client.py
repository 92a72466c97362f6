"""A small client for the OCI distribution API (registry v2) on ``requests``.

What it guarantees:

* every request has explicit (connect, read) timeouts, and every manifest or
  blob transfer an overall deadline (``deadline`` seconds plus one second per
  :data:`MIN_TRANSFER_RATE` bytes of its declared size), so a registry that
  trickles a byte at a time cannot hold a pull forever; connection errors,
  timeouts, ``429`` and ``5xx`` replies are retried a bounded number of times
  with exponential backoff; TLS is verified unless ``insecure``;
* manifests are sent as the caller's exact bytes, so the digest a build prints
  is the digest the registry stores (checked against ``Docker-Content-Digest``);
* everything received is verified: a manifest fetched by digest must hash to
  it (one fetched by tag is hashed, and must match the registry's
  ``Docker-Content-Digest``), a blob is streamed to a temporary file and renamed
  into place only after its digest (and size) matched;
* blobs larger than ``chunk_size`` are uploaded in ``PATCH`` chunks with
  ``Content-Range``, smaller ones in one ``PUT``; the registry's
  ``Docker-Content-Digest`` must be the expected digest;
* registry error bodies (``{"errors": [{"code", "message"}]}``) end up in
  one-line :class:`~microcontainer_tool.errors.RegistryError` messages, which
  never contain credentials.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, BinaryIO
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

import requests
import urllib3

from microcontainer_tool import jsontext
from microcontainer_tool.errors import DigestMismatchError, LayoutError, OutputError, RegistryError
from microcontainer_tool.hostfs.atomic import atomic_file
from microcontainer_tool.oci import model as oci
from microcontainer_tool.registry.auth import ANONYMOUS, Authenticator, Credentials, pull_scope, push_scope
from microcontainer_tool.registry.reference import normalize_registry

log = logging.getLogger(__name__)

DEFAULT_CHUNK_SIZE = 16 << 20
"""Blobs larger than this are uploaded in chunks of this size."""

READ_SIZE = 1 << 20
MAX_MANIFEST = 4 << 20
"""Largest manifest accepted (the distribution reference limit)."""

DEFAULT_DEADLINE = 300.0
"""Seconds every manifest or blob transfer may take, before its size is counted."""

MIN_TRANSFER_RATE = 256 << 10
"""Bytes per second a transfer must average: each such byte of a declared size adds 1 s to its deadline."""

MANIFEST_ACCEPT = (oci.MEDIA_TYPE_MANIFEST, oci.MEDIA_TYPE_INDEX, oci.DOCKER_MANIFEST,
                   oci.DOCKER_MANIFEST_LIST)
"""Media types :meth:`RegistryClient.get_manifest` asks for by default."""

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_BACKOFF = 10.0
USER_AGENT = "microcontainer-tool"

Progress = Callable[[str, int, int], None]
"""``progress(label, done_bytes, total_bytes)``."""

BlobSource = str | bytes | Callable[[], BinaryIO]
"""A file path, the bytes, or a function opening a fresh stream (called once per attempt)."""

_ERRNO_RE = re.compile(r"\[Errno -?\d+\] ([^'\")\]]+)")


def _cause(error: BaseException) -> str:
    """A short, secret-free description of a ``requests`` exception."""
    if isinstance(error, requests.exceptions.SSLError):
        if "CERTIFICATE_VERIFY_FAILED" in str(error) or "certificate verify failed" in str(error):
            return "TLS certificate verification failed (--insecure skips verification)"
        return "TLS handshake failed (a plain HTTP registry needs --plain-http)"
    if isinstance(error, requests.exceptions.ConnectTimeout):
        return "connection timed out"
    if isinstance(error, (requests.exceptions.ReadTimeout, urllib3.exceptions.ReadTimeoutError,
                          TimeoutError)):
        return "read timed out"
    match = _ERRNO_RE.search(str(error))
    if match:
        return match.group(1).strip().lower()
    if "RemoteDisconnected" in str(error) or "Connection aborted" in str(error):
        return "connection closed by the server"
    return error.__class__.__name__


def error_detail(response: requests.Response) -> str:
    """One line from a registry error reply: ``CODE: message; …`` or the HTTP reason."""
    text = ""
    try:
        body = jsontext.loads(response.content[:65536]) if response.content else None
        errors = body.get("errors") if isinstance(body, dict) else None
        if isinstance(errors, list):
            parts = []
            for item in errors[:5]:
                if isinstance(item, dict):
                    code, message = str(item.get("code", "")), str(item.get("message", ""))
                    parts.append(f"{code}: {message}" if code and message else code or message)
            text = "; ".join(p for p in parts if p)
    except (ValueError, RuntimeError):
        text = ""
    if not text:
        text = response.reason or ""
    text = " ".join(text.split())
    if len(text) > 300:
        text = text[:297] + "..."
    return f"HTTP {response.status_code}" + (f" {text}" if text else "")


class _Body:
    """A streamed request body of known length that hashes what it sends."""

    def __init__(self, stream: BinaryIO, size: int, progress: Callable[[int], None] | None = None) -> None:
        self._stream = stream
        self._left = size
        self._size = size
        self._progress = progress
        self.sha = hashlib.sha256()
        self.sent = 0

    def __len__(self) -> int:
        return self._size

    def read(self, amount: int = -1) -> bytes:
        if self._left <= 0:
            return b""
        want = self._left if amount is None or amount < 0 else min(amount, self._left)
        data = self._stream.read(want)
        if not data:
            # Raised through requests: the request must not hang waiting for missing bytes.
            raise DigestMismatchError(f"local blob content ends after {self.sent} of {self._size} bytes")
        self.sha.update(data)
        self._left -= len(data)
        self.sent += len(data)
        if self._progress is not None and data:
            self._progress(self.sent)
        return data


def _open_source(source: BlobSource) -> BinaryIO:
    if isinstance(source, str):
        try:
            return open(source, "rb")
        except OSError as error:
            raise LayoutError(f"{source}: cannot read: {error.strerror or error}") from None
    if isinstance(source, (bytes, bytearray, memoryview)):
        return io.BytesIO(bytes(source))
    return source()


class RegistryClient:
    """An OCI distribution API client for one registry.

    Attributes:
        registry: the registry host (``host[:port]``).
        base_url: ``https://host`` (or ``http://`` with ``plain_http``).
        auth: the authenticator (token cache); ``auth.token_fetches`` counts tokens.
        requests_sent: HTTP requests sent to the registry and its token service.
    """

    def __init__(self, ref_registry: str, session: requests.Session | None = None,
                 auth: Credentials | None = None, plain_http: bool = False, insecure: bool = False,
                 timeout: float = 30, retries: int = 3, chunk_size: int = DEFAULT_CHUNK_SIZE,
                 backoff: float = 0.5, deadline: float = DEFAULT_DEADLINE) -> None:
        """Create a client.

        Args:
            ref_registry: registry host as in a reference (``127.0.0.1:5000``, ``docker.io``...).
            session: a ``requests`` session to use (default: a new one, closed by :meth:`close`).
            auth: credentials (see :func:`~.auth.load_credentials`); default anonymous.
            plain_http: talk HTTP instead of HTTPS.
            insecure: do not verify TLS certificates.
            timeout: connect and read timeout per request, seconds.
            retries: retries after the first attempt on connection errors, 429 and 5xx.
            chunk_size: blobs larger than this are uploaded in ``PATCH`` chunks this big.
            backoff: first retry delay in seconds (doubles each time, at most 10 s).
            deadline: seconds a manifest or blob download may take in all, plus one
                second per :data:`MIN_TRANSFER_RATE` bytes of its declared size
                (checked between reads, each of which waits at most ``timeout``).
        """
        if chunk_size < 1 or retries < 0 or timeout <= 0 or deadline <= 0:
            raise ValueError("chunk_size, timeout and deadline must be positive, retries not negative")
        self.registry = normalize_registry(ref_registry)
        self.base_url = f"{'http' if plain_http else 'https'}://{self.registry}"
        self._own_session = session is None
        self.session = session or requests.Session()
        self.session.headers.setdefault("User-Agent", USER_AGENT)
        self.verify = not insecure
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.deadline = deadline
        self.chunk_size = chunk_size
        self.auth = Authenticator(self.registry, auth or ANONYMOUS, self._request)
        self.requests_sent = 0

    def close(self) -> None:
        """Close the session if this client created it."""
        if self._own_session:
            self.session.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RegistryClient({self.base_url!r})"

    # --- transport ------------------------------------------------------------------------------

    def _request(self, method: str, url: str, *, headers: Mapping[str, str] | None = None,
                 params: Any = None, data: Any = None, body: Callable[[], Any] | None = None,
                 auth: Any = None, stream: bool = False, allow_redirects: bool = True) -> requests.Response:
        """Send one request with timeouts and bounded retries; ``body()`` makes a fresh body per attempt."""
        attempt = 0
        while True:
            payload = body() if body is not None else data
            try:
                self.requests_sent += 1
                with warnings.catch_warnings():
                    if not self.verify:  # asked for explicitly: no warning per request
                        warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)
                    response = self.session.request(
                        method, url, headers=dict(headers or {}), params=params, data=payload, auth=auth,
                        stream=stream, allow_redirects=allow_redirects, verify=self.verify,
                        timeout=(self.timeout, self.timeout))
            except requests.exceptions.SSLError as error:
                raise RegistryError(f"{urlsplit(url).netloc}: {_cause(error)}") from None
            except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as error:
                if attempt >= self.retries:
                    raise RegistryError(f"{urlsplit(url).netloc}: {method} failed after {attempt + 1} "
                                        f"attempts: {_cause(error)}") from None
                log.debug("%s %s: %s; retrying", method, _safe_url(url), _cause(error))
            except requests.exceptions.RequestException as error:
                raise RegistryError(f"{urlsplit(url).netloc}: {method} failed: {_cause(error)}") from None
            else:
                log.debug("%s %s -> %s", method, _safe_url(url), response.status_code)
                if response.status_code not in RETRY_STATUSES or attempt >= self.retries:
                    return response
                response.close()
            delay = min(self.backoff * (2 ** attempt), MAX_BACKOFF)
            attempt += 1
            time.sleep(delay)

    def _send(self, method: str, url: str, scopes: Sequence[str], *,
              headers: Mapping[str, str] | None = None, **kwargs: Any) -> requests.Response:
        """Send an authorized request; on ``401`` follow the challenge and retry once."""
        retried = False
        while True:
            all_headers = dict(headers or {})
            all_headers.update(self.auth.headers(scopes))
            response = self._request(method, url, headers=all_headers, **kwargs)
            if response.status_code != 401 or retried:
                return response
            if not self.auth.on_unauthorized(response, scopes):
                return response
            response.close()
            retried = True

    def _url(self, repo: str, kind: str, ref: str) -> str:
        return f"{self.base_url}/v2/{repo}/{kind}/{ref}"

    def _fail(self, what: str, response: requests.Response) -> RegistryError:
        detail = error_detail(response)
        if response.status_code == 401:
            who = self.auth.credentials.describe()
            return RegistryError(f"{self.registry}: {what}: authentication failed with {who} ({detail})")
        if response.status_code == 403:
            return RegistryError(f"{self.registry}: {what}: access denied ({detail})")
        return RegistryError(f"{self.registry}: {what}: {detail}")

    # --- API ------------------------------------------------------------------------------------

    def ping(self) -> None:
        """Check that the registry speaks the v2 API (``GET /v2/``), authenticating if asked.

        Raises:
            RegistryError: it does not, or refuses the credentials.
        """
        response = self._send("GET", f"{self.base_url}/v2/", [])
        response.close()
        if response.status_code != 200:
            raise self._fail("GET /v2/", response)

    def blob_exists(self, repo: str, digest: str, *, push: bool = False) -> bool:
        """Whether ``repo`` has the blob ``digest`` (``HEAD``).

        Args:
            repo: repository path.
            digest: the blob's digest.
            push: ask for the push scope (so a push needs one token, not two).
        """
        oci.check_digest(digest)
        scopes = [push_scope(repo) if push else pull_scope(repo)]
        response = self._send("HEAD", self._url(repo, "blobs", digest), scopes)
        response.close()
        if response.status_code == 200:
            return True
        if response.status_code == 404:
            return False
        raise self._fail(f"HEAD blob {digest} in {repo}", response)

    def mount_blob(self, repo: str, digest: str, from_repo: str) -> bool:
        """Ask the registry to mount blob ``digest`` from ``from_repo`` into ``repo``.

        Returns:
            ``True`` if mounted (``201``); ``False`` if the registry started an
            ordinary upload instead (that upload session is cancelled).
        """
        oci.check_digest(digest)
        scopes = [push_scope(repo), pull_scope(from_repo)]
        response = self._send("POST", f"{self.base_url}/v2/{repo}/blobs/uploads/", scopes,
                              params={"mount": digest, "from": from_repo},
                              headers={"Content-Length": "0"})
        response.close()
        if response.status_code == 201:
            got = response.headers.get("Docker-Content-Digest")
            if got and got != digest:
                raise RegistryError(f"{self.registry}: mounting {digest} into {repo} gave {got}")
            return True
        if response.status_code == 202:
            location = response.headers.get("Location")
            if location:
                cancel = self._send("DELETE", urljoin(response.url, location), [push_scope(repo)])
                cancel.close()
            return False
        raise self._fail(f"mount {digest} from {from_repo} into {repo}", response)

    def upload_blob(self, repo: str, path_or_bytes: BlobSource, digest: str, size: int,
                    progress: Progress | None = None) -> None:
        """Upload a blob: one ``PUT`` up to ``chunk_size`` bytes, ``PATCH`` chunks beyond.

        Args:
            repo: repository path.
            path_or_bytes: a file path, the bytes, or a function opening a fresh stream.
            digest: the blob's digest (the registry verifies it, and so do we).
            size: its size in bytes.
            progress: called with ``(digest, done, size)`` as bytes go out.

        Raises:
            DigestMismatchError: the content we sent does not hash to ``digest``.
            RegistryError: the registry refused the upload or confirmed another digest.
        """
        oci.check_digest(digest)
        what = f"upload blob {digest} to {repo}"
        location = self._start_upload(repo, what)

        def report(done: int) -> None:
            if progress is not None:
                progress(digest, done, size)

        if size <= self.chunk_size:
            bodies: list[_Body] = []

            def make_body() -> _Body:
                for old in bodies:
                    old._stream.close()
                bodies.append(_Body(_open_source(path_or_bytes), size, report))
                return bodies[-1]

            try:
                response = self._send("PUT", _with_query(location, digest=digest), [push_scope(repo)],
                                      headers={"Content-Type": "application/octet-stream",
                                               "Content-Length": str(size)}, body=make_body)
            finally:
                for old in bodies:
                    old._stream.close()
            self._check_local(bodies[-1] if bodies else None, digest, size, what)
        else:
            location = self._upload_chunks(repo, location, path_or_bytes, digest, size, report, what)
            response = self._send("PUT", _with_query(location, digest=digest), [push_scope(repo)],
                                  headers={"Content-Length": "0"})
        response.close()
        if response.status_code != 201:
            raise self._fail(what, response)
        got = response.headers.get("Docker-Content-Digest")
        if got and got != digest:
            raise RegistryError(f"{self.registry}: {what}: registry stored {got}")

    def _start_upload(self, repo: str, what: str) -> str:
        response = self._send("POST", f"{self.base_url}/v2/{repo}/blobs/uploads/", [push_scope(repo)],
                              headers={"Content-Length": "0"})
        response.close()
        location = response.headers.get("Location")
        if response.status_code != 202 or not location:
            raise self._fail(what, response)
        return urljoin(response.url, location)

    def _check_local(self, body: _Body | None, digest: str, size: int, what: str) -> None:
        """Raise if what we streamed (all of it) does not hash to ``digest``."""
        if body is None or body.sent != size:
            return  # not (fully) sent: the registry's reply tells what went wrong
        actual = "sha256:" + body.sha.hexdigest()
        if actual != digest:
            raise DigestMismatchError(f"{self.registry}: {what}: local content is {actual} "
                                      f"({body.sent} bytes), expected {digest} ({size} bytes)")

    def _upload_chunks(self, repo: str, location: str, source: BlobSource, digest: str, size: int,
                       report: Callable[[int], None], what: str) -> str:
        sha = hashlib.sha256()
        hashed = 0
        offset = 0
        recoveries = 0
        with _open_source(source) as stream:
            while offset < size:
                stream.seek(offset)
                chunk = stream.read(min(self.chunk_size, size - offset))
                if not chunk:
                    raise DigestMismatchError(f"{self.registry}: {what}: local content ends at {offset} "
                                              f"bytes, expected {size}")
                end = offset + len(chunk)
                response = self._send(
                    "PATCH", location, [push_scope(repo)], data=chunk,
                    headers={"Content-Type": "application/octet-stream", "Content-Length": str(len(chunk)),
                             "Content-Range": f"{offset}-{end - 1}"})
                response.close()
                if response.status_code == 416 and recoveries < self.retries:
                    # Our view of the upload is out of date (a retried PATCH that had landed).
                    recoveries += 1
                    location, offset = self._upload_status(repo, location, what)
                    continue
                if response.status_code != 202:
                    raise self._fail(what, response)
                if offset == hashed:
                    sha.update(chunk)
                    hashed = end
                location = urljoin(response.url, response.headers.get("Location") or location)
                offset = _range_end(response.headers.get("Range"), end)
                report(offset)
        if hashed == size and "sha256:" + sha.hexdigest() != digest:
            raise DigestMismatchError(f"{self.registry}: {what}: local content is "
                                      f"sha256:{sha.hexdigest()}, expected {digest}")
        return location

    def _upload_status(self, repo: str, location: str, what: str) -> tuple[str, int]:
        response = self._send("GET", location, [push_scope(repo)])
        response.close()
        if response.status_code not in (200, 204):
            raise self._fail(what, response)
        return (urljoin(response.url, response.headers.get("Location") or location),
                _range_end(response.headers.get("Range"), 0))

    def put_manifest(self, repo: str, ref: str, data: bytes, media_type: str) -> str:
        """Store a manifest (or index) under a tag or digest: exactly these bytes.

        Returns:
            Its digest, as the registry confirmed it.

        Raises:
            RegistryError: refused (e.g. a blob it references is missing), or
                the registry reports another digest.
        """
        digest = oci.sha256_digest(data)
        if ref.startswith("sha256:") and ref != digest:
            raise RegistryError(f"{self.registry}: manifest is {digest}, cannot store it as {ref}")
        response = self._send("PUT", self._url(repo, "manifests", ref), [push_scope(repo)], data=data,
                              headers={"Content-Type": media_type})
        response.close()
        if response.status_code not in (200, 201):
            raise self._fail(f"put manifest {repo}:{ref}", response)
        got = response.headers.get("Docker-Content-Digest")
        if got and got != digest:
            raise RegistryError(f"{self.registry}: put manifest {repo}:{ref}: registry stored {got}, "
                                f"we sent {digest}")
        return digest

    def get_manifest(self, repo: str, ref: str,
                     accept: Sequence[str] = MANIFEST_ACCEPT) -> tuple[bytes, str, str]:
        """Fetch a manifest or index by tag or digest.

        Returns:
            ``(bytes, media_type, digest)``; the digest is computed from the bytes
            and checked against ``ref`` when ``ref`` is a digest.

        Raises:
            DigestMismatchError: the content does not hash to the digest asked for.
            RegistryError: not found, refused, too large, or of unknown type.
        """
        response = self._send("GET", self._url(repo, "manifests", ref), [pull_scope(repo)],
                              headers={"Accept": ", ".join(accept)}, stream=True)
        with response:
            if response.status_code != 200:
                _ = response.content  # read the error body for the message
                raise self._fail(f"get manifest {repo}:{ref}", response)
            data = _read_limited(response, MAX_MANIFEST, f"{self.registry}: manifest {repo}:{ref}",
                                 self._budget(0))
        digest = oci.sha256_digest(data)
        if ref.startswith("sha256:") and digest != ref:
            raise DigestMismatchError(f"{self.registry}: manifest {repo}@{ref} has content {digest}")
        header = response.headers.get("Docker-Content-Digest", "")
        if header.startswith("sha256:") and header != digest:
            raise DigestMismatchError(f"{self.registry}: manifest {repo}:{ref} is {digest}, "
                                      f"registry says {header}")
        media_type = _manifest_type(data, response.headers.get("Content-Type", ""))
        if media_type not in accept:
            raise RegistryError(f"{self.registry}: manifest {repo}:{ref} has unsupported media type "
                                f"{media_type!r}")
        return data, media_type, digest

    def get_blob(self, repo: str, digest: str, dest_path: str, size: int | None = None,
                 progress: Progress | None = None) -> int:
        """Download a blob to ``dest_path``, verified before it is renamed into place.

        The content is streamed into a temporary file next to ``dest_path``;
        only if it hashes to ``digest`` (and has ``size`` bytes, if given) is it
        renamed to ``dest_path``. Interrupted transfers are retried.

        Returns:
            The blob's size.

        Raises:
            DigestMismatchError: the content does not match (nothing is written).
            RegistryError: the blob is missing or the transfer keeps failing.
        """
        oci.check_digest(digest)
        attempt = 0
        while True:
            try:
                with atomic_file(dest_path, 0o600) as out:
                    count, actual = self._download(repo, digest, out, size, progress)
                    if actual != digest or (size is not None and count != size):
                        raise DigestMismatchError(
                            f"{self.registry}: blob {digest} from {repo} is {actual} ({count} bytes)"
                            + (f", expected {size} bytes" if size is not None else ""))
                return count
            except _Interrupted as error:
                if attempt >= self.retries:
                    raise RegistryError(f"{self.registry}: blob {digest} from {repo}: transfer failed "
                                        f"after {attempt + 1} attempts: {error}") from None
                log.debug("blob %s: %s; retrying", digest, error)
                time.sleep(min(self.backoff * (2 ** attempt), MAX_BACKOFF))
                attempt += 1
            except OSError as error:
                raise LayoutError(f"{dest_path}: cannot write: {error.strerror or error}") from None
            except OutputError as error:
                raise LayoutError(str(error)) from None

    def _download(self, repo: str, digest: str, out: BinaryIO, size: int | None,
                  progress: Progress | None) -> tuple[int, str]:
        response = self._send("GET", self._url(repo, "blobs", digest), [pull_scope(repo)], stream=True)
        with response:
            if response.status_code != 200:
                _ = response.content  # read the error body for the message
                raise self._fail(f"get blob {digest} from {repo}", response)
            total = size if size is not None else int(response.headers.get("Content-Length") or 0)
            sha = hashlib.sha256()
            count = 0
            limit = size if size is not None else None
            label = f"{self.registry}: blob {digest} from {repo}"
            try:
                for chunk in _chunks(response, READ_SIZE, self._budget(total), label):
                    count += len(chunk)
                    if limit is not None and count > limit:
                        raise DigestMismatchError(f"{self.registry}: blob {digest} from {repo} is larger "
                                                  f"than its {limit} bytes")
                    sha.update(chunk)
                    out.write(chunk)
                    if progress is not None:
                        progress(digest, count, total)
            except (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError,
                    requests.exceptions.Timeout, urllib3.exceptions.HTTPError) as error:
                raise _Interrupted(_cause(error)) from None
        return count, "sha256:" + sha.hexdigest()

    def _budget(self, size: int) -> float:
        """The seconds a transfer of ``size`` bytes may take in all."""
        return self.deadline + max(size, 0) / MIN_TRANSFER_RATE

    def tags(self, repo: str) -> list[str]:
        """List ``repo``'s tags (first page)."""
        response = self._send("GET", f"{self.base_url}/v2/{repo}/tags/list", [pull_scope(repo)])
        if response.status_code != 200:
            raise self._fail(f"list tags of {repo}", response)
        try:
            tags = jsontext.loads(response.content).get("tags") or []
        except (ValueError, AttributeError):
            raise RegistryError(f"{self.registry}: malformed tag list for {repo}") from None
        return [t for t in tags if isinstance(t, str)]


class _Interrupted(Exception):
    """A streamed download broke off (retryable)."""


def _chunks(response: requests.Response, size: int, seconds: float, label: str) -> Iterator[bytes]:
    """The body of ``response`` in pieces of at most ``size`` bytes, as they arrive.

    Each read returns what one receive brings (``read1``), so a server that
    trickles cannot keep one read going: the deadline is checked between reads.

    Raises:
        RegistryError: the transfer is still going after ``seconds``.
        urllib3.exceptions.HTTPError: the connection broke or a read timed out.
    """
    raw = response.raw
    deadline = time.monotonic() + seconds
    while True:
        if time.monotonic() > deadline:
            raise RegistryError(f"{label}: not received within its transfer deadline of {seconds:.0f} s")
        chunk = raw.read1(size, decode_content=True)
        if not chunk:
            return
        yield chunk


def _read_limited(response: requests.Response, limit: int, label: str, seconds: float) -> bytes:
    parts: list[bytes] = []
    count = 0
    try:
        for chunk in _chunks(response, 65536, seconds, label):
            count += len(chunk)
            if count > limit:
                raise RegistryError(f"{label} is larger than {limit} bytes")
            parts.append(chunk)
    except (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError,
            requests.exceptions.Timeout, urllib3.exceptions.HTTPError) as error:
        raise RegistryError(f"{label}: transfer failed: {_cause(error)}") from None
    return b"".join(parts)


def _manifest_type(data: bytes, content_type: str) -> str:
    declared = content_type.split(";", 1)[0].strip()
    try:
        body = jsontext.loads(data)
    except ValueError as error:
        raise RegistryError(f"registry sent a manifest that is not JSON: {error}") from None
    if not isinstance(body, dict):
        raise RegistryError("registry sent a manifest that is not a JSON object")
    if body.get("schemaVersion") == 1:
        raise RegistryError("Docker schema 1 manifests are not supported")
    inner = body.get("mediaType")
    if declared in MANIFEST_ACCEPT:
        if isinstance(inner, str) and inner and inner != declared:
            raise RegistryError(f"manifest says mediaType {inner!r} but was served as {declared!r}")
        return declared
    if isinstance(inner, str) and inner:
        return inner
    if "manifests" in body:
        return oci.MEDIA_TYPE_INDEX
    if "layers" in body:
        return oci.MEDIA_TYPE_MANIFEST
    return declared or "application/octet-stream"


def _range_end(header: str | None, default: int) -> int:
    """The next offset after a ``Range: 0-N`` header (``N + 1``), else ``default``."""
    if header:
        match = re.fullmatch(r"\s*(?:bytes=)?0-(\d+)\s*", header)
        if match:
            return int(match.group(1)) + 1
    return default


def _with_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), parts.fragment))


def _safe_url(url: str) -> str:
    """The URL without its query (upload state tokens are long and opaque)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))

