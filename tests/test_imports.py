"""The package's import graph has no cycles, and the lower layers import no upper ones.

Every module is parsed (ast) and every import counted, module level or inside a function
(a deferred import is still a dependency); relative imports are resolved, and importing
``a.b.c`` depends on the packages ``a`` and ``a.b`` too (their ``__init__`` runs)."""

import ast
from pathlib import Path

from .conftest import ROOT

PACKAGE = ROOT / "adaexport"
EXCLUDED: tuple[str, ...] = ()     # module prefixes left out of the check (none)
# Leaves: modules the runtime and the device side stand on, importing no other part of adaexport
# but these.
LEAVES = {"adaexport.errors", "adaexport.atomic", "adaexport.hashing", "adaexport.checks",
          "adaexport.manifest_fields", "adaexport.manifest_measured", "adaexport.manifest_records",
          "adaexport.manifest_reader", "adaexport.hardware"}


def module_names() -> dict[str, tuple[Path, bool]]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return out


def import_graph() -> dict[str, set[str]]:
    modules = module_names()
    graph = {}
    for name, (path, is_package) in modules.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = name.split(".") if is_package else name.split(".")[:-1]
                if node.level:
                    base = base[:len(base) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                targets = [f"{target}.{a.name}" if f"{target}.{a.name}" in modules else target for a in node.names]
            for target in targets:
                parts = target.split(".")
                deps.update(".".join(parts[:i]) for i in range(2, len(parts) + 1) if ".".join(parts[:i]) in modules)
        graph[name] = {d for d in deps if d != name and not name.startswith(d + ".")}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _kept(name: str) -> bool:
    return not name.startswith(EXCLUDED)


def test_the_graph_sees_relative_and_deferred_imports():
    graph = import_graph()
    assert "adaexport.manifest_records" in graph["adaexport.runtime.core"] or \
        "adaexport.manifest_reader" in graph["adaexport.runtime.core"]
    assert "adaexport.model.point" in graph["adaexport.model.static"]          # from .point import ...
    assert "adaexport.demo" in graph["adaexport.evaluate"]                    # a deferred import
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


# evaluate.py takes the build cache (Cache) from build.py; the build's split into stages
# (issue 15, item 1) moves Cache out of build.py, which ends this one.
KNOWN_CYCLES: list[list[str]] = []


def test_no_import_cycles():
    graph = {k: {d for d in v if _kept(d)} for k, v in import_graph().items() if _kept(k)}
    assert [c for c in cycles(graph) if c not in KNOWN_CYCLES] == []


def test_no_cycles_between_subpackages():
    """model/ <-> space.py and the like: a subpackage counts as one node."""
    def unit(name):
        return ".".join(name.split(".")[:2])

    graph: dict[str, set[str]] = {}
    for name, deps in import_graph().items():
        if _kept(name):
            graph.setdefault(unit(name), set()).update(unit(d) for d in deps if _kept(d) and unit(d) != unit(name))
    assert [c for c in cycles(graph) if c not in KNOWN_CYCLES] == []


def test_leaves_import_only_leaves():
    graph = import_graph()
    for name, deps in graph.items():
        if any(name == leaf or name.startswith(leaf + ".") for leaf in LEAVES) and name != "adaexport.errors":
            upward = {d for d in deps if d != "adaexport" and not any(d == leaf or d.startswith(leaf + ".")
                                                                    for leaf in LEAVES)}
            assert not upward, f"{name} imports {sorted(upward)}"


def test_runtime_does_not_import_the_toolchain():
    """The embedded runtime stands on the leaves and the backends, not on profiling, the
    build or the CLI."""
    graph = import_graph()
    for name, deps in graph.items():
        if name.startswith("adaexport.runtime"):
            bad = {d for d in deps if d.startswith(("adaexport.profiling", "adaexport.build", "adaexport.cli",
                                                    "adaexport.manifest.", "adaexport.evaluate"))
                   or d == "adaexport.manifest"}
            assert not bad, f"{name} imports {sorted(bad)}"


def test_the_tensorrt_runtime_side_does_not_import_its_builder():
    """A Jetson app that serves plans loads trt_session (and what it stands on), never the
    plan builder or its build settings."""
    graph = import_graph()
    for name in ("adaexport.backends.trt_session", "adaexport.backends.trt_system", "adaexport.backends.cuda_runtime"):
        bad = {d for d in graph[name] if d in ("adaexport.backends.trt_build", "adaexport.backends.trt_settings")}
        assert not bad, f"{name} imports {sorted(bad)}"
