"""microcontainer-tool: minimal, read-only, byte-reproducible OCI images.

Subpackages follow the data flow (ARCHITECTURE.md has the map): :mod:`.spec`
(what the user asked for) -> :mod:`.sources` (directory trees, dpkg facts,
RPMs, images) -> :mod:`.closure` (ELF, ld.so's rules) -> :mod:`.model` (the
file tree and its provenance), built by :mod:`.assembly` -> :mod:`.oci`
(layers, codecs, layouts) -> :mod:`.registry`; :mod:`.runtime` runs images and
:mod:`.reports` describes them; :mod:`.hostfs` writes atomically for all.
:mod:`.build` is the pipeline; :mod:`.cli` and :mod:`.sconstool` are the front ends.
"""

__version__ = "0.1.0"

#: Bumped whenever the same inputs would give different output bytes; build
#: systems put it in their signatures so an upgrade rebuilds images.
FORMAT_VERSION = "3"
