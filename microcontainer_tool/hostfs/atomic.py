"""Atomic writes: every output is written beside its target under a temporary name, then renamed.

A failed or interrupted write therefore leaves the previous output untouched and
no half-written file under the target's name; the temporary names all start
with ``.`` and contain ``.tmp-``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
from collections.abc import Iterator
from typing import BinaryIO

from microcontainer_tool.errors import OutputError

_TRIES = 100


def fsync_dir(path: str) -> None:
    """Flush a directory's entries to disk (best effort: some filesystems refuse)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def temp_file(directory: str, prefix: str, mode: int = 0o644) -> tuple[int, str]:
    """Create ``directory/PREFIX.tmp-XXXXXXXX`` exclusively; return ``(fd, path)``.

    Raises:
        OutputError: no free name after 100 tries, or the directory is not writable.
    """
    for _ in range(_TRIES):
        path = os.path.join(directory, f"{prefix}.tmp-{secrets.token_hex(4)}")
        try:
            return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode), path
        except FileExistsError:
            continue
        except OSError as error:
            raise OutputError(f"{directory}: cannot create a file: {error.strerror or error}") from None
    raise OutputError(f"{directory}: cannot create a temporary file")


def make_temp_dir(parent: str, prefix: str) -> str:
    """Create ``parent/PREFIX`` + 8 hex digits exclusively (the umask applies); return its path.

    Raises:
        OutputError: no free name after 100 tries, or the parent is not writable.
    """
    for _ in range(_TRIES):
        path = os.path.join(parent, prefix + secrets.token_hex(4))
        try:
            os.mkdir(path, 0o777)
            return path
        except FileExistsError:
            continue
        except OSError as error:
            raise OutputError(f"{parent}: cannot create a directory: {error.strerror or error}") from None
    raise OutputError(f"{parent}: cannot create a temporary directory")


@contextlib.contextmanager
def atomic_file(path: str, mode: int = 0o644, *, fsync: bool = True) -> Iterator[BinaryIO]:
    """Open a temporary file beside ``path`` for binary writing; rename it to ``path`` on success.

    On an exception inside the ``with`` block the temporary file is removed and
    ``path`` is left as it was.

    Args:
        path: the final path.
        mode: the file's permission bits (before the umask).
        fsync: flush the data to disk before the rename (off for caches that are
            safe to lose).

    Raises:
        OutputError: the temporary file cannot be created or renamed.
    """
    fd, tmp = temp_file(os.path.dirname(os.path.abspath(path)), "." + os.path.basename(path)[:200], mode)
    try:
        with os.fdopen(fd, "wb") as out:
            yield out
            out.flush()
            if fsync:
                os.fsync(out.fileno())
        try:
            os.rename(tmp, path)
        except OSError as error:
            raise OutputError(f"{path}: cannot write: {error.strerror or error}") from None
    except BaseException:
        unlink_quietly(tmp)
        raise


def write_atomic(path: str, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` atomically: a temporary file beside it, fsynced, renamed."""
    with atomic_file(path, mode) as out:
        out.write(data)


def replace_dir(new: str, target: str) -> None:
    """Put directory ``new`` in the place of ``target`` (which may exist), as atomically as POSIX allows.

    An existing ``target`` is renamed aside first and removed only after ``new``
    is in place; if that rename fails, the old directory is put back.

    Raises:
        OutputError: a rename failed.
    """
    parent, base = os.path.split(target)
    try:
        if not os.path.isdir(target):
            os.rename(new, target)
            fsync_dir(parent)
            return
        old = os.path.join(parent, f".{base}.old-{secrets.token_hex(4)}")
        os.rename(target, old)
        try:
            os.rename(new, target)
        except BaseException:
            os.rename(old, target)
            raise
        fsync_dir(parent)
        shutil.rmtree(old, ignore_errors=True)
    except OSError as error:
        raise OutputError(f"{target}: cannot replace: {error.strerror or error}") from None


def publish_dir(new: str, target: str) -> bool:
    """Rename directory ``new`` to ``target`` unless ``target`` exists (content-addressed caches).

    When a concurrent writer got there first, ``target`` is theirs and is kept
    (both hold the same content) and ``new`` is removed.

    Returns:
        Whether ``new`` is now ``target`` (``False``: an existing ``target`` was kept).

    Raises:
        OutputError: the rename failed for another reason (``new`` is removed).
    """
    try:
        os.rename(new, target)
    except OSError as error:
        shutil.rmtree(new, ignore_errors=True)
        if error.errno in (errno.EEXIST, errno.ENOTEMPTY):
            return False
        raise OutputError(f"{target}: cannot rename into place: {error.strerror or error}") from None
    fsync_dir(os.path.dirname(target))
    return True


def unlink_quietly(path: str) -> None:
    """Remove ``path`` if it exists; ignore errors (cleanup paths)."""
    try:
        os.unlink(path)
    except OSError:
        pass
