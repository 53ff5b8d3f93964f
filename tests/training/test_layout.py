"""The package layout keeps its promises: imports run one way, no circles.

Reads every module of `softvq_keras/`, `training/` and `serving/` with `ast`
(function-level imports included) and checks the import graph: no cycle
anywhere; `softvq_keras/` imports neither `training/` nor `serving/`;
`serving/` imports nothing from `training/`; inside `softvq_keras.data` the
source kinds depend only on the shared pieces and the dispatch on the kinds;
`softvq_keras.layers` is only bottlenecks (no model builder, no data).
"""

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("softvq_keras", "training", "serving")
DATA_SHARED = {"softvq_keras.data.images", "softvq_keras.data.availability",
               "softvq_keras.data.source"}
DATA_KINDS = {f"softvq_keras.data.{k}" for k in ("builtin", "folder", "npz", "tfds")}


def module_names():
    names = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            names[name] = path
    return names


def import_graph(names):
    """{module: set of project modules it imports}, at any depth of its code."""
    def resolve(name):
        while name and name not in names:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for name, path in names.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                deps.update(resolve(a.name) for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for a in node.names:
                    full = f"{node.module}.{a.name}"
                    deps.add(full if full in names else resolve(node.module))
        deps.discard(None)
        deps.discard(name)
        graph[name] = deps
    return graph


def cycles(graph):
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10_000))
    try:
        for v in list(graph):
            if v not in index:
                visit(v)
    finally:
        sys.setrecursionlimit(limit)
    return found


@pytest.fixture(scope="module")
def graph():
    return import_graph(module_names())


def test_the_checker_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_circle_anywhere(graph):
    assert len(graph) > 40  # really read the packages
    assert cycles(graph) == []


def test_nothing_imports_upward(graph):
    upward = [
        (name, dep) for name, deps in graph.items() for dep in deps
        if (name.startswith("softvq_keras") and dep.split(".")[0] in ("training", "serving"))
        or (name.startswith("serving") and dep.split(".")[0] == "training")
    ]
    assert upward == []


def test_data_kinds_depend_on_shared_pieces_and_dispatch_on_kinds(graph):
    assert DATA_KINDS | DATA_SHARED | {"softvq_keras.data.dispatch"} <= set(graph)
    for shared in DATA_SHARED:
        inside = {d for d in graph[shared] if d.startswith("softvq_keras.data")}
        assert inside <= DATA_SHARED, shared
    for kind in DATA_KINDS:
        inside = {d for d in graph[kind] if d.startswith("softvq_keras.data")}
        assert inside <= DATA_SHARED, (kind, inside - DATA_SHARED)
    assert DATA_KINDS <= graph["softvq_keras.data.dispatch"]


def test_layers_hold_only_bottlenecks(graph):
    layer_modules = [n for n in graph if n.startswith("softvq_keras.layers")]
    assert layer_modules
    for name in layer_modules:
        outside = {d for d in graph[name] if d.startswith("softvq_keras")
                   and not d.startswith("softvq_keras.layers")}
        assert outside <= {"softvq_keras.presets"}, (name, outside)
