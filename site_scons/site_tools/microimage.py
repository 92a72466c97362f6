"""SCons tool ``microimage`` for this repository: the adapter lives in the package."""

import os
import sys

try:
    import microcontainer_tool  # noqa: F401
except ImportError:  # a checkout without `pip install`: use the package beside site_scons/
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from microcontainer_tool.sconstool import exists, generate  # noqa: E402,F401
