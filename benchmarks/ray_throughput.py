"""Throughput of ``ovseg segment --ray`` against the number of workers, on this machine.

    python benchmarks/ray_throughput.py --images 8 --workers 1,2            # tiny models
    python benchmarks/ray_throughput.py --clip ViT-B-16/openai --random-weights --images 8

One local Ray (``--cpus``, default all of this machine's) serves every run. Per worker count,
a fresh output folder, the same frames (CamVid from ``../shared/data/camvid-val``, or
generated road-like frames), and :func:`ovseg.distributed.segment_dataset`; first, for
reference, the local ``ovseg segment`` in this process. Reported: the wall time of each run
(Ray: worker start, model builds included), its images per second, the steady rate (images
finished after the first one, over the time between the first and the last, from the
manifest), and the medians of the per-image stages each worker measured (read + decode,
segment, write). Results: ``-o DIR/ray_throughput_<clip>_<cpus>cpu.{json,md}``, written
atomically.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from ovseg._io import atomic_write_text


def _frames(data: Path, count: int, folder: Path) -> str:
    folder.mkdir(parents=True)
    files = sorted((data / "images").glob("*.png"))[:count] if (data / "images").is_dir() else []
    if len(files) == count:
        for f in files:
            (folder / f.name).write_bytes(f.read_bytes())
        return f"CamVid frames from {data} ({Image.open(files[0]).size[0]}x"
    from ovseg.bench.runner import synthetic_scene

    for i in range(count):
        Image.fromarray(synthetic_scene(i)[0]).save(folder / f"synthetic_{i}.png")
    return "generated frames ("


def _manifest_stats(out: Path, wall: float) -> dict:
    from ovseg.distributed.segment import MANIFEST

    rows = [json.loads(line) for line in (out / MANIFEST).read_text().splitlines()]
    ok = [r for r in rows if r["status"] == "ok"]
    ends = sorted(r["finished"] for r in ok)
    steady = (len(ends) - 1) / (ends[-1] - ends[0]) if len(ends) > 1 else None
    stage = {
        k: statistics.median(r["seconds"][k] for r in ok) for k in ("read", "segment", "write")
    }
    return {
        "images": len(ok),
        "wall_s": round(wall, 2),
        "images_per_s": round(len(ok) / wall, 3),
        "steady_images_per_s": round(steady, 3) if steady else None,
        "median_stage_s": {k: round(v, 4) for k, v in stage.items()},
        "workers_seen": len({r["worker"] for r in ok}),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    p.add_argument("--cpus", type=int, default=os.cpu_count(), help="CPUs of the local Ray")
    p.add_argument("--sam", default="tiny-random")
    p.add_argument("--clip", default="tiny-random")
    p.add_argument("--method", default=None)
    p.add_argument("--random-weights", action="store_true")
    p.add_argument("--data", default="../shared/data/camvid-val")
    p.add_argument("-o", "--out", default="benchmarks/results")
    args = p.parse_args(argv)
    counts = [int(w) for w in args.workers.split(",")]
    models = {"sam": args.sam, "clip": args.clip, "random_weights": args.random_weights}
    if args.method:
        models["method"] = args.method
    classes = ["road", "car", "sky", "building", "tree", "person"]

    import ray

    from ovseg.cli import main as cli
    from ovseg.distributed import segment_dataset

    results: dict = {"runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        frames = Path(tmp) / "frames"
        source = _frames(Path(args.data), args.images, frames)
        size = Image.open(next(frames.iterdir())).size
        source = f"{source.split('(')[0]}({size[0]}x{size[1]})"
        flags = ["--sam", args.sam, "--clip", args.clip, "--no-progress"]
        flags += ["--random-weights"] * args.random_weights
        flags += ["--method", args.method] if args.method else []
        start = time.perf_counter()
        code = cli(["segment", str(frames), "--classes", *classes, "-o", f"{tmp}/local", *flags])
        wall = time.perf_counter() - start
        if code != 0:
            print("the local run failed", file=sys.stderr)
            return 1
        results["runs"]["local (this process)"] = {
            "images": args.images,
            "wall_s": round(wall, 2),
            "images_per_s": round(args.images / wall, 3),
        }
        ray.init(
            address="local", num_cpus=args.cpus, include_dashboard=False, logging_level="warning"
        )
        try:
            for w in counts:
                out = Path(tmp) / f"ray{w}"
                start = time.perf_counter()
                segment_dataset(frames, classes, out, workers=w, **models)
                stats = _manifest_stats(out, time.perf_counter() - start)
                results["runs"][f"ray, {w} worker(s)"] = stats
                print(f"{w} worker(s): {stats}", file=sys.stderr)
        finally:
            ray.shutdown()
    results |= {
        "frames": f"{args.images} {source}",
        "models": models,
        "cpus": args.cpus,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    stem = f"ray_throughput_{args.clip.replace('/', '_')}_{args.cpus}cpu"
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / f"{stem}.json", json.dumps(results, indent=1) + "\n")
    atomic_write_text(out_dir / f"{stem}.md", _markdown(results))
    print(_markdown(results))
    return 0


def _markdown(results: dict) -> str:
    lines = [
        f"# ovseg segment --ray: throughput ({results['date']})",
        "",
        f"- Frames: {results['frames']}; models: {results['models']}.",
        f"- Machine: {results['machine']} (load average {results['load_average_1min']} at the "
        f"end); local Ray with {results['cpus']} CPU(s), 1 CPU and 1 model copy per worker.",
        "",
        "| run | wall (s) | images/s | steady images/s | read (s) | segment (s) | write (s) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in results["runs"].items():
        stage = r.get("median_stage_s", {})
        cells = [stage.get(k, "") for k in ("read", "segment", "write")]
        steady = r.get("steady_images_per_s") or ""
        lines.append(
            f"| {name} | {r['wall_s']} | {r['images_per_s']} | {steady} | "
            + " | ".join(str(c) for c in cells)
            + " |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
