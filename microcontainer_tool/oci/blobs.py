"""Verified JSON blobs: a content-addressed blob read, checked against its descriptor, and parsed.

Manifests, indexes and configs are small JSON blobs named by their digest. Every
reader of one (a layout's referrers, an image view of a layout or archive, a
pull) goes through :func:`read_json_blob`, so each is bounded, verified (digest
and size) and parsed the same way, with the same messages.
"""

from __future__ import annotations

from typing import Any, BinaryIO

from microcontainer_tool import jsontext
from microcontainer_tool.errors import DigestMismatchError, LayoutError
from microcontainer_tool.oci import model as oci
from microcontainer_tool.oci.model import Descriptor

MAX_JSON_BLOB = 16 << 20
"""The largest JSON blob (manifest, index, config) read by default."""


def read_json_blob(handle: BinaryIO, desc: Descriptor, label: str,
                   limit: int = MAX_JSON_BLOB) -> dict[str, Any]:
    """Read a JSON-object blob from ``handle``, check it against ``desc`` and parse it.

    Args:
        handle: the blob's content, open for binary reading (the caller closes it).
        desc: the blob's descriptor: its content must have this digest and size.
        label: what the messages name first (a layout, an image, a reference).
        limit: the largest size accepted.

    Returns:
        The parsed JSON object.

    Raises:
        DigestMismatchError: the content does not match ``desc``.
        LayoutError: the blob is larger than ``limit``, unreadable, not JSON,
            or not a JSON object.
    """
    if desc.size > limit:
        raise LayoutError(f"{label}: blob {desc.digest} is too large ({desc.size} bytes, at most {limit})")
    try:
        data = handle.read(limit + 1)
    except OSError as error:
        raise LayoutError(f"{label}: cannot read blob {desc.digest}: {error.strerror or error}") from None
    if len(data) != desc.size or oci.sha256_digest(data) != desc.digest:
        raise DigestMismatchError(f"{label}: blob {desc.digest} does not match its content")
    return parse_json_object(data, f"{label}: blob {desc.digest}")


def parse_json_object(data: bytes, what: str) -> dict[str, Any]:
    """Parse ``data`` as a JSON object; ``what`` names it in the one-line error.

    Raises:
        LayoutError: not valid JSON, or not an object.
    """
    try:
        obj = jsontext.loads(data)
    except ValueError as error:
        raise LayoutError(f"{what} is not valid JSON: {error}") from None
    if not isinstance(obj, dict):
        raise LayoutError(f"{what} is not a JSON object")
    return obj
