"""Precision and throughput on one device: the encoders in float32, bfloat16 and float16, and
images per second of each preset and method, with the maps' agreement with float32.

    python benchmarks/gpu_speed.py --device cuda [--dtypes float32,bfloat16,float16]
        [--images 8] [--batch 8] [--compile] [--data DIR] [-o OUT]
    python benchmarks/gpu_speed.py --device cpu --smoke      # tiny models: checks the script

Random weights throughout (timing only; the architectures of the released checkpoints). Every
precision runs under :func:`ovseg.models.build.inference_precision` (autocast in that dtype;
weights stay float32), on the same inputs as float32, in one process.

1. Encoders (``encoders``; ``--encoders`` picks among sam, sam2-tiny, sam2-large, clip, dino):
   SAM ViT-B's image encoder (fused attention), SAM 2.1 hiera-tiny and hiera-large, CLIP
   ViT-B/16's image tower and DINO ViT-B/8, each on a batch of ``--batch`` random images at
   its input size (``--smoke``: the tiny test models). Per dtype: median
   seconds per batch over 5 timed calls after 2 warm-ups, images per second, the ratio to
   float32, the output's relative L2 distance to float32's, and the attention kernels that ran
   (ATen ops named ``*attention*`` in one profiled call: ``_efficient_attention``,
   ``_flash_attention``, ``_cudnn_attention``, ``_scaled_dot_product_attention_math``...). With
   ``--compile`` each encoder is also timed after :func:`ovseg.models.build.compile_modules`
   (the first call, which compiles, is not timed).
2. Throughput (``throughput``; ``--rows`` picks by first word): ``Segmenter.segment`` of each
   preset (fast, balanced, best) and of the other methods (sclip, clearclip, proxyclip,
   sam-clip) on ``--images`` 480x360 CamVid frames (generated frames when the folder is
   absent), 11 classes; each frame is new to the
   Segmenter (its caches are cleared). The Segmenter takes one image at a time, so this is
   images per second of sequential calls (the encoders section gives the batched figures).
   Per dtype: images/s, the ratio to float32, and the share of pixels whose label equals
   float32's on the same frame.

Writes ``gpu_speed_<device>[_smoke].{json,md}`` under OUT (atomically). Exit code 1 if a row
failed (the error is recorded in its place), else 0.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
import traceback
import warnings
from pathlib import Path

import numpy as np
import torch

from ovseg._io import atomic_write_text
from ovseg.image import load_image
from ovseg.models.build import compile_modules, inference_precision, resolve_device

CAMVID = Path(__file__).resolve().parents[2] / "shared" / "data" / "camvid-val"
CLASSES = ["sky", "building", "pole", "road", "sidewalk", "tree", "sign", "fence", "car",
           "person", "bicyclist"]  # fmt: skip
# name: (method, clip, sam, dino); presets first (as ovseg.models.presets has them)
ROWS = {
    "fast (naclip)": ("naclip", "ViT-B-16/openai", "vit_b", None),
    "balanced (trident)": ("trident", "ViT-B-16/openai", "vit_b", "dino_vitb16"),
    "best (corrclip)": ("corrclip", "ViT-B-16-quickgelu/metaclip_fullcc", "sam2.1_hiera_large",
                        "dino_vitb8"),
    "sclip": ("sclip", "ViT-B-16/openai", None, None),
    "clearclip": ("clearclip", "ViT-B-16/openai", None, None),
    "proxyclip": ("proxyclip", "ViT-B-16/openai", None, "dino_vitb8"),
    "sam-clip": ("sam-clip", "ViT-B-16/openai", "vit_b", None),
}  # fmt: skip
TINY = {"vit_b": "tiny-random", "sam2.1_hiera_large": "sam2-tiny-random"}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device, warmup: int = 2, repeats: int = 5) -> tuple[float, object]:
    for _ in range(warmup):
        out = fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        t = time.perf_counter()
        out = fn()
        _sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def _attention_ops(fn, device) -> list[str]:
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        fn()
        _sync(device)
    names = {e.key for e in prof.key_averages()}
    return sorted(n for n in names if n.startswith("aten::") and "attention" in n)


def _first(out) -> torch.Tensor:
    return out[-1] if isinstance(out, list | tuple) else out


ENCODERS = ("sam", "sam2-tiny", "sam2-large", "clip", "dino")


def _encoder(key: str, smoke: bool, device):
    """(display name, model to compile, callable(x), input side) of encoder ``key``."""
    from ovseg.methods.dino import dino_last_features
    from ovseg.models.build import build_clip, build_dino, build_sam
    from ovseg.proposals.grid import fused_attention

    if key == "sam":
        sam = build_sam("tiny-random" if smoke else "vit_b", device, random_weights=True)
        fused_attention(sam)
        name = "SAM tiny-random" if smoke else "SAM ViT-B"
        return name, sam, sam.image_encoder, sam.image_encoder.img_size
    if key.startswith("sam2"):
        spec = "sam2-tiny-random" if smoke else f"sam2.1_hiera_{key.split('-')[1]}"
        model = build_sam(spec, device, random_weights=True)
        side = int(model.prompt_encoder.input_image_size)
        return f"SAM 2 {spec}", model, model.get_image_embeddings, side
    if key == "clip":
        clip = build_clip("tiny-random" if smoke else "ViT-B-16", device, random_weights=True)
        name = "CLIP tiny-random" if smoke else "CLIP ViT-B/16"
        return name, clip, clip.model.visual, clip.image_size
    dino = build_dino("tiny-random" if smoke else "dino_vitb8", device, random_weights=True)
    name = "DINO tiny-random" if smoke else "DINO ViT-B/8"
    return name, dino, lambda x: dino_last_features(dino, x), 64 if smoke else 224


def run_encoders(args, device, dtypes) -> dict:
    rows = {}
    gen = torch.Generator().manual_seed(0)
    for key in args.encoders.split(","):
        if args.smoke and key == "sam2-large":
            continue  # the smoke run has one tiny SAM 2
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # random weights: said in the report
            name, model, forward, side = _encoder(key, args.smoke, device)
        x = torch.randn(args.batch, 3, side, side, generator=gen).to(device)
        row, reference = {}, None
        variants = [(d, False) for d in dtypes]
        if args.compile:
            variants += [(d, True) for d in dtypes if d != "float16" or device.type == "cuda"]
        for dtype, compiled in variants:
            key = f"{dtype} compiled" if compiled else dtype
            try:
                if compiled and not getattr(model, "_ovseg_compiled", False):
                    compile_modules(model)
                    model._ovseg_compiled = True
                with torch.inference_mode(), inference_precision(device, dtype):
                    call = lambda f=forward, x=x: _first(f(x))  # noqa: E731
                    seconds, out = _timed(call, device)
                    ops = _attention_ops(call, device)
                out = out.float()
                if reference is None:
                    reference = out
                error = float((out - reference).norm() / reference.norm())
                row[key] = {"s_per_batch": seconds, "images_per_s": args.batch / seconds,
                            "rel_l2_to_float32": error, "attention_ops": ops}  # fmt: skip
            except Exception as e:  # noqa: BLE001 - recorded in the results
                row[key] = {"error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()}
            print(f"encoders: {name} {key}: {_brief(row[key])}", flush=True)
        base = row.get("float32", {}).get("s_per_batch")
        for r in row.values():
            if base and "s_per_batch" in r:
                r["speedup_vs_float32"] = base / r["s_per_batch"]
        rows[name] = row
        del model, forward
    return rows


def _brief(r: dict) -> str:
    if "error" in r:
        return "FAILED " + r["error"]
    return f"{r['images_per_s']:.2f} images/s, rel L2 {r['rel_l2_to_float32']:.4f}"


def _frames(data: Path, n: int) -> tuple[list[np.ndarray], str]:
    files = sorted((data / "images").glob("*"))[:n] if (data / "images").is_dir() else []
    if files:
        return [load_image(f) for f in files], str(data)
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (360, 480, 3), dtype=np.uint8) for _ in range(n)], "generated"


def _fresh(seg) -> None:
    seg._probs_cache = seg._regions_cache = None
    if seg.has_sam and seg._proposer is not None:
        seg._proposer.clear_cache()


def run_throughput(args, device, dtypes, frames) -> dict:
    from ovseg.pipeline import Segmenter

    rows = {}
    for name, (method, clip, sam, dino) in ROWS.items():
        if args.rows and name.split(" ")[0] not in args.rows.split(","):
            continue
        if args.smoke:
            clip, sam = "tiny-random", TINY.get(sam, sam)
            dino = dino and "tiny-random"
        row, reference = {}, None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                seg = Segmenter(sam, clip, device, dino=dino, method=method, random_weights=True)
        except Exception as e:  # noqa: BLE001 - recorded in the results
            rows[name] = {"error": f"{type(e).__name__}: {e}"}
            print(f"throughput: {name}: FAILED {rows[name]['error']}", flush=True)
            continue
        for dtype in dtypes:
            try:
                with torch.inference_mode(), inference_precision(device, dtype):
                    _fresh(seg)
                    seg.segment(frames[0], CLASSES)  # warm-up
                    labels = []
                    _sync(device)
                    t = time.perf_counter()
                    for frame in frames:
                        _fresh(seg)
                        labels.append(seg.segment(frame, CLASSES).label_map)
                    _sync(device)
                    seconds = time.perf_counter() - t
                reference = reference or labels
                agree = [float((a == b).mean()) for a, b in zip(labels, reference, strict=True)]
                row[dtype] = {"images_per_s": len(frames) / seconds,
                              "label_agreement_with_float32": statistics.mean(agree)}  # fmt: skip
            except Exception as e:  # noqa: BLE001 - recorded in the results
                row[dtype] = {"error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()}
            r = row[dtype]
            print(f"throughput: {name} {dtype}: " + (
                f"FAILED {r['error']}" if "error" in r else
                f"{r['images_per_s']:.2f} images/s, labels {r['label_agreement_with_float32']:.4f}"
            ), flush=True)  # fmt: skip
        base = row.get("float32", {}).get("images_per_s")
        for r in row.values():
            if base and "images_per_s" in r:
                r["speedup_vs_float32"] = r["images_per_s"] / base
        rows[name] = row
        del seg
    return rows


def _markdown(result: dict) -> str:
    lines = [
        f"# Precision and throughput on {result['device']} ({result['machine']})",
        "",
        f"Random weights; {'tiny test models (--smoke)' if result['smoke'] else 'real sizes'}; "
        f"autocast per dtype; encoders on batches of {result['batch']}, medians of 5 after 2 "
        f"warm-ups; throughput on {result['images']} frames of {result['frames']} "
        "(480x360 CamVid), sequential `Segmenter.segment` calls, 11 classes.",
    ]
    if result["encoders"]:
        lines += [
            "",
            "## Encoders",
            "",
            "| encoder | dtype | images/s | x float32 | rel. L2 to float32 | attention ops |",
            "|---|---|---:|---:|---:|---|",
        ]
    for name, row in result["encoders"].items():
        for dtype, r in row.items():
            if "error" in r:
                lines.append(f"| {name} | {dtype} | failed: {r['error'][:80]} | | | |")
                continue
            lines.append(
                f"| {name} | {dtype} | {r['images_per_s']:.2f} | "
                f"{r.get('speedup_vs_float32', float('nan')):.2f}x | "
                f"{r['rel_l2_to_float32']:.4f} | {', '.join(r['attention_ops']) or '-'} |"
            )
    if result["throughput"]:
        lines += ["", "## Throughput, `Segmenter.segment` per image", "",
                  "| preset / method | dtype | images/s | x float32 | labels = float32's |",
                  "|---|---|---:|---:|---:|"]  # fmt: skip
    for name, row in result["throughput"].items():
        if "error" in row:
            lines.append(f"| {name} | | failed: {row['error'][:80]} | | |")
            continue
        for dtype, r in row.items():
            if "error" in r:
                lines.append(f"| {name} | {dtype} | failed: {r['error'][:80]} | | |")
                continue
            lines.append(
                f"| {name} | {dtype} | {r['images_per_s']:.2f} | "
                f"{r.get('speedup_vs_float32', float('nan')):.2f}x | "
                f"{100 * r['label_agreement_with_float32']:.2f}% |"
            )
    return "\n".join(lines) + "\n"


def _failed(result: dict) -> bool:
    rows = [*result["encoders"].values(), *result["throughput"].values()]
    return any("error" in row or any("error" in r for r in row.values()) for row in rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default=None, help="cuda (default when available) or cpu")
    ap.add_argument("--dtypes", default=None, help="comma-separated (default: all three on "
                    "CUDA, float32,bfloat16 on the CPU)")  # fmt: skip
    ap.add_argument("--smoke", action="store_true", help="tiny test models (checks the script)")
    ap.add_argument("--images", type=int, default=None, help="frames (default 8, smoke 2)")
    ap.add_argument("--batch", type=int, default=None, help="encoder batch (default 8, smoke 2)")
    ap.add_argument("--compile", action="store_true", help="also time compiled encoders")
    ap.add_argument("--sections", default="encoders,throughput")
    ap.add_argument("--encoders", default=",".join(ENCODERS), help="among " + ", ".join(ENCODERS))
    ap.add_argument("--rows", default=None, help="throughput rows by first word (default all)")
    ap.add_argument("--data", type=Path, default=CAMVID)
    ap.add_argument("-o", "--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args(argv)
    unknown = set(args.encoders.split(",")) - set(ENCODERS)
    if unknown:
        ap.error(f"--encoders: unknown {sorted(unknown)}; choose among {', '.join(ENCODERS)}")
    device = resolve_device(args.device)
    default = "float32,bfloat16,float16" if device.type == "cuda" else "float32,bfloat16"
    dtypes = [d.strip() for d in (args.dtypes or default).split(",") if d.strip()]
    for d in dtypes:
        inference_precision(device, d)  # refuses an unknown dtype, float16 on the CPU
    if dtypes[0] != "float32":
        dtypes.insert(0, "float32")  # the reference of every ratio and agreement
    args.images = args.images or (2 if args.smoke else 8)
    args.batch = args.batch or (2 if args.smoke else 8)
    sections = set(args.sections.split(","))
    frames, source = _frames(args.data, args.images)
    result = {
        "device": str(device),
        "machine": torch.cuda.get_device_name(device) if device.type == "cuda"
        else f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        "torch": torch.__version__, "smoke": args.smoke, "dtypes": dtypes, "batch": args.batch,
        "images": len(frames), "frames": source,
        "encoders": run_encoders(args, device, dtypes) if "encoders" in sections else {},
        "throughput": run_throughput(args, device, dtypes, frames)
        if "throughput" in sections else {},
    }  # fmt: skip
    stem = f"gpu_speed_{device.type}" + ("_smoke" if args.smoke else "")
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / f"{stem}.json", json.dumps(result, indent=1) + "\n")
    text = _markdown(result)
    atomic_write_text(args.out / f"{stem}.md", text)
    print(text)
    return 1 if _failed(result) else 0


if __name__ == "__main__":
    raise SystemExit(main())
