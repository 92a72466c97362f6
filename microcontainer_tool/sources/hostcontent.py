"""Host files as layer content, small ones read whole once.

Assembly must know which files are ELF objects, so every selected file is
opened once for its first bytes. A small file is read whole by that same
open, and its bytes ride along in its :class:`~microcontainer_tool.model.tree.HostFile`:
the ELF check reads them, and so do the layer cache key and the layer writer,
so a tree of many small files is read from disk exactly once. The bytes kept
are bounded (:data:`KEEP_BUDGET` per build); past the budget, and for larger
files, the content is streamed from disk when the layer is written.
"""

from __future__ import annotations

import os

from microcontainer_tool.errors import SourceError
from microcontainer_tool.model.tree import HostFile

SMALL_FILE = 256 << 10
"""Files up to this size are read whole when selected."""
KEEP_BUDGET = 32 << 20
"""Most bytes of small files one build keeps in memory until its layer is written."""


class ContentReader:
    """Makes the :class:`HostFile` of a selected file, reading small ones whole."""

    def __init__(self, budget: int = KEEP_BUDGET) -> None:
        """Keep at most ``budget`` bytes of small files."""
        self.left = budget

    def host_file(self, host: str, st: os.stat_result) -> HostFile:
        """The content of the regular file ``host``, whose ``lstat`` is ``st``.

        Raises:
            SourceError: a small file cannot be read, or changes size while it is.
        """
        identity = (st.st_dev, st.st_ino) if st.st_nlink > 1 else None
        size = st.st_size
        if size > SMALL_FILE or size > self.left:
            return HostFile(host, size, identity)
        try:
            with open(host, "rb", buffering=0) as handle:
                data = handle.read(size + 1)
        except OSError as error:
            raise SourceError(f"{host}: cannot read: {error.strerror or error}") from None
        if len(data) != size:
            raise SourceError(f"{host}: changed size while being read ({size} bytes, then {len(data)})")
        self.left -= size
        return HostFile(host, size, identity, data)
