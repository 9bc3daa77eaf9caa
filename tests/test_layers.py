"""The layer rule of the package layout: a module imports only from its own layer or below;
proposals and scoring never import each other; ``import ovseg`` stays light."""

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
# Deferred imports allowed against the rule, each with its reason.
ALLOWED_UP = {
    # Segmenter.ground / Segmenter.heatmap are fronts of the grounding task on the Segmenter.
    ("pipeline", "grounding"),
    # Segmenter.segment_video is the front of the video task on the Segmenter.
    ("pipeline", "video"),
}


def _unit(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "ovseg":
        return None
    return parts[1] if len(parts) > 1 else ""


def _imports(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module != "ovseg":
                yield node.lineno, node.module
                continue
            for alias in node.names:  # `from ovseg import x`: a submodule, or a root name
                is_module = (ROOT / f"{alias.name}.py").exists() or (ROOT / alias.name).is_dir()
                yield node.lineno, f"ovseg.{alias.name}" if is_module else "ovseg"
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
            elif LAYERS[target] > LAYERS[unit] and (unit, target) not in ALLOWED_UP:
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
