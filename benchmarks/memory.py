"""Peak memory of the dense path against megapixels and classes: full tensors vs tiles.

    python benchmarks/memory.py [--methods sclip,naclip] [--megapixels 1,4,16,64]
                                [--classes 3,11,100] [--limit-gb 6] [-o OUT]

Each point runs in its own process (peak RSS from ``resource.getrusage``), on a square random
image of that many megapixels, with a tiny random CLIP ViT (3 blocks, width 64, patch 16: the
real architecture class, random weights). The model's share of the memory is therefore small
and the numbers show the shape of the growth, not a real CLIP's totals (ViT-B/16 adds about
0.6 GB of weights and activations on top, at any image size).

Two paths per point, both ending with labels and confidence (what ``Segmenter.segment`` keeps):

- ``full``: ``dense_probabilities`` (logits, PAMR, softmax and class max at the input size),
  then ``predict_labels`` and the probability of each label: the path before tiling;
- ``tiled``: ``dense_pixelmap`` (the model at its working resolution), then
  ``PixelMap.predict``, tile by tile.

``base`` is the process after building the model and the image, before the dense step. Points
of the full path whose estimated memory exceeds ``--limit-gb`` are skipped (the machine is
shared). Writes ``memory.json`` and ``memory.md`` under OUT.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

_SETTINGS = {"sclip": dict(), "naclip": dict(slide_crop=224)}  # reference defaults


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _child(method: str, megapixels: float, classes: int, path: str) -> dict:
    import numpy as np
    import torch
    import torch.nn.functional as F
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    from ovseg.methods.config import method_config
    from ovseg.methods.dense import dense_pixelmap, dense_probabilities, predict_labels

    torch.manual_seed(0)
    visual = CLIP(
        embed_dim=32,
        vision_cfg=CLIPVisionCfg(layers=3, width=64, head_width=32, patch_size=16, image_size=224),
        text_cfg=CLIPTextCfg(context_length=77, vocab_size=49408, width=32, heads=2, layers=1),
    ).visual.eval()
    side = round((megapixels * 1e6) ** 0.5)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
    text = F.normalize(torch.randn(classes + 1, 32), dim=-1)  # the classes and one background
    owners = list(range(classes + 1))
    config = method_config(method, **_SETTINGS[method])
    base = _rss_mb()
    start = time.perf_counter()
    with torch.inference_mode():
        if path == "full":
            probs = dense_probabilities(method, visual, image, text, owners, classes + 1, config)
            labels = predict_labels(probs, config, background_class=classes)
            conf = probs.gather(0, labels[None])[0].numpy()
            labels = labels.numpy().astype(np.int32)
        else:
            pm = dense_pixelmap(method, visual, image, text, owners, classes + 1, config)
            labels, conf = pm.predict(background_class=classes)
    seconds = time.perf_counter() - start
    assert labels.shape == conf.shape == (side, side)
    return {"base_mb": base, "peak_mb": _rss_mb(), "seconds": seconds, "side": side}


def _estimate_gb(method: str, megapixels: float, classes: int) -> float:
    """Rough peak of the full path: queries x pixels float32 buffers (3 at once; PAMR ~5 plus
    its 16 neighbour weights per pixel and their temporaries)."""
    q = classes + 1
    per_pixel = 4 * (5 * q + 60) if method == "naclip" else 4 * (3 * q + q)
    return megapixels * 1e6 * per_pixel / 1e9


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--methods", default="sclip,naclip")
    ap.add_argument("--megapixels", default="1,4,16,64")
    ap.add_argument("--classes", default="3,11,100")
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
    meta = {"machine": platform.processor() or platform.machine(), "python": sys.version.split()[0]}
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
