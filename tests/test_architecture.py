"""The package's architecture, read from its source with ``ast``.

No import cycles, layers, a thin SCons adapter.

Every import counts, at any depth (inside functions and ``if TYPE_CHECKING:``
blocks too): ``import a.b``, ``from a.b import c`` (``a.b.c`` when that is a
module, else ``a.b``), ``from microcontainer_tool import x`` and relative forms.
Each check is a function over parsed modules, so the tests at the end also
prove, on small synthetic packages, that each check catches what it forbids.
"""

from __future__ import annotations

import ast
import itertools
import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import microcontainer_tool

PACKAGE = "microcontainer_tool"
PACKAGE_DIR = Path(microcontainer_tool.__file__).resolve().parent

#: Subpackages that make up the library (everything but the front ends).
LIBRARY_PACKAGES = ("spec", "sources", "closure", "model", "assembly", "oci", "registry", "signing",
                    "runtime", "reports", "hostfs")
#: The front ends: no library module may import them.
FRONT_ENDS = ("build", "platformbuild", "cli", "smithcli", "sconstool", "__main__", "site_tools")
#: Modules at the bottom: they may import nothing of the package but ``errors``.
FOUNDATIONS = ("hostfs", "errors")

#: Calls that list directories (the SCons adapter leaves that to the library).
LISTING_CALLS = {"os.listdir", "os.scandir", "os.walk", "glob.glob", "glob.iglob"}
#: Calls that write files whatever their arguments.
WRITING_CALLS = {"os.open", "os.rename", "os.replace", "os.makedirs", "os.mkdir", "shutil.copy",
                 "shutil.copy2", "shutil.copyfile", "shutil.move", "write_atomic", "atomic_file"}
#: Method names that write files.
WRITING_METHODS = {"write_text", "write_bytes"}


@dataclass
class Module:
    """One parsed module and what it imports.

    Attributes:
        name: dotted name (``microcontainer_tool.oci.layout``; a package is its ``__init__``).
        path: the source file.
        is_package: an ``__init__.py``.
        tree: its syntax tree.
        imports: imported module of the package -> line of the first such import.
    """

    name: str
    path: Path
    is_package: bool
    tree: ast.Module
    imports: dict[str, int] = field(default_factory=dict)


def parse_package(root: Path, package: str = PACKAGE) -> dict[str, Module]:
    """Parse every module under ``root`` (the directory of ``package``) and resolve its imports."""
    modules: dict[str, Module] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for filename in sorted(f for f in filenames if f.endswith(".py")):
            path = Path(dirpath) / filename
            parts = [package, *path.relative_to(root).with_suffix("").parts]
            is_package = parts[-1] == "__init__"
            name = ".".join(parts[:-1] if is_package else parts)
            tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
            modules[name] = Module(name, path, is_package, tree)
    for module in modules.values():
        for target, line in _imported(module, modules, package):
            module.imports.setdefault(target, line)
    return modules


def _imported(module: Module, modules: dict[str, Module], package: str) -> list[tuple[str, int]]:
    """``(module name, line)`` of every import of a module of the package, at any depth."""
    found = []
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            found += [(_module_of(alias.name, modules), node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.name.split(".") if module.is_package else module.name.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                target = submodule if submodule in modules else _module_of(source, modules)
                found.append((target, node.lineno))
    return [(name, line) for name, line in found
            if name and (name == package or name.startswith(package + ".")) and name != module.name]


def _module_of(dotted: str, modules: dict[str, Module]) -> str:
    """The longest prefix of ``dotted`` that is a module of the package (``""`` if none)."""
    parts = dotted.split(".")
    while parts:
        if ".".join(parts) in modules:
            return ".".join(parts)
        parts.pop()
    return dotted if dotted.split(".")[0] in {m.split(".")[0] for m in modules} else ""


def _is_under(name: str, prefixes: tuple[str, ...], package: str = PACKAGE) -> bool:
    return any(name == f"{package}.{p}" or name.startswith(f"{package}.{p}.") for p in prefixes)


def _where(module: Module, line: int) -> str:
    try:
        shown = module.path.relative_to(PACKAGE_DIR.parent)
    except ValueError:
        shown = module.path
    return f"{shown}:{line}"


# --- the checks --------------------------------------------------------------------------------


def import_cycles(modules: dict[str, Module]) -> list[tuple[frozenset[str], list[str]]]:
    """Each import cycle: its strongly connected component and one cycle path through it.

    A module also imports the packages above it (``a.b.c`` runs ``a/__init__``
    and ``a/b/__init__`` first), so those edges count too.
    """
    graph: dict[str, set[str]] = {name: set(module.imports) for name, module in modules.items()}
    for name, targets in graph.items():
        for target in list(targets):
            parts = target.split(".")
            targets.update(p for p in (".".join(parts[:n]) for n in range(1, len(parts)))
                           if p in modules and p != name)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[frozenset[str]] = []

    def visit(start: str) -> None:  # Tarjan's algorithm, iterative
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        components.append(frozenset(component))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph.get(child, ())))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])

    for name in sorted(graph):
        if name not in index:
            visit(name)
    return [(component, _cycle_path(graph, component)) for component in components]


def _cycle_path(graph: dict[str, set[str]], component: frozenset[str]) -> list[str]:
    """A shortest cycle through the component's first module, as ``[a, b, ..., a]``."""
    start = min(component)
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(graph[node] & component):
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [*reversed(path), start]
                if child not in previous:
                    previous[child] = node
                    following.append(child)
        frontier = following
    raise AssertionError(f"no cycle through {start}")  # a component always has one


def describe_cycle(modules: dict[str, Module], path: list[str]) -> str:
    """``a (file:line) -> b (file:line) -> a``: each step with where the import is."""
    steps = []
    for here, there in itertools.pairwise(path):
        line = modules[here].imports.get(there)
        steps.append(f"{here} ({_where(modules[here], line)})" if line else f"{here} (package above {there})")
    return " -> ".join(steps + [path[-1]])


def front_end_imports(modules: dict[str, Module], package: str = PACKAGE) -> list[str]:
    """Library modules importing a front end."""
    return [f"{_where(m, line)}: {m.name} imports {target}"
            for m in modules.values() if _is_under(m.name, LIBRARY_PACKAGES, package)
            for target, line in m.imports.items() if _is_under(target, FRONT_ENDS, package)]


def foundation_imports(modules: dict[str, Module], package: str = PACKAGE) -> list[str]:
    """Modules of ``hostfs`` or ``errors`` importing anything of the package but ``errors`` and ``hostfs``."""
    return [f"{_where(m, line)}: {m.name} imports {target}"
            for m in modules.values() if _is_under(m.name, FOUNDATIONS, package)
            for target, line in m.imports.items()
            if target != f"{package}.errors" and not _is_under(target, ("hostfs",), package)]


def _call_name(func: ast.expr) -> str:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return f"{_call_name(func.value)}.{func.attr}"
    return "?"


def _opens_for_writing(call: ast.Call, name: str) -> bool:
    """``open(path, mode)`` or ``x.open(mode)`` with a mode that writes (or that is not a literal)."""
    if name in ("open", "io.open"):
        mode = call.args[1] if len(call.args) > 1 else None
    elif name.endswith(".open") and name != "os.open":
        mode = call.args[0] if call.args else None
    else:
        return False
    for keyword in call.keywords:
        if keyword.arg == "mode":
            mode = keyword.value
    if mode is None:
        return False
    if not (isinstance(mode, ast.Constant) and isinstance(mode.value, str)):
        return True
    return any(c in mode.value for c in "wax+")


def file_system_calls(module: Module) -> list[str]:
    """Calls in ``module`` that list directories or write files."""
    found = []
    for node in ast.walk(module.tree):
        if not isinstance(node, ast.Call):
            continue
        name = _call_name(node.func)
        short = name.rsplit(".", 1)[-1]
        if name in LISTING_CALLS:
            found.append(f"{_where(module, node.lineno)}: {name}() lists a directory")
        elif name in WRITING_CALLS or short in WRITING_METHODS or short in ("write_atomic", "atomic_file"):
            found.append(f"{_where(module, node.lineno)}: {name}() writes files")
        elif _opens_for_writing(node, name):
            found.append(f"{_where(module, node.lineno)}: {name}() opens a file for writing")
    return found


# --- the package -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def modules() -> dict[str, Module]:
    return parse_package(PACKAGE_DIR)


def test_the_package_is_parsed(modules: dict[str, Module]) -> None:
    assert {f"{PACKAGE}.errors", f"{PACKAGE}.build", f"{PACKAGE}.sconstool", f"{PACKAGE}.oci.layout",
            f"{PACKAGE}.hostfs.atomic", f"{PACKAGE}.site_tools.microimage"} <= set(modules)
    assert f"{PACKAGE}.build" in modules[f"{PACKAGE}.sconstool"].imports  # function-level imports count
    assert f"{PACKAGE}" in modules[f"{PACKAGE}.sconstool"].imports  # from microcontainer_tool import X


def test_no_import_cycles(modules: dict[str, Module]) -> None:
    cycles = list(import_cycles(modules))
    assert not cycles, "import cycles:\n" + "\n".join(describe_cycle(modules, path) for _, path in cycles)


def test_the_library_does_not_import_front_ends(modules: dict[str, Module]) -> None:
    found = front_end_imports(modules)
    assert not found, "library modules import front ends:\n" + "\n".join(found)


def test_hostfs_and_errors_import_only_the_foundations(modules: dict[str, Module]) -> None:
    found = foundation_imports(modules)
    assert not found, "hostfs/errors import more than errors and hostfs:\n" + "\n".join(found)


def test_the_scons_adapter_neither_lists_directories_nor_writes_files(modules: dict[str, Module]) -> None:
    found = file_system_calls(modules[f"{PACKAGE}.sconstool"])
    assert not found, "sconstool.py does file work that belongs in the library:\n" + "\n".join(found)


# --- the checks catch what they forbid ---------------------------------------------------------


def _package(tmp_path: Path, files: dict[str, str]) -> dict[str, Module]:
    root = tmp_path / PACKAGE
    for relative, text in {"__init__.py": "", "errors.py": "", **files}.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        (path.parent / "__init__.py").touch()
        path.write_text(text)
    return parse_package(root)


def test_a_cycle_through_a_function_level_import_is_found(tmp_path: Path) -> None:
    modules = _package(tmp_path, {
        "oci/a.py": "from microcontainer_tool.oci import b\n",
        "oci/b.py": "def f():\n    from microcontainer_tool.oci.c import x\n",
        "oci/c.py": "import microcontainer_tool.oci.a\n",
        "oci/d.py": "from microcontainer_tool.oci import a\n",
    })
    [(component, path)] = import_cycles(modules)
    assert component == {f"{PACKAGE}.oci.{n}" for n in "abc"}
    assert path == [f"{PACKAGE}.oci.a", f"{PACKAGE}.oci.b", f"{PACKAGE}.oci.c", f"{PACKAGE}.oci.a"]
    assert "oci/b.py:2" in describe_cycle(modules, path)


def test_a_cycle_through_a_package_init_and_a_relative_import_is_found(tmp_path: Path) -> None:
    modules = _package(tmp_path, {"model/__init__.py": "from . import tree\n",
                                  "model/tree.py": "from ..spec import s\n",
                                  "spec/s.py": "from microcontainer_tool.model import provenance\n",
                                  "model/provenance.py": ""})
    [(component, _)] = import_cycles(modules)
    assert component == {f"{PACKAGE}.model", f"{PACKAGE}.model.tree", f"{PACKAGE}.spec.s"}


def test_a_library_module_importing_a_front_end_is_found(tmp_path: Path) -> None:
    modules = _package(tmp_path, {"build.py": "", "cli.py": "", "sconstool.py": "",
                                  "oci/x.py": "def f():\n    from microcontainer_tool import build\n",
                                  "sources/y.py": "import microcontainer_tool.cli\n",
                                  "hostfs/z.py": "from microcontainer_tool.sconstool import g\n",
                                  "sources/ok.py": "from microcontainer_tool.oci import x\n"})
    assert sorted(line.split(": ", 1)[1] for line in front_end_imports(modules)) == [
        f"{PACKAGE}.hostfs.z imports {PACKAGE}.sconstool",
        f"{PACKAGE}.oci.x imports {PACKAGE}.build",
        f"{PACKAGE}.sources.y imports {PACKAGE}.cli"]


def test_hostfs_or_errors_importing_more_than_the_foundations_is_found(tmp_path: Path) -> None:
    modules = _package(tmp_path, {"errors.py": "from microcontainer_tool import VERSION\n",
                                  "hostfs/a.py": "from microcontainer_tool.errors import E\n",
                                  "hostfs/b.py": "def f():\n    from microcontainer_tool.hostfs import a\n",
                                  "hostfs/c.py": "def f():\n    from microcontainer_tool.model import tree\n",
                                  "model/tree.py": ""})
    assert sorted(line.split(": ", 1)[1] for line in foundation_imports(modules)) == [
        f"{PACKAGE}.errors imports {PACKAGE}", f"{PACKAGE}.hostfs.c imports {PACKAGE}.model.tree"]


def test_listing_and_writing_calls_are_found(tmp_path: Path) -> None:
    modules = _package(tmp_path, {"sconstool.py": (
        "import os\n"
        "def f(path, mode):\n"
        "    open(path).read()\n"
        "    open(path, 'rb').read()\n"
        "    os.path.join(path, 'x')\n"
        "    os.listdir(path)\n"
        "    os.scandir(path)\n"
        "    open(path, 'w')\n"
        "    open(path, mode=mode)\n"
        "    write_atomic(path, b'')\n"
        "    atomic.write_atomic(path, b'')\n"
        "    Path(path).write_text('')\n"
        "    Path(path).open('ab')\n"
    )})
    found = file_system_calls(modules[f"{PACKAGE}.sconstool"])
    assert [int(line.split(":")[1]) for line in found] == list(range(6, 14))
