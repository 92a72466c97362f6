"""``excludes`` match a path as written and with symlinks resolved, inside a selected directory too."""

from __future__ import annotations

import os
from pathlib import Path

from microcontainer_tool.assembly.assemble import assemble
from microcontainer_tool.spec.imagespec import ImageSpec


def _sysroot(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    licenses = root / "usr/share/licenses"
    licenses.mkdir(parents=True)
    (licenses / "GPL-3").write_text("gpl 3\n")
    (licenses / "MIT").write_text("mit\n")
    os.symlink("GPL-3", licenses / "GPL")  # as Debian's common-licenses has GPL -> GPL-3
    return root


def _paths(tmp_path: Path, **keys: object) -> set[str]:
    spec = ImageSpec(base_dir=str(tmp_path), from_=str(_sysroot(tmp_path)), arch="amd64", **keys)  # type: ignore[arg-type]
    return {entry.path for entry in assemble(spec).tree}


def test_an_excluded_link_target_is_not_brought_back_by_a_link_to_it(tmp_path: Path) -> None:
    paths = _paths(tmp_path, paths=("/usr/share/licenses",), excludes=("/usr/share/licenses/GPL-3",))
    assert "/usr/share/licenses/MIT" in paths
    assert "/usr/share/licenses/GPL-3" not in paths
    assert "/usr/share/licenses/GPL" not in paths  # resolves to an excluded path: pruned too


def test_without_excludes_the_link_and_its_target_come_along(tmp_path: Path) -> None:
    paths = _paths(tmp_path, paths=("/usr/share/licenses",))
    assert {"/usr/share/licenses/GPL", "/usr/share/licenses/GPL-3", "/usr/share/licenses/MIT"} <= paths
