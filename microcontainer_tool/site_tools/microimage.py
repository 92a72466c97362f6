"""SCons tool ``microimage`` as shipped in the installed package (see sconstool)."""

from microcontainer_tool.sconstool import exists, generate  # noqa: F401
