"""spec.additions: entries appended to a spec's lists, the rest of the text byte for byte as it was."""

from __future__ import annotations

from pathlib import Path

import pytest

from microcontainer_tool.errors import SpecError
from microcontainer_tool.spec.additions import add_entries, add_to_spec_file

BLOCK = """\
# top comment
from: /   # the host
paths:
  - /usr/bin/python3   # the program
  # python's own files follow
excludes:
  - /usr/share/doc
cmd: ["/usr/bin/python3", '-c', 'print(1)']
env:
  A: "b"
"""


def test_block_list_grows_before_its_trailing_comment_and_other_lines_stay() -> None:
    text, added = add_entries(BLOCK, {"paths": ["/a", "/usr/bin/python3", "/a"], "libs": ["/x.so"]})
    assert added == 2
    assert text == BLOCK.replace("  - /usr/bin/python3   # the program\n",
                                 "  - /usr/bin/python3   # the program\n  - /a\n") + "libs:\n  - /x.so\n"
    again, added = add_entries(text, {"paths": ["/a"], "libs": ["/x.so"]})
    assert (again, added) == (text, 0)


def test_flow_list_becomes_a_block_list_and_the_indentation_is_the_files() -> None:
    text = "from: /\npaths: [/usr/bin/iconv]\nexcludes:\n- /x\n"
    new, added = add_entries(text, {"paths": ["/usr/lib/a"]})
    assert added == 1
    assert new == "from: /\npaths:\n- /usr/bin/iconv\n- /usr/lib/a\nexcludes:\n- /x\n"


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="'paths' is not a list"):
        add_entries("paths: /x\n", {"paths": ["/a"]})
    with pytest.raises(SpecError, match="mapping"):
        add_entries("- a\n", {"paths": ["/a"]})
    spec = tmp_path / "microimage.yaml"
    spec.write_text("from: /\npaths: [/bin/true]\n")
    with pytest.raises(SpecError, match="must be absolute|absolute"):
        add_to_spec_file(str(spec), {"paths": ["relative/path"]})
    assert spec.read_text() == "from: /\npaths: [/bin/true]\n"  # a result that is no spec is not written


def test_file_is_replaced_atomically_with_its_mode(tmp_path: Path) -> None:
    spec = tmp_path / "microimage.yaml"
    spec.write_text(BLOCK)
    spec.chmod(0o600)
    assert add_to_spec_file(str(spec), {"paths": ["/a"]}) == 1
    assert spec.stat().st_mode & 0o777 == 0o600
    assert "  - /a\n" in spec.read_text()
    assert add_to_spec_file(str(spec), {"paths": ["/a"]}) == 0
    assert [p.name for p in tmp_path.iterdir()] == ["microimage.yaml"]
