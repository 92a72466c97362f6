"""What a debug toolbox holds: ``--toolbox`` values and ``toolbox.yaml`` files, validated.

``--toolbox`` is one of:

* a directory of static tools (used as it is), or an image (unpacked; its tools
  must be static);
* a comma-separated list of programs, ``strace,gdb,lsof,ss``: names looked up
  in the toolbox root's ``PATH`` directories, or absolute paths in it;
* a ``toolbox.yaml`` (any ``*.yaml``/``*.yml`` file) with these keys:

  ``programs``
      the programs, as on the command line (a list; required).
  ``root``
      the sysroot directory they are taken from (default ``/``; relative to the
      file's directory).
  ``image``
      an image to take them from instead (OCI layout, archive; see ``run``).
  ``packs``
      run-time file packs to add whatever the closure says (``gconv``, ``ssl``,
      ``tz``, ``locale``, ``nss``: see ``packs:`` in the image spec); the
      automatic ones are always added.
  ``files``
      extra sysroot paths (files or whole directories) the programs read, copied
      under ``/dev/crashcart/root/`` at their own paths.

The programs are built into a portable toolbox by
:mod:`~microcontainer_tool.runtime.toolboxbuilder`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import yaml

from microcontainer_tool.errors import SpecError

SPEC_SUFFIXES = (".yaml", ".yml")
"""File name endings that make ``--toolbox`` a toolbox spec."""

_KEYS = ("programs", "root", "image", "packs", "files")


@dataclass(frozen=True)
class ToolboxSpec:
    """The programs of a portable toolbox and where they come from.

    Attributes:
        programs: names (looked up in the root's ``PATH`` dirs) or absolute paths.
        root: the host directory used as the sysroot (``/`` by default).
        image: an image to take the programs from instead of ``root``.
        packs: run-time packs added whatever the closure says.
        files: extra sysroot paths copied under the toolbox's ``root/``.
    """

    programs: tuple[str, ...]
    root: str = "/"
    image: str | None = None
    packs: tuple[str, ...] = ()
    files: tuple[str, ...] = ()


def parse_program_list(text: str, root: str = "/", image: str | None = None) -> ToolboxSpec:
    """A :class:`ToolboxSpec` from ``strace,gdb,/usr/sbin/ss``.

    Raises:
        SpecError: the list is empty or has an empty or relative-path entry.
    """
    programs = tuple(part.strip() for part in text.split(","))
    return ToolboxSpec(_check_programs(programs, f"--toolbox {text!r}"), root, image)


def load_toolbox_spec(path: str, root: str | None = None, image: str | None = None) -> ToolboxSpec:
    """Read and validate a ``toolbox.yaml``.

    Args:
        path: the file.
        root: ``--toolbox-root`` (overrides the file's ``root``/``image``), if given.
        image: ``--toolbox-root`` when it names an image.

    Raises:
        SpecError: unreadable, not YAML, an unknown key or a value of the wrong type.
    """
    try:
        with open(path, encoding="utf-8") as handle:
            data: Any = yaml.safe_load(handle)
    except OSError as error:
        raise SpecError(f"{path}: cannot read: {error.strerror or error}") from None
    except yaml.YAMLError as error:
        raise SpecError(f"{path}: not YAML: {' '.join(str(error).split())}") from None
    if not isinstance(data, dict):
        raise SpecError(f"{path}: a toolbox spec is a mapping with keys {', '.join(_KEYS)}")
    unknown = sorted(str(key) for key in data if key not in _KEYS)
    if unknown:
        raise SpecError(f"{path}: unknown key {unknown[0]!r} (known: {', '.join(_KEYS)})")
    programs = _check_programs(_strings(data, "programs", path), f"{path}: programs")
    base = os.path.dirname(os.path.abspath(path))
    spec_root = _string(data, "root", path)
    spec_image = _string(data, "image", path)
    if spec_root is not None and spec_image is not None:
        raise SpecError(f"{path}: give root or image, not both")
    if root is not None or image is not None:
        spec_root, spec_image = root, image
    else:
        spec_root = os.path.join(base, spec_root) if spec_root is not None else None
        spec_image = os.path.join(base, spec_image) if spec_image and os.path.exists(
            os.path.join(base, spec_image)) else spec_image
    files = _strings(data, "files", path)
    for item in files:
        if not item.startswith("/"):
            raise SpecError(f"{path}: files: {item!r} is not an absolute sysroot path")
    return ToolboxSpec(programs, spec_root or "/", spec_image, _strings(data, "packs", path), files)


def _check_programs(programs: tuple[str, ...], where: str) -> tuple[str, ...]:
    if not programs:
        raise SpecError(f"{where}: no programs")
    for program in programs:
        if not program or ("/" in program and not program.startswith("/")):
            raise SpecError(f"{where}: {program!r} is neither a program name nor an absolute path")
    return programs


def _string(data: dict[str, Any], key: str, path: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise SpecError(f"{path}: {key} must be a non-empty string")
    return value


def _strings(data: dict[str, Any], key: str, path: str) -> tuple[str, ...]:
    value = data.get(key)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise SpecError(f"{path}: {key} must be a list of non-empty strings")
    return tuple(value)
