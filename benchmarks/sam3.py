"""SAM 3 on K text prompts: the official per-class loop against ovseg's batched path, side by
side in one run.

    python benchmarks/sam3.py [--sam sam3] [--device cpu] [--repeats 2] [--batch-size 8]
                              [--data ../shared/data/camvid-val] [-o benchmarks/results]

- per-class loop (what users of the ``transformers`` API write today): for each of the 11 CamVid
  classes, ``Sam3Processor(images=image, text=class)`` -> ``Sam3Model`` ->
  ``post_process_instance_segmentation`` (threshold 0.5, mask threshold 0.5);
- batched (ovseg): :class:`~ovseg.proposals.sam3_detector.Sam3Detector.instances` on all 11
  prompts: the image processor and the vision encoder once, the text encoder once per prompt,
  the rest of the detector on ``--batch-size`` prompts per forward, the same post-processing.

Both start cold on every repeat (ovseg's image and text caches cleared); the two sides alternate
within each repeat after one untimed warm-up each. ``--sam sam3`` builds the official
architecture (848M parameters, 1008x1008 input) with random weights: timing only. The run
checks that both sides find the same instances. Writes ``sam3_<sam>_<device>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from ovseg.image import load_image
from ovseg.models.sam3_weights import build_sam3
from ovseg.proposals.sam3_detector import Sam3Detector

CAMVID = Path(os.environ.get("OVSEG_CAMVID") or Path(__file__).resolve().parents[2] / "shared"
              / "data" / "camvid-val")  # fmt: skip
CLASSES = ["sky", "building", "pole", "road", "sidewalk", "tree", "sign symbol", "fence", "car",
           "pedestrian", "bicyclist"]  # fmt: skip
THRESHOLD = MASK_THRESHOLD = 0.5


def _frame(data: Path) -> tuple[np.ndarray, str]:
    images = sorted((data / "images").glob("*")) if data.is_dir() else []
    if images:
        return load_image(images[0]), images[0].name
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (360, 480, 3), dtype=np.uint8), "generated 480x360"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def per_class(sam, image, device) -> list[dict]:
    """The official pipeline once per class."""
    size = [tuple(image.shape[:2])]
    out = []
    for c in CLASSES:
        inputs = sam.processor(images=image, text=c, return_tensors="pt").to(device)
        with torch.inference_mode():
            raw = sam.detector(**inputs)
            out.append(
                sam.processor.post_process_instance_segmentation(
                    raw, threshold=THRESHOLD, mask_threshold=MASK_THRESHOLD, target_sizes=size
                )[0]
            )
    return out


def batched(det: Sam3Detector, image):
    det.clear_cache()  # cold: image features and prompt embeddings computed again
    return det.instances(image, CLASSES, threshold=THRESHOLD, mask_threshold=MASK_THRESHOLD)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sam", default="sam3", help="sam3 (random weights) or sam3-tiny-random")
    ap.add_argument("--data", type=Path, default=CAMVID)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("-o", "--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    image, source = _frame(args.data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sam = build_sam3(args.sam, device, random_weights=True)
    det = Sam3Detector(sam, batch_size=args.batch_size)
    print(f"{args.sam} on {device}, {source} {image.shape[1]}x{image.shape[0]}, "
          f"{len(CLASSES)} classes, batch size {args.batch_size}", flush=True)  # fmt: skip

    ref, ours = per_class(sam, image, device), batched(det, image)  # warm-up, and the check
    counts = [len(r["scores"]) for r in ref]
    same = counts == [int((ours.class_index == k).sum()) for k in range(len(CLASSES))]
    diff = max(
        [0.0]
        + [
            float(np.abs(ours.score[ours.class_index == k] - r["scores"].cpu().numpy()).max())
            for k, r in enumerate(ref)
            if len(r["scores"])
        ]  # fmt: skip
    )
    times: dict[str, list[float]] = {"per_class": [], "batched": []}
    for repeat in range(args.repeats):
        order = ("per_class", "batched") if repeat % 2 == 0 else ("batched", "per_class")
        for side in order:
            _sync(device)
            start = time.perf_counter()
            per_class(sam, image, device) if side == "per_class" else batched(det, image)
            _sync(device)
            times[side].append(time.perf_counter() - start)
            print(f"  repeat {repeat + 1} {side}: {times[side][-1]:.2f} s", flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    result = dict(
        sam=args.sam,
        parameters=sum(p.numel() for p in sam.parameters()),
        side=sam.side,
        device=str(device),
        cpu=platform.processor() or platform.machine(),
        threads=torch.get_num_threads(),
        frame=source,
        classes=CLASSES,
        batch_size=args.batch_size,
        seconds=times,
        median=med,
        speedup=med["per_class"] / med["batched"],
        same_instances=same,
        instances=counts,
        max_score_diff=diff,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"sam3_{args.sam}_{device.type}"
    md = (
        f"# SAM 3: {len(CLASSES)} classes on one frame, per-class loop vs batched\n\n"
        f"{args.sam} ({result['parameters'] / 1e6:.0f}M parameters, {sam.side}x{sam.side} "
        f"input, random weights), {device}, {result['threads']} threads, {source}, batch size "
        f"{args.batch_size}, {args.repeats} repeats\n\n"
        "| side | seconds per image (median) | repeats |\n|---|---:|---|\n"
        f"| per-class loop (official pipeline x {len(CLASSES)}) | {med['per_class']:.2f} | "
        f"{', '.join(f'{t:.2f}' for t in times['per_class'])} |\n"
        f"| batched (ovseg Sam3Detector) | {med['batched']:.2f} | "
        f"{', '.join(f'{t:.2f}' for t in times['batched'])} |\n\n"
        f"Speed-up {result['speedup']:.1f}x; same instances per class: {same} "
        f"({sum(counts)} in all), largest score difference {diff:.2e}.\n"
    )
    for suffix, text in ((".json", json.dumps(result, indent=2)), (".md", md)):
        tmp = stem.with_suffix(suffix + ".tmp")
        tmp.write_text(text)
        tmp.replace(stem.with_suffix(suffix))
    print(md)
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
