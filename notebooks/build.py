"""Build the notebooks from their sources: ``python notebooks/build.py [--check]``.

Each ``src/NN_name.py`` is a notebook in the "percent" format: ``# %% [markdown]`` starts a
markdown cell (its lines lose the leading ``# ``), ``# %%`` starts a code cell, and a cell that
is exactly ``# %% setup`` becomes the shared setup code of ``src/_setup.py`` (models, data
lookup, a generated fallback image). The notebooks are written without outputs
(``execution_count`` null) and with stable cell ids, so a rebuild of unchanged sources is
byte-identical. ``--check`` writes nothing and exits 1 when a notebook is out of date.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent
SOURCES = HERE / "src"
KERNEL = {"display_name": "Python 3", "language": "python", "name": "python3"}


def _cells(text: str, setup: str) -> list[tuple[str, str]]:
    cells: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if line.startswith("# %%"):
            tag = line[4:].strip()
            if tag == "setup":
                cells.append(("code", setup.splitlines()))
                cells.append(("skip", []))
            else:
                cells.append(("markdown" if tag == "[markdown]" else "code", []))
        elif cells:
            cells[-1][1].append(line)
    out = []
    for kind, lines in cells:
        if kind == "skip":
            continue
        if kind == "markdown":
            lines = [ln[2:] if ln.startswith("# ") else ln.lstrip("#") for ln in lines]
        body = "\n".join(lines).strip("\n")
        if body:
            out.append((kind, body))
    return out


def build_notebook(source: Path) -> nbformat.NotebookNode:
    """One notebook (nbformat v4, no outputs) from a percent-format source."""
    lines = (SOURCES / "_setup.py").read_text("utf-8").splitlines()
    setup = "\n".join(lines[lines.index("# %% setup") + 1 :])
    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": KERNEL, "language_info": {"name": "python"}}
    for i, (kind, body) in enumerate(_cells(source.read_text("utf-8"), setup.strip("\n"))):
        cell = nbformat.v4.new_markdown_cell(body) if kind == "markdown" else \
            nbformat.v4.new_code_cell(body)
        cell.id = f"{source.stem.split('_')[0]}-{i:02d}"
        nb.cells.append(cell)
    nbformat.validate(nb)
    return nb


def build_all() -> dict[Path, str]:
    """Target path -> notebook JSON text, for every source."""
    return {HERE / f"{src.stem}.ipynb": nbformat.writes(build_notebook(src)) + "\n"
            for src in sorted(SOURCES.glob("[0-9]*.py"))}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report stale notebooks")
    args = parser.parse_args(argv)
    stale = []
    for path, text in build_all().items():
        if path.is_file() and path.read_text("utf-8") == text:
            continue
        stale.append(path.name)
        if not args.check:
            path.write_text(text, "utf-8")
    verb = "out of date" if args.check else "written"
    print(f"{verb}: {', '.join(stale) or 'none'}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
