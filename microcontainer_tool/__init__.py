"""microcontainer-tool: minimal, read-only, byte-reproducible OCI images.

The package is layered: :mod:`spec` (what the user asked for), :mod:`tree`
(the model: what goes in the image), :mod:`sysroot`/:mod:`elf`/:mod:`ldd`
(reading inputs), :mod:`assemble` (spec + inputs -> tree), and the writers
:mod:`layer`, :mod:`oci`, :mod:`layout`. :mod:`cli` is the front end.
"""

__version__ = "0.1.0"

#: Bumped whenever the same inputs would give different output bytes; build
#: systems put it in their signatures so an upgrade rebuilds images.
FORMAT_VERSION = "3"
