"""The code's shape, held: imports point one way and no module imports itself round a circle.

    tasks -> bridge.web, bridge.ops, bridge.catchup -> bridge.delivery -> bridge.providers
    -> bridge (core) -> config

Read from the source with `ast`, imports inside functions included, so a circle cannot hide
behind a late import.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = ("bridge", "tasks", "config", "celery_app")
# Each layer may import only from the layers after it (and from itself).
LAYERS = [
    ("celery_app",),
    ("tasks",),
    ("bridge.web", "bridge.ops", "bridge.catchup", "bridge"),  # bridge/__init__.py: the app factory
    ("bridge.delivery",),
    ("bridge.providers",),
    (
        "bridge.conversion",
        "bridge.refund",
        "bridge.money",
        "bridge.json_text",
        "bridge.logs",
        "bridge.redis_client",
    ),
    ("config",),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def our_modules() -> dict[str, Path]:
    paths = [ROOT / "celery_app.py"]
    for package in ("bridge", "tasks", "config"):
        paths += sorted((ROOT / package).rglob("*.py"))
    return {module_name(p): p for p in paths}


def imports_of(path: Path, modules: dict[str, Path], name: str) -> set[str]:
    """Our modules that module `name` (at `path`) imports, wherever in the file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            # `from package import module` imports the module; `from module import name`, the
            # module itself.
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                for alias in node.names
            ]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target:
                found.add(target)
    found.discard(name)
    return found


def layer_of(module: str) -> int:
    best, best_len = -1, -1
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    assert best >= 0, f"{module} belongs to no layer: add it to LAYERS"
    return best


MODULES = our_modules()
GRAPH = {name: imports_of(path, MODULES, name) for name, path in MODULES.items()}


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_point_down_the_pipeline(module: str) -> None:
    upward = [dep for dep in GRAPH[module] if layer_of(dep) < layer_of(module)]
    assert not upward, f"{module} imports {upward}, which sit above it"


def test_no_module_imports_itself_round_a_circle() -> None:
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for dep in sorted(GRAPH[module]):
            assert state.get(dep) != 1, " -> ".join([*path[path.index(dep) :], dep])
            if dep not in state:
                visit(dep)
        path.pop()
        state[module] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module)


def test_the_check_sees_late_and_relative_imports(tmp_path: Path) -> None:
    source = tmp_path / "probe.py"
    source.write_text("def f():\n    from tasks.app import make_celery\n    from . import ledger\n")
    found = imports_of(source, MODULES, "bridge.delivery.probe")
    assert found == {"tasks.app", "bridge.delivery.ledger"}
    assert layer_of("tasks.app") < layer_of("bridge.delivery.probe")
