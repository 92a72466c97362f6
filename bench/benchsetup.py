"""Set-up every bench does before it times anything.

This machine (and many CI machines) export ``PYTHONDONTWRITEBYTECODE=1``, so
without this step every timed run would compile the package's sources again,
which an installed package never does.
"""

from __future__ import annotations

import compileall
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def compile_package() -> None:
    """Write the bytecode of ``microcontainer_tool/`` (as ``pip install`` would); quiet, idempotent."""
    compileall.compile_dir(os.path.join(REPO, "microcontainer_tool"), quiet=1)
