"""The one exception hierarchy of microcontainer-tool.

Every error a user can cause is a :class:`MicrocontainerError` whose ``str()`` is a
clear one-line message. Only the CLI (and the SCons adapter) turn these into exit
codes or build errors; library code raises and never prints.
"""

from __future__ import annotations


class MicrocontainerError(Exception):
    """Base class of every error a user can cause; ``str(err)`` is one line."""

    exit_code = 1

    def __str__(self) -> str:
        text = super().__str__()
        return " ".join(text.split("\n")) if "\n" in text else text


class SpecError(MicrocontainerError):
    """The spec file is unreadable, not YAML, or not a valid spec."""

    exit_code = 2


class UnsupportedError(SpecError):
    """A spec key or option names a feature this version does not implement."""


class SourceError(MicrocontainerError):
    """An input (sysroot, project file, overlay) is missing or unusable."""


class PathEscapeError(SourceError):
    """A path or link in an input would resolve outside its root."""


class ElfError(MicrocontainerError):
    """An ELF file is corrupt or cannot be read."""


class MissingLibraryError(MicrocontainerError):
    """A DT_NEEDED library (or PT_INTERP) could not be found in the sysroot."""


class LayoutError(MicrocontainerError):
    """An image (OCI layout, archive) is malformed or cannot be written."""


class LayerLimitError(LayoutError):
    """A layer expands past the allowed uncompressed size or ratio (a decompression bomb)."""


class OutputError(MicrocontainerError):
    """An output file or directory cannot be written, renamed or replaced."""


class DigestMismatchError(LayoutError):
    """Content does not match the digest that names it."""


class LayerMismatchError(LayoutError):
    """A layer made elsewhere (a shared cache's) is not the tree it is supposed to hold."""


class RpmError(MicrocontainerError):
    """An RPM package is corrupt, truncated, fails a digest, or cannot be extracted safely."""


class RepoError(MicrocontainerError):
    """A package repository (yum/dnf ``repodata``) is unreachable, malformed, or truncated."""


class ResolveError(MicrocontainerError):
    """The requested packages cannot be resolved to an installable set."""


class RegistryError(MicrocontainerError):
    """A registry (OCI distribution API) or its auth service refused a request or is unreachable."""


class RunError(MicrocontainerError):
    """A container cannot be prepared, started, found, stopped or debugged."""


class ProbeError(RunError):
    """A probe command (``build --probe``) failed, or looked for files the image lacks."""


class SigningError(MicrocontainerError):
    """A key cannot be read or used, a signature cannot be made or stored, or gpg fails."""
