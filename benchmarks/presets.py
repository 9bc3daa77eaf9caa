"""Seconds per image of each quality preset, side by side in one run.

    python benchmarks/presets.py [--data ../shared/data/camvid-val] [--repeats 2] [-o OUT]

Each preset (``ovseg.models.presets``) is built with its registered architectures and random
weights (no hub here: timing only), warmed up once on the frame, then timed ``--repeats`` times
end to end (``Segmenter.segment`` on a frame it has not seen: the probability and embedding
caches are cleared). Writes ``presets_<device>.json`` and ``.md`` under OUT.

With random weights the SAM stages do less than with real ones: SAM 2's automatic masks rarely
pass CorrCLIP's 0.4 filters, and Trident's refinement keeps few masks, so the numbers for
``balanced`` and ``best`` are lower bounds of the refinement work (the encoders, DINO and CLIP
windows, which dominate, run in full).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from ovseg.image import load_image
from ovseg.models.presets import PRESETS
from ovseg.pipeline import Segmenter

CAMVID = Path(__file__).resolve().parents[2] / "shared" / "data" / "camvid-val"
CLASSES = ["sky", "building", "pole", "road", "sidewalk", "tree", "sign", "fence", "car",
           "person", "bicyclist"]  # fmt: skip


def _frame(data: Path) -> tuple[np.ndarray, str]:
    images = sorted((data / "images").glob("*")) if data.is_dir() else []
    if images:
        return load_image(images[0]), images[0].name
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (360, 480, 3), dtype=np.uint8), "generated 480x360"


def _fresh(seg: Segmenter) -> None:
    seg._probs_cache = None  # the next call computes the map again
    if seg.has_sam and seg._proposer is not None:
        seg._proposer.clear_cache()  # and SAM's embedding


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=CAMVID)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--presets", default=",".join(PRESETS))
    ap.add_argument("-o", "--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args(argv)
    image, source = _frame(args.data)
    rows = {}
    for name in args.presets.split(","):
        p = PRESETS[name]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # random weights: said above
            seg = Segmenter(p.sam, p.clip, args.device, dino=p.dino, method=p.method,
                            random_weights=True)  # fmt: skip
            seg.segment(image, CLASSES)  # warm-up, untimed
            times = []
            for _ in range(args.repeats):
                _fresh(seg)
                t = time.perf_counter()
                result = seg.segment(image, CLASSES)
                times.append(time.perf_counter() - t)
        rows[name] = {
            "method": p.method, "models": [p.clip, p.dino, p.sam],
            "published_miou": p.published_miou, "seconds": times,
            "median_s": statistics.median(times), "segments": len(result.segments),
        }  # fmt: skip
        print(f"{name}: {p.method} {statistics.median(times):.2f} s per image", flush=True)
        del seg
    fast = rows.get("fast", {}).get("median_s")
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"presets_{args.device}"
    meta = {
        "machine": f"{platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} torch threads, torch {torch.__version__}",
        "image": source, "shape": list(image.shape), "repeats": args.repeats,
    }  # fmt: skip
    stem.with_suffix(".json").write_text(json.dumps({**meta, "presets": rows}, indent=1))
    lines = [
        f"# Quality presets, seconds per image ({args.device}; {meta['machine']})", "",
        f"Image: {source} {image.shape[1]}x{image.shape[0]}; random weights; median of "
        f"{args.repeats} after a warm-up.", "",
        "| preset | method | published mIoU (avg of 8) | s per image | x fast |",
        "|---|---|---:|---:|---:|",
    ]  # fmt: skip
    for name, r in rows.items():
        ratio = f"{r['median_s'] / fast:.1f}x" if fast else "-"
        lines.append(
            f"| {name} | {r['method']} | {r['published_miou']} | {r['median_s']:.2f} | {ratio} |"
        )
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
