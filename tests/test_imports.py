"""The import graph: every module of the package imports on its own, with no other ``toco_fast`` module loaded
first, and no two modules import each other in a loop (read statically, lazy function-level imports included)."""
import ast
import multiprocessing
import os
import sys
from typing import Dict, List, Set

import pytest

import toco_fast

PACKAGE_DIR = os.path.dirname(os.path.abspath(toco_fast.__file__))
KERNELS_DIR = os.path.join(os.path.dirname(PACKAGE_DIR), "kernels")


def module_files() -> Dict[str, str]:
    """``toco_fast.*`` module name -> source file, the kernels folder included (installed as toco_fast.kernels)."""
    found = {}
    for top, prefix in ((PACKAGE_DIR, "toco_fast"), (KERNELS_DIR, "toco_fast.kernels")):
        for folder, _, files in os.walk(top):
            if "__pycache__" in folder:
                continue
            rel = os.path.relpath(folder, top)
            parts = [prefix] + ([] if rel == "." else rel.split(os.sep))
            for name in files:
                if name.endswith(".py"):
                    module = ".".join(parts if name == "__init__.py" else parts + [name[:-3]])
                    found[module] = os.path.join(folder, name)
    return found


def imported_modules(module: str, path: str, known: Set[str]) -> Set[str]:
    """The ``toco_fast`` modules that ``module`` imports anywhere in its source (``from X import name`` counts as
    ``X.name`` when that is a module)."""
    tree = ast.parse(open(path, encoding="utf-8").read(), filename=path)
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    targets = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                child = f"{base}.{alias.name}"
                targets.add(child if child in known else base)
    return {t for t in targets if t in known and t != module}


def find_cycle(graph: Dict[str, Set[str]]) -> List[str]:
    """One import loop as a list of modules (first == last), or [] when the graph has none."""
    state: Dict[str, int] = {}
    stack: List[str] = []

    def visit(node: str) -> List[str]:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                loop = visit(nxt)
                if loop:
                    return loop
        stack.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state:
            loop = visit(node)
            if loop:
                return loop
    return []


def test_find_cycle_sees_a_loop():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) == []


# Compiled modules: import targets without Python source (and without imports of their own).
COMPILED = {"toco_fast._C"}


def test_no_import_cycle():
    files = module_files()
    known = set(files) | COMPILED
    graph = {name: imported_modules(name, path, known) for name, path in files.items()}
    graph.update({name: set() for name in COMPILED})
    assert len(graph) > 50
    assert find_cycle(graph) == []


def _import_alone(module: str) -> str:
    """Run in a forked child: import ``module`` with no toco_fast module loaded; '' or the error."""
    for name in [m for m in sys.modules if m == "toco_fast" or m.startswith("toco_fast.")]:
        del sys.modules[name]
    try:
        __import__(module)
    except BaseException as exc:  # noqa: BLE001 - report anything, including SystemExit from a CLI module
        return f"{module}: {type(exc).__name__}: {exc}"
    return ""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_every_module_imports_alone():
    import numpy  # noqa: F401  (third-party imports are shared by the forked children, toco_fast ones are not)
    import torch  # noqa: F401

    # ``__main__`` modules run their command when imported; every other module must import cleanly on its own.
    modules = sorted(m for m in module_files() if not m.endswith("__main__"))
    context = multiprocessing.get_context("fork")
    with context.Pool(2) as pool:
        errors = [e for e in pool.map(_import_alone, modules, chunksize=1) if e]
    assert errors == []
