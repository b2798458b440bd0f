"""The package's layering: its modules import each other without a cycle, counting imports inside functions (so
that a lazy import cannot hide one), and every module imports in a fresh interpreter in dependency order."""
from __future__ import annotations

import ast
import graphlib
import importlib.util
import json
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def package_modules() -> dict[str, Path]:
    """Every module of the installed package (the packages pyproject.toml lists), by dotted name."""
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    out = {}
    for pkg in packages:
        folder = Path(importlib.util.find_spec(pkg).origin).parent
        for path in sorted(folder.glob("*.py")):
            out[pkg if path.stem == "__init__" else f"{pkg}.{path.stem}"] = path
    return out


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def imported(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Modules of the package that ``name`` imports anywhere in its file (top level or inside a function)."""
    is_package = path.stem == "__init__"
    targets = set()

    def known(dotted: str) -> str | None:
        while dotted and dotted not in modules:
            dotted = dotted.rpartition(".")[0]
        return dotted or None

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if _is_type_checking(child):
                continue
            if isinstance(child, ast.Import):
                targets.update(known(a.name) for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module != "__future__":
                base = child.module or ""
                if child.level:
                    parts = name.split(".")[:len(name.split(".")) - child.level + is_package]
                    base = ".".join(parts + ([base] if base else []))
                for alias in child.names:
                    full = f"{base}.{alias.name}"
                    targets.add(full if full in modules else known(base))
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return {t for t in targets if t and t != name}


def import_graph() -> dict[str, set[str]]:
    modules = package_modules()
    return {name: imported(name, path, modules) for name, path in modules.items()}


def test_the_import_graph_has_no_cycle():
    graph = import_graph()
    assert len(graph) > 50 and "perfmodel.sweep.runner" in graph and "perfmodel.aggregate" in graph
    try:
        order = list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        raise AssertionError(f"import cycle (lazy imports included): {' -> '.join(exc.args[1])}") from None
    assert set(order) == set(graph)


def test_every_module_imports_in_a_fresh_interpreter_in_dependency_order():
    order = list(graphlib.TopologicalSorter(import_graph()).static_order())
    script = ("import importlib, json, sys\n"
              "failed = []\n"
              "for name in json.loads(sys.argv[1]):\n"
              "    try:\n"
              "        importlib.import_module(name)\n"
              "    except Exception as exc:\n"
              "        failed.append(f'{name}: {exc!r}')\n"
              "print(json.dumps(failed))\n")
    done = subprocess.run([sys.executable, "-c", script, json.dumps(order)], capture_output=True, text=True,
                          cwd=ROOT, timeout=300, check=True)
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
