"""Text embeddings: the first image with new classes against a warm image, side by side in one run.

    python benchmarks/text.py [--data ../shared/data/camvid-val] [--repeats 3] [-o OUT]

NACLIP (``Segmenter(sam=None, clip="ViT-B-16", method="naclip")``, real-size CLIP ViT-B/16 with
random weights, seeded so that every process builds the same ones) segments one CamVid frame
into 11 classes with the 80 ImageNet templates (880 prompts). Timed per ``segment()`` call, the
probability cache cleared each time:

- ``warm``: the classes' text embeddings already in memory (the tenth image of a run);
- ``first, full 77``: new classes, embedded as before truncation (one ``encode_text`` call on all
  880 prompts at the full 77 positions), no disk cache;
- ``first, truncated``: new classes, every prompt cut after its end-of-text token, in batches
  sorted by length, no disk cache;
- ``first, shared prefixes``: the same, each prefix shared by several prompts run once (the
  default path), no disk cache;
- ``first, shared + store``: the same with the disk cache on and empty (a first run ever);
- ``first, from disk``: new to this Segmenter's memory, on disk (another Segmenter, same process);
- ``second process``: a new Python process builds the same model and segments the frame: its
  first call reads the disk cache (plus the weights hash and tokenisation), its later calls are
  warm; the ratio is taken within that process.

The text part of each call is also timed (``text_embeddings``). The disk cache lives in a
temporary folder for the run. Writes ``text_<device>.json`` and ``.md`` under OUT.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ovseg.image import load_image
from ovseg.pipeline import Segmenter
from ovseg.scoring import text_cache, vocabulary
from ovseg.scoring.text_tower import encode_open_clip_tokens

REPO = Path(__file__).resolve().parents[1]
CAMVID = REPO.parent / "shared" / "data" / "camvid-val"
CLASSES = ["sky", "building", "pole", "road", "sidewalk", "tree", "sign symbol", "fence", "car",
           "pedestrian", "bicyclist"]  # fmt: skip
WARMUP_CLASSES = ["water", "grass", "wall"]
SEED = 0


def _frame(data: Path) -> tuple[np.ndarray, str]:
    images = sorted((data / "images").glob("*.png")) if data.is_dir() else []
    if images:
        return load_image(images[0]), images[0].name
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (360, 480, 3), dtype=np.uint8), "generated 480x360"


def _segmenter(clip: str, device: str) -> Segmenter:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # random weights: said above
        torch.manual_seed(SEED)
        return Segmenter(None, clip, device, method="naclip", random_weights=True)


class _TextClock:
    """Sums the seconds spent in ``vocabulary.text_embeddings`` while installed."""

    def __init__(self):
        self.seconds = 0.0
        self._original = vocabulary.text_embeddings

    def __enter__(self):
        def timed(*args, **kwargs):
            t = time.perf_counter()
            try:
                return self._original(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - t

        vocabulary.text_embeddings = timed
        return self

    def __exit__(self, *exc):
        vocabulary.text_embeddings = self._original


def _call(seg: Segmenter, image, classes, forget_text: bool) -> tuple[float, float]:
    """(seconds of one segment() call, seconds of its text part)."""
    seg._probs_cache = None
    if forget_text:
        seg.clip.__dict__.pop("_ovseg_text_cache", None)
    with _TextClock() as clock:
        t = time.perf_counter()
        seg.segment(image, classes)
        total = time.perf_counter() - t
    return total, clock.seconds


@contextlib.contextmanager
def _full_77(seg: Segmenter):
    """The text path before truncation: one ``encode_text`` call over every prompt, 77 positions."""
    backend = seg.clip

    @torch.inference_mode()
    def encode_tokens(tokens):
        return F.normalize(backend.model.encode_text(tokens["input_ids"]).float(), dim=-1)

    backend.encode_tokens = encode_tokens
    try:
        yield
    finally:
        del backend.encode_tokens


@contextlib.contextmanager
def _no_sharing(seg: Segmenter):
    """Truncated and batched, but every prompt runs all its own positions."""
    backend = seg.clip

    def encode_tokens(tokens):
        feats = encode_open_clip_tokens(backend.model, tokens["input_ids"], share_prefixes=False)
        return F.normalize(feats.float(), dim=-1)

    backend.encode_tokens = encode_tokens
    try:
        yield
    finally:
        del backend.encode_tokens


@contextlib.contextmanager
def _env(**values):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


def _row(calls: list[tuple[float, float]]) -> dict:
    return {
        "seconds": [c[0] for c in calls],
        "text_seconds": [c[1] for c in calls],
        "median_s": statistics.median(c[0] for c in calls),
        "text_median_s": statistics.median(c[1] for c in calls),
    }


def child(args) -> int:
    """The second process: first call (from disk) and warm calls, as JSON on stdout."""
    image, _ = _frame(args.data)
    seg = _segmenter(args.clip, args.device)
    first = _call(seg, image, CLASSES, forget_text=False)
    warm = [_call(seg, image, CLASSES, forget_text=False) for _ in range(args.repeats)]
    identity = seg.clip.text_identity()
    print(json.dumps({"first": _row([first]), "warm": _row(warm), "identity": identity}))
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=CAMVID)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--full-repeats", type=int, default=1, help="repeats of the slow full-77 run")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--clip", default="ViT-B-16", help="open_clip architecture (random weights)")
    ap.add_argument("-o", "--out", type=Path, default=REPO / "benchmarks" / "results")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        return child(args)
    image, source = _frame(args.data)
    rows: dict[str, dict] = {}  # printed in this order
    order = ["warm", "first, full 77", "first, truncated", "first, shared prefixes",
             "first, shared + store", "first, from disk", "second process, first",
             "second process, warm"]  # fmt: skip
    with (
        tempfile.TemporaryDirectory(prefix="ovseg-text-bench-") as cache,
        _env(OVSEG_CACHE_DIR=cache),
    ):
        seg = _segmenter(args.clip, args.device)
        calls: dict[str, list] = {k: [] for k in order[:6]}
        with _env(OVSEG_TEXT_CACHE="0"):
            seg.segment(image, WARMUP_CLASSES)  # warm-up with other classes, untimed
        for r in range(args.repeats):  # round robin, so that load changes hit every row alike
            with _env(OVSEG_TEXT_CACHE="0"):
                if r < args.full_repeats:
                    with _full_77(seg):
                        calls["first, full 77"].append(_call(seg, image, CLASSES, True))
                with _no_sharing(seg):
                    calls["first, truncated"].append(_call(seg, image, CLASSES, True))
                calls["first, shared prefixes"].append(_call(seg, image, CLASSES, True))
                calls["warm"].append(_call(seg, image, CLASSES, False))
            text_cache.clear()
            calls["first, shared + store"].append(_call(seg, image, CLASSES, True))
            calls["first, from disk"].append(_call(seg, image, CLASSES, True))
            print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1][0]:.1f} s" for k, v in
                                                  calls.items() if v), flush=True)  # fmt: skip
        rows.update({k: _row(v) for k, v in calls.items()})
        out = subprocess.run(
            [sys.executable, __file__, "--child", "--data", str(args.data), "--device",
             args.device, "--repeats", str(args.repeats), "--clip", args.clip,
             *(["--threads", str(args.threads)] if args.threads else [])],
            check=True, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
        ).stdout  # fmt: skip
        second = json.loads(out.strip().splitlines()[-1])
        rows["second process, first"] = second["first"]
        rows["second process, warm"] = second["warm"]
        if second["identity"] != seg.clip.text_identity():
            raise RuntimeError("the second process built other weights: its cache would miss")
    rows = {k: rows[k] for k in order}
    warm = rows["warm"]["median_s"]
    for name, row in rows.items():
        base = rows["second process, warm"]["median_s"] if name.startswith("second") else warm
        row["x_warm"] = row["median_s"] / base
    _write(args, rows, image, source)
    return 0


def _write(args, rows, image, source) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    threads = f"_{args.threads}threads" if args.threads else ""
    stem = args.out / f"text_{args.clip.replace('/', '-')}_{args.device}{threads}"
    meta = {
        "machine": f"{platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} torch threads, torch {torch.__version__}",
        "image": source, "shape": list(image.shape), "classes": CLASSES, "prompts": 880,
        "repeats": args.repeats, "full_repeats": args.full_repeats,
    }  # fmt: skip
    stem.with_suffix(".json").write_text(json.dumps({**meta, "rows": rows}, indent=1))
    lines = [
        f"# Text embeddings: first image vs warm ({args.device}; {meta['machine']})", "",
        f"NACLIP, CLIP {args.clip} random weights, {source} {image.shape[1]}x{image.shape[0]}, "
        f"11 classes x 80 templates; medians of {args.repeats} (full 77: {args.full_repeats}).",
        "",
        "| call | s per image | of which text | x warm |",
        "|---|---:|---:|---:|",
    ]  # fmt: skip
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['median_s']:.2f} | {r['text_median_s']:.2f} | {r['x_warm']:.2f}x |"
        )
    lines += ["", "Second-process rows are relative to that process's own warm calls."]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    raise SystemExit(main())
