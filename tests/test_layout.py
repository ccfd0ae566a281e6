"""The package's house rules: stages in subpackages, imports pointing down, no cycles.

Every `import` in every module counts, also those inside functions, and a package's
`__init__` counts as a module of its own (importing `batchrun.mock` runs `mock/__init__.py`).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "batchrun"

# Lower layers first. A module may import its own package, or a package of a LOWER layer only:
# never a sibling of the same layer, never upwards.
LAYERS: dict[str, int] = {
    "batchrun.common": 0,
    "batchrun.models": 0,
    "batchrun.endpoints": 1,
    "batchrun.inputs": 2,
    "batchrun.send": 2,
    "batchrun.store": 2,
    "batchrun.cost": 3,
    "batchrun.config": 4,
    "batchrun.mock": 4,
    "batchrun.runner": 5,
    "batchrun.cluster": 6,  # the same run on Ray: shards, each a runner pipeline
    "batchrun.cli": 7,
    "batchrun.demo": 7,
    "batchrun.__main__": 8,
    "batchrun": 8,  # batchrun/__init__.py: the public API re-exports
}
TOP_LEVEL_MODULES = {"__init__", "__main__", "cli", "config", "models", "demo"}


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _imports(module: str, path: Path, known: set[str]) -> Iterator[str]:
    """The batchrun modules `module` imports (`from pkg import name` counts `pkg`, and
    `pkg.name` too when that is a module)."""
    is_package = path.name == "__init__.py"
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        for name in names:
            if name in known and name != module:
                yield name


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {m: set(_imports(m, p, known)) for m, p in modules.items()}


def _group(module: str) -> str:
    """The layer entry a module belongs to: its subpackage, or itself at the top."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else module


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative enough)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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


def test_the_import_graph_has_no_cycles() -> None:
    assert _cycles(_graph()) == []


def test_the_cycle_check_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_every_module_belongs_to_a_layer() -> None:
    unplaced = sorted(m for m in _graph() if _group(m) not in LAYERS)
    assert unplaced == [], "add the new package to LAYERS in tests/test_layout.py"


def test_imports_point_down_only() -> None:
    upward = []
    for module, imported in _graph().items():
        mine = _group(module)
        for target in imported:
            theirs = _group(target)
            if theirs != mine and LAYERS[theirs] >= LAYERS[mine]:
                upward.append(f"{module} imports {target}")
    assert sorted(upward) == []


def test_nothing_below_the_runner_imports_it() -> None:
    graph = _graph()
    below = [m for m in graph if LAYERS[_group(m)] < LAYERS["batchrun.runner"]]
    offenders = [m for m in below if any(_group(t) == "batchrun.runner" for t in graph[m])]
    assert offenders == []


def test_only_the_entry_points_live_at_the_top() -> None:
    top = {p.stem for p in PACKAGE.glob("*.py")}
    assert top == TOP_LEVEL_MODULES


@pytest.mark.parametrize(
    "package", sorted(p.parent.name for p in PACKAGE.glob("*/__init__.py")), ids=str
)
def test_every_subpackage_says_what_it_owns(package: str) -> None:
    doc = ast.get_docstring(ast.parse((PACKAGE / package / "__init__.py").read_text()))
    assert doc is not None and len(doc.splitlines()) >= 3, f"batchrun/{package}/__init__.py"


def test_only_the_cluster_package_imports_ray() -> None:
    """A local run never imports Ray: it is an optional extra (`batchrun[ray]`)."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.parent.name == "cluster":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] == "ray"]
    assert offenders == []


def test_a_local_run_loads_neither_ray_nor_the_cluster_package() -> None:
    import subprocess
    import sys

    code = (
        "import sys, batchrun, batchrun.cli, batchrun.runner.pipeline\n"
        "batchrun.cli.build_parser()\n"
        "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith(('ray.', "
        "'batchrun.cluster'))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
