"""containers "simple signing": GPG-signed "atomic container signatures" in a lookaside store.

What podman, skopeo and CRI-O check with a ``signedBy`` policy (``policy.json``,
``keyType: GPGKeys``), as containers/image documents it (``containers-signature(5)``,
``containers-registries.d(5)``):

- the signed document is JSON: ``{"critical":{"type":"atomic container signature",
  "image":{"docker-manifest-digest":DIGEST},"identity":{"docker-reference":REF}},
  "optional":{"creator":...}}``; ``REF`` is the reference the image was pushed
  to, with its tag (the default ``matchRepoDigestOrExact`` identity rule);
- it is signed with ``gpg --sign`` (a binary OpenPGP signed message, not
  detached, not clear-signed);
- it is stored at ``<lookaside>/<repository path>@sha256=<hex>/signature-<N>``,
  ``N`` from 1, where ``<lookaside>`` is the ``lookaside-staging`` (older:
  ``sigstore-staging``) URL for writing, ``lookaside`` (``sigstore``) for
  reading, of the most specific ``docker:`` namespace of ``registries.d`` that
  names the image (the reference, its repository, parent namespaces, the host),
  else ``default-docker``, else ``/var/lib/containers/sigstore`` (root) or
  ``~/.local/share/containers/sigstore``. Only ``file://`` stores are written
  or read here; publish a directory store over HTTP(S) for clients elsewhere.

The ``registries.d`` directory is ``--registries.d DIR``, else
``~/.config/containers/registries.d`` when it exists, else
``/etc/containers/registries.d`` (every ``*.yaml`` file in it, merged).
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from microcontainer_tool import __version__
from microcontainer_tool.errors import MicrocontainerError, SigningError
from microcontainer_tool.hostfs.atomic import write_atomic
from microcontainer_tool.oci import model as oci
from microcontainer_tool.registry.reference import DOCKER_HUB, Reference
from microcontainer_tool.signing.claims import check_claim

SIGNATURE_TYPE = "atomic container signature"
SYSTEM_REGISTRIES_D = "/etc/containers/registries.d"
USER_REGISTRIES_D = os.path.join(".config", "containers", "registries.d")
MAX_SIGNATURE = 4 << 20
MAX_SIGNATURES = 128
GPG_TIMEOUT = 120


def docker_reference(ref: Reference, with_tag: bool = True) -> str:
    """The reference as containers/image names it (``docker.io/library/x:tag``, ``host:port/r:tag``)."""
    registry = "docker.io" if ref.registry == DOCKER_HUB else ref.registry
    text = f"{registry}/{ref.repository}"
    return f"{text}:{ref.tag}" if with_tag and ref.tag else text


def document(identity: str, digest: str) -> bytes:
    """The atomic container signature's JSON (what gpg signs)."""
    image = {"docker-manifest-digest": oci.check_digest(digest)}
    body = {"critical": {"type": SIGNATURE_TYPE, "image": image, "identity": {"docker-reference": identity}},
            "optional": {"creator": f"microcontainer-tool {__version__}"}}
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


# --- registries.d --------------------------------------------------------------------------------


def registries_dir(explicit: str | None = None) -> str:
    """The ``registries.d`` directory containers/image would use."""
    if explicit:
        return explicit
    user = os.path.join(os.path.expanduser("~"), USER_REGISTRIES_D)
    return user if os.path.isdir(user) else SYSTEM_REGISTRIES_D


def _load_config(directory: str) -> tuple[dict[str, Any] | None, dict[str, dict[str, Any]]]:
    default: dict[str, Any] | None = None
    namespaces: dict[str, dict[str, Any]] = {}
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return None, {}
    except OSError as error:
        raise SigningError(f"{directory}: cannot read: {error.strerror or error}") from None
    for name in names:
        if not name.endswith(".yaml"):
            continue
        path = os.path.join(directory, name)
        try:
            with open(path, encoding="utf-8") as handle:
                data = yaml.safe_load(handle.read(1 << 20)) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
            raise SigningError(f"{path}: cannot read registries.d configuration: {error}") from None
        if not isinstance(data, dict):
            raise SigningError(f"{path}: not a registries.d configuration (a mapping)")
        if isinstance(data.get("default-docker"), dict):
            if default is not None:
                raise SigningError(f"{path}: default-docker is defined in two files of {directory}")
            default = data["default-docker"]
        docker = data.get("docker") or {}
        if not isinstance(docker, dict):
            raise SigningError(f"{path}: docker: must be a mapping of namespaces")
        for namespace, config in docker.items():
            if namespace in namespaces:
                raise SigningError(f"{path}: docker namespace {namespace!r} is defined twice in {directory}")
            if isinstance(config, dict):
                namespaces[str(namespace)] = config
    return default, namespaces


def _namespaces(ref: Reference) -> list[str]:
    """The reference's identity, then its parent namespaces (most specific first), as policy scopes go."""
    name = docker_reference(ref, with_tag=False)
    out = [docker_reference(ref)] if ref.tag else []
    if ref.digest:
        out.append(f"{name}@{ref.digest}")
    parts = name.split("/")
    out += ["/".join(parts[:n]) for n in range(len(parts), 0, -1)]
    host = parts[0].split(":")[0]
    labels = host.split(".")
    out += ["*." + ".".join(labels[n:]) for n in range(1, len(labels)) if not host.replace(".", "").isdigit()]
    return out


def _top_level(config: Mapping[str, Any], write: bool) -> str:
    keys = (("lookaside-staging", "sigstore-staging") if write else ()) + ("lookaside", "sigstore")
    for key in keys:
        value = config.get(key)
        if isinstance(value, str) and value:
            return value
    return ""


def lookaside_dir(ref: Reference, write: bool, registries_d: str | None = None) -> str:
    """The local directory of the lookaside store for ``ref``'s repository (``<store>/<repo path>``).

    Raises:
        SigningError: an unreadable configuration, or a store that is not a ``file://`` URL.
    """
    directory = registries_dir(registries_d)
    default, namespaces = _load_config(directory)
    url = ""
    for name in _namespaces(ref):
        if name in namespaces:
            url = _top_level(namespaces[name], write)
            if url:
                break
    if not url and default is not None:
        url = _top_level(default, write)
    if not url:
        base = ("/var/lib/containers/sigstore" if os.geteuid() == 0
                else os.path.join(os.path.expanduser("~"), ".local", "share", "containers", "sigstore"))
    else:
        parsed = urllib.parse.urlparse(url)
        if parsed.scheme != "file" or not parsed.path:
            raise SigningError(f"lookaside store {url} (from {directory}): only file:// stores are "
                               "written and read here (publish the directory over HTTP for other clients)")
        base = urllib.parse.unquote(parsed.path)
    return os.path.join(base, ref.repository)


def signature_dir(ref: Reference, digest: str, write: bool, registries_d: str | None = None) -> str:
    """``<lookaside>/<repo>@sha256=<hex>``: where the signatures of ``digest`` are."""
    algorithm, _, hexpart = oci.check_digest(digest).partition(":")
    return f"{lookaside_dir(ref, write, registries_d)}@{algorithm}={hexpart}"


# --- gpg -----------------------------------------------------------------------------------------


def _gpg(args: list[str], data: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(["gpg", "--batch", "--no-tty", *args], input=data, capture_output=True,
                              timeout=GPG_TIMEOUT, check=False)
    except FileNotFoundError:
        raise SigningError("gpg is not installed (apt-get install gnupg)") from None
    except subprocess.TimeoutExpired:
        raise SigningError(f"gpg did not finish within {GPG_TIMEOUT} s (waiting for a passphrase?)") from None


def gpg_sign(fingerprint: str, data: bytes) -> bytes:
    """``gpg --sign`` ``data`` with the key ``fingerprint`` (the binary signed message).

    Raises:
        SigningError: gpg is missing or fails (no such secret key...).
    """
    proc = _gpg(["--local-user", fingerprint, "--sign", "--output", "-"], data)
    if proc.returncode != 0 or not proc.stdout:
        detail = proc.stderr.decode(errors="replace").strip().splitlines()
        raise SigningError(f"gpg could not sign with {fingerprint}: {detail[-1] if detail else 'failed'}")
    return proc.stdout


@dataclass(frozen=True)
class GpgResult:
    """What gpg said of a signed message.

    Attributes:
        fingerprints: the signing key's fingerprint and its primary key's (``VALIDSIG``), if valid.
        content: the signed content.
        problem: why it is not valid (one line), or ``""``.
    """

    fingerprints: tuple[str, ...]
    content: bytes
    problem: str = ""


def gpg_open(signed: bytes) -> GpgResult:
    """Verify a signed message with the keyring gpg uses (``$GNUPGHOME``) and return its content.

    Raises:
        SigningError: gpg is missing.
    """
    with tempfile.TemporaryDirectory(prefix="mct-gpg-") as scratch:
        status = os.path.join(scratch, "status")
        message = os.path.join(scratch, "signed")
        with open(message, "wb") as handle:
            handle.write(signed)
        proc = _gpg(["--status-file", status, "--output", "-", "--decrypt", message])
        try:
            with open(status, encoding="utf-8", errors="replace") as handle:
                lines = handle.read().splitlines()
        except OSError:
            lines = []
    fingerprints: tuple[str, ...] = ()
    problem = ""
    for line in lines:
        words = line.split()
        if len(words) >= 3 and words[0] == "[GNUPG:]" and words[1] == "VALIDSIG":
            fingerprints = (words[2].upper(), words[-1].upper())
        elif len(words) >= 3 and words[0] == "[GNUPG:]" and words[1] == "NO_PUBKEY":
            problem = f"the signing key {words[2]} is not in gpg's keyring"
        elif len(words) >= 2 and words[0] == "[GNUPG:]" and words[1] == "BADSIG":
            problem = "the GPG signature is bad (the signed content was changed)"
    if proc.returncode != 0 and not problem:
        problem = "gpg could not verify the signature"
    if problem or not fingerprints:
        return GpgResult((), b"", problem or "no valid GPG signature")
    return GpgResult(fingerprints, proc.stdout)


def _matches(wanted: str, fingerprints: tuple[str, ...]) -> bool:
    return any(fpr == wanted or (len(wanted) == 16 and fpr.endswith(wanted)) for fpr in fingerprints)


def check(result: GpgResult, fingerprint: str, digest: str, ref: Reference | None) -> str | None:
    """Check a verified message: ``None`` if ``fingerprint`` signed an atomic signature of ``digest``.

    Args:
        result: :func:`gpg_open`'s answer.
        fingerprint: the key that must have signed it.
        digest: the manifest digest it must name.
        ref: the image as the user named it: by tag, the signature must name
            exactly it; by digest, its repository (``matchRepoDigestOrExact``).
            ``None``: the identity is not checked.
    """
    if result.problem:
        return result.problem
    if not _matches(fingerprint, result.fingerprints):
        return f"signed by {result.fingerprints[0]}, not {fingerprint}"
    critical, problem = check_claim(result.content, MAX_SIGNATURE, SIGNATURE_TYPE, digest, "signed content")
    if problem or ref is None:
        return problem
    named = critical.get("identity")
    reference = named.get("docker-reference") if isinstance(named, dict) else None
    if ref.tag and not ref.digest:
        wanted = docker_reference(ref)
        return None if reference == wanted else f"the signature names {reference}, not {wanted}"
    try:
        repository = docker_reference(Reference.parse(str(reference)), with_tag=False)
    except MicrocontainerError:
        return f"the signature names {reference!r}, not an image reference"
    wanted = docker_reference(ref, with_tag=False)
    return None if repository == wanted else f"the signature names {reference}, not {wanted}"


# --- the store -----------------------------------------------------------------------------------


def write_signature(ref: Reference, digest: str, fingerprint: str, registries_d: str | None = None) -> str:
    """Sign ``digest`` as pushed to ``ref`` with GPG and add it to the lookaside store.

    Returns:
        The signature file written (the next free ``signature-N``).

    Raises:
        SigningError: gpg fails, or the store is not a local directory or cannot be written.
    """
    identity = docker_reference(ref)
    signed = gpg_sign(fingerprint, document(identity, digest))
    directory = signature_dir(ref, digest, True, registries_d)
    for number in range(1, MAX_SIGNATURES + 1):
        path = os.path.join(directory, f"signature-{number}")
        if not os.path.exists(path):
            break
    else:
        raise SigningError(f"{directory}: already holds {MAX_SIGNATURES} signatures")
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as error:
        raise SigningError(f"{directory}: cannot create: {error.strerror or error}") from None
    write_atomic(path, signed, 0o644)
    return path


def read_signatures(ref: Reference, digest: str, registries_d: str | None = None) -> list[tuple[str, bytes]]:
    """The signatures of ``digest`` in the lookaside store (read side): ``(path, bytes)``, in order.

    Raises:
        SigningError: the configuration is unreadable, or a signature file cannot be read.
    """
    directory = signature_dir(ref, digest, False, registries_d)
    out = []
    for number in range(1, MAX_SIGNATURES + 1):
        path = os.path.join(directory, f"signature-{number}")
        try:
            with open(path, "rb") as handle:
                out.append((path, handle.read(MAX_SIGNATURE)))
        except FileNotFoundError:
            break
        except OSError as error:
            raise SigningError(f"{path}: cannot read: {error.strerror or error}") from None
    return out
