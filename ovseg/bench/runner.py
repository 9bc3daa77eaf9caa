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

import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ovseg.bench.plain import PlainPipeline, label_components, synthetic_scene
from ovseg.bench.report import machine_info, summarize
from ovseg.constants import DEFAULT_SAM
from ovseg.models.build import inference_precision
from ovseg.proposals.sam2_grid import Sam2GridOptions

CAMVID = Path("../shared/data/camvid-val")
CAMVID_IGNORE = (11,)
SYNTHETIC_CLASSES = ["sky", "road", "building", "car"]
BENCH_METHODS = ("naclip", "sclip", "clearclip", "proxyclip")


def parse_methods(text: str) -> tuple[str, ...]:
    """``--methods``: comma-separated dense method names, ``all`` (every one) or ``none``.

    Raises:
        ValueError: an unknown name (the message lists the known ones).
    """
    from ovseg.methods.runner import DENSE_METHODS

    names = [n.strip() for n in text.split(",") if n.strip()]
    if names == ["none"]:
        return ()
    if names == ["all"]:
        return BENCH_METHODS
    known = (*BENCH_METHODS, *(m for m in DENSE_METHODS if m not in BENCH_METHODS))
    bad = [n for n in names if n not in known]
    if bad or not names:
        raise ValueError(
            f"unknown method(s) {bad or [text]} in --methods; choose from {', '.join(known)}, "
            "'all' or 'none'"
        )
    return tuple(dict.fromkeys(names))


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
    half: bool = False  # the same as dtype="float16"
    dtype: str | None = None  # float32 (default), bfloat16, float16: autocast on the ovseg side
    adaptive: bool = True
    clicks: int = 3
    min_area: int = 64
    threads: int | None = None
    methods: tuple[str, ...] = BENCH_METHODS
    dino: str = "dino_vitb8"
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
        from ovseg.models.build import resolve_dtype

        if self.half and self.dtype not in (None, "float16"):
            raise ValueError(f"--half is float16; it contradicts --dtype {self.dtype}")
        self.dtype = str(resolve_dtype("float16" if self.half else self.dtype)).split(".")[-1]
        self.half = self.dtype == "float16"

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


class _Peak:
    """Peak memory above the level at entry: CUDA allocator peak on GPU, else the process RSS
    sampled every 5 ms (psutil), falling back to ``ru_maxrss`` growth."""

    def __init__(self, device: torch.device):
        self.device, self.peak_mb, self.method = device, 0.0, ""

    def __enter__(self):
        self._stop = threading.Event()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            self.method = "torch.cuda.max_memory_allocated"
            return self
        try:
            import psutil
        except ImportError:
            import resource

            self._base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            self.method = "ru_maxrss growth (lower bound)"
            return self
        proc = psutil.Process()
        self._base = self._max = proc.memory_info().rss / 2**20
        self.method = "RSS sampled every 5 ms (psutil)"

        def sample():
            while not self._stop.wait(0.005):
                self._max = max(self._max, proc.memory_info().rss / 2**20)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_mb = (torch.cuda.max_memory_allocated(self.device) - self._base) / 2**20
        elif hasattr(self, "_thread"):
            self._stop.set()
            self._thread.join()
            self.peak_mb = self._max - self._base
        else:
            import resource

            self.peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - self._base
        return False


class _Counter:
    """Counts calls of one bound method (CLIP image passes), by wrapping it on the instance."""

    def __init__(self, obj, name: str):
        self.obj, self.name, self.calls = obj, name, 0
        original = getattr(obj, name)

        def counted(*args, **kwargs):
            self.calls += 1
            return original(*args, **kwargs)

        setattr(obj, name, counted)

    def close(self) -> None:
        self.obj.__dict__.pop(self.name, None)


def _timed(fn, device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out, time.perf_counter() - t0


def _forget(segmenter) -> None:
    """Drop ovseg's cached image embedding and dense feature maps so a repeat pays them again."""
    segmenter.proposer.clear_cache()
    segmenter._image = None
    for scorer in (segmenter.scorer, getattr(segmenter.scorer, "dense", None)):
        if hasattr(scorer, "_cache"):
            scorer._cache = None


def build(config: BenchConfig):
    """Shared models -> (PlainPipeline, Segmenter, device)."""
    import warnings

    from ovseg.models.build import build_clip, build_sam, resolve_device
    from ovseg.models.sam2_weights import is_sam2_spec
    from ovseg.pipeline import Segmenter
    from ovseg.proposals.grid import GridOptions

    device = resolve_device(config.device)
    if config.dtype == "float16" and device.type != "cuda":
        raise ValueError("--half / --dtype float16 needs a CUDA device (slow or unsupported on "
                         "the CPU; bfloat16 runs there)")  # fmt: skip
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


def build_methods(config: BenchConfig, clip, device) -> tuple[dict, dict[str, str]]:
    """One Segmenter per dense method, sharing ``clip`` (and one DINO per architecture:
    ``config.dino`` for ProxyCLIP, ViT-B/16 for Trident). Methods that run SAM themselves
    (Trident) get ``config.sam``; the others none.

    Returns ({name: Segmenter}, {name: error}): a method that cannot be built is reported, not
    fatal, so one failing method does not lose the rest of a long run."""
    import warnings

    from ovseg.methods.runner import needs_dino, needs_sam
    from ovseg.models.build import build_dino
    from ovseg.pipeline import Segmenter

    segmenters, errors, dinos = {}, {}, {}
    for name in config.methods:
        try:
            spec = None
            if needs_dino(name):
                spec = "tiny-random" if config.tiny else config.dino
                if name == "trident" and not config.tiny:
                    spec = "dino_vitb16"  # Trident's own DINO
                if spec not in dinos:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", UserWarning)  # random weights: timing
                        dinos[spec] = build_dino(spec, device, random_weights=not config.tiny)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # random weights: timing only
                segmenters[name] = Segmenter(
                    config.sam if needs_sam(name) else None,
                    clip,
                    device,
                    method=name,
                    dino=dinos.get(spec),
                    random_weights=not config.tiny,
                )
        except Exception as e:  # noqa: BLE001 - reported in the results, the run goes on
            errors[name] = _error(e)
    return segmenters, errors


def _error(e: Exception) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}".rstrip(": ")


def _method_rows(config: BenchConfig) -> dict[str, tuple]:
    """{row key: (method, method options)}: each method with its defaults, then with each
    ``batch_windows`` value asked for."""
    rows = {}
    for name in config.methods:
        rows[name] = (name, {})
        for b in config.batch_windows:
            rows[f"{name} batch_windows={b}"] = (name, {"batch_windows": b})
    return rows


def _windows(seg, shape: tuple[int, int], options: dict) -> dict:
    """The sliding windows a method runs on an image of ``shape`` (from its resize, crop and
    stride) and its windows per forward pass; None where its settings do not say."""
    from ovseg.methods.geometry import imrescale_size, slide_windows

    out = {"windows": None, "batch_windows": None}
    try:
        cfg = seg.dense.config(**options)
        get = cfg.get if isinstance(cfg, dict) else lambda k: getattr(cfg, k, None)
        out["batch_windows"] = get("batch_windows")
        crop = get("slide_crop")
        if crop is None:
            out["windows"] = 1
        else:
            h, w = imrescale_size(*shape, get("short_side"), get("long_cap") or 2048)
            out["windows"] = len(slide_windows(h, w, crop, get("slide_stride")))
    except Exception:  # noqa: BLE001 - informative only
        pass
    return out


def _run_method(seg, image, classes, options: dict, device, regions=None) -> dict:
    """One timed dense-method run on ``image``, no cache: pixel probabilities, then labels and
    the result (``segment``, which reuses the probabilities just computed). ``regions``: bool
    masks (N, H, W) for a method that uses regions (CorrCLIP)."""
    if regions is not None:
        options = {**options, "masks": regions}
    seg._probs_cache = None
    if seg._proposer is not None:  # a method with SAM (Trident) pays its encoder every image
        seg._proposer.clear_cache()
    with _Peak(device) as peak:
        _, t_probs = _timed(lambda: seg.pixel_probabilities(image, classes, **options), device)
        cached = seg._probs_cache
        _, t_labels = _timed(lambda: seg.segment(image, classes, **options), device)
    if cached is None or seg._probs_cache is not cached:
        raise RuntimeError(
            "segment() recomputed the probabilities (the Segmenter's cache missed): the labels "
            "time would count the method twice"
        )
    seg._probs_cache = None
    return dict(
        probabilities=t_probs,
        labels=t_labels,
        per_image=t_probs + t_labels,
        peak_mb=peak.peak_mb,
    )


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
    method_rows = _method_rows(config)
    scorers = {k: make_scorer(k, seg.clip) for k in config.scorers}
    autocast = inference_precision(device, config.dtype)
    text = plain.text_features(classes)  # per vocabulary, once, untimed on both sides
    seg.vocabulary(classes).text_embeddings(seg.clip)
    records = []
    for i, (name, image, label) in enumerate(frames):
        fixed = Masks.from_masks(label_components(label, ignore, config.min_area))
        if i == 0:
            progress(f"[{name}] warm-up (untimed) ...")
            _warmup(plain, seg, scorers, image, fixed, classes, text, config.fused, autocast)
            with autocast:
                _warmup_methods(methods, method_rows, method_errors, image, classes, progress)
        rec = {
            "image": name,
            "shape": list(image.shape[:2]),
            "scored_masks": len(fixed),
            "plain": [],
            "ovseg": [],
            "adaptive": [],
            "methods": {
                key: {**_windows(methods[m], image.shape[:2], opts), "runs": []}
                for key, (m, opts) in method_rows.items()
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
                    adaptive, t_ad = _timed(lambda: seg.propose(adaptive=True), device)
                rec["adaptive"].append(
                    dict(
                        proposals=t_ad,
                        masks=len(adaptive),
                        recall=_recall(ours.masks, adaptive.masks),
                    )
                )
            for key, (m, opts) in method_rows.items():
                if m not in methods or m in method_errors:
                    continue
                progress(f"[{name} {r + 1}/{config.repeats}] {key} ...")
                try:
                    regions = fixed.masks if methods[m].dense.uses_regions else None
                    with autocast:
                        run = _run_method(methods[m], image, classes, opts, device, regions)
                except Exception as e:  # noqa: BLE001 - reported in the results
                    method_errors[m] = _error(e)
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
        "summary": summarize(records, config, method_rows, method_errors),
    }


def _run_plain(plain, seg, image, fixed, text, device) -> dict:
    """One timed plain run: generator (encoder timed inside), per-mask crops, painting."""
    from ovseg.proposals.grid import fused_attention

    fused_attention(seg.proposer.model, False)
    plain.clip_calls = 0
    with _Peak(device) as peak:
        (masks, t_enc, t_prop), _ = _timed(lambda: plain.proposals(image), device)
        probs, t_score = _timed(lambda: plain.score(image, fixed.masks, text), device)
        _, t_fuse = _timed(lambda: plain.fuse(fixed.masks, probs), device)
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
    _forget(seg)
    with autocast, _Peak(device) as peak:
        _, t_enc = _timed(lambda: seg.set_image(image), device)
        ours, t_prop = _timed(seg.propose, device)
        run = dict(encoder=t_enc, proposals=t_prop, masks=len(ours))
        for kind, scorer in scorers.items():
            seg.scorer = scorer
            _forget(seg)
            seg.set_image(image)  # back from the embedding cache: a content hash
            passes = [_Counter(seg.clip, "encode_images"), _Counter(seg.clip, "dense_features")]
            p, t_score = _timed(lambda: seg.score(fixed, classes), device)
            for c in passes:
                c.close()
            _, t_fuse = _timed(lambda p=p: fuse(fixed.masks, p, classes, image=image), device)
            run[kind] = dict(
                scoring=t_score, fusion=t_fuse, clip_passes=sum(c.calls for c in passes)
            )
    run["peak_mb"] = peak.peak_mb
    return run, ours


def _warmup(plain, seg, scorers, image, fixed, classes, text, seg_fused: bool, autocast) -> None:
    """One untimed pass through each code path (the encoder with each attention), so no timed
    stage pays first-call costs (allocator growth, thread pools, lazy initialisation)."""
    from ovseg.proposals.grid import fused_attention

    fused_attention(seg.proposer.model, False)
    plain.predictor.set_image(image)
    point = _click_points(fixed, 1)[0] if len(fixed) else (image.shape[1] / 2, image.shape[0] / 2)
    plain.click(point, image, text)
    plain.score(image, fixed.masks[:2], text)
    fused_attention(seg.proposer.model, seg_fused)
    with autocast:
        seg.set_image(image)
        for scorer in scorers.values():
            seg.scorer = scorer
            seg.score(seg.propose(points=[point]), classes)
            seg.score(fixed[:2], classes)
    _forget(seg)


def _warmup_methods(methods, rows, errors, image, classes, progress) -> None:
    """One untimed call per method row (first-call costs: text embeddings for the method's
    vocabulary, allocator growth, position-table interpolation); failures are recorded."""
    for key, (name, options) in rows.items():
        if name not in methods or name in errors:
            continue
        progress(f"warm-up {key} (untimed) ...")
        try:
            if methods[name].dense.uses_regions:  # CorrCLIP: no regions for the warm-up
                options = {**options, "masks": np.zeros((0, *image.shape[:2]), bool)}
            methods[name].segment(image, classes, **options)
        except Exception as e:  # noqa: BLE001 - reported in the results
            errors[name] = _error(e)
            progress(f"  {key} failed: {errors[name]}")
        methods[name]._probs_cache = None


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
        seg.scorer = scorer
        seg.score(seg.propose(points=[points[0]]), classes)
    out = {"points": points, "plain": [], **{kind: [] for kind in scorers}}

    def click(pt):
        with autocast:
            m = seg.propose(points=[pt])
            return fuse(m.masks, seg.score(m, classes), classes, image=image)

    for _ in range(config.repeats):
        for pt in points:
            out["plain"].append(_timed(lambda pt=pt: plain.click(pt, image, text), device)[1])
            for kind, scorer in scorers.items():
                seg.scorer = scorer
                out[kind].append(_timed(lambda pt=pt: click(pt), device)[1])
    return out
