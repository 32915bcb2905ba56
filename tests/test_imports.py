"""The house's shape, read from the source: no import circle among streammine's modules, no module over 600 lines.

Imports are read with ``ast`` (module level and inside functions alike: a lazy import that closes a circle is still
a circle, only hidden). ``from . import x`` counts as importing the module ``x``; ``from .m import name`` as
importing ``m``. The top package (``streammine/__init__.py``, which re-exports the API) is left out: every module
sits below it.
"""
import ast
import os

import streammine

ROOT = os.path.dirname(streammine.__file__)
MAX_LINES = 600


def _modules() -> dict:
    """module name -> file path, for every module of the package."""
    out = {}
    for folder, _, files in os.walk(ROOT):
        for name in files:
            if name.endswith(".py"):
                rel = os.path.relpath(os.path.join(folder, name), os.path.dirname(ROOT))[:-3].replace(os.sep, ".")
                out[rel[:-len(".__init__")] if rel.endswith(".__init__") else rel] = os.path.join(folder, name)
    return out


def _imports(module: str, path: str, known: set) -> set:
    package = module if path.endswith("__init__.py") else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[:len(parts) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            for a in node.names:  # ``from pkg import sub``: the submodule, when it is one
                found.add(f"{base}.{a.name}" if f"{base}.{a.name}" in known else base)
    return {m for m in found if m in known and m != module and m != "streammine"}


def _graph() -> dict:
    modules = _modules()
    known = set(modules)
    return {m: _imports(m, p, known) for m, p in modules.items()}


def find_cycle(graph: dict):
    """One import circle as a list of modules (first == last), or None. Depth-first, three colours."""
    colour, stack = {}, []

    def visit(m):
        colour[m] = 1
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if colour.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if colour.get(n) is None:
                found = visit(n)
                if found:
                    return found
        stack.pop()
        colour[m] = 2
        return None

    for m in sorted(graph):
        if colour.get(m) is None:
            found = visit(m)
            if found:
                return found
    return None


def test_the_cycle_finder_finds_a_circle_and_accepts_a_tree():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_no_import_circle_among_streammine_modules():
    graph = _graph()
    assert len(graph) > 50  # the walk found the package
    # relative imports resolve: kinds.py's ``from .answers import Proposal`` and ``from . import torch_flat``
    assert {"streammine.index.answers", "streammine.index.torch_flat"} <= graph["streammine.index.kinds"]
    assert find_cycle(graph) is None


def test_no_module_over_600_lines():
    long = {m: n for m, p in _modules().items() if (n := sum(1 for _ in open(p))) > MAX_LINES}
    assert long == {}
