"""SAM 3 on K text prompts: the official per-class loop against ovseg's batched path, side by
side in one run (``ovseg bench --sam sam3 --method sam3``, ``benchmarks/sam3.py``).

- per-class loop (what users of the ``transformers`` API write today): for each of the 11 CamVid
  classes, ``Sam3Processor(images=image, text=class)`` -> ``Sam3Model`` ->
  ``post_process_instance_segmentation`` (threshold 0.5, mask threshold 0.5);
- batched (ovseg): :class:`~ovseg.proposals.sam3_detector.Sam3Detector.instances` on all 11
  prompts: the image processor and the vision encoder once, the text encoder once per prompt,
  the rest of the detector on ``batch_size`` prompts per forward, the same post-processing.

Both start cold on every repeat (ovseg's image and text caches cleared); the two sides alternate
within each repeat after one untimed warm-up each. ``sam="sam3"`` builds the official
architecture (848M parameters, 1008x1008 input) with random weights: timing only. The run
checks that both sides find the same instances.
"""

from __future__ import annotations

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
from ovseg.models.sam3_weights import build_sam3, is_sam3_spec
from ovseg.proposals.sam3_detector import Sam3Detector

__all__ = ["CLASSES", "run_sam3_bench", "sam3_markdown", "write_sam3_results"]

CLASSES = ["sky", "building", "pole", "road", "sidewalk", "tree", "sign symbol", "fence", "car",
           "pedestrian", "bicyclist"]  # fmt: skip
THRESHOLD = MASK_THRESHOLD = 0.5


def _frame(data: Path | None) -> tuple[np.ndarray, str]:
    images = sorted((data / "images").glob("*")) if data is not None and data.is_dir() else []
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


def run_sam3_bench(
    sam: str = "sam3", device=None, repeats: int = 2, batch_size: int = 8,
    data: str | os.PathLike | None = None, progress=print,
) -> dict:  # fmt: skip
    """Time both sides on the first frame of ``data`` (a CamVid-style folder; a generated frame
    when absent); returns the results (seconds per repeat, medians, speed-up, the check).

    Raises:
        ValueError: ``sam`` is not a SAM 3 name, ``repeats`` or ``batch_size`` below 1.
    """
    if not isinstance(sam, str) or not is_sam3_spec(sam):
        raise ValueError(f"--sam must name a SAM 3 model (sam3, sam3-tiny-random), got {sam!r}")
    if repeats < 1 or batch_size < 1:
        raise ValueError(f"repeats and batch size must be >= 1, got {repeats}, {batch_size}")
    from ovseg.models._device import resolve_device

    device = resolve_device(device)
    image, source = _frame(None if data is None else Path(data))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_sam3(sam, device, random_weights=True)
    det = Sam3Detector(model, batch_size=batch_size)
    progress(f"{sam} on {device}, {source} {image.shape[1]}x{image.shape[0]}, "
             f"{len(CLASSES)} classes, batch size {batch_size}")  # fmt: skip
    ref, ours = per_class(model, image, device), batched(det, image)  # warm-up, and the check
    counts = [len(r["scores"]) for r in ref]
    same = counts == [int((ours.class_index == k).sum()) for k in range(len(CLASSES))]
    diff = max([0.0] + [
        float(np.abs(ours.score[ours.class_index == k] - r["scores"].cpu().numpy()).max())
        for k, r in enumerate(ref) if len(r["scores"])
    ])  # fmt: skip
    times: dict[str, list[float]] = {"per_class": [], "batched": []}
    for repeat in range(repeats):
        order = ("per_class", "batched") if repeat % 2 == 0 else ("batched", "per_class")
        for side in order:
            _sync(device)
            start = time.perf_counter()
            per_class(model, image, device) if side == "per_class" else batched(det, image)
            _sync(device)
            times[side].append(time.perf_counter() - start)
            progress(f"  repeat {repeat + 1} {side}: {times[side][-1]:.2f} s")
    med = {k: statistics.median(v) for k, v in times.items()}
    return dict(
        sam=sam, parameters=sum(p.numel() for p in model.parameters()), side=model.side,
        device=str(device), cpu=platform.processor() or platform.machine(),
        threads=torch.get_num_threads(), frame=source, classes=CLASSES, batch_size=batch_size,
        repeats=repeats, seconds=times, median=med, speedup=med["per_class"] / med["batched"],
        same_instances=same, instances=counts, max_score_diff=diff,
    )  # fmt: skip


def sam3_markdown(result: dict) -> str:
    """The results as a Markdown table."""
    med, times = result["median"], result["seconds"]
    n = len(result["classes"])
    return (
        f"# SAM 3: {n} classes on one frame, per-class loop vs batched\n\n"
        f"{result['sam']} ({result['parameters'] / 1e6:.0f}M parameters, {result['side']}x"
        f"{result['side']} input, random weights), {result['device']}, {result['threads']} "
        f"threads, {result['frame']}, batch size {result['batch_size']}, {result['repeats']} "
        "repeats\n\n| side | seconds per image (median) | repeats |\n|---|---:|---|\n"
        f"| per-class loop (official pipeline x {n}) | {med['per_class']:.2f} | "
        f"{', '.join(f'{t:.2f}' for t in times['per_class'])} |\n"
        f"| batched (ovseg Sam3Detector) | {med['batched']:.2f} | "
        f"{', '.join(f'{t:.2f}' for t in times['batched'])} |\n\n"
        f"Speed-up {result['speedup']:.1f}x; same instances per class: "
        f"{result['same_instances']} ({sum(result['instances'])} in all), largest score "
        f"difference {result['max_score_diff']:.2e}.\n"
    )


def write_sam3_results(result: dict, out: str | os.PathLike, stem: str | None = None) -> dict:
    """Write ``STEM.json`` and ``STEM.md`` (default stem ``sam3_<sam>_<device type>``) into
    ``out`` (temp names, then renamed); returns ``{"json": path, "markdown": path}``."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    base = folder / (stem or f"sam3_{result['sam']}_{torch.device(result['device']).type}")
    paths = {"json": base.with_suffix(".json"), "markdown": base.with_suffix(".md")}
    texts = {"json": json.dumps(result, indent=2), "markdown": sam3_markdown(result)}
    for key, path in paths.items():
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(texts[key])
        tmp.replace(path)
    return paths
