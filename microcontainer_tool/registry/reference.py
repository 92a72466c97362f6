"""Docker-style image references: ``[host[:port]/]repo[:tag][@sha256:<hex>]``.

The grammar is distribution's (``github.com/distribution/reference``): the
first path component is a registry host when it contains ``.`` or ``:``, is
``localhost``, or has an upper-case letter; otherwise the image is on Docker
Hub, whose one-component names live under ``library/``. ``docker.io`` and
``index.docker.io`` are aliases of Docker Hub's API host
``registry-1.docker.io``. Without a tag or a digest the tag is ``latest``.

>>> str(Reference.parse("nginx"))
'registry-1.docker.io/library/nginx:latest'

:class:`RemoteURL` reads smith's registry URLs, ``SCHEME://[USER:PASSWORD@]HOST/REPO[:TAG]``,
where ``http://`` means plain HTTP and the first component is always the host.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass, field

from microcontainer_tool.errors import SpecError

DOCKER_HUB = "registry-1.docker.io"
"""The API host of Docker Hub."""

DOCKER_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", DOCKER_HUB})
"""Names that mean Docker Hub in a reference."""

DEFAULT_TAG = "latest"
NAME_MAX = 255

_DOMAIN_COMPONENT = r"(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])"
_HOST_RE = re.compile(
    rf"^(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{{1,5}})?$")
_PATH_COMPONENT_RE = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_ANY_DIGEST_RE = re.compile(r"^[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9A-Za-z=_-]+$")


def _is_host(component: str) -> bool:
    return ("." in component or ":" in component or component == "localhost"
            or component != component.lower())


def normalize_registry(host: str) -> str:
    """Return the API host for a registry name (Docker Hub's aliases -> ``registry-1.docker.io``)."""
    lowered = host.lower()
    return DOCKER_HUB if lowered in DOCKER_HUB_ALIASES else host


@dataclass(frozen=True)
class Reference:
    """A parsed, normalized image reference.

    Attributes:
        registry: API host and optional port (``registry-1.docker.io`` for Docker Hub).
        repository: repository path (``library/nginx``).
        tag: the tag, or ``None`` when only a digest was given.
        digest: ``sha256:<hex>`` or ``None``.
    """

    registry: str
    repository: str
    tag: str | None = DEFAULT_TAG
    digest: str | None = None

    @classmethod
    def parse(cls, text: str) -> Reference:
        """Parse ``[host[:port]/]repo[:tag][@sha256:<hex>]`` with Docker Hub defaults.

        Raises:
            SpecError: the reference is malformed (a one-line message naming it).
        """
        if not isinstance(text, str) or not text or text != text.strip():
            raise SpecError(f"invalid image reference {text!r}: empty or surrounded by spaces")
        rest, digest = text, None
        if "@" in text:
            rest, _, digest = text.partition("@")
            if not _DIGEST_RE.match(digest):
                if _ANY_DIGEST_RE.match(digest) and not digest.startswith("sha256:"):
                    raise SpecError(f"invalid image reference {text!r}: only sha256 digests are supported")
                raise SpecError(f"invalid image reference {text!r}: digest must be sha256:<64 lowercase hex>")
        tag: str | None = None
        slash, colon = rest.rfind("/"), rest.rfind(":")
        if colon > slash:
            rest, tag = rest[:colon], rest[colon + 1:]
            if not _TAG_RE.match(tag):
                raise SpecError(f"invalid image reference {text!r}: bad tag {tag!r}"
                                " (letters, digits, '_', '.', '-'; at most 128)")
        if not rest:
            raise SpecError(f"invalid image reference {text!r}: no repository")
        first, sep, remainder = rest.partition("/")
        if sep and _is_host(first):
            if not _HOST_RE.match(first):
                raise SpecError(f"invalid image reference {text!r}: bad registry host {first!r}")
            registry, path = normalize_registry(first), remainder
        else:
            registry, path = DOCKER_HUB, rest
        if registry == DOCKER_HUB and "/" not in path:
            path = f"library/{path}"
        for component in path.split("/"):
            if not _PATH_COMPONENT_RE.match(component):
                hint = " (must be lowercase)" if component.lower() != component else ""
                raise SpecError(f"invalid image reference {text!r}: bad repository component "
                                f"{component!r}{hint}")
        if len(registry) + 1 + len(path) > NAME_MAX:
            raise SpecError(f"invalid image reference {text!r}: name longer than {NAME_MAX} characters")
        if tag is None and digest is None:
            tag = DEFAULT_TAG
        return cls(registry, path, tag, digest)

    @property
    def reference(self) -> str:
        """What to ask the registry for: the digest if there is one, else the tag."""
        return self.digest or self.tag or DEFAULT_TAG

    @property
    def name(self) -> str:
        """``registry/repository`` without tag or digest."""
        return f"{self.registry}/{self.repository}"

    def with_digest(self, digest: str) -> Reference:
        """Return this reference pinned to ``digest`` (the tag is kept)."""
        return Reference(self.registry, self.repository, self.tag, digest)

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


@dataclass(frozen=True)
class RemoteURL:
    """A smith registry URL: ``http(s)://[USER:PASSWORD@]HOST/REPO[:TAG][@sha256:<hex>]``.

    Attributes:
        ref: the image reference (``HOST`` is its registry, even without a dot).
        plain_http: the scheme is ``http://``.
        username: the user name in the URL ("" for none), percent-decoded.
        password: the password in the URL ("" for none), percent-decoded; never in ``repr()``.
    """

    ref: Reference
    plain_http: bool
    username: str = ""
    password: str = field(default="", repr=False)

    @classmethod
    def parse(cls, text: str) -> RemoteURL:
        """Parse a smith registry URL.

        Raises:
            SpecError: the URL is malformed (the message shows it with the password masked).
        """
        scheme, sep, rest = text.partition("://")
        if not sep:
            scheme, rest = "", text
        authority, slash, path = rest.partition("/")
        userinfo, at, host = authority.rpartition("@")
        username, _colon, password = userinfo.partition(":")
        shown = f"{scheme}{sep}{username + ':***@' if password else userinfo + at}{host}{slash}{path}"
        expected = "expected http(s)://[USER:PASSWORD@]HOST/REPO[:TAG]"
        if not sep or scheme.lower() not in ("http", "https"):
            raise SpecError(f"invalid remote {shown!r}: {expected}")
        if not _HOST_RE.match(host) or not path:
            raise SpecError(f"invalid remote {shown!r}: {expected}")
        try:
            parsed = Reference.parse(f"localhost/{path}")
        except SpecError as error:
            reason = str(error).partition("': ")[2] or "malformed"
            raise SpecError(f"invalid remote {shown!r}: {reason}") from None
        registry = normalize_registry(host)
        repository = parsed.repository
        if registry == DOCKER_HUB and "/" not in repository:
            repository = f"library/{repository}"
        ref = Reference(registry, repository, parsed.tag, parsed.digest)
        return cls(ref, scheme.lower() == "http", urllib.parse.unquote(username),
                   urllib.parse.unquote(password))
