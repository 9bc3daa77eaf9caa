"""``ovseg bench --video``: propagation against segmenting every frame independently.

Same Segmenter (same models and weights), same consecutive frames, one run:

- **independent**: every frame segmented on its own with the dense method refined by SAM's
  automatic grid (``refine="masks"``): the dense map plus the grid on every frame;
- **propagation**: :class:`~ovseg.video.stream.VideoStream`: the dense map on every frame, the
  grid on keyframes only (every ``keyframe_every`` frames), and between them each object
  propagated by SAM prompted from its previous box and mask.

Both sides start with empty caches (SAM embeddings, dense probabilities). Reported: seconds
and frames per second of each side, the ratio, objects tracked, and decoder prompts.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ovseg._io import atomic_write_text
from ovseg.bench.report import machine_info

__all__ = ["VideoBenchConfig", "run_video_bench", "video_markdown"]


@dataclass
class VideoBenchConfig:
    sam: str = "vit_b"
    clip: str = "ViT-B-16"
    device: str | None = None
    frames: int = 10
    keyframe_every: int = 5
    points_per_side: int = 32
    filters: bool = True
    data: str = "../shared/data/camvid-val"
    method: str = "naclip"
    threads: int | None = None

    @property
    def tiny(self) -> bool:
        return self.sam == "tiny-random"


def load_clip(config: VideoBenchConfig) -> tuple[list[np.ndarray], list[str], str]:
    """Consecutive CamVid frames (sorted names are consecutive frames of one drive), or a
    generated clip of a car crossing a street when CamVid is absent."""
    from PIL import Image

    root = Path(config.data)
    files = sorted((root / "images").glob("*.png"))[: config.frames] if root.is_dir() else []
    if files:
        classes = [c.strip() for c in (root / "classes.txt").read_text().splitlines()]
        frames = [np.asarray(Image.open(f).convert("RGB")) for f in files]
        return frames, [c for c in classes if c], f"{root} ({files[0].stem}...)"
    frames = []
    for i in range(config.frames):
        a = np.zeros((240, 320, 3), np.uint8)
        a[:100], a[100:] = (135, 190, 235), (90, 90, 95)
        a[150:200, 10 + 12 * i : 90 + 12 * i] = (200, 30, 30)
        frames.append(a)
    return frames, ["sky", "road", "car"], "generated (CamVid not found)"


def run_video_bench(config: VideoBenchConfig, progress=print) -> dict:
    import torch

    from ovseg.pipeline import Segmenter
    from ovseg.proposals.grid import GridOptions
    from ovseg.video.stream import VideoStream

    if config.frames < 2 or config.keyframe_every < 1:
        raise ValueError("--images must be >= 2 frames and --keyframe-every >= 1 for --video")
    if config.threads:
        torch.set_num_threads(config.threads)
    frames, classes, source = load_clip(config)
    grid = GridOptions(points_per_side=config.points_per_side)
    if not config.filters or config.tiny:
        grid = GridOptions(points_per_side=config.points_per_side, pred_iou_thresh=0.0,
                           stability_score_thresh=0.0)  # fmt: skip
    seg = Segmenter(config.sam, config.clip, config.device, method=config.method,
                    refine="masks", random_weights=not config.tiny, grid=grid)  # fmt: skip
    stuff = [c for c in ("sky", "road", "building", "tree", "sidewalk") if c in classes]
    seg.segment(frames[0], classes)  # warm-up (text embeddings, first-call setup)

    def reset():
        seg.proposer.clear_cache()
        seg._probs_cache = None

    def timed(fn) -> tuple[float, list]:
        if seg.device.type == "cuda":
            torch.cuda.synchronize(seg.device)
        t0 = time.perf_counter()
        out = fn()
        if seg.device.type == "cuda":
            torch.cuda.synchronize(seg.device)
        return time.perf_counter() - t0, out

    reset()
    progress(f"video bench: independent, {len(frames)} frames")
    t_ind, independent = timed(lambda: [seg.segment(f, classes) for f in frames])
    reset()
    progress(f"video bench: propagation, keyframe every {config.keyframe_every}")
    stream = VideoStream(seg, classes, keyframe_every=config.keyframe_every, stuff=stuff)
    t_prop, propagated = timed(lambda: [stream.step(f) for f in frames])
    agree = float(np.mean([(a.label_map == b.label_map).mean()
                           for a, b in zip(independent, propagated, strict=True)]))  # fmt: skip
    n = len(frames)
    return {
        "config": asdict(config),
        "machine": machine_info(seg.device),
        "source": source,
        "frame_size": list(frames[0].shape[:2]),
        "independent": {"seconds": t_ind, "fps": n / t_ind},
        "propagation": {
            "seconds": t_prop,
            "fps": n / t_prop,
            "keyframes": -(-n // config.keyframe_every),
            "objects": len(stream.all_tracks),
        },  # fmt: skip
        "speedup": t_ind / t_prop,
        "pixel_agreement": agree,
    }


def video_markdown(r: dict) -> str:
    c = r["config"]
    h, w = r["frame_size"]
    return "\n".join([
        f"# ovseg bench --video: {c['sam']} + {c['clip']} ({c['method']}), "
        f"{r['machine']['device']}",
        "",
        f"{c['frames']} consecutive frames of {w}x{h} from {r['source']}; grid "
        f"{c['points_per_side']}x{c['points_per_side']}; keyframe every {c['keyframe_every']} "
        f"frames; {'tiny random' if c['sam'] == 'tiny-random' else 'random'} weights.",
        "",
        "| per clip | seconds | frames/s |",
        "|---|---:|---:|",
        f"| independent (dense map + SAM grid every frame) | {r['independent']['seconds']:.2f} "
        f"| {r['independent']['fps']:.3f} |",
        f"| propagation (grid on {r['propagation']['keyframes']} keyframes, "
        f"{r['propagation']['objects']} objects) | {r['propagation']['seconds']:.2f} | "
        f"{r['propagation']['fps']:.3f} |",
        f"| **speed-up** | | **{r['speedup']:.1f}x** |",
        "",
        f"Label agreement between the two, pixels: {100 * r['pixel_agreement']:.1f}% "
        "(random weights: not a quality measure).",
        "",
    ])  # fmt: skip


def write_video_results(results: dict, out_dir, stem: str | None = None) -> dict[str, Path]:
    c = results["config"]
    device = results["machine"]["device"].split(":")[0]
    stem = stem or f"video_{c['sam']}_{c['clip']}_{device}".replace("/", "-")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / f"{stem}.json", "markdown": out / f"{stem}.md"}
    atomic_write_text(paths["json"], json.dumps(results, indent=2, default=float) + "\n")
    atomic_write_text(paths["markdown"], video_markdown(results))
    return paths
