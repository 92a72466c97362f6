"""Confined path resolution: absolute links stay inside, escapes are refused."""

from __future__ import annotations

import os

import pytest

from microcontainer_tool.errors import PathEscapeError
from microcontainer_tool.sources.sysroot import LayeredRoot, SysRoot


@pytest.fixture()
def root(tmp_path):
    (tmp_path / "usr/lib").mkdir(parents=True)
    (tmp_path / "usr/lib/libx.so.1.2").write_text("x")
    os.symlink("libx.so.1.2", tmp_path / "usr/lib/libx.so.1")
    os.symlink("usr/lib", tmp_path / "lib")
    os.symlink("/usr/lib/libx.so.1", tmp_path / "abs")
    os.symlink("../../../../etc/passwd", tmp_path / "usr/lib/escape")
    os.symlink("/etc/hostname", tmp_path / "hostlink")
    return SysRoot(str(tmp_path))


def test_resolve_keeps_link_chain(root):
    res = root.resolve("/lib/libx.so.1")
    assert res.path == "/usr/lib/libx.so.1.2"
    assert res.links == (("/lib", "usr/lib"), ("/usr/lib/libx.so.1", "libx.so.1.2"))


def test_absolute_target_means_sysroot(root):
    assert root.resolve("/abs").path == "/usr/lib/libx.so.1.2"
    assert root.resolve("/hostlink") is None  # /etc/hostname of the host is not looked at


def test_escape_refused(root):
    with pytest.raises(PathEscapeError, match="above the sysroot"):
        root.resolve("/usr/lib/escape")


def test_no_follow_last(root):
    res = root.resolve("/lib/libx.so.1", follow_last=False)
    assert res.path == "/usr/lib/libx.so.1" and res.links == (("/lib", "usr/lib"),)


def test_layered_root_shadows_and_implies_dirs(root, tmp_path_factory):
    extra = tmp_path_factory.mktemp("proj") / "prog"
    extra.write_text("p")
    layered = LayeredRoot(root, {"/app/bin/prog": str(extra), "/usr/lib/libx.so.1.2": str(extra)})
    assert layered.resolve("/app/bin/prog").path == "/app/bin/prog"
    assert layered.resolve("/app").st.st_mode & 0o40000
    assert layered.host_path(layered.resolve("/lib/libx.so.1").path) == str(extra)
