"""The code blocks of README.md and of the documentation pages, and how the tests run them.

Pages: ``README.md`` and ``docs/**/*.md``, with the repository files a page includes through
pymdownx.snippets (a line ``--8<-- "benchmarks/README.md"``) read in its place.

Blocks: fenced blocks at the start of a line. ``python`` blocks run in one namespace per
page, in order; ``bash`` and ``console`` blocks hold ``ovseg`` commands (``ovseg`` or
``.venv/bin/ovseg``; ``$`` prompts, ``#`` comments and ``\\`` continuations allowed), each
run through :func:`ovseg.cli.main` and expected to exit 0. Everything runs in a fresh folder
per page holding a copy of the bundled samples at ``ovseg/assets/`` (where a clone has them),
so examples name the sample as a clone's root does. Blocks in other languages (``text``,
``diff``, ``yaml``, ...) are not commands and are not run; a fence without a language is
refused.

An HTML comment on the line before a fence changes what is done with the block:

- ``<!-- needs: KEY -->``: not run, because it needs what :data:`NEEDS` says for KEY (real
  weights, a download, a GPU...). It is still checked: a python block must compile, every
  ``ovseg`` command of a shell block must parse with ovseg's own argument parser.
  ``<!-- needs: slow tests/test_x.py -->`` marks a block that runs with the tiny models but
  would cost the docs tests more than their budget; it names the test file that runs the same
  calls, which must exist.
- ``<!-- run: tiny models -->``: run with every model spec replaced by its tiny random
  stand-in, exactly as ``tiny=True`` / ``--tiny`` replace them
  (:func:`ovseg.models.presets.tiny_models`): the string values of the keywords ``sam=``,
  ``clip=``, ``dino=``, ``vfm=``, ``aux_clip=`` and of the flags ``--sam``, ``--clip``,
  ``--dino``, ``--vfm``, ``--aux-clip``. Nothing else is changed.
- ``<!-- file: PATH -->``: the block is the content of the repository file PATH (a new
  module in a worked example). ``ovseg/...py`` python blocks are loaded as that module for the
  rest of the page; a ``diff`` block for ``ovseg/methods/registry.py`` adds its ``+`` lines'
  entries to the registry for the rest of the page. Both are undone when the page ends.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import importlib
import os
import re
import shlex
import shutil
import sys
import tempfile
import types
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PAGES = (REPO / "README.md", *sorted((REPO / "docs").rglob("*.md")))
SAMPLES = REPO / "ovseg" / "assets"

NEEDS = {
    "weights": "real checkpoints, fetched once with `ovseg weights download` (network)",
    "network": "a package index or another download",
    "gpu": "a CUDA device",
    "data": "a dataset that is not in the repository",
    "cluster": "a Ray cluster of several machines",
    "server": "serves until stopped (the web app)",
    "camera": "a camera",
    "long": "real-size architectures on random weights: minutes to hours on a CPU",
    "ci": "run by CI itself (.ci/run): the test suite, the documentation build",
    "slow": "runs as written with the tiny models, but beyond the docs tests' budget of about "
    "a minute; the test file named in the marker runs the same calls",
    "tests": "reruns test files of the suite (minutes); CI runs the suite itself",
    "ray": "starts a local Ray (tens of seconds); tests/test_distributed.py runs it",
}
RUN = {"python", "bash", "console"}
NOT_RUN = {"text", "diff", "yaml", "json", "toml"}
MODEL_KEYWORDS = ("sam", "clip", "dino", "vfm", "aux_clip")
MODEL_FLAGS = {"--sam": "sam", "--clip": "clip", "--dino": "dino", "--vfm": "vfm",
               "--aux-clip": "aux_clip"}  # fmt: skip

FENCE = re.compile(r"^```(\S*)\s*$")
MARK = re.compile(r"^<!--\s*(needs|run|file):\s*(.+?)\s*-->$")
INCLUDE = re.compile(r'^--8<--\s+"([^"]+)"\s*$')
REGISTRY_LINE = re.compile(r'^\+\s*("[^"]+"\s*:\s*"[^"]+")\s*,?\s*$')


@dataclass
class Block:
    """One fenced block: where it is, its language, code and marker."""

    source: Path
    line: int
    lang: str
    code: str
    needs: str | None = None
    tiny: bool = False
    file: str | None = None
    covered: str | None = None  # needs: slow: the test file that runs the same calls

    @property
    def where(self) -> str:
        return f"{self.source.relative_to(REPO)}:{self.line}"

    @property
    def runs(self) -> bool:
        return self.lang in RUN and self.needs is None


def blocks(page: Path) -> list[Block]:
    """The fenced blocks of ``page`` and of the files it includes, in reading order."""
    found: list[Block] = []
    lines = page.read_text().splitlines()
    i, mark = 0, None
    while i < len(lines):
        line = lines[i]
        include = INCLUDE.match(line)
        if include:
            found.extend(blocks(REPO / include.group(1)))
        fence = FENCE.match(line)
        if fence:
            lang = fence.group(1)
            end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == "```"), None)
            if end is None:
                raise ValueError(f"{page.relative_to(REPO)}:{i + 1}: fence never closed")
            if lang not in RUN | NOT_RUN:
                raise ValueError(
                    f"{page.relative_to(REPO)}:{i + 1}: fence language {lang!r}; use one of "
                    f"{sorted(RUN | NOT_RUN)}"
                )
            block = Block(page, i + 1, lang, "\n".join(lines[i + 1 : end]) + "\n")
            if mark is not None:
                kind, value = mark
                if kind == "needs":
                    value, _, covered = value.partition(" ")
                    if value not in NEEDS:
                        raise ValueError(f"{block.where}: needs {value!r}, not one of {NEEDS}")
                    if (value == "slow") != bool(covered):
                        raise ValueError(
                            f"{block.where}: name the covering test file with 'needs: slow' "
                            "(<!-- needs: slow tests/test_x.py -->), and only with it"
                        )
                    if covered and not (REPO / covered.strip()).is_file():
                        raise ValueError(f"{block.where}: {covered.strip()!r} does not exist")
                    block.needs, block.covered = value, covered.strip() or None
                elif kind == "run":
                    if value != "tiny models":
                        raise ValueError(f"{block.where}: run marker {value!r}")
                    block.tiny = True
                else:
                    block.file = value
            found.append(block)
            i, mark = end + 1, None
            continue
        marker = MARK.match(line.strip())
        mark = (marker.group(1), marker.group(2)) if marker else None
        i += 1
    return found


# -- shell ------------------------------------------------------------------------------------
def commands(block: Block) -> list[list[str]]:
    """The commands of a shell block, each as argv (continuations joined, comments dropped)."""
    joined = block.code.replace("\\\n", " ")
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if block.lang == "console":
            if not line.startswith("$ "):
                continue  # output shown in the page
            line = line[2:]
        argv = shlex.split(line, comments=True)
        if argv:
            out.append(argv)
    return out


def ovseg_argv(argv: list[str]) -> list[str] | None:
    """The arguments of an ``ovseg`` command, or None for another program."""
    if argv[0] in ("ovseg", ".venv/bin/ovseg"):
        return argv[1:]
    return None


def parse_only(args: list[str]) -> None:
    """Parse ``ovseg ARGS`` as :func:`ovseg.cli.main` does, without running it; a bad flag
    raises ``AssertionError`` with argparse's message."""
    import io

    from ovseg.cli import build_parser

    parser = build_parser()
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            parsed, extra = parser.parse_known_args(args)
    except SystemExit as e:
        raise AssertionError(f"ovseg {shlex.join(args)}: {err.getvalue().strip()}") from e
    target = getattr(parsed, "intermixed", None)
    if extra and (target is None or any(e.startswith("-") for e in extra)):
        raise AssertionError(f"ovseg {shlex.join(args)}: unrecognized arguments {extra}")
    if not getattr(parsed, "func", None):
        raise AssertionError(f"ovseg {shlex.join(args)}: no subcommand")


def tiny_spec(kind: str, spec):
    """The tiny random stand-in of the model spec ``spec`` of ``kind`` (``"sam"``,
    ``"clip"``...), as ``tiny=True`` picks it."""
    from ovseg.models.presets import tiny_models

    if spec is None:
        return None
    return tiny_models({"clip": "x", kind: spec}).get(kind)


def tiny_args(args: list[str]) -> list[str]:
    out = list(args)
    for i, arg in enumerate(out[:-1]):
        if arg in MODEL_FLAGS:
            out[i + 1] = tiny_spec(MODEL_FLAGS[arg], out[i + 1]) or "tiny-random"
    return out


# -- python -----------------------------------------------------------------------------------
class _TinySpecs(ast.NodeTransformer):
    def visit_keyword(self, node: ast.keyword) -> ast.keyword:
        self.generic_visit(node)
        if node.arg in MODEL_KEYWORDS and isinstance(node.value, ast.Constant):
            if isinstance(node.value.value, str):
                node.value = ast.Constant(tiny_spec(node.arg, node.value.value))
        return node


def compiled(block: Block):
    tree = ast.parse(block.code, filename=block.where)
    if block.tiny:
        tree = ast.fix_missing_locations(_TinySpecs().visit(tree))
    return compile(tree, block.where, "exec")


# -- a page's run -----------------------------------------------------------------------------
@dataclass
class PageRun:
    """What running a page left: its folder, its python namespace, the blocks run and the
    blocks only checked."""

    page: Path
    folder: Path
    namespace: dict = field(default_factory=dict)
    ran: list[Block] = field(default_factory=list)
    checked: list[Block] = field(default_factory=list)


FOLDERS: list[Path] = []  # every workspace made, for the tests to remove


def workspace() -> Path:
    """A fresh folder with the bundled samples at ``ovseg/assets/`` (as in a clone)."""
    folder = Path(tempfile.mkdtemp(prefix="ovseg-docs-"))
    FOLDERS.append(folder)
    (folder / "ovseg" / "assets").mkdir(parents=True)
    for sample in SAMPLES.glob("*.jpg"):
        shutil.copy(sample, folder / "ovseg" / "assets" / sample.name)
    return folder


@functools.cache
def run_page(page: Path) -> PageRun:
    """Run every block of ``page`` that runs and check the others (see the module docstring).
    Raises ``AssertionError`` naming the block that failed. Cached: one run per session."""
    run = PageRun(page, workspace(), {"__name__": "__docs__"})
    with _undo() as undo, _chdir(run.folder):
        for block in blocks(page):
            try:
                _one(block, run, undo)
            except AssertionError as e:
                raise AssertionError(f"{block.where}: {e}") from e
            except Exception as e:
                raise AssertionError(f"{block.where}: {type(e).__name__}: {e}") from e
    return run


def _one(block: Block, run: PageRun, undo: list) -> None:
    if block.file is not None:
        _load_file(block, undo)
        run.ran.append(block)
        return
    if block.lang not in RUN:
        return
    if block.lang == "python":
        code = compiled(block)  # a marked block must compile too
        if block.needs is None:
            exec(code, run.namespace)
    else:
        for argv in commands(block):
            args = ovseg_argv(argv)
            if args is None:
                if block.needs is None:
                    raise AssertionError(
                        f"{shlex.join(argv)!r} is not an ovseg command: mark the block with "
                        "<!-- needs: ... --> or write it in Python"
                    )
                continue
            if block.tiny:
                args = tiny_args(args)
            parse_only(args)
            if block.needs is None:
                from ovseg.cli import main

                code = main(args)
                if code != 0:
                    raise AssertionError(f"ovseg {shlex.join(args)} exited with {code}")
    (run.ran if block.needs is None else run.checked).append(block)


def _load_file(block: Block, undo: list) -> None:
    """A ``<!-- file: PATH -->`` block: a new ovseg module, or entries added to the registry."""
    path = block.file
    if block.lang == "python" and path.startswith("ovseg/") and path.endswith(".py"):
        name = path[:-3].replace("/", ".")
        module = types.ModuleType(name)
        module.__file__ = str(REPO / path)
        exec(compiled(block), module.__dict__)
        undo.append(functools.partial(sys.modules.pop, name, None))
        sys.modules[name] = module
        return
    if block.lang == "diff" and path == "ovseg/methods/registry.py":
        from ovseg.methods.registry import METHODS

        for name, target in registry_entries(block):
            undo.append(functools.partial(METHODS.pop, name, None))
            METHODS[name] = target
        return
    raise AssertionError(f"file marker {path!r} on a {block.lang} block: not supported")


def registry_entries(block: Block) -> list[tuple[str, str]]:
    """The ``"name": "module:Class"`` entries a registry diff adds (its ``+`` lines)."""
    entries = []
    for line in block.code.splitlines():
        match = REGISTRY_LINE.match(line)
        if match:
            entries.extend(ast.literal_eval("{" + match.group(1) + "}").items())
        elif line.startswith("+"):
            raise AssertionError(f"registry diff line {line!r} is not one entry")
    if not entries:
        raise AssertionError("the registry diff adds no entry")
    return entries


def import_file_block(page: Path, path: str) -> Block:
    """The block of ``page`` marked ``<!-- file: PATH -->``."""
    found = [b for b in blocks(page) if b.file == path]
    if len(found) != 1:
        raise AssertionError(f"{page}: {len(found)} blocks marked file: {path}")
    return found[0]


@contextlib.contextmanager
def _undo():
    undo: list = []
    try:
        yield undo
    finally:
        for step in reversed(undo):
            step()
        importlib.invalidate_caches()


@contextlib.contextmanager
def _chdir(folder: Path):
    before = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)
