"""Side-by-side benchmark: the plain SAM + CLIP pipeline vs ovseg, in one process, on the same
images, the same models (shared weights) and the same mask sets.

Fairness, as reported in every result:

- proposals: both sides run the same grid (points per side) and the same quality filters;
  each side reports how many masks it produced;
- scoring: both sides score the same fixed, realistic mask set: the connected components
  (area >= ``min_area`` pixels) of the frame's ground-truth label map (CamVid), or of a
  generated label map when CamVid is absent;
- end to end = encoder + proposals + scoring of the fixed set + fusion of the fixed set;
- a click = one positive point after ``set_image`` (SAM's best candidate) + scoring that one
  region + fusion, vs ``SamPredictor.predict`` + one per-mask CLIP crop;
- dense methods (``naclip``, ``sclip``, ``clearclip``, ``proxyclip``; no SAM): per image, the
  method's pixel probabilities (first call on the image: the Segmenter's cache cleared) then
  its labels and result, timed in the same repeats on the same frames, with the same CLIP
  model object, against the plain pipeline's end to end. ``corrclip`` (``--methods corrclip``)
  takes the fixed mask set as its regions (its SAM 2 regions are a proposal stage, like the
  grid), so its row is its dense stage and its vote. ``trident`` (``--methods trident``) runs
  the bench's SAM itself: its row includes SAM's encoder (embedding cache cleared per image)
  and its SAM refinement.

The plain pipeline lives in :mod:`ovseg.bench.plain`; reports in :mod:`ovseg.bench.report`.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ovseg.bench.methods import (
    BENCH_METHODS,
    build_methods,
    method_error,
    method_rows,
    parse_methods,
    run_method,
    warmup_methods,
    windows,
)
from ovseg.bench.plain import PlainPipeline, label_components, synthetic_scene
from ovseg.bench.report import machine_info, summarize
from ovseg.bench.timing import Counter, Peak, timed
from ovseg.constants import DEFAULT_SAM
from ovseg.proposals.sam2_grid import Sam2GridOptions

CAMVID = Path("../shared/data/camvid-val")
CAMVID_IGNORE = (11,)
SYNTHETIC_CLASSES = ["sky", "road", "building", "car"]


@dataclass
class BenchConfig:
    """What ``ovseg bench`` runs (see ``ovseg bench --help``)."""

    sam: str = DEFAULT_SAM
    clip: str = "ViT-B-16"
    device: str | None = None
    images: int = 1
    repeats: int = 1
    data: str | None = str(CAMVID)
    points_per_side: int = 32
    filters: bool = True
    scorers: tuple[str, ...] = ("crop", "dense")
    fused: bool = True
    half: bool = False
    adaptive: bool = True
    clicks: int = 3
    min_area: int = 64
    threads: int | None = None
    methods: tuple[str, ...] = BENCH_METHODS
    dino: str | None = None  # None: each method's reference DINO
    batch_windows: tuple[int, ...] = ()
    notes: list[str] = field(default_factory=list)

    def __post_init__(self):
        for name in ("images", "repeats", "points_per_side", "clicks", "min_area"):
            if getattr(self, name) < (0 if name in ("clicks", "min_area") else 1):
                raise ValueError(f"{name} must be a positive int, got {getattr(self, name)}")
        if not self.scorers or any(s not in ("crop", "dense", "both") for s in self.scorers):
            raise ValueError(f"scorers must be among crop, dense, both; got {self.scorers}")
        self.methods = parse_methods(",".join(self.methods) or "none")
        if any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in self.batch_windows):
            raise ValueError(f"batch_windows must be ints >= 1, got {self.batch_windows}")

    @property
    def tiny(self) -> bool:
        return self.sam == "tiny-random"


def load_frames(
    config: BenchConfig,
) -> tuple[list[tuple[str, np.ndarray, np.ndarray]], list[str], tuple[int, ...], str]:
    """[(name, RGB uint8 (H, W, 3), label map (H, W))], class names, ignored labels, source."""
    from PIL import Image

    root = Path(config.data) if config.data else None
    if root is not None and (root / "images").is_dir() and (root / "labels").is_dir():
        files = sorted((root / "images").glob("*.png"))[: config.images]
        if files:
            classes = (root / "classes.txt").read_text().split("\n")
            frames = [
                (
                    f.stem,
                    np.asarray(Image.open(f).convert("RGB")),
                    np.asarray(Image.open(root / "labels" / f.name)),
                )
                for f in files
            ]
            return frames, [c.strip() for c in classes if c.strip()], CAMVID_IGNORE, str(root)
    frames = [(f"synthetic_{i}", *synthetic_scene(i)) for i in range(config.images)]
    return frames, SYNTHETIC_CLASSES, (), "generated (CamVid not found)"


def _forget(segmenter, scorers=()) -> None:
    """Drop ovseg's cached work (image embedding, region embeddings, dense feature maps) so a
    repeat pays it again."""
    segmenter.clear_cache()
    for scorer in scorers:
        for part in (scorer, getattr(scorer, "dense", None)):
            if hasattr(part, "_cache"):
                part._cache = None


def build(config: BenchConfig):
    """Shared models -> (PlainPipeline, Segmenter, device)."""
    import warnings

    from ovseg.models.build import build_clip, build_sam, resolve_device
    from ovseg.models.sam2_weights import is_sam2_spec
    from ovseg.pipeline import Segmenter
    from ovseg.proposals.grid import GridOptions

    device = resolve_device(config.device)
    if config.half and device.type != "cuda":
        raise ValueError("--half needs a CUDA device (float16 is slow or unsupported on CPU)")
    sam2 = is_sam2_spec(config.sam)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # random weights: timing only, stated below
        if sam2:  # the plain side is Meta's SAM 2 on the same weights
            from ovseg.bench.plain_sam2 import PlainSam2Pipeline, build_pair

            plain_sam, sam = build_pair(config.sam, device, random_weights=not config.tiny)
        else:
            plain_sam = sam = build_sam(config.sam, device, random_weights=not config.tiny)
        clip = build_clip(config.clip, device, random_weights=not config.tiny)
    filters = {} if config.filters else dict(pred_iou_thresh=0.0, stability_score_thresh=0.0)
    grid = (Sam2GridOptions if sam2 else GridOptions)(
        points_per_side=config.points_per_side, **filters
    )
    plain = (PlainSam2Pipeline if sam2 else PlainPipeline)(
        plain_sam,
        clip.model,
        clip.image_size,
        clip.mean,
        clip.std,
        grid=dict(points_per_side=config.points_per_side, **filters),
    )
    segmenter = Segmenter(sam, clip, device, method="sam-clip", grid=grid, scorer=config.scorers[0])
    return plain, segmenter, device


def run_benchmark(config: BenchConfig, progress=print) -> dict:
    """Run the side-by-side benchmark; returns the results dict (see :mod:`ovseg.bench.report`)."""
    from ovseg.proposals.grid import fused_attention
    from ovseg.scoring.regions import make_scorer
    from ovseg.structures import Masks

    if config.threads:
        torch.set_num_threads(config.threads)
    frames, classes, ignore, source = load_frames(config)
    plain, seg, device = build(config)
    methods, method_errors = build_methods(config, seg.clip, device)
    rows = method_rows(config)
    scorers = {k: make_scorer(k, seg.clip) for k in config.scorers}
    autocast = (
        torch.autocast("cuda", dtype=torch.float16) if config.half else contextlib.nullcontext()
    )
    text = plain.text_features(classes)  # per vocabulary, once, untimed on both sides
    seg.vocabulary(classes).text_embeddings(seg.clip)
    records = []
    for i, (name, image, label) in enumerate(frames):
        fixed = Masks.from_masks(label_components(label, ignore, config.min_area))
        if i == 0:
            progress(f"[{name}] warm-up (untimed) ...")
            _warmup(plain, seg, scorers, image, fixed, classes, text, config.fused)
            warmup_methods(methods, rows, method_errors, image, classes, progress)
        rec = {
            "image": name,
            "shape": list(image.shape[:2]),
            "scored_masks": len(fixed),
            "plain": [],
            "ovseg": [],
            "adaptive": [],
            "methods": {
                key: {**windows(methods[m], image.shape[:2], opts), "runs": []}
                for key, (m, opts) in rows.items()
                if m in methods
            },
        }
        for r in range(config.repeats):
            progress(f"[{name} {r + 1}/{config.repeats}] plain ...")
            rec["plain"].append(_run_plain(plain, seg, image, fixed, text, device))
            progress(f"[{name} {r + 1}/{config.repeats}] ovseg ...")
            run, ours = _run_ovseg(config, seg, scorers, image, fixed, classes, device, autocast)
            rec["ovseg"].append(run)
            if config.adaptive and not isinstance(seg.grid, Sam2GridOptions):
                with autocast:
                    adaptive, t_ad = timed(lambda: seg.propose(adaptive=True), device)
                rec["adaptive"].append(
                    dict(
                        proposals=t_ad,
                        masks=len(adaptive),
                        recall=_recall(ours.masks, adaptive.masks),
                    )
                )
            for key, (m, opts) in rows.items():
                if m not in methods or m in method_errors:
                    continue
                progress(f"[{name} {r + 1}/{config.repeats}] {key} ...")
                try:
                    regions = fixed.masks if "regions" in methods[m].method.needs else None
                    run = run_method(methods[m], image, classes, opts, device, regions)
                except Exception as e:  # noqa: BLE001 - reported in the results
                    method_errors[m] = method_error(e)
                    progress(f"  {key} failed: {method_errors[m]}")
                    continue
                rec["methods"][key]["runs"].append(run)
        rec["clicks"] = _clicks(
            config, plain, seg, scorers, image, fixed, classes, text, device, autocast
        )
        records.append(rec)
    fused_attention(seg.proposer.model, config.fused)
    return {
        "config": asdict(config),
        "machine": machine_info(device),
        "classes": classes,
        "data": source,
        "records": records,
        "method_errors": method_errors,
        "summary": summarize(records, config, rows, method_errors),
    }


def _run_plain(plain, seg, image, fixed, text, device) -> dict:
    """One timed plain run: generator (encoder timed inside), per-mask crops, painting."""
    from ovseg.proposals.grid import fused_attention

    fused_attention(seg.proposer.model, False)
    plain.clip_calls = 0
    with Peak(device) as peak:
        (masks, t_enc, t_prop), _ = timed(lambda: plain.proposals(image), device)
        probs, t_score = timed(lambda: plain.score(image, fixed.masks, text), device)
        _, t_fuse = timed(lambda: plain.fuse(fixed.masks, probs), device)
    return dict(
        encoder=t_enc,
        proposals=t_prop,
        scoring=t_score,
        fusion=t_fuse,
        masks=len(masks),
        peak_mb=peak.peak_mb,
        clip_passes=plain.clip_calls,
    )


def _run_ovseg(config, seg, scorers, image, fixed, classes, device, autocast):
    """One timed ovseg run: set_image, grid proposals, then each scorer on the fixed masks.
    Returns (record, grid Masks)."""
    from ovseg.fusion import fuse
    from ovseg.proposals.grid import fused_attention

    fused_attention(seg.proposer.model, config.fused)
    _forget(seg, scorers.values())
    with autocast, Peak(device) as peak:
        _, t_enc = timed(lambda: seg.set_image(image), device)
        ours, t_prop = timed(seg.propose, device)
        run = dict(encoder=t_enc, proposals=t_prop, masks=len(ours))
        for kind, scorer in scorers.items():
            _forget(seg, scorers.values())
            seg.set_image(image)
            passes = [Counter(seg.clip, "encode_images"), Counter(seg.clip, "dense_features")]
            p, t_score = timed(lambda s=scorer: seg.score(fixed, classes, scorer=s), device)
            for c in passes:
                c.close()
            _, t_fuse = timed(lambda p=p: fuse(fixed.masks, p, classes, image=image), device)
            run[kind] = dict(
                scoring=t_score, fusion=t_fuse, clip_passes=sum(c.calls for c in passes)
            )
    run["peak_mb"] = peak.peak_mb
    return run, ours


def _warmup(plain, seg, scorers, image, fixed, classes, text, seg_fused: bool) -> None:
    """One untimed pass through each code path (the encoder with each attention), so no timed
    stage pays first-call costs (allocator growth, thread pools, lazy initialisation)."""
    from ovseg.proposals.grid import fused_attention

    fused_attention(seg.proposer.model, False)
    plain.predictor.set_image(image)
    point = _click_points(fixed, 1)[0] if len(fixed) else (image.shape[1] / 2, image.shape[0] / 2)
    plain.click(point, image, text)
    plain.score(image, fixed.masks[:2], text)
    fused_attention(seg.proposer.model, seg_fused)
    seg.set_image(image)
    for scorer in scorers.values():
        seg.score(seg.propose(points=[point]), classes, scorer=scorer)
        seg.score(fixed[:2], classes, scorer=scorer)
    _forget(seg, scorers.values())


def _recall(reference: np.ndarray, candidate: np.ndarray, iou: float = 0.9) -> float | None:
    """Fraction of reference masks matched by a candidate mask at IoU >= ``iou``."""
    if len(reference) == 0:
        return None
    if len(candidate) == 0:
        return 0.0
    ref = torch.from_numpy(reference).flatten(1).float()
    cand = torch.from_numpy(candidate).flatten(1).float()
    inter = ref @ cand.T
    union = ref.sum(1, keepdim=True) + cand.sum(1) - inter
    return float(((inter / union.clamp(min=1)).amax(1) >= iou).float().mean())


def _click_points(fixed, n: int) -> list[tuple[float, float]]:
    """One interior pixel (x, y) of each of the ``n`` largest fixed masks."""
    order = np.argsort(-fixed.masks.reshape(len(fixed), -1).sum(1))[:n]
    points = []
    for i in order:
        ys, xs = np.nonzero(fixed.masks[i])
        k = len(xs) // 2
        points.append((float(xs[k]), float(ys[k])))
    return points


def _clicks(config, plain, seg, scorers, image, fixed, classes, text, device, autocast) -> dict:
    """Seconds per click, plain and per ovseg scorer, interleaved point by point."""
    from ovseg.fusion import fuse

    if config.clicks == 0 or len(fixed) == 0:
        return {}
    points = _click_points(fixed, config.clicks)
    plain.predictor.set_image(image)
    seg.set_image(image)  # the embedding is cached from the run above
    for scorer in scorers.values():  # warm: the dense feature map is computed once per image
        seg.score(seg.propose(points=[points[0]]), classes, scorer=scorer)
    out = {"points": points, "plain": [], **{kind: [] for kind in scorers}}

    def click(pt, scorer):
        seg.method.clear_cache()  # a new click: no region embedding kept from a repeat
        with autocast:
            m = seg.propose(points=[pt])
            return fuse(m.masks, seg.score(m, classes, scorer=scorer), classes, image=image)

    for _ in range(config.repeats):
        for pt in points:
            out["plain"].append(timed(lambda pt=pt: plain.click(pt, image, text), device)[1])
            for kind, scorer in scorers.items():
                out[kind].append(timed(lambda pt=pt, s=scorer: click(pt, s), device)[1])
    return out
