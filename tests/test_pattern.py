"""Glob patterns with ** against a real directory tree."""

from __future__ import annotations

import os

from microcontainer_tool.assembly.pattern import covers, expand, matches
from microcontainer_tool.sources.sysroot import SysRoot


def test_matches():
    assert matches("/usr/**/*.so", "/usr/lib/x/libc.so")
    assert matches("/usr/**/*.so", "/usr/libc.so")
    assert not matches("/usr/*/*.so", "/usr/lib/x/libc.so")
    assert matches("/a/b", "/a/b") and not matches("/a/b", "/a/b/c")
    assert covers("/a/b", "/a/b/c") and not covers("/a/b", "/a/bc")


def make(root, *paths):
    for path in paths:
        full = os.path.join(root, path.lstrip("/"))
        os.makedirs(os.path.dirname(full), exist_ok=True)
        open(full, "w").close()


def test_expand(tmp_path):
    make(tmp_path, "/usr/lib/a.so", "/usr/lib/sub/b.so", "/usr/lib/sub/c.txt", "/usr/lib/.hidden.so")
    os.symlink("usr/lib", tmp_path / "lib")
    os.symlink("..", tmp_path / "usr" / "lib" / "loop")
    root = SysRoot(str(tmp_path))
    assert expand(root, "/usr/lib/*.so") == ["/usr/lib/a.so"]
    assert expand(root, "/usr/**/*.so") == ["/usr/lib/a.so", "/usr/lib/sub/b.so"]
    assert expand(root, "/lib/*.so") == ["/lib/a.so"]
    assert expand(root, "/usr/lib/sub") == ["/usr/lib/sub"]
    assert expand(root, "/nope/*") == []
    assert expand(root, "/nope") == []
