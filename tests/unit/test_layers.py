"""The package's layering, read from the source: imports flow one way, no cycles.

Every ``import`` counts, including those inside functions: a lazy import hides a
cycle from Python, not from a reader.
"""

from __future__ import annotations

import ast
from pathlib import Path

import serve_ml

PACKAGE = Path(serve_ml.__file__).parent
# Lower layers never import higher ones; equal ranks never import each other.
LAYERS = {"core": 0, "bundles": 1, "client": 1, "scoring": 2, "operations": 2, "pipelines": 3, "deployments": 3, "bench": 4, "cli": 5}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("serve_ml.")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("serve_ml.") \
                and node.level == 0:
            out.add(node.module)
    return out


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {i for i in _imports(p) if i in modules} for name, p in modules.items()}


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in LAYERS) else None


def test_every_subpackage_has_a_layer() -> None:
    subpackages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert subpackages == set(LAYERS), "add the new subpackage to LAYERS (and the README's Architecture map)"


def test_imports_flow_down_only() -> None:
    upward = []
    for module, deps in _graph().items():
        src = _layer(module)
        for dep in deps:
            dst = _layer(dep)
            if src and dst and src != dst and LAYERS[dst] >= LAYERS[src]:
                upward.append(f"{module} -> {dep}")
    assert not upward, upward


def test_no_import_cycle_between_modules() -> None:
    graph = _graph()
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycles.append(trail[trail.index(dep):] + [dep] if dep in trail else [node, dep])
            elif dep not in state:
                visit(dep, [*trail, dep])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, cycles


def test_the_checker_sees_a_cycle_and_an_upward_arrow(tmp_path: Path) -> None:
    """The checks above are only worth something if they can fail."""
    (tmp_path / "a.py").write_text("from serve_ml.deployments.app import x\n")
    assert _imports(tmp_path / "a.py") == {"serve_ml.deployments.app"}
    (tmp_path / "b.py").write_text("def f():\n    import serve_ml.cli.main\n")
    assert _imports(tmp_path / "b.py") == {"serve_ml.cli.main"}
    assert LAYERS["deployments"] > LAYERS["scoring"]


def test_no_test_module_imports_another() -> None:
    """Shared helpers live in tests/*.py modules that are not tests; a test module
    imported by another runs its module-level code twice and couples their order."""
    tests_root = PACKAGE.parent / "tests"
    offenders = []
    for path in tests_root.rglob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tests.") \
                    and node.module.rsplit(".", 1)[-1].startswith("test_"):
                offenders.append(f"{path.relative_to(tests_root)} imports {node.module}")
    assert not offenders, offenders
