"""What a CorrCLIPv2 memory bank costs to build on this machine, per image and per region,
with the reference's real-size architectures on random weights (the time does not depend on
the weights): MetaCLIP ViT-B/16 and DFN ViT-B/16 stores with DINO ViT-B/8 correlations, and a
ViT-L VFM (DINOv2-L with registers, the size of C-RADIOv3-L) for the index.

Regions come from CamVid's label maps (connected components), so SAM's time is not in these
numbers; SAM 2's automatic masks are timed in ``ovseg bench`` (see the README).

    python benchmarks/bank_cost.py --images ../shared/data/camvid-val/images --count 2

prints seconds per image for each step, bytes per region, and the extrapolation to the
118,287 images of COCO train2017 at the published bank's region count.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

COCO_IMAGES = 118_287


def _regions(labels: np.ndarray, min_area: int = 50) -> np.ndarray:
    import cv2

    ids = np.zeros(labels.shape, np.int64)
    nxt = 1
    for v in np.unique(labels):
        n, comp = cv2.connectedComponents((labels == v).astype(np.uint8), connectivity=4)
        for c in range(1, n):
            if (comp == c).sum() >= min_area:
                ids[comp == c] = nxt
                nxt += 1
    return ids


def main() -> None:
    import ovseg.bank.build as build_mod
    from ovseg.bank import build_bank
    from ovseg.methods.vfm import TransformersVfm
    from ovseg.models.build import build_clip, build_dino

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", required=True, help="CamVid images/ (labels/ beside it)")
    ap.add_argument("--count", type=int, default=2)
    ap.add_argument("--out", default=None, help="write the numbers as JSON here")
    args = ap.parse_args()
    src = Path(args.images)
    work = Path(tempfile.mkdtemp(prefix="ovseg-bank-cost-"))
    imgs, masks = work / "images", work / "masks"
    imgs.mkdir()
    masks.mkdir()
    for p in sorted(src.glob("*.png"))[: args.count]:
        shutil.copy(p, imgs / p.name)
        labels = np.array(Image.open(src.parent / "labels" / p.name))
        np.savez_compressed(masks / f"{p.stem}.npz", instance_mask=_regions(labels))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clips = {
            s: build_clip(s, "cpu", random_weights=True) for s in ("ViT-B-16-quickgelu", "ViT-B-16")
        }
        dino = build_dino("dino_vitb8", "cpu", random_weights=True)
    from transformers import Dinov2WithRegistersConfig, Dinov2WithRegistersModel

    cfg = Dinov2WithRegistersConfig(
        hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
        patch_size=14, image_size=518, num_register_tokens=4,
    )  # fmt: skip
    vfm = TransformersVfm(Dinov2WithRegistersModel(cfg).eval(), "dinov2")
    timings: dict[str, float] = {"clip": 0.0, "vfm": 0.0}
    real_clip, real_vfm = build_mod._clip_features, build_mod.vfm_region_features

    def timed(name, fn):
        def run(*a, **k):
            t = time.perf_counter()
            out = fn(*a, **k)
            timings[name] += time.perf_counter() - t
            return out

        return run

    build_mod._clip_features = timed("clip", real_clip)
    build_mod.vfm_region_features = timed("vfm", real_vfm)
    t0 = time.perf_counter()
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")
        record = build_bank(
            imgs, work / "bank", clips=clips, vfm=vfm, dino=dino, name="cost",
            masks_dir=masks, mask_model="labels", progress=False,
        )  # fmt: skip
    total = time.perf_counter() - t0
    n_img, n_reg = record["images"], record["regions"]
    files = record["files"]
    store = sum(v["bytes"] for k, v in files.items() if k.startswith("clip_embeddings"))
    keys = files["vfm_embeddings/cost_dinov2.pt"]["bytes"]
    per_region = {"clip_stores": store / n_reg, "vfm_keys": keys / n_reg}
    # the published COCO bank: coco_metaclip_b.pt is 2.8 GB of [N, 512] float16 rows
    coco_regions = int(2.8e9 / (512 * 2))
    out = {
        "images": n_img,
        "regions": n_reg,
        "threads": torch.get_num_threads(),
        "seconds_per_image": {
            "clip_stores_two_clips": timings["clip"] / n_img,
            "vfm_keys": timings["vfm"] / n_img,
            "total": total / n_img,
        },
        "bytes_per_region": per_region,
        "coco_extrapolation": {
            "images": COCO_IMAGES,
            "regions_published_bank": coco_regions,
            "cpu_hours": total / n_img * COCO_IMAGES / 3600,
            "clip_stores_gb": coco_regions * per_region["clip_stores"] / 1e9,
            "vfm_keys_gb": coco_regions * per_region["vfm_keys"] / 1e9,
        },
    }
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
