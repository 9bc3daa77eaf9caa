"""The layer rule of the package layout: a module imports only from its own layer or below;
proposals and scoring never import each other; no import cycles, deferred imports included; a
package's modules never import the package itself; nothing outside ``ovseg/methods/`` asks
which method it is; ``import ovseg`` stays light."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "ovseg"

LAYERS = {
    "_io": 0,
    "constants": 0,
    "types": 0,
    "image": 0,
    "structures": 0,
    "proposals": 1,
    "scoring": 1,
    "methods": 1,
    "fusion": 2,
    "result": 2,
    "viz": 2,
    "exports": 2,
    "models": 3,
    "pipeline": 3,
    "api": 3,
    "grounding": 4,
    "video": 4,
    "eval": 4,
    "bench": 4,
    "distributed": 4,
    "app": 4,
    "cli": 4,
    "bank": 4,
    "__main__": 4,
}
NEVER = {("proposals", "scoring"), ("scoring", "proposals")}


def _unit(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "ovseg":
        return None
    return parts[1] if len(parts) > 1 else ""


def _runtime_nodes(tree: ast.AST):
    """Every node but those under ``if TYPE_CHECKING:`` (imports for type hints only)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            test = getattr(child, "test", None)
            if isinstance(child, ast.If) and getattr(test, "id", None) == "TYPE_CHECKING":
                todo.extend(child.orelse)
                continue
            todo.append(child)


def _imports(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            base = ROOT.parent.joinpath(*node.module.split("."))
            for alias in node.names:  # `from pkg import x`: a submodule, or a name of pkg
                is_module = (
                    base.joinpath(f"{alias.name}.py").exists() or (base / alias.name).is_dir()
                )
                yield node.lineno, f"{node.module}.{alias.name}" if is_module else node.module
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name


def _modules():
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT)
        if rel.parts == ("__init__.py",):
            continue
        yield path, rel.parts[0].removesuffix(".py")


def test_every_unit_has_a_layer():
    units = {unit for _, unit in _modules()}
    assert units <= set(LAYERS), f"modules without a layer: {sorted(units - set(LAYERS))}"


def test_layer_rule():
    broken = []
    for path, unit in _modules():
        for line, module in _imports(path):
            target = _unit(module)
            if target in (None, "", unit):
                continue
            if target not in LAYERS:
                broken.append(f"{path.relative_to(ROOT)}:{line} imports unknown {module}")
            elif (unit, target) in NEVER:
                broken.append(f"{path.relative_to(ROOT)}:{line}: {unit} imports {module}")
            elif LAYERS[target] > LAYERS[unit]:
                broken.append(
                    f"{path.relative_to(ROOT)}:{line}: {unit} (layer {LAYERS[unit]})"
                    f" imports {module} (layer {LAYERS[target]})"
                )
    assert not broken, "\n".join(broken)


@pytest.mark.parametrize(
    "statement", ["import ovseg", "import ovseg.cli; ovseg.cli.build_parser()"]
)
def test_import_is_light(statement):
    code = (
        f"{statement}; import sys; print(sorted(m for m in ('torch', 'open_clip', "
        "'transformers', 'segment_anything', 'gradio') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_public_names_resolve():
    import ovseg

    for name in ovseg.__all__:
        assert getattr(ovseg, name) is not None
    with pytest.raises(AttributeError):
        ovseg.no_such_name  # noqa: B018


def _graph() -> dict[str, set[str]]:
    """Module -> the ovseg modules it imports anywhere in its file (deferred imports too)."""
    names = {}
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        names[".".join(parts)] = path
    graph: dict[str, set[str]] = {}
    for module, path in names.items():
        edges = set()
        for _, target in _imports(path):
            while target and target not in names:
                target = target.rpartition(".")[0]  # `from pkg.mod import name`
            if target and target != module:
                edges.add(target)
        graph[module] = edges
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
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


def test_no_import_cycles():
    cycles = _cycles(_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_submodules_never_import_their_package():
    """A package may import its own submodules, never the other way round."""
    graph = _graph()
    broken = [
        f"{m} imports {t}"
        for m, targets in graph.items()
        for t in targets
        if t != "ovseg" and m.startswith(t + ".")
    ]
    assert not broken, "\n".join(broken)


def _method_name_tests(path: Path, names: set[str], aliases: set[str]):
    """Comparisons (``==``, ``!=``, ``in``) of anything with a registered method's name (as
    a literal or a constant that holds one), and reads of the old kind flags."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            for operand in [node.left, *node.comparators]:
                items = (
                    operand.elts
                    if isinstance(operand, (ast.Tuple, ast.List, ast.Set))
                    else [operand]
                )
                for item in items:
                    if isinstance(item, ast.Constant) and item.value in names:
                        yield node.lineno, f"compares with the method name {item.value!r}"
                    if isinstance(item, ast.Name) and item.id in aliases:
                        yield node.lineno, f"compares with {item.id}"
        if isinstance(node, ast.Attribute) and node.attr in ("uses_sam", "uses_regions"):
            yield node.lineno, f"reads .{node.attr}"


def test_nothing_outside_the_methods_asks_which_method_it_is():
    from ovseg.methods.registry import method_names

    names = set(method_names())
    aliases = {"DEFAULT_METHOD", "REGION_METHOD"}
    broken = [
        f"{path.relative_to(ROOT)}:{line}: {what}"
        for path, unit in _modules()
        if unit != "methods"
        for line, what in _method_name_tests(path, names, aliases)
    ]
    assert not broken, "\n".join(broken)


def test_the_method_check_catches_a_branch(tmp_path):
    from ovseg.methods.registry import method_names

    bad = tmp_path / "bad.py"
    bad.write_text(
        "def f(seg, m):\n"
        "    if seg.method.name == 'trident':\n        return 1\n"
        "    if m in ('naclip', 'sclip'):\n        return 2\n"
        "    return seg.uses_sam\n"
    )
    found = {line for line, _ in _method_name_tests(bad, set(method_names()), set())}
    assert found == {2, 4, 6}
