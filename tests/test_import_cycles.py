"""No import circle anywhere in bench/ and methods/.

The imports are read with ast, nothing is executed: every import statement counts, also the ones
inside functions (a lazy import that closes a circle is still a circle, only a hidden one).
``from package import name`` points at ``package.name`` when that is a module, else at the
package itself; a package's ``__init__`` importing its own modules is an edge like any other.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("bench", "methods")


def module_files(root: Path, packages=PACKAGES) -> dict[str, Path]:
    """{dotted module name: file} for every .py file under the given top-level packages."""
    modules = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules that ``name`` (in ``path``) imports, anywhere in the file."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]

    def known(dotted: str) -> str | None:          # the longest prefix that is a project module
        parts = dotted.split(".")
        for end in range(len(parts), 0, -1):
            candidate = ".".join(parts[:end])
            if candidate in modules:
                return candidate
        return None

    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(filter(None, (known(alias.name) for alias in node.names)))
        elif isinstance(node, ast.ImportFrom):
            if node.level:                           # relative: from . import x, from ..a import b
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                target = f"{source}.{alias.name}"
                found.add(target if target in modules else known(source))
    found.discard(None)
    found.discard(name)
    return found


def import_cycles(root: Path, packages=PACKAGES) -> list[list[str]]:
    """Every strongly connected group of two or more modules (Tarjan), each as a sorted list."""
    modules = module_files(root, packages)
    graph = {name: sorted(imports_of(name, path, modules)) for name, path in modules.items()}
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(start: str) -> None:                   # iterative Tarjan (no recursion limit)
        work = [(start, iter(graph[start]))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(graph[nxt])))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    group = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.append(member)
                        if member == node:
                            break
                    if len(group) > 1:
                        groups.append(sorted(group))

    for name in graph:
        if name not in index:
            visit(name)
    return sorted(groups)


def test_the_project_has_no_import_cycle():
    cycles = import_cycles(ROOT)
    assert not cycles, "import circles (break them by moving the shared code down a level): " + "; ".join(
        " <-> ".join(group) for group in cycles)


def test_the_checker_finds_cycles_hidden_in_functions_and_relative_imports(tmp_path):
    pkg = tmp_path / "bench"
    (pkg / "report").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "store.py").write_text("import os\n")
    (pkg / "report" / "__init__.py").write_text("from bench.report.load import load\n")
    (pkg / "report" / "load.py").write_text("from bench.store import x\n\ndef load():\n"
                                             "    from ..report import html\n")
    (pkg / "report" / "html.py").write_text("from . import load\n")
    (tmp_path / "methods").mkdir()
    (tmp_path / "methods" / "a.py").write_text("import methods.b\n")
    (tmp_path / "methods" / "b.py").write_text("def f():\n    from methods import a\n")
    assert import_cycles(tmp_path) == [["bench.report.html", "bench.report.load"], ["methods.a", "methods.b"]]
    (pkg / "report" / "load.py").write_text("from bench.store import x\n")        # circle broken
    assert import_cycles(tmp_path) == [["methods.a", "methods.b"]]
