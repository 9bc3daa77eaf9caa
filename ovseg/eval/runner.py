"""The evaluation runner behind ``ovseg eval``: predict (or read) label maps, score, report.

Three modes (predictions in :mod:`ovseg.eval.predict`):

- ``model``: a dense method (``--method naclip`` ...) with its own class-name file and
  per-dataset settings, as its reference code evaluates; or ``--method sam-clip``: a
  :class:`~ovseg.pipeline.Segmenter` segments each image into the benchmark's classes (prompts
  with synonyms from ovseg's class-name file);
- ``oracle``: the same SAM proposals, but each proposal takes the majority ground-truth class of
  its pixels (ignored pixels excluded; a proposal of only ignored pixels gets none), then the
  same fusion: the mIoU ceiling the proposals allow;
- ``predictions``: saved label PNGs (class ``i`` = value ``i``, 255 = unlabeled; 16-bit PNGs
  with 65535 = unlabeled for benchmarks with more than 255 classes; matched by stem as
  ``STEM.png``, ``STEM_labels.png`` or ``FILE_labels.png``) are scored without any model.

Protocol of ``sam-clip``: on benchmarks with a background class (VOC21, Context60,
COCO-Object) the background words of the class-name file are background names, and pixels
left unlabeled (no mask, a mask won by a background name, or a class probability below the
threshold) become background.
Elsewhere unlabeled pixels count as misses. The input may be resized to a short side before
prediction; predictions are resized back to the label size with nearest neighbour, so scores
are always computed at the original label resolution.

Predictions of model and oracle runs are cached as label PNGs (the ``predictions`` format) in
``<report stem>_cache/<config hash>/`` next to the report, so an interrupted run resumes.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ovseg.constants import DEFAULT_CLIP, DEFAULT_METHOD, DEFAULT_SAM
from ovseg.eval.datasets import SegDataset, open_dataset
from ovseg.eval.metrics import ConfusionMatrix
from ovseg.eval.predict import (
    EvalConfig,
    Predictor,
    oracle_scores,
    read_prediction,
    resize_labels,
    resize_short_side,
    write_label_png,
)

__all__ = [
    "PROTOCOL_DEFAULTS",
    "SCORERS",
    "EvalConfig",
    "EvalOptions",
    "EvalPlan",
    "evaluate",
    "finish_evaluation",
    "plan_evaluation",
    "oracle_scores",
    "read_prediction",
    "resize_labels",
    "resize_short_side",
]

SCORERS = ("crop", "dense", "both", "oracle")
# Published training-free protocol (SCLIP configs): input short side, background threshold.
PROTOCOL_DEFAULTS: dict[str, dict[str, Any]] = {
    "voc21": {"short_side": 336, "score_threshold": 0.1},
    "voc20": {"short_side": 336, "score_threshold": 0.0},
    "context60": {"short_side": 336, "score_threshold": 0.1},
    "context59": {"short_side": 336, "score_threshold": 0.0},
    "coco_object": {"short_side": 336, "score_threshold": 0.1},
    "coco_stuff171": {"short_side": 448, "score_threshold": 0.0},
    "cityscapes": {"short_side": 560, "score_threshold": 0.0},
    "ade150": {"short_side": 336, "score_threshold": 0.0},
    "ade847": {"short_side": 336, "score_threshold": 0.0},
    "context459": {"short_side": 336, "score_threshold": 0.0},
    "camvid": {"short_side": None, "score_threshold": 0.0},
    "folder": {"short_side": None, "score_threshold": 0.0},
}


@dataclass(frozen=True)
class EvalOptions:
    """What an evaluation is asked: every option of :func:`evaluate` but the data, the report
    path, a prebuilt segmenter and the progress bar (see :func:`evaluate` for each field)."""

    kind: str | None = None
    split: str = "val"
    ignore_index: int | None = None
    predictions: str | os.PathLike | None = None
    sam: str | None = DEFAULT_SAM
    clip: str = DEFAULT_CLIP
    method: str | None = None
    dino: str | None = None
    vfm: str | None = None
    bank: str | os.PathLike | None = None
    aux_clip: str | None = None
    method_options: Mapping[str, Any] | None = None
    scorer: str = "dense"
    templates: str = "imagenet"
    score_threshold: float | None = None
    short_side: int | None = -1
    grid: Mapping[str, Any] | None = None
    limit: int | None = None
    device: Any = None
    random_weights: bool = False
    window: int | None = None


_OPTION_NAMES = tuple(f.name for f in fields(EvalOptions))


def evaluate(
    data: str | os.PathLike,
    out: str | os.PathLike,
    options: EvalOptions | None = None,
    *,
    segmenter=None,
    progress: bool = True,
    **overrides: Any,
) -> dict[str, Any]:
    """Evaluate on the dataset at ``data`` and write the reports (see :mod:`ovseg.eval.report`).

    Options come as an :class:`EvalOptions`, as keyword arguments (which override its
    fields), or both; an unknown option name raises ``ValueError``.

    Args:
        data: dataset folder; ``kind`` as in :data:`ovseg.eval.KINDS` (None: detected).
        out: path of the JSON report; the markdown report (``.md``), the confusion plot
            (``_confusion.png``) and the prediction cache (``_cache/``) go next to it.
        options: the options as one :class:`EvalOptions` (None: its defaults).
        segmenter: an already built Segmenter to use (its models must match ``sam``/``clip``).
        progress: show a progress bar.
        **overrides: fields of :class:`EvalOptions` by name, over ``options``; the main ones
            are listed below.

    Other Parameters:
        predictions: folder of label PNGs to score instead of running a model.
        method: a registered method. Where it has class-name files for the benchmark (the
            training-free methods on the eight benchmarks) its published protocol applies: its
            own class names, per-dataset settings and prediction rule. Elsewhere (``sam-clip``,
            or other datasets) ovseg's: the dataset's prompts, its background words as
            background names, unlabeled pixels counted as background. None: the segmenter's
            method, else the default (``"naclip"``). ``scorer="oracle"`` always uses SAM.
        dino: the DINO model of ProxyCLIP, Trident, CorrCLIP (``"dino_vitb8"``...).
        vfm, bank, aux_clip: CorrCLIPv2's VFM, memory bank folder and auxiliary CLIP (see
            :class:`~ovseg.pipeline.Segmenter`).
        method_options: the method's options, over its per-dataset settings (``short_side``,
            ``slide_crop``, ``slide_stride``, ``logit_scale``, ``prob_threshold``, ...).
        scorer: ``"crop"``, ``"dense"``, ``"both"`` (the region scorer of ``sam-clip``) or
            ``"oracle"``.
        score_threshold: minimum class probability of a mask; None takes ovseg's benchmark
            default (:data:`PROTOCOL_DEFAULTS`) under ovseg's protocol.
        short_side: the method's own ``short_side`` option where it has one (-1: its
            per-benchmark setting); else the input is resized to this short side (-1: ovseg's
            benchmark default, None or 0: the input size).
        grid: automatic-grid options (e.g. ``{"points_per_side": 16}``).
        window: sliding-window dense scoring, windows of this many pixels (e.g. 224; stride half
            a window); ``scorer="dense"`` only. None: one dense pass over the whole input.
        limit: evaluate only the first ``limit`` images.

    Returns:
        The report dict (also written as JSON): ``miou``, ``per_class_iou``... in [0, 1].
    """
    start = time.perf_counter()
    plan = plan_evaluation(data, out, options, segmenter=segmenter, **overrides)
    dataset, count, cm, config = plan.dataset, plan.count, plan.matrix(), plan.config
    if plan.predictions is not None:
        _score_predictions(dataset, Path(plan.predictions), count, cm, progress)
    else:
        predictor = None

        def model() -> Predictor:
            nonlocal predictor
            predictor = predictor or Predictor(config, dataset, segmenter, plan.device)
            return predictor

        for i in tqdm(range(count), desc=f"ovseg eval {dataset.kind}", disable=not progress):
            pred, label, cached = plan.prediction(i, model)
            plan.counts["cached" if cached else "computed"] += 1
            cm.update(pred, label)
    return finish_evaluation(plan, cm, start)


@dataclass
class EvalPlan:
    """A checked evaluation before any prediction: the dataset, the resolved configuration,
    the number of images, the report path and, for model runs, the prediction cache."""

    dataset: SegDataset
    config: EvalConfig
    count: int
    out: Path
    mode: str
    predictions: str | os.PathLike | None
    cache_dir: Path | None
    device: Any
    counts: dict

    def matrix(self) -> ConfusionMatrix:
        """An empty confusion matrix of the dataset's classes."""
        return ConfusionMatrix(len(self.dataset.classes), self.dataset.ignore_index)

    def prediction(
        self, i: int, predictor: Callable[[], Predictor]
    ) -> tuple[np.ndarray, np.ndarray, bool]:
        """``(prediction, label, cached)`` of image ``i`` of a model run: read from the cache,
        or predicted by ``predictor()`` (called only then) and cached."""
        name = self.dataset.items[i][0]
        path = self.cache_dir / f"{name}.png"
        if path.is_file():
            return read_prediction(self.cache_dir, name)[1], self.dataset.load_label(i), True
        sample = self.dataset[i]
        pred = predictor()(sample.image, sample.label)
        write_label_png(path, pred)
        return pred, sample.label, False


def plan_evaluation(
    data: str | os.PathLike,
    out: str | os.PathLike,
    options: EvalOptions | None = None,
    *,
    segmenter=None,
    **overrides: Any,
) -> EvalPlan:
    """Every check of :func:`evaluate` (same arguments), and the prediction cache folder;
    no model is built."""
    if options is not None and not isinstance(options, EvalOptions):
        raise TypeError(f"options must be an EvalOptions, got {type(options).__name__}")
    unknown = sorted(set(overrides) - set(_OPTION_NAMES))
    if unknown:
        raise ValueError(f"unknown evaluate option(s) {unknown}; known: {', '.join(_OPTION_NAMES)}")
    o = replace(options or EvalOptions(), **overrides)
    kind, split, ignore_index, predictions = o.kind, o.split, o.ignore_index, o.predictions
    sam, clip, method, dino, method_options = o.sam, o.clip, o.method, o.dino, o.method_options
    scorer, templates, score_threshold, short_side = (
        o.scorer,
        o.templates,
        o.score_threshold,
        o.short_side,
    )
    grid, limit, device, random_weights, window = (
        o.grid,
        o.limit,
        o.device,
        o.random_weights,
        o.window,
    )
    dataset = open_dataset(data, kind, split=split, ignore_index=ignore_index)
    if scorer not in SCORERS:
        raise ValueError(f"unknown scorer {scorer!r}; allowed: {', '.join(SCORERS)}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive integer, got {limit}")
    if window is not None and scorer != "dense":
        raise ValueError(f"window (sliding-window scoring) needs scorer='dense', got {scorer!r}")
    if short_side is not None and short_side < 0 and short_side != -1:
        raise ValueError("short_side must be positive, 0/None (no resizing) or -1 (default)")
    from ovseg.eval.predict import METHOD_DATASETS
    from ovseg.methods.registry import method_class

    if method is None:
        method = segmenter.method.name if segmenter is not None else DEFAULT_METHOD
    if scorer == "oracle":
        method = "sam-clip"
    cls = method_class(method)
    takes = set(cls.options_names())
    method_options = dict(method_options or {})
    for name, value, default in (("scorer", scorer, "dense"), ("window", window, None)):
        if value == default or (name == "scorer" and scorer == "oracle"):
            continue
        if name not in takes:
            raise ValueError(f"{name} is an option of method 'sam-clip', not of {method!r}")
        method_options.setdefault(name, value)
    name = METHOD_DATASETS.get(dataset.kind)
    defaults = PROTOCOL_DEFAULTS[dataset.kind]
    if "short_side" in takes:  # the method's own resize
        if short_side not in (-1, None, 0):
            method_options.setdefault("short_side", short_side)
        short_side = None
    elif short_side == -1:  # ovseg's protocol: the input resized per benchmark
        short_side = defaults["short_side"]
    if name is not None and cls.class_file(name) is not None:  # the method's own protocol
        threshold = 0.0 if score_threshold is None else score_threshold
    else:  # ovseg's protocol: its background threshold per benchmark
        threshold = defaults["score_threshold"] if score_threshold is None else score_threshold
    if threshold:
        method_options.setdefault("score_threshold", threshold)
    resolved = cls.configure(name, **method_options)  # a bad option fails now
    if grid and not resolved.refine:
        raise ValueError(
            f"grid options set SAM's automatic masks, which method {method!r} does not use "
            "here: add refine='masks' to the method options"
        )
    if o.bank is not None and not Path(o.bank).expanduser().is_dir():
        raise FileNotFoundError(f"bank folder not found: {o.bank} (ovseg bank build makes one)")
    out = Path(out)
    if out.suffix != ".json":
        raise ValueError(f"--out must name a .json file, got {out}")
    out.parent.mkdir(parents=True, exist_ok=True)
    count = len(dataset) if limit is None else min(limit, len(dataset))
    config = EvalConfig(
        data=str(Path(data).resolve()),
        kind=dataset.kind,
        split=split,
        sam=str(sam),
        clip=str(clip),
        method=method,
        dino=None if dino is None else str(dino),
        vfm=None if o.vfm is None else str(o.vfm),
        bank=None if o.bank is None else str(Path(o.bank).expanduser().resolve()),
        aux_clip=None if o.aux_clip is None else str(o.aux_clip),
        method_options=method_options,
        scorer=scorer,
        templates=str(templates),
        score_threshold=float(threshold),
        short_side=short_side or None,
        random_weights=random_weights,
        grid=dict(grid or {}),
        window=window,
    )
    counts = {"images": count, "images_in_dataset": len(dataset), "cached": 0, "computed": 0}
    if predictions is not None:
        mode, cache_dir = "predictions", None
    else:
        mode = "oracle" if scorer == "oracle" else "model"
        cache_dir = out.parent / f"{out.stem}_cache" / config.key()
        cache_dir.mkdir(parents=True, exist_ok=True)
        (cache_dir / "config.json").write_text(json.dumps(asdict(config), indent=2, default=str))
    return EvalPlan(dataset, config, count, out, mode, predictions, cache_dir, device, counts)


def finish_evaluation(plan: EvalPlan, cm: ConfusionMatrix, start: float) -> dict[str, Any]:
    """The report of ``plan`` from its summed confusion matrix ``cm``, also written as JSON,
    markdown and a confusion plot; ``start`` is the ``time.perf_counter()`` of the start."""
    from ovseg.eval.report import build_report, write_reports

    p = plan
    report = build_report(p.dataset, cm, p.mode, p.config, p.counts, p.predictions, p.cache_dir)
    report["seconds"] = round(time.perf_counter() - start, 3)
    report["files"] = {k: str(v) for k, v in write_reports(report, p.out, cm).items()}
    return report


def _score_predictions(
    dataset: SegDataset, pred_dir: Path, count: int, cm: ConfusionMatrix, progress: bool
) -> None:
    if not pred_dir.is_dir():
        raise FileNotFoundError(f"predictions folder {pred_dir} does not exist")
    for i in tqdm(range(count), desc="ovseg eval predictions", disable=not progress):
        stem, image_path, _ = dataset.items[i]
        path, pred = read_prediction(pred_dir, stem, Path(image_path).name)
        label = dataset.load_label(i)
        if pred.shape != label.shape:
            raise ValueError(
                f"prediction {path} is {pred.shape[::-1]} (W, H) but its label "
                f"{dataset.items[i][2]} is {label.shape[::-1]}"
            )
        try:
            cm.update(pred, label)
        except ValueError as e:
            raise ValueError(f"prediction {path}: {e}") from e
