"""Each training-free method against its reference repository's own code, side by side.

    python benchmarks/references.py --sclip /path/to/SCLIP --naclip /path/to/NACLIP \
        [--clearclip /path/to/ClearCLIP] [--proxyclip /path/to/ProxyCLIP] \
        [--trident /path/to/Trident] [--corrclip /path/to/CorrCLIP] \
        [--dino-repo /path/to/dino] [--data ../shared/data/camvid-val] [--frames 2] \
        [--repeats 3] [--clip ViT-B-16] [-o benchmarks/results]

A checkout path may also come from the environment (``OVSEG_SCLIP_REF``, ``OVSEG_NACLIP_REF``,
``OVSEG_CLEARCLIP_REF``, ``OVSEG_PROXYCLIP_REF``, ``OVSEG_TRIDENT_REF``,
``OVSEG_CORRCLIP_REF``, ``OVSEG_DINO_REF``). The reference code is imported from that path at
run time (never vendored); its ``mmseg`` / ``mmengine`` imports are served by the minimal shims
in ``benchmarks/reference_shims.py`` (only what the segmentor classes touch), and it runs on
the CPU.

Both sides get the same CLIP weights (an open_clip model with random weights, its state dict
loaded into the reference's own CLIP class), the same DINO weights (ProxyCLIP and CorrCLIP:
ViT-B/8, Trident: ViT-B/16, in DINO's own class), the same SAM ViT-B weights (Trident, in its
own ``segment_anything``), the same frames (CamVid when present, else generated), the same
classes (CamVid's eleven, one name each, the 80 ImageNet templates) and the same options
(ovseg's method defaults, which are the references' segmentor defaults, passed to the reference
constructor). Trident's reference runs without its SAM refinement (``sam_refinement=False``):
both sides give the map before it. CorrCLIP gets the same region id map on both sides
(:func:`regions_of`, written where its code loads pre-generated masks from); both sides time
its majority vote. The reference side is timed from the RGB frame: mmseg's test pipeline
(``Resize`` keep-ratio to the short side, bilinear; normalisation) and ``segmentor.predict``.
The ovseg side is ``Segmenter.pixel_probabilities`` after ``clear_cache()`` (no cached
probabilities or SAM embeddings). Text embeddings are computed once per side and not timed.
After one untimed warm-up call each, the repeats alternate reference and ovseg calls so that a
change of load hits both; per frame is the median over frames x repeats. On a shared machine
the load changes within a run, so the table also gives the median of the per-call ratios (each
reference call against the ovseg call right after it) and the ratio of the fastest calls.

Agreement: the largest absolute difference of the class probabilities (K, H, W) and the
fraction of pixels whose argmax label agrees.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CAMVID = HERE.parents[1] / "shared" / "data" / "camvid-val"
CLASSES = ["sky", "building", "pole", "road", "sidewalk", "tree", "sign", "fence", "car",
           "person", "bicyclist"]  # fmt: skip

# method -> (file that marks a checkout of its reference repository, environment variable)
REFERENCES = {
    "sclip": ("clip_segmentor.py", "OVSEG_SCLIP_REF"),
    "clearclip": ("clearclip_segmentor.py", "OVSEG_CLEARCLIP_REF"),
    "naclip": ("naclip.py", "OVSEG_NACLIP_REF"),
    "proxyclip": ("proxyclip_segmentor.py", "OVSEG_PROXYCLIP_REF"),
    "trident": ("trident.py", "OVSEG_TRIDENT_REF"),
    "corrclip": ("CorrCLIPv1/corrclip_segmentor.py", "OVSEG_CORRCLIP_REF"),
}
# the DINO each method's reference loads from the hub (ProxyCLIP's: --dino)
DINO = {"proxyclip": None, "trident": "dino_vitb16", "corrclip": "dino_vitb8"}
NEEDS_DINO = set(DINO)


def parse_args(argv=None) -> argparse.Namespace:
    """The command line; ``SystemExit(2)`` with one message for a bad one."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name, (marker, env) in REFERENCES.items():
        ap.add_argument(
            f"--{name}",
            type=Path,
            default=os.environ.get(env) or None,
            metavar="DIR",
            help=f"checkout of the {name} reference repository (with {marker}; or ${env})",
        )
    ap.add_argument(
        "--dino-repo",
        type=Path,
        default=os.environ.get("OVSEG_DINO_REF") or None,
        metavar="DIR",
        help="checkout of facebookresearch/dino (ProxyCLIP's DINO class; or $OVSEG_DINO_REF)",
    )
    ap.add_argument("--dino", default="dino_vitb8", help="DINO architecture (random weights)")
    ap.add_argument("--data", type=Path, default=CAMVID, help="CamVid folder (images/)")
    ap.add_argument("--frames", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--clip",
        default="ViT-B-16-quickgelu",
        help="open_clip ViT architecture (QuickGELU: the activation of OpenAI's CLIP, which "
        "SCLIP's and NACLIP's CLIP class always use)",
    )
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("-o", "--out", type=Path, default=HERE / "results")
    args = ap.parse_args(argv)
    if args.frames < 1 or args.repeats < 1:
        ap.error("--frames and --repeats must be at least 1")
    args.checkouts = {}
    for name, (marker, env) in REFERENCES.items():
        path = getattr(args, name)
        if path is None:
            continue
        if not (Path(path) / marker).is_file() and not (Path(path) / Path(marker).name).is_file():
            ap.error(f"--{name} {path}: not a {name} checkout (no {marker} there; or ${env})")
        args.checkouts[name] = Path(path).resolve()
    if NEEDS_DINO & set(args.checkouts):
        if args.dino_repo is None or not (Path(args.dino_repo) / "vision_transformer.py").is_file():
            ap.error(
                f"--dino-repo {args.dino_repo}: ProxyCLIP, Trident and CorrCLIP need a "
                "facebookresearch/dino checkout "
                "(with vision_transformer.py; or $OVSEG_DINO_REF)"
            )
        args.dino_repo = Path(args.dino_repo).resolve()
    if not args.checkouts:
        names = ", ".join(f"--{n}" for n in REFERENCES)
        ap.error(f"give at least one reference checkout ({names}, or their OVSEG_*_REF)")
    return args


def frames(data: Path, count: int) -> tuple[list[np.ndarray], str]:
    """``count`` RGB uint8 frames: CamVid's first ones, or generated road-like 360x480 ones."""
    from ovseg.image import load_image

    paths = sorted((data / "images").glob("*.png"))[:count] if data.is_dir() else []
    if paths:
        return [load_image(p) for p in paths], f"CamVid {data.name} ({len(paths)} frames)"
    rng = np.random.default_rng(0)
    out = []
    for _ in range(count):
        img = np.zeros((360, 480, 3), np.uint8)
        img[:150] = (120, 160, 220)  # sky
        img[150:260] = rng.integers(60, 200, (1, 1, 3))  # buildings
        img[260:] = (90, 90, 95)  # road
        noise = rng.normal(0, 12, img.shape)
        out.append(np.clip(img + noise, 0, 255).astype(np.uint8))
    return out, f"generated 480x360 ({count} frames)"


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def compare(ref: np.ndarray, ours: np.ndarray) -> dict:
    """Max |Δ| of the probabilities and the fraction of pixels with the same argmax."""
    if ref.shape != ours.shape:
        return {"shape_mismatch": [list(ref.shape), list(ours.shape)]}
    diff = float(np.abs(ref.astype(np.float64) - ours.astype(np.float64)).max())
    labels = float((ref.argmax(0) == ours.argmax(0)).mean())
    return {"max_abs_diff": diff, "label_agreement": labels}


def regions_of(image: np.ndarray, most: int = 100, min_area: int = 200) -> np.ndarray:
    """A region id map int64 ``(H, W)`` for CorrCLIP, the same on both sides (0 = unsegmented):
    the 4-connected components of the frame's colours quantised in steps of 48 per channel, the
    ``most`` largest of at least ``min_area`` pixels, numbered from 1 by increasing area (as
    CorrCLIP numbers SAM 2's masks); on the first CamVid val frame 59 regions over 70% of the
    pixels, about what SAM's automatic masks give on a street scene. A stand-in for a mask
    generator, which neither side times."""
    import cv2

    q = (image // 48).astype(np.int32)
    colour = q[..., 0] * 64 + q[..., 1] * 8 + q[..., 2]
    comps = []
    for c in np.unique(colour):
        n, lab = cv2.connectedComponents((colour == c).astype(np.uint8), connectivity=4)
        for i in range(1, n):
            m = lab == i
            if m.sum() >= min_area:
                comps.append(m)
    comps = sorted(comps, key=lambda m: int(m.sum()), reverse=True)[:most]
    ids = np.zeros(image.shape[:2], np.int64)
    for i, m in enumerate(sorted(comps, key=lambda m: int(m.sum())), start=1):
        ids[m] = i
    return ids


def run_method(name: str, checkout: Path, images: list[np.ndarray], args) -> dict:
    """Build both sides on the same weights, warm up, time interleaved repeats, compare."""
    import torch

    sys.path.insert(0, str(HERE))
    from reference_shims import build_reference

    from ovseg.methods.regions import region_vote
    from ovseg.pipeline import Segmenter

    dino = (DINO[name] or args.dino) if name in NEEDS_DINO else None
    sam = "vit_b" if name == "trident" else None
    torch.manual_seed(0)  # each method's random weights, whichever methods run before it
    seg = Segmenter(
        sam=sam, clip=args.clip, dino=dino, method=name, random_weights=True, device="cpu"
    )
    cfg = seg.config()
    model = seg.clip.model
    with torch.no_grad():  # weights a float16 checkpoint holds exactly, as OpenAI's CLIP
        for tensor in model.state_dict().values():  # (SCLIP's and NACLIP's clip.load round
            if tensor.is_floating_point():  # their weights through float16)
                tensor.copy_(tensor.half().float())
    regions = [regions_of(image) for image in images] if name == "corrclip" else None
    with tempfile.TemporaryDirectory() as tmp:
        extra = dict(dino=seg.dino, dino_checkout=args.dino_repo) if dino else {}
        if sam:
            extra["sam"] = seg.models.sam
        if regions:
            extra["regions"] = regions[0]
        ref = build_reference(name, checkout, model, CLASSES, cfg, Path(tmp), **extra)

        def ovseg_call(i):
            seg.clear_cache()  # a frame it has not seen: no cached probabilities or SAM features
            if regions is None:
                return seg.pixel_probabilities(images[i], CLASSES)
            probs = seg.pixel_probabilities(images[i], CLASSES, masks=regions[i])
            region_vote(probs.argmax(0), regions[i])  # its map correction, as the reference's
            return probs

        def ref_call(i):
            if regions is not None:
                ref.set_regions(regions[i])  # the id map file it loads (written untimed)
            return ref(images[i])

        ref_times, ovseg_times, agreement = [], [], []
        with torch.inference_mode():
            ref_call(0), ovseg_call(0)  # warm-up (ovseg's text embeddings cached here)
            for _ in range(args.repeats):
                for i in range(len(images)):
                    if regions is not None:
                        ref.set_regions(regions[i])
                    t_ref, p_ref = timed(lambda i=i: ref(images[i]))
                    t_ovseg, p_ovseg = timed(lambda i=i: ovseg_call(i))
                    ref_times.append(t_ref)
                    ovseg_times.append(t_ovseg)
                    agreement.append(compare(p_ref, p_ovseg))
    ref_s, ovseg_s = statistics.median(ref_times), statistics.median(ovseg_times)
    diffs = [a.get("max_abs_diff", float("inf")) for a in agreement]
    labels = [a.get("label_agreement", 0.0) for a in agreement]
    row = {
        "method": name,
        "checkout": str(checkout),
        "options": {k: v for k, v in vars(cfg).items() if not k.startswith("_")},
        "reference_s": ref_times,
        "ovseg_s": ovseg_times,
        "reference_median_s": ref_s,
        "ovseg_median_s": ovseg_s,
        "ratio": ref_s / ovseg_s,
        "reference_min_s": min(ref_times),
        "ovseg_min_s": min(ovseg_times),
        "ratio_of_minima": min(ref_times) / min(ovseg_times),
        "paired_ratio_median": statistics.median(
            r / o for r, o in zip(ref_times, ovseg_times, strict=True)
        ),
        "max_abs_diff": max(diffs),
        "min_label_agreement": min(labels),
    }
    if dino:
        row["dino"] = f"{dino} (random weights)"
    if sam:
        row["sam"] = f"{sam} (random weights)"
    if regions is not None:
        row["regions"] = [int(r.max()) for r in regions]
    return row


def table(rows: list[dict]) -> str:
    lines = [
        "| method | reference s/frame | ovseg s/frame | reference / ovseg | paired | minima "
        "| max abs diff of probabilities | label agreement |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['method']} | failed: {r['error']} | | | | | | |")
            continue
        lines.append(
            f"| {r['method']} | {r['reference_median_s']:.2f} | {r['ovseg_median_s']:.2f} | "
            f"{r['ratio']:.2f}x | {r['paired_ratio_median']:.2f}x | {r['ratio_of_minima']:.2f}x "
            f"| {r['max_abs_diff']:.1e} | {100 * r['min_label_agreement']:.2f}% |"
        )
    return "\n".join(lines)


def write_json(path: Path, payload: dict) -> Path:
    """Write ``payload`` atomically; a name taken already gets a numbered suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    final, n = path, 1
    while final.exists():
        final = path.with_name(f"{path.stem}-{n}{path.suffix}")
        n += 1
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(payload, f, indent=2, default=str)
    os.replace(tmp, final)
    return final


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    images, source = frames(args.data, args.frames)
    load_start = os.getloadavg() if hasattr(os, "getloadavg") else None
    rows = []
    for name, checkout in args.checkouts.items():
        print(f"{name}: {checkout}", flush=True)
        try:
            rows.append(run_method(name, checkout, images, args))
        except Exception as exc:  # recorded in the results; the exit status says it failed
            detail = traceback.format_exc()
            print(detail, file=sys.stderr)
            rows.append({"method": name, "checkout": str(checkout), "error": repr(exc)})
            rows[-1]["traceback"] = detail
        print(table(rows[-1:]).splitlines()[-1], flush=True)
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    md = table(rows)
    print(md)
    stamp = datetime.datetime.now(datetime.timezone.utc)
    payload = {
        "when": stamp.isoformat(timespec="seconds"),
        "frames": source,
        "frame_shape": list(images[0].shape),
        "clip": f"{args.clip} (random weights)",
        "repeats": args.repeats,
        "torch_threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average_at_start": load_start,
        "load_average_at_end": load,
        "results": rows,
        "table": md,
    }
    out = write_json(args.out / f"references-{stamp.date().isoformat()}.json", payload)
    print(f"load average at start {load_start}, at end {load}; written {out}")
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parent))
    sys.exit(main())
