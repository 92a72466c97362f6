"""The names of the output formats, apart from their writers.

The command line offers them as choices; importing them from here keeps
``microcontainer --help`` from loading the writers (:mod:`.layout` pulls in the
codecs, tar and the referrers machinery).
"""

from __future__ import annotations

FORMATS = ("oci", "oci-archive", "smith", "docker-archive")
"""Output format names accepted by :func:`microcontainer_tool.oci.layout.write_image`."""

COMPRESSIONS = ("gzip", "gzip-fast", "zstd", "none")
"""Layer codec names accepted by :func:`microcontainer_tool.oci.compression.open_compressor`."""
