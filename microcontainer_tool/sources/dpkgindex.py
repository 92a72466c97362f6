"""An on-disk index of a host directory's dpkg database, kept in the tool's cache.

Naming the packages of an image's files means knowing which ``info/*.list``
names each path: on a full Debian host that is reading several MB of file
lists (100k+ lines) on every build. The index is an SQLite file,
``CACHE/dpkg/<hash of the root's path>.sqlite``, holding the installed
packages (their status stanzas) and every listed path with the key of the
package listing it (``""`` when several do: a shared directory). A build
then looks up only the paths of its image.

The index is used only while its *signature* matches the database: the
identity, size and mtime (ns) of ``/var/lib/dpkg/status``, of the ``info``
directory and of every ``*.list`` file in it. dpkg rewrites the status file
on every change and replaces file lists by renaming, so any install, removal
or upgrade (and a hand-edited list) gives a new signature, and the index is
rebuilt from the database itself. Indexes are written to a temporary file
and renamed into place, so concurrent builds never see half-written ones; a
corrupt or unreadable index is rebuilt, and a cache that cannot be written
only costs the speed-up.

Only a host directory whose ``/var/lib/dpkg`` has no symlink on the way is
indexed (:func:`signature` is ``None`` otherwise).
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from microcontainer_tool.errors import MicrocontainerError
from microcontainer_tool.hostfs.atomic import temp_file, unlink_quietly
from microcontainer_tool.sources.sysroot import SysRoot

if TYPE_CHECKING:
    import sqlite3

SCHEMA = 1
"""Changing the tables bumps it: an index of another schema is rebuilt."""
_BATCH = 500
"""Paths per lookup query (SQLite's host-parameter limit is 999 on old versions)."""

PackageRow = tuple[str, str, str, str, str, str]
"""``(key, name, version, arch, source, stanza)`` of one installed package."""


def index_path(cache_dir: str, root: SysRoot) -> str:
    """Where the index of ``root``'s database lives in ``cache_dir``."""
    name = hashlib.sha256(os.path.abspath(root.root).encode("utf-8", "surrogateescape")).hexdigest()[:32]
    return os.path.join(cache_dir, "dpkg", f"{name}.sqlite")


def signature(root: SysRoot, status: str, info_dir: str) -> str | None:
    """The state of ``root``'s dpkg database, or ``None`` when it is not indexable.

    Args:
        root: a host directory (not an image: those are never indexed).
        status: the image path of the status file.
        info_dir: the image path of the ``info`` directory.
    """
    if type(root) is not SysRoot:
        return None
    parts = [f"schema {SCHEMA}"]
    for path in (status, info_dir):
        resolved = root.resolve(path)
        if resolved is None or resolved.path != path:  # absent, or a symlink on the way
            return None
        st = resolved.st
        parts.append(f"{path} {st.st_dev} {st.st_ino} {st.st_size} {st.st_mtime_ns}")
    try:
        with os.scandir(root.host_path(info_dir)) as entries:
            for entry in entries:
                if entry.name.endswith(".list"):
                    st = entry.stat(follow_symlinks=False)
                    parts.append(f"{entry.name} {st.st_mode} {st.st_ino} {st.st_size} {st.st_mtime_ns}")
    except OSError:
        return None
    parts[3:] = sorted(parts[3:])
    return hashlib.sha256("\n".join(parts).encode("utf-8", "surrogateescape")).hexdigest()


class DpkgIndex:
    """An open index (read-only): the packages, and who lists a path."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._db = connection

    @classmethod
    def load(cls, path: str, expected: str) -> DpkgIndex | None:
        """Open the index at ``path`` if its signature is ``expected``; else ``None``."""
        import sqlite3

        if not os.path.exists(path):
            return None
        try:
            # immutable: an index is never changed in place, only replaced by a rename
            db = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
            row = db.execute("SELECT value FROM meta WHERE name = 'signature'").fetchone()
        except sqlite3.Error:
            return None
        if row is None or row[0] != expected:
            db.close()
            return None
        return cls(db)

    def packages(self) -> list[PackageRow] | None:
        """Every installed package, as the database had it when indexed (``None``: unreadable)."""
        import sqlite3

        try:
            query = "SELECT key, name, version, arch, source, stanza FROM packages ORDER BY rowid"
            return list(self._db.execute(query))
        except sqlite3.Error:
            return None

    def listed_by(self, wanted: dict[bytes, str]) -> dict[str, set[str]] | None:
        """Wanted path (the value) -> keys of the packages listing it (in any spelling).

        ``None`` when the index turned out unreadable (the caller reads the lists instead).
        """
        import sqlite3

        found: dict[str, set[str]] = {}
        spellings = list(wanted)
        try:
            for start in range(0, len(spellings), _BATCH):
                batch = spellings[start:start + _BATCH]
                query = f"SELECT path, key FROM files WHERE path IN ({','.join('?' * len(batch))})"
                for spelling, key in self._db.execute(query, batch):
                    found.setdefault(wanted[spelling], set()).add(key)
        except sqlite3.Error:
            return None
        return found

    def close(self) -> None:
        """Close the database."""
        self._db.close()


def _rows(lists: Iterable[tuple[str, bytes]]) -> Iterator[tuple[bytes, str]]:
    """``(path, key)`` for every listed path; ``""`` for a path several packages list."""
    index: dict[bytes, str] = {}
    shared: set[bytes] = set()
    for key, data in lists:
        listed = dict.fromkeys(data.split(b"\n"), key)
        shared |= listed.keys() & index.keys()
        index.update(listed)
    index.update(dict.fromkeys(shared, ""))
    index.pop(b"", None)
    return iter(index.items())


def save(path: str, sig: str, packages: Iterable[PackageRow], lists: Iterable[tuple[str, bytes]]) -> bool:
    """Write an index atomically; return whether it was written (a failure only costs speed)."""
    import sqlite3

    directory = os.path.dirname(path)
    try:
        os.makedirs(directory, exist_ok=True)
        fd, temp = temp_file(directory, os.path.basename(path))
    except (OSError, MicrocontainerError):
        return False
    os.close(fd)
    try:
        db = sqlite3.connect(temp)
        try:
            db.execute("PRAGMA journal_mode = OFF")
            db.execute("PRAGMA synchronous = OFF")
            db.execute("CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT)")
            db.execute("CREATE TABLE packages (key TEXT PRIMARY KEY, name TEXT, version TEXT, arch TEXT,"
                       " source TEXT, stanza TEXT)")
            db.execute("CREATE TABLE files (path BLOB PRIMARY KEY, key TEXT) WITHOUT ROWID")
            db.executemany("INSERT INTO packages VALUES (?, ?, ?, ?, ?, ?)", packages)
            db.executemany("INSERT INTO files VALUES (?, ?)", _rows(lists))
            db.execute("INSERT INTO meta VALUES ('signature', ?)", (sig,))
            db.commit()
        finally:
            db.close()
        os.chmod(temp, stat.S_IRUSR | stat.S_IWUSR | stat.S_IRGRP | stat.S_IROTH)
        os.replace(temp, path)
    except (OSError, sqlite3.Error):
        unlink_quietly(temp)
        return False
    return True
