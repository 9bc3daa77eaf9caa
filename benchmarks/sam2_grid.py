"""SAM 2 automatic masks: ovseg against Meta's ``SAM2AutomaticMaskGenerator``, side by side.

    python benchmarks/sam2_grid.py [--sam sam2.1_hiera_tiny] [--points-per-side 32]
        [--repeats 2] [--no-filters | --pred-iou-thresh T] [--device cpu] [-o OUT]

Both sides hold the same weights (``ovseg.bench.plain_sam2.build_pair``: Meta's ``SAM2Base``
and ``transformers``' ``Sam2Model`` converted from its state dict; random weights for the
official architectures, timing only) and run on the same CamVid frame in one process. Each
repeat times, one side after the other, the automatic masks of an image neither has embedded:
ovseg's ``Sam2Proposer.set_image`` + ``automatic_masks_sam2``, and Meta's ``generate`` (which
embeds the image itself); the encoder's share is timed inside each. One untimed warm-up on a
2x2 grid runs first. The masks are checked equal (same count, same pixels, same order) and the
predicted IoUs within 1e-4. Writes ``sam2_grid_<sam>_<device>_<grid>.{json,md}`` under OUT.

With random weights almost no candidate passes the default predicted-IoU filter (0.8), so
ovseg skips nearly all the output upscaling; ``--no-filters`` (every candidate upsampled,
filtered and NMS'd) and ``--pred-iou-thresh`` show the other end.
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

from ovseg._io import atomic_write_text
from ovseg.bench.plain_sam2 import build_pair
from ovseg.image import load_image
from ovseg.proposals.sam2 import Sam2Proposer
from ovseg.proposals.sam2_grid import Sam2GridOptions, automatic_masks_sam2

CAMVID = Path(__file__).resolve().parents[2] / "shared" / "data" / "camvid-val"


def _frame(data: Path) -> tuple[np.ndarray, str]:
    images = sorted((data / "images").glob("*")) if data.is_dir() else []
    if images:
        return load_image(images[0]), images[0].name
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (360, 480, 3), dtype=np.uint8), "generated 480x360"


def _meta_generator(meta, options: dict):
    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

    generator = SAM2AutomaticMaskGenerator(meta, output_mode="binary_mask", **options)
    side = meta.image_size  # the predictor's feature sizes are written for 1024 inputs
    generator.predictor._bb_feat_sizes = [(side // s, side // s) for s in (4, 8, 16)]
    spent = []
    set_image = generator.predictor.set_image

    def timed_set_image(image):
        t = time.perf_counter()
        set_image(image)
        spent.append(time.perf_counter() - t)

    generator.predictor.set_image = timed_set_image
    return generator, spent


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sam", default="sam2.1_hiera_tiny", help="a SAM 2 name or sam2-tiny-random")
    ap.add_argument("--points-per-side", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--no-filters", action="store_true", help="predicted-IoU, stability off")
    ap.add_argument("--pred-iou-thresh", type=float, default=None)
    ap.add_argument("--data", type=Path, default=CAMVID)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("-o", "--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    image, source = _frame(args.data)
    options = {"points_per_side": args.points_per_side}
    if args.no_filters:
        options.update(pred_iou_thresh=0.0, stability_score_thresh=0.0)
    if args.pred_iou_thresh is not None:
        options["pred_iou_thresh"] = args.pred_iou_thresh
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # random weights: said in the report
        meta, ours = build_pair(args.sam, device, random_weights=True)
    proposer = Sam2Proposer(ours)

    def run_ours(opts):
        proposer.clear_cache()
        _sync(device)
        t0 = time.perf_counter()
        proposer.set_image(image)
        _sync(device)
        t1 = time.perf_counter()
        masks = automatic_masks_sam2(proposer, Sam2GridOptions(**opts))
        _sync(device)
        return masks, t1 - t0, time.perf_counter() - t0

    def run_meta(opts):
        generator, spent = _meta_generator(meta, opts)
        _sync(device)
        t0 = time.perf_counter()
        records = generator.generate(image)
        _sync(device)
        return records, spent[-1], time.perf_counter() - t0

    warm = dict(options, points_per_side=2)
    with torch.inference_mode():
        run_ours(warm)
    run_meta(warm)
    times = {"ours": [], "ours_encoder": [], "meta": [], "meta_encoder": []}
    for r in range(args.repeats):
        with torch.inference_mode():
            masks, enc, total = run_ours(options)
        times["ours"].append(total)
        times["ours_encoder"].append(enc)
        records, enc, total = run_meta(options)
        times["meta"].append(total)
        times["meta_encoder"].append(enc)
        print(f"repeat {r}: ovseg {times['ours'][-1]:.2f} s, Meta {total:.2f} s", flush=True)
    expected = np.stack([x["segmentation"] for x in records]) if records else None
    same = len(masks) == len(records) and (
        not records
        or (
            np.array_equal(masks.masks, expected)
            and np.allclose(masks.scores, [x["predicted_iou"] for x in records], atol=1e-4)
        )
    )
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "machine": f"{platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} torch threads, torch {torch.__version__}, {device}",
        "sam": args.sam,
        "image": source,
        "shape": list(image.shape),
        "options": options,
        "repeats": args.repeats,
        "seconds": times,
        "median_s": med,
        "masks": {"ours": len(masks), "meta": len(records)},
        "same_masks": bool(same),
        "meta_over_ours": med["meta"] / med["ours"],
    }
    stem = f"sam2_grid_{args.sam}_{device.type}_{args.points_per_side}"
    if args.no_filters:
        stem += "_nofilters"
    elif args.pred_iou_thresh is not None:
        stem += f"_iou{args.pred_iou_thresh:g}"
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / f"{stem}.json", json.dumps(result, indent=1) + "\n")
    grid = f"{args.points_per_side}x{args.points_per_side}"
    lines = [
        f"# SAM 2 automatic masks, {args.sam}, {grid} grid ({result['machine']})",
        "",
        f"Image: {source} {image.shape[1]}x{image.shape[0]}; random weights, the same on both "
        f"sides; options {options}; median of {args.repeats} after a warm-up.",
        "",
        "| | Meta's generator (s) | ovseg (s) | Meta / ovseg |",
        "|---|---:|---:|---:|",
    ]
    for name, key in (("encoder", "_encoder"), ("automatic masks (encoder included)", "")):
        a, b = med["meta" + key], med["ours" + key]
        lines.append(f"| {name} | {a:.2f} | {b:.2f} | {a / b:.2f}x |")
    grid_meta, grid_ours = med["meta"] - med["meta_encoder"], med["ours"] - med["ours_encoder"]
    lines.append(
        f"| grid only | {grid_meta:.2f} | {grid_ours:.2f} | {grid_meta / grid_ours:.2f}x |"
    )
    lines += [
        "",
        f"Masks: Meta {len(records)}, ovseg {len(masks)}; identical (pixels, order, IoU "
        f"within 1e-4): {'yes' if same else 'NO'}.",
    ]
    atomic_write_text(args.out / f"{stem}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
