"""``ovseg bench``: the plain SAM + CLIP pipeline vs ovseg, side by side, in one process."""

from __future__ import annotations

import argparse
import sys


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "bench",
        help="time the plain SAM + CLIP pipeline against ovseg, side by side",
        description="Runs SamAutomaticMaskGenerator + per-mask CLIP crops and ovseg's path on the "
        "same images with the same (randomly initialised) models; reports per-stage "
        "and end-to-end medians, ratios, masks, CLIP passes, peak memory and click "
        "latency, and each dense method (NACLIP, SCLIP, ClearCLIP, ProxyCLIP; no SAM) per "
        "image beside them; writes STEM.json and STEM.md. With vit_b on a small CPU the plain "
        "side takes minutes per image: keep --images/--repeats at 1 there.",
    )
    p.add_argument(
        "--tiny",
        action="store_true",
        help="tiny random test models (quick run; sets --sam/--clip tiny-random)",
    )
    p.add_argument(
        "--sam",
        default="vit_b",
        help="vit_b|vit_l|vit_h, or SAM 2: sam2.1_hiera_tiny|small|base_plus|large (random "
        "weights; the plain side is then Meta's sam2 package), sam2-tiny-random",
    )
    p.add_argument("--clip", default="ViT-B-16", help="open_clip architecture (random weights)")
    p.add_argument(
        "--method",
        default=None,
        help="a method that finds instances (sam3, naclip+sam3...): time SAM 3's instances of "
        "11 classes, the official per-class loop against ovseg's batched path (needs a SAM 3 "
        "--sam: sam3 with random weights, or sam3-tiny-random; --images is ignored)",
    )
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:0 (default: auto)")
    p.add_argument("--images", type=int, default=None, help="number of frames (default 1)")
    p.add_argument(
        "--repeats", type=int, default=None, help="timed runs per frame (default 1, 2 with --tiny)"
    )
    p.add_argument(
        "--data",
        default="../shared/data/camvid-val",
        help="CamVid-style folder (images/, labels/, classes.txt); generated frames when absent",
    )
    p.add_argument(
        "--points-per-side",
        type=int,
        default=None,
        help="grid density, both sides (default 32, 16 with --tiny)",
    )
    p.add_argument(
        "--no-filters",
        action="store_true",
        help="turn SAM's predicted-IoU and stability filters off on both sides",
    )
    p.add_argument("--scorers", default="crop,dense", help="ovseg scorers to time: crop,dense,both")
    p.add_argument(
        "--no-fused",
        action="store_true",
        help="keep segment_anything's own encoder attention on the ovseg side",
    )
    p.add_argument(
        "--dtype",
        default=None,
        choices=("float32", "bfloat16", "float16"),
        help="precision of the ovseg side and the methods: autocast in bfloat16 or float16 "
        "(float16: CUDA only); default float32",
    )
    p.add_argument("--half", action="store_true", help="the same as --dtype float16")
    p.add_argument(
        "--adaptive",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also time the adaptive grid (default: with --tiny only; with vit_b and "
        "random weights the coarse pass keeps nothing, so it saves nothing)",
    )
    p.add_argument("--clicks", type=int, default=3, help="click points per image (0: skip)")
    p.add_argument(
        "--methods",
        default="naclip,sclip,clearclip,proxyclip",
        help="dense methods to time per image beside the pipelines: comma-separated among "
        "naclip, sclip, clearclip, proxyclip, corrclip (regions: the fixed mask set); 'all' "
        "(default: the first four) or 'none' to skip",
    )
    p.add_argument(
        "--dino",
        default=None,
        help="DINO of the methods that need one (random weights; default: each method's own, "
        "dino_vitb8 for ProxyCLIP and CorrCLIP, dino_vitb16 for Trident; tiny-random with --tiny)",
    )
    p.add_argument(
        "--batch-windows",
        default="",
        help="also time each method with these windows per forward pass, side by side with its "
        "default (comma-separated ints, e.g. 1,16)",
    )
    p.add_argument(
        "--video",
        action="store_true",
        help="video: propagation (grid on keyframes) against segmenting every frame "
        "independently, same models and frames (--images frames, default 10)",
    )
    p.add_argument(
        "--keyframe-every", type=int, default=5, help="--video: keyframe interval (default 5)"
    )
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("-o", "--out", default="benchmarks/results", help="output folder")
    p.add_argument("--stem", default=None, help="file stem (default: models and device)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.method is not None:
        return _instances(args)
    if args.video:
        return _video(args)
    from ovseg.bench.report import to_markdown, write_results
    from ovseg.bench.runner import BenchConfig, parse_methods, run_benchmark

    sam, clip = ("tiny-random", "tiny-random") if args.tiny else (args.sam, args.clip)
    try:
        methods = parse_methods(args.methods)
        batch_windows = tuple(int(b) for b in args.batch_windows.split(",") if b.strip())
    except ValueError as e:
        message = str(e) if "--methods" in str(e) else f"--batch-windows: {e}"
        print(f"ovseg bench: error: {message}", file=sys.stderr)
        return 1
    try:
        config = BenchConfig(
            sam=sam,
            clip=clip,
            device=args.device,
            images=args.images or 1,
            repeats=args.repeats or (2 if args.tiny else 1),
            data=args.data,
            points_per_side=args.points_per_side or (16 if args.tiny else 32),
            filters=not args.no_filters,
            scorers=tuple(s.strip() for s in args.scorers.split(",") if s.strip()),
            fused=not args.no_fused,
            half=args.half,
            dtype=args.dtype,
            adaptive=args.tiny if args.adaptive is None else args.adaptive,
            clicks=args.clicks,
            threads=args.threads,
            methods=methods,
            dino=args.dino or ("tiny-random" if args.tiny else None),
            batch_windows=batch_windows,
        )
        results = run_benchmark(config, progress=lambda msg: print(msg, file=sys.stderr))
    except (ValueError, TypeError, FileNotFoundError) as e:
        print(f"ovseg bench: error: {e}", file=sys.stderr)
        return 2
    paths = write_results(results, args.out, args.stem)
    print(to_markdown(results))
    print(f"ovseg bench: wrote {paths['json']} and {paths['markdown']}", file=sys.stderr)
    for name, error in results["method_errors"].items():
        print(f"ovseg bench: error: method {name} failed: {error}", file=sys.stderr)
    return 1 if results["method_errors"] else 0


def _video(args: argparse.Namespace) -> int:
    from ovseg.bench.video import (
        VideoBenchConfig,
        run_video_bench,
        video_markdown,
        write_video_results,
    )

    sam, clip = ("tiny-random", "tiny-random") if args.tiny else (args.sam, args.clip)
    try:
        config = VideoBenchConfig(
            sam=sam, clip=clip, device=args.device, frames=args.images or 10,
            keyframe_every=args.keyframe_every, data=args.data, threads=args.threads,
            points_per_side=args.points_per_side or (16 if args.tiny else 32),
            filters=not args.no_filters,
        )  # fmt: skip
        results = run_video_bench(config, progress=lambda msg: print(msg, file=sys.stderr))
    except (ValueError, TypeError, FileNotFoundError) as e:
        print(f"ovseg bench: error: {e}", file=sys.stderr)
        return 2
    paths = write_video_results(results, args.out, args.stem)
    print(video_markdown(results))
    print(f"ovseg bench: wrote {paths['json']} and {paths['markdown']}", file=sys.stderr)
    return 0


def _instances(args: argparse.Namespace) -> int:
    from ovseg.bench.sam3 import run_sam3_bench, sam3_markdown, write_sam3_results
    from ovseg.methods.registry import method_class

    try:
        if not method_class(args.method).finds_instances:  # the protocol says, not the name
            raise ValueError(
                f"--method {args.method} finds no instances of its own: the dense methods are "
                "timed with --methods"
            )
        sam = "sam3-tiny-random" if args.tiny else args.sam
        results = run_sam3_bench(
            sam, args.device, args.repeats or (2 if args.tiny else 1), 8, args.data,
            progress=lambda msg: print(msg, file=sys.stderr),
        )  # fmt: skip
    except (ValueError, TypeError, FileNotFoundError) as e:
        print(f"ovseg bench: error: {e}", file=sys.stderr)
        return 2
    paths = write_sam3_results(results, args.out, args.stem)
    print(sam3_markdown(results))
    print(f"ovseg bench: wrote {paths['json']} and {paths['markdown']}", file=sys.stderr)
    return 0 if results["same_instances"] else 1
