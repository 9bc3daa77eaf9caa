"""README.md and the documentation pages: every code block runs, or is marked as needing what
a test machine lacks and is then checked (compiles, its commands parse). See docs_examples."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from docs_examples import (
    FOLDERS,
    PAGES,
    REPO,
    Block,
    PageRun,
    _one,
    blocks,
    commands,
    ovseg_argv,
    run_page,
)

README = REPO / "README.md"
SAMPLE = "camvid_0016E5_07959.jpg"


@pytest.fixture(scope="module", autouse=True)
def _remove_workspaces():
    yield
    run_page.cache_clear()
    while FOLDERS:
        shutil.rmtree(FOLDERS.pop(), ignore_errors=True)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_page_examples_run(page: Path) -> None:
    run = run_page(page)
    found = [b for b in blocks(page) if b.lang in {"python", "bash", "console"}]
    assert len(run.ran) + len(run.checked) >= len(found)


def test_readme_first_run_writes_the_label_map_of_the_sample() -> None:
    from ovseg.result import read_label_png

    run = run_page(README)
    out = run.folder / "out"
    labels = read_label_png(out / f"{SAMPLE}_labels.png")
    assert labels.shape == (360, 480)
    assert set(np.unique(labels).tolist()) <= {-1, 0, 1, 2, 3}
    for name in (f"{SAMPLE}_overlay.png", f"{SAMPLE}.json", "instances.json"):
        assert (out / name).is_file(), name
    settings = json.loads((out / "ovseg_run.json").read_text())
    assert "corrclip" in json.dumps(settings), "the first run must run the default method"


def test_readme_is_short_and_its_test_command_is_the_one_ci_runs() -> None:
    text = README.read_text()
    assert len(text.splitlines()) <= 300
    command = ".venv/bin/python -m pytest -q"
    assert f"```bash\n{command}\n```" in text
    ci = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    assert ci[-1] == command


def test_readme_links_name_existing_pages() -> None:
    for target in re.findall(r"\]\(((?:docs/|CONTRIBUTING)[^)#\s]*)", README.read_text()):
        assert (REPO / target).is_file(), target


def _same(block: Block):
    """What a block does: its code, or for a shell block its ovseg commands' arguments."""
    if block.lang == "python":
        return block.code
    return tuple(tuple(ovseg_argv(argv) or argv) for argv in commands(block))


def test_blocks_left_to_this_file_run_in_the_readme() -> None:
    readme = {_same(b) for b in blocks(README) if b.runs}
    left = [b for page in PAGES for b in blocks(page) if b.covered == "tests/test_docs.py"]
    assert left, "no block names tests/test_docs.py (getting-started's first run should)"
    for block in left:
        assert _same(block) in readme, f"{block.where} is not a README block that runs"


def test_a_failing_command_fails_its_page(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    bad = Block(README, 1, "bash", "ovseg segment missing.jpg --classes a b --tiny -o out/\n")
    with pytest.raises(AssertionError, match="exited with"):
        _one(bad, PageRun(README, tmp_path), [])
    unknown = Block(README, 1, "bash", "ovseg segment x.jpg --classes a --no-such-flag -o o\n")
    unknown.needs = "weights"
    with pytest.raises(AssertionError, match="no-such-flag"):
        _one(unknown, PageRun(README, tmp_path), [])
