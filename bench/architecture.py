"""The shape of the code, from its own imports (issue 11's measures).

Prints, for the packages ``daemon``, ``integrations`` and ``memory``:
- import edges between packages (a module in a sub-package belongs to that sub-package; a module
  directly in ``daemon/`` counts as ``daemon``), and the package-level cycles;
- module-level import cycles (strongly connected components of more than one module);
- modules over 400 lines;
- ``Any`` in the signatures and attributes of public functions and classes (the seams);
- how many project modules ``import integrations.slack.channel`` and ``import daemon.watchers.logs``
  load (a channel or a watcher should load nothing above it), and their import time.

Usage: python -m bench.architecture [--edges]
"""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys
from collections import Counter
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("daemon", "integrations", "memory")


def group_of(module: str, groups: set[str]) -> str:
    """The deepest package in ``groups`` that holds ``module``."""
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in groups:
            return candidate
    return parts[0]


def package_groups(graph: grimp.ImportGraph) -> set[str]:
    """Packages one or two levels deep (``daemon.agent``, ``integrations.slack.channel``)."""
    groups: set[str] = set(PACKAGES)
    for module in graph.modules:
        path = module_path(module)
        if path is not None and path.name == "__init__.py" and module.count(".") == 1:
            groups.add(module)
    return groups


def module_path(module: str) -> Path | None:
    base = ROOT.joinpath(*module.split("."))
    if (base / "__init__.py").exists():
        return base / "__init__.py"
    file = base.with_suffix(".py")
    return file if file.exists() else None


def strongly_connected(nodes: set[str], edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    result: list[list[str]] = []
    counter = 0
    for root in sorted(nodes):
        if root in index:
            continue
        work: list[tuple[str, list[str]]] = [(root, sorted(edges.get(root, ())))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, pending = work[-1]
            if pending:
                nxt = pending.pop()
                if nxt not in nodes:
                    continue
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, sorted(edges.get(nxt, ()))))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    result.append(sorted(component))
    return result


def any_at_seams() -> Counter[str]:
    """Count ``Any`` in annotations of public functions, methods and class attributes."""
    counts: Counter[str] = Counter()
    for package in PACKAGES:
        for file in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(file.read_text())
            rel = str(file.relative_to(ROOT))
            for node in ast.walk(tree):
                annotations: list[ast.expr] = []
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    if node.name.startswith("_") and node.name != "__init__":
                        continue
                    args = [*node.args.args, *node.args.kwonlyargs]
                    annotations += [a.annotation for a in args if a.annotation is not None]
                    if node.returns is not None:
                        annotations.append(node.returns)
                elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                    annotations += [
                        item.annotation for item in node.body if isinstance(item, ast.AnnAssign)
                    ]
                for annotation in annotations:
                    text = ast.unparse(annotation)
                    if text == "Any" or "[Any" in text or "Any]" in text or "Any," in text:
                        counts[rel] += 1
    return counts


def imports_loaded(module: str) -> tuple[int, float]:
    """Project modules loaded by ``import module``, and its import time in ms."""
    code = (
        "import sys, time\n"
        "t = time.perf_counter()\n"
        f"import {module}\n"
        "ms = (time.perf_counter() - t) * 1000\n"
        f"mods = [m for m in sys.modules if m.split('.')[0] in {PACKAGES!r}]\n"
        "print(len(mods), ms)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    return int(out[0]), float(out[1])


def main(show_edges: bool) -> None:
    graph = grimp.build_graph(*PACKAGES, include_external_packages=False)
    groups = package_groups(graph)
    module_edges: dict[str, set[str]] = {}
    group_edges: Counter[tuple[str, str]] = Counter()
    for importer in graph.modules:
        for imported in graph.find_modules_directly_imported_by(importer):
            module_edges.setdefault(importer, set()).add(imported)
            a, b = group_of(importer, groups), group_of(imported, groups)
            if a != b:
                group_edges[(a, b)] += 1
    pair_edges: dict[str, set[str]] = {}
    for a, b in group_edges:
        pair_edges.setdefault(a, set()).add(b)
    package_cycles = strongly_connected(set(groups), pair_edges)
    module_cycles = strongly_connected(set(graph.modules), module_edges)

    print(f"modules: {len(graph.modules)}  packages: {len(groups)}")
    print(f"package pairs with edges: {len(group_edges)}  edges: {sum(group_edges.values())}")
    print(f"package cycles: {len(package_cycles)}")
    for cycle in package_cycles:
        print(f"  {len(cycle)} packages: {' ⇄ '.join(cycle)}")
    biggest = max((len(c) for c in module_cycles), default=0)
    print(f"module cycles: {len(module_cycles)} (largest {biggest} modules)")
    for cycle in module_cycles:
        print(f"  {' ⇄ '.join(cycle)}")
    if show_edges:
        for (a, b), count in sorted(group_edges.items()):
            print(f"  {a} → {b}: {count}")
    flat = [m for m in graph.modules if m.count(".") == 1 and group_of(m, groups) == "daemon"]
    print(f"modules directly in daemon/: {len(flat)}")
    long_modules = []
    for module in sorted(graph.modules):
        path = module_path(module)
        if path is not None:
            lines = len(path.read_text().splitlines())
            if lines > 400:
                long_modules.append((lines, str(path.relative_to(ROOT))))
    print(f"modules > 400 lines: {len(long_modules)}")
    for lines, path in sorted(long_modules, reverse=True):
        print(f"  {lines:5d} {path}")
    seams = any_at_seams()
    print(f"Any in public signatures/attributes: {sum(seams.values())} in {len(seams)} files")
    for probe in (
        "integrations.slack.channel",
        "daemon.watchers.logs",
        "memory.store",
        "daemon.cli.main",
    ):
        count, ms = imports_loaded(probe)
        print(f"import {probe}: {count} project modules, {ms:.0f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edges", action="store_true", help="print every package→package edge")
    main(parser.parse_args().edges)
