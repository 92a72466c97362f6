"""Local images whose referrers are read or written: OCI layouts, and oci-archives through one.

An OCI layout is edited in place (:func:`~microcontainer_tool.oci.referrers.attach`).
An oci-archive (``.tar``) is unpacked into a temporary layout, edited there,
and written back atomically as the same reproducible tar the build writes
(sorted members, normalized headers): attaching nothing gives the same bytes.
smith's ``.tar.gz`` and docker-archives cannot carry referrers: they are refused.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from microcontainer_tool.errors import LayoutError
from microcontainer_tool.oci.layout import format_for_path, sync_layout_from_archive, write_archive_file
from microcontainer_tool.oci.store import BLOBS_DIR, INDEX_FILE, OCI_LAYOUT_FILE


def _split(path: str) -> str:
    """The file or directory of ``DIR[:TAG]`` (the tag, if any, is not needed to find referrers)."""
    if not os.path.exists(path) and ":" in path:
        head = path.rsplit(":", 1)[0]
        if os.path.exists(head):
            return head
    return path


def _kind(path: str) -> str:
    if os.path.isdir(path):
        return "oci"
    if not os.path.isfile(path):
        raise LayoutError(f"{path}: no such image")
    fmt = format_for_path(path)
    if fmt != "oci-archive":
        raise LayoutError(f"{path}: only OCI layouts and oci-archives (.tar) hold signatures and attestations"
                          " (smith .tar.gz and docker-archives cannot carry OCI referrers)")
    return fmt


@contextmanager
def layout_of(path: str, write: bool) -> Iterator[str]:
    """Yield an OCI layout directory holding the image at ``path`` (``DIR[:TAG]`` or ``FILE.tar``).

    For an oci-archive, a temporary layout; with ``write``, it replaces the
    archive (atomically) when the block ends without an error.

    Raises:
        LayoutError: not a layout or oci-archive, or it cannot be read or written.
    """
    path = _split(path)
    if _kind(path) == "oci":
        yield path
        return
    scratch = tempfile.mkdtemp(prefix="mct-sign-")  # the archive's directory may be read-only (verify)
    try:
        layout = os.path.join(scratch, "layout")
        sync_layout_from_archive(path, layout)
        yield layout
        if write:
            members: dict[str, bytes | str] = {}
            for name in (OCI_LAYOUT_FILE, INDEX_FILE):
                with open(os.path.join(layout, name), "rb") as handle:
                    members[name] = handle.read()
            blobs = os.path.join(layout, BLOBS_DIR)
            for name in sorted(os.listdir(blobs)):
                if not name.startswith("."):
                    members[f"{BLOBS_DIR}/{name}"] = os.path.join(blobs, name)
            write_archive_file(path, members, gzip=False)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
