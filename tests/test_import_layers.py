"""The package's import graph: no cycle between subpackages, and imports at the top of modules.

Read statically (``ast``), so an import inside a function counts as much as one at the top: a
cycle hidden behind a local import is still a cycle. A function-local import is allowed only for
a heavy optional dependency (onnx, openvino, matplotlib, ...), never for darknet_py itself, except
the package's lazy ``__getattr__`` (``import darknet_py`` must not import torch).
"""
import ast
from collections import defaultdict
from pathlib import Path

import darknet_py

PACKAGE = Path(darknet_py.__file__).resolve().parent


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        is_pkg = rel.name == "__init__"
        name = ".".join(rel.parts[:-1] if is_pkg else rel.parts)
        yield path, name, is_pkg


def _unit(module: str) -> str:
    """The subpackage a module belongs to (``darknet_py.infer.nms`` -> ``infer``); a top-level
    module is its own unit (``darknet_py.files`` -> ``files``), the package itself ``darknet_py``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _imports():
    """(module, line, imported darknet_py module, inside a function?) for every import."""
    out = []
    for path, name, is_pkg in _modules():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        parents = {c: n for n in ast.walk(tree) for c in ast.iter_child_nodes(n)}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".") if is_pkg else name.split(".")[:-1]
                    base = base[: len(base) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                targets = [target]
                if not node.module:          # "from . import x": x is a module of the package
                    targets = [f"{target}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            p, local = parents.get(node), False
            while p is not None and not local:
                local = isinstance(p, (ast.FunctionDef, ast.AsyncFunctionDef))
                p = parents.get(p)
            for t in targets:
                if t == "darknet_py" or t.startswith("darknet_py."):
                    out.append((name, node.lineno, t, local))
    return out


def _cycles(edges):
    """Strongly connected components with more than one unit (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
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
                found.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_between_subpackages():
    edges, why = defaultdict(set), defaultdict(list)
    for module, line, target, _ in _imports():
        a, b = _unit(module), _unit(target)
        if a != b and a != "darknet_py":     # the package's lazy __getattr__ sits above all
            edges[a].add(b)
            why[a, b].append(f"{module}:{line} -> {target}")
    cycles = _cycles(edges)
    detail = [w for comp in cycles for a in comp for b in comp for w in why.get((a, b), [])]
    assert not cycles, f"import cycles between subpackages {cycles}:\n" + "\n".join(detail)


def test_the_cycle_finder_finds_cycles():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_function_local_import_of_the_package():
    local = [f"{m}:{line} imports {t}" for m, line, t, is_local in _imports()
             if is_local and m != "darknet_py"]
    assert not local, "import these at the top of the module:\n" + "\n".join(local)
