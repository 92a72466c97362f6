"""A directory tree used as the root the image's files are taken from.

Every lookup is confined to the root, the way the kernel resolves paths after
``chroot``: an absolute symlink target means the sysroot's path, never the
host's; a ``..`` that would climb above the root is refused as an escape.
"""

from __future__ import annotations

import os
import posixpath
import stat
from dataclasses import dataclass

from microcontainer_tool.errors import PathEscapeError, SourceError

MAX_SYMLINKS = 40


@dataclass(frozen=True)
class Resolved:
    """The result of resolving an image path inside a sysroot.

    Attributes:
        path: canonical image path (no symlink in any component).
        links: image paths of every symlink followed on the way, in order,
            each with its stored target: keeping them in the image keeps the
            chain the program will follow at run time.
        st: ``os.lstat`` result of the final object.
    """

    path: str
    links: tuple[tuple[str, str], ...]
    st: os.stat_result


class SysRoot:
    """A confined view of a directory tree (``/``, a debootstrap, an unpacked image)."""

    def __init__(self, root: str) -> None:
        """Open ``root``.

        Args:
            root: a host directory.

        Raises:
            SourceError: if ``root`` is not a directory.
        """
        real = os.path.realpath(root)
        if not os.path.isdir(real):
            raise SourceError(f"sysroot {root!r} is not a directory")
        self.root = real
        self.label = f"dir:{root}"
        self._cache: dict[str, Resolved | None] = {}

    def host_path(self, image_path: str) -> str:
        """Return the host path of a canonical image path (no resolution)."""
        rel = image_path.lstrip("/")
        return os.path.join(self.root, rel) if rel else self.root

    def lstat(self, image_path: str) -> os.stat_result | None:
        """``lstat`` of an image path's own entry, or ``None`` if absent."""
        try:
            return os.lstat(self.host_path(image_path))
        except (FileNotFoundError, NotADirectoryError):
            return None

    def readlink(self, image_path: str) -> str:
        """Return the stored target of the symlink at ``image_path``."""
        return os.readlink(self.host_path(image_path))

    def listdir(self, image_path: str) -> list[str]:
        """Names in a canonical directory, sorted."""
        try:
            return sorted(os.listdir(self.host_path(image_path)))
        except OSError as err:
            raise SourceError(f"cannot list {image_path} in {self.root}: {err.strerror}") from err

    def exists(self, image_path: str) -> bool:
        """Whether ``image_path`` resolves to an existing object."""
        return self.resolve(image_path) is not None

    def resolve(self, image_path: str, follow_last: bool = True) -> Resolved | None:
        """Resolve ``image_path`` inside the root, following symlinks.

        Args:
            image_path: an absolute image path (may contain symlinks, ``..``).
            follow_last: follow a symlink in the last component too.

        Returns:
            The canonical path, links followed and lstat, or ``None`` when the
            path (or a link target) does not exist.

        Raises:
            PathEscapeError: a ``..`` climbs above the root.
            SourceError: too many levels of symlinks.
        """
        key = f"{int(follow_last)}{image_path}"
        if key in self._cache:
            return self._cache[key]
        result = self._resolve(image_path, follow_last)
        self._cache[key] = result
        return result

    def _resolve(self, image_path: str, follow_last: bool) -> Resolved | None:
        pending = [p for p in image_path.split("/") if p not in ("", ".")]
        pending.reverse()
        current: list[str] = []
        links: list[tuple[str, str]] = []
        hops = 0
        st = self.lstat("/") or os.lstat(self.root)
        while pending:
            part = pending.pop()
            if part == "..":
                if not current:
                    raise PathEscapeError(
                        f"{image_path}: resolves above the sysroot {self.root}"
                        + (f" (via symlink {links[-1][0]} -> {links[-1][1]})" if links else "")
                    )
                current.pop()
                continue
            candidate = "/" + "/".join(current + [part])
            try:
                found = self.lstat(candidate)
            except OSError as err:
                raise SourceError(f"cannot read {candidate} in {self.root}: {err.strerror}") from err
            if found is None:
                return None
            st = found
            if stat.S_ISLNK(st.st_mode) and (pending or follow_last):
                hops += 1
                if hops > MAX_SYMLINKS:
                    raise SourceError(f"{image_path}: too many levels of symbolic links")
                target = self.readlink(candidate)
                links.append((candidate, target))
                if target.startswith("/"):
                    current = []
                parts = [p for p in target.split("/") if p not in ("", ".")]
                pending.extend(reversed(parts))
                continue
            if pending and not stat.S_ISDIR(st.st_mode):
                return None
            current.append(part)
        return Resolved("/" + "/".join(current), tuple(links), st)


def join_link(link_path: str, target: str) -> str:
    """The image path a symlink at ``link_path`` with ``target`` points to (unresolved)."""
    if target.startswith("/"):
        return target
    return posixpath.join(posixpath.dirname(link_path), target)


class LayeredRoot(SysRoot):
    """A sysroot with project files laid over it, as the image will have them.

    The ELF resolver looks through this view so that programs and libraries
    from ``files:`` or the ``rootfs/`` overlay find each other (``$ORIGIN``,
    RUNPATH) and shadow the sysroot's copies, exactly as in the final image.
    Directories implied by an overlaid path exist even if the sysroot lacks them.
    """

    def __init__(self, base: SysRoot, overlay: dict[str, str]) -> None:
        """Lay ``overlay`` (image path -> host path) over ``base``."""
        self.root = base.root
        self.label = base.label
        self._cache = {}
        self._base = base
        self._overlay = dict(overlay)
        self._implied: set[str] = set()
        for path in overlay:
            parent = posixpath.dirname(path)
            while parent != "/" and parent not in overlay:
                self._implied.add(parent)
                parent = posixpath.dirname(parent)
        self._dir_stat = os.stat_result((stat.S_IFDIR | 0o755, 0, 0, 2, 0, 0, 0, 0, 0, 0))

    def host_path(self, image_path: str) -> str:
        """Host path of a canonical image path: the overlay's file if it has one."""
        mapped = self._overlay.get(image_path)
        return mapped if mapped is not None else self._base.host_path(image_path)

    def lstat(self, image_path: str) -> os.stat_result | None:
        """``lstat`` through the overlay; implied directories look like 0755 dirs."""
        if image_path in self._overlay:
            return super().lstat(image_path)
        if image_path in self._implied:
            found = self._base.lstat(image_path)
            if found is not None and stat.S_ISDIR(found.st_mode):
                return found
            return self._dir_stat
        return self._base.lstat(image_path)

    def readlink(self, image_path: str) -> str:
        """Target of a symlink, from the overlay when it has that path."""
        mapped = self._overlay.get(image_path)
        return os.readlink(mapped) if mapped is not None else self._base.readlink(image_path)

    def listdir(self, image_path: str) -> list[str]:
        """Names in a canonical directory: the overlay's directory, else the base's."""
        if image_path in self._overlay:
            return super().listdir(image_path)
        return self._base.listdir(image_path)
