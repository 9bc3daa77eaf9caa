"""Peak memory of ``Segmenter.segment`` against megapixels and classes: tensors vs tiles.

    python benchmarks/memory.py [--methods naclip,sclip] [--megapixels 0.25,1,4,16]
                                [--classes 3,30,150] [--limit-gb 6] [-o OUT]

Each point runs in its own process (peak RSS from ``resource.getrusage``): a square random
image of that many megapixels segmented into that many classes (``c0``, ``c1``, ...; the
80 ImageNet templates) by ``Segmenter(sam=None, clip="tiny-random", method=...)``, the
user's path through the method protocol and fusion to a ``SegmentationResult``. The CLIP is
ovseg's tiny random test model (the real open_clip ViT class, random weights): the model's
share of the memory is small, so the numbers show how memory grows with the image and the
classes, not a real CLIP's totals (ViT-B/16 adds about 0.6 GB at any image size). NACLIP is
the ``fast`` preset's method.

Two paths per point:

- ``full``: the method's probabilities as one ``(Q, H, W)`` tensor at the input size
  (``method.map_bytes = inf``): what every image did before tiling;
- ``tiled``: the default (a :class:`~ovseg.methods.pixelmap.PixelMap` above
  ``ClipMethod.map_bytes``, 256 MiB): the input-size steps tile by tile.

``base`` is the process after building the models, the image and the text embeddings
(computed by a first run on a 64 x 64 image), before the segmentation. Points of the full path
whose estimated memory exceeds ``--limit-gb`` are skipped (the machine is shared). Writes
``memory.json`` and ``memory.md`` under OUT.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _child(method: str, megapixels: float, classes: int, path: str) -> dict:
    import numpy as np
    import torch

    from ovseg.pipeline import Segmenter

    torch.manual_seed(0)
    seg = Segmenter(None, "tiny-random", "cpu", method=method)
    if path == "full":
        seg.method.map_bytes = math.inf
    names = [f"c{i}" for i in range(classes)]
    rng = np.random.default_rng(0)
    seg.segment(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), names)  # text embeddings
    side = round((megapixels * 1e6) ** 0.5)
    image = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
    base = _rss_mb()
    start = time.perf_counter()
    result = seg.segment(image, names)
    seconds = time.perf_counter() - start
    assert result.label_map.shape == (side, side)
    return {"base_mb": base, "peak_mb": _rss_mb(), "seconds": seconds, "side": side,
            "segments": len(result.segments)}  # fmt: skip


def _estimate_gb(method: str, megapixels: float, classes: int) -> float:
    """Rough peak of the full path: queries x pixels float32 buffers (3 at once; PAMR ~5 plus
    its 16 neighbour weights per pixel and their temporaries)."""
    q = classes + 1
    per_pixel = 4 * (5 * q + 60) if method == "naclip" else 4 * (3 * q + q)
    return megapixels * 1e6 * per_pixel / 1e9


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--methods", default="naclip,sclip")
    ap.add_argument("--megapixels", default="0.25,1,4,16")
    ap.add_argument("--classes", default="3,30,150")
    ap.add_argument("--paths", default="full,tiled")
    ap.add_argument("--limit-gb", type=float, default=6.0)
    ap.add_argument("--skip", default="", help="METHOD:MP:CLASSES;... points not to run")
    ap.add_argument("-o", "--out", type=Path, default=Path("benchmarks/results"))
    ap.add_argument("--child", nargs=4, metavar=("METHOD", "MP", "CLASSES", "PATH"))
    args = ap.parse_args(argv)
    if args.child:
        method, mp, k, path = args.child
        print(json.dumps(_child(method, float(mp), int(k), path)))
        return 0
    skip = {tuple(s.split(":")) for s in args.skip.split(";") if s}
    rows = []
    for method in args.methods.split(","):
        for mp in [float(v) for v in args.megapixels.split(",")]:
            for k in [int(v) for v in args.classes.split(",")]:
                if (method, f"{mp:g}", str(k)) in skip:
                    continue
                row = {"method": method, "megapixels": mp, "classes": k}
                for path in args.paths.split(","):
                    est = _estimate_gb(method, mp, k)
                    if path == "full" and est > args.limit_gb:
                        row[path] = {"skipped": f"needs ~{est:.0f} GB"}
                        continue
                    cmd = [sys.executable, __file__, "--child", method, f"{mp:g}", str(k), path]
                    out = subprocess.run(cmd, capture_output=True, text=True)
                    if out.returncode:
                        row[path] = {"failed": out.stderr.strip().splitlines()[-1:]}
                    else:
                        row[path] = json.loads(out.stdout.strip().splitlines()[-1])
                    print(method, f"{mp:g} MP", k, "classes", path, row[path], flush=True)
                rows.append(row)
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"machine": platform.processor() or platform.machine(), "python": sys.version.split()[0],
            "models": "tiny-random CLIP (random weights)"}  # fmt: skip
    (args.out / "memory.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    lines = ["| method | MP | classes | base MB | full: peak MB (s) | tiled: peak MB (s) |",
             "|---|---:|---:|---:|---:|---:|"]  # fmt: skip

    def cell(r):
        if "peak_mb" in r:
            return f"{r['peak_mb']:.0f} ({r['seconds']:.1f})"
        return r.get("skipped") or f"failed: {r.get('failed')}"

    for r in rows:
        base = next((r[p]["base_mb"] for p in ("tiled", "full") if "base_mb" in r.get(p, {})), 0)
        lines.append(f"| {r['method']} | {r['megapixels']:g} | {r['classes']} | {base:.0f} | "
                     f"{cell(r.get('full', {}))} | {cell(r.get('tiled', {}))} |")  # fmt: skip
    (args.out / "memory.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
