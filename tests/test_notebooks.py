"""Every notebook under notebooks/ runs headless, top to bottom, with the tiny models.

The kernel is this interpreter's own ipykernel (a kernelspec written to a temporary folder with
``sys.executable``), so the notebooks import the ovseg under test and no user-level kernel is
installed. Each notebook must finish without error and produce at least one PNG figure.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOKS_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
MODELS_LINE = 'MODELS = dict(sam="tiny-random", clip="tiny-random")'


@pytest.fixture(scope="module")
def kernel_manager_factory(tmp_path_factory):
    """KernelManagers whose ``python3`` spec is this interpreter's ipykernel."""
    from ipykernel.kernelspec import write_kernel_spec
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    root = tmp_path_factory.mktemp("kernels")
    write_kernel_spec(str(root / "python3"))
    specs = KernelSpecManager(kernel_dirs=[str(root)], ensure_native_kernel=False)

    def make() -> KernelManager:
        km = KernelManager(kernel_name="python3", kernel_spec_manager=specs)
        assert km.kernel_spec.argv[0] == sys.executable
        return km

    return make


def test_there_are_five_notebooks():
    names = [p.stem for p in NOTEBOOKS]
    assert names == ["01_quickstart", "02_prompting", "03_grounding", "04_evaluation", "05_video"]


def test_notebooks_are_built_from_their_sources():
    spec = importlib.util.spec_from_file_location("nb_build", NOTEBOOKS_DIR / "build.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    built = build.build_all()
    assert sorted(built) == NOTEBOOKS
    stale = [p.name for p, text in built.items() if p.read_text("utf-8") != text]
    assert not stale, f"run `python notebooks/build.py`: {stale} differ from notebooks/src"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stored_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code)
    lines = [ln for c in code for ln in c.source.splitlines() if ln.startswith("MODELS = ")]
    assert len(lines) == 1 and lines[0].startswith(MODELS_LINE), lines


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_and_draws(path, kernel_manager_factory):
    nb = nbformat.read(path, as_version=4)
    km = kernel_manager_factory()
    client = nbclient.NotebookClient(
        nb,
        km=km,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS_DIR)}},
    )
    try:
        client.execute()  # raises CellExecutionError on the first failing cell
    finally:  # a kernel given to the client outlives it: stop it, not at interpreter exit
        if km.has_kernel:
            km.shutdown_kernel(now=True)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    figures = [o for o in outputs if "image/png" in o.get("data", {})]
    assert figures, f"{path.name} produced no figure"
