"""The tool-wide cache directory (package downloads, solv files, layers, pulled images, bundles)."""

from __future__ import annotations

import os


def default_cache_dir() -> str:
    """``$MCT_CACHE_DIR``, else ``$XDG_CACHE_HOME/microcontainer-tool``, else ``~/.cache/...``."""
    explicit = os.environ.get("MCT_CACHE_DIR")
    if explicit:
        return explicit
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "microcontainer-tool")
