"""The house's one-way arrows, read from the source with `ast` (ARCHITECTURE.md).

numerics <- models <- compiler <- targets <- runtime <- evolve <- bench <- cli: a module may import
its own layer and the layers to its left, never to its right; the IR imports only the
numeric core; no module-level import cycle; no module imports another's `_private` name.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ["numerics", "models", "compiler", "targets", "runtime", "evolve", "bench", "cli"]
"""Folder (= `ncc.<folder>` package) by layer, lowest first."""


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(["ncc", *parts])


def _sources() -> dict[str, Path]:
    found = {}
    for layer in LAYERS:
        for path in sorted((ROOT / layer).rglob("*.py")):
            found[_module_name(path)] = path
    return found


MODULES = _sources()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(path: Path) -> list[tuple[str, tuple[str, ...], bool]]:
    """(module, imported names, at module level) for every ncc import in `path`,
    resolving relative imports; imports under `if TYPE_CHECKING:` are left out."""
    tree = ast.parse(path.read_text(), str(path))
    package = _module_name(path) if path.is_relative_to(ROOT) else "ncc"
    if path.name != "__init__.py":
        package = package.rsplit(".", 1)[0]
    found = []

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                continue
            nested = top and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                    ast.ClassDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend((a.name, (), top) for a in child.names if a.name.startswith("ncc"))
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[:len(base) - child.level + 1]
                    module = ".".join(base + ([child.module] if child.module else []))
                else:
                    module = child.module or ""
                if module.startswith("ncc"):
                    found.append((module, tuple(a.name for a in child.names), top))
            visit(child, nested)

    visit(tree, True)
    return found


def _layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else None


def _target_module(module: str, name: str) -> str:
    """`from module import name`: the submodule if `name` is one, else `module`."""
    return f"{module}.{name}" if f"{module}.{name}" in MODULES else module


def test_every_layer_has_sources():
    assert {m.split(".")[1] for m in MODULES} == set(LAYERS)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down_the_layers(module):
    own = _layer(module)
    for imported, names, _ in _imports(MODULES[module]):
        for target in [_target_module(imported, n) for n in names] or [imported]:
            layer = _layer(target)
            assert layer is not None, f"{module} imports {target}, outside the layers"
            assert layer <= own, (f"{module} ({LAYERS[own]}) imports {target} "
                                  f"({LAYERS[layer]}): arrows point {' <- '.join(LAYERS)}")


def test_the_ir_imports_only_the_numeric_core():
    for imported, _, _ in _imports(MODULES["ncc.compiler.ir"]):
        assert imported.startswith("ncc.numerics"), imported


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_private_names_from_other_modules(module):
    for imported, names, _ in _imports(MODULES[module]):
        private = [n for n in names if n.startswith("_") and not n.startswith("__")
                   and _target_module(imported, n) == imported]
        assert not private, f"{module} imports private {private} from {imported}"


def test_no_module_level_import_cycle():
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for module, path in MODULES.items():
        for imported, names, top in _imports(path):
            if not top:
                continue
            for target in [_target_module(imported, n) for n in names] or [imported]:
                if target in MODULES and target != module:
                    graph[module].add(target)
    state: dict[str, int] = {}  # 1 on the stack, 2 done

    def walk(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                walk(nxt, stack + [nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            walk(module, [module])


def test_the_checker_sees_a_backward_arrow(tmp_path):
    """The checker itself: an import from a higher layer is found."""
    bad = tmp_path / "bad.py"
    bad.write_text("from ncc.cli.driver import compile_model\n"
                   "def f():\n    from ncc.runtime import session\n")
    found = [(m, top) for m, _, top in _imports(bad)]
    assert ("ncc.cli.driver", True) in found and ("ncc.runtime", False) in found
    assert _layer("ncc.cli.driver") > _layer("ncc.targets.c")
