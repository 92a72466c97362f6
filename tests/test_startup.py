"""Start-up: what ``microcontainer --help`` loads (module counts, not timings).

The command line imports library modules inside its handlers, so printing
help (or an argument error) never loads the codecs, YAML, HTTP, ELF parsing or
the image writers. Each case runs a fresh interpreter and reads its
``sys.modules`` after the command line is done.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

#: Modules the help path must not load: third-party libraries and the heavy parts of the package.
HEAVY = ("yaml", "ruamel", "requests", "urllib3", "elftools", "deflate", "isal", "zstandard", "solv",
         "tarfile", "microcontainer_tool.oci.layout", "microcontainer_tool.oci.layer",
         "microcontainer_tool.oci.compression", "microcontainer_tool.build",
         "microcontainer_tool.spec.imagespec", "microcontainer_tool.registry.client",
         "microcontainer_tool.closure.elf", "microcontainer_tool.model.tree")

_PROBE = """
import json, sys
from microcontainer_tool import cli
try:
    cli.main(sys.argv[1:])
except SystemExit:
    pass
print(json.dumps(sorted(sys.modules)), file=sys.stderr)
"""


def modules_after(*argv: str) -> set[str]:
    """The modules a fresh interpreter holds after ``microcontainer ARGV``."""
    done = subprocess.run([sys.executable, "-c", _PROBE, *argv], capture_output=True, text=True, check=True)
    return set(json.loads(done.stderr.strip().splitlines()[-1]))


def heavy_in(modules: set[str]) -> list[str]:
    """The heavy modules (or their submodules) among ``modules``."""
    return sorted(name for name in modules if any(name == h or name.startswith(h + ".") for h in HEAVY))


@pytest.mark.parametrize("argv", [("--help",), ("build", "--help"), ("why", "--help"), ("push", "--help"),
                                  ("--version",), ("build",)])
def test_help_loads_no_heavy_module(argv: tuple[str, ...]) -> None:
    modules = modules_after(*argv)
    assert "microcontainer_tool.cli" in modules and "argparse" in modules  # the probe really ran the CLI
    assert heavy_in(modules) == []


def test_build_loads_them() -> None:
    """The check can fail: a real command loads what the help path must not."""
    modules = modules_after("inspect", "/nonexistent-image")
    assert "microcontainer_tool.oci.imageview" in modules
    assert heavy_in(modules)
