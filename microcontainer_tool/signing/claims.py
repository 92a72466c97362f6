"""The simple-signing claim that cosign's and the containers' signatures both sign.

Both formats sign a JSON document whose ``critical`` part names the claim's
``type``, the signed ``image`` (``docker-manifest-digest``) and its
``identity`` (``docker-reference``); they differ in the type and in how the
bytes are signed (:mod:`~microcontainer_tool.signing.cosign`,
:mod:`~microcontainer_tool.signing.simplesign`).
"""

from __future__ import annotations

from typing import Any

from microcontainer_tool import jsontext


def check_claim(data: bytes, limit: int, kind: str, digest: str,
                what: str) -> tuple[dict[str, Any], str | None]:
    """Check that signed ``data`` is a claim of type ``kind`` about the manifest ``digest``.

    Args:
        data: the signed bytes (already verified as signed).
        limit: the most bytes they may have.
        kind: the ``critical.type`` the format uses.
        digest: the manifest digest the claim must name.
        what: how messages name the bytes (``signed payload``).

    Returns:
        ``(critical, None)`` when it holds; ``({}, why not)`` in one line otherwise.
    """
    try:
        body = jsontext.loads(data, limit)
    except ValueError:
        return {}, f"the {what} is not JSON"
    critical = body.get("critical") if isinstance(body, dict) else None
    if not isinstance(critical, dict) or critical.get("type") != kind:
        return {}, f"the {what} is not a{'n' if kind[0] in 'aeiou' else ''} {kind}"
    image = critical.get("image")
    signed = image.get("docker-manifest-digest") if isinstance(image, dict) else None
    if signed != digest:
        return {}, f"the signature is for {signed}, not {digest}"
    return critical, None
