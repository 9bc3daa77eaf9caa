"""Reports of an evaluation: JSON, markdown and a confusion-matrix plot (matplotlib, Agg)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from ovseg._io import atomic_write, atomic_write_text
from ovseg.eval.metrics import ConfusionMatrix

MAX_TICK_LABELS = 200  # more class names than this on an axis are unreadable (and slow to draw)
HEADLINE = (
    ("miou", "mIoU"),
    ("fwiou", "fwIoU"),
    ("pixel_accuracy", "pixel acc."),
    ("mean_accuracy", "mean acc."),
)


def percent(value: float | None) -> str:
    """A metric stored as a fraction in [0, 1], shown as a percentage: ``0.0012`` -> ``0.12%``."""
    return (
        "n/a"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else f"{100 * value:.2f}%"
    )


def markdown(report: dict[str, Any]) -> str:
    """Markdown summary: headline metrics (percent), per-class IoU table, configuration."""
    ds, counts = report["dataset"], report["counts"]
    lines = [
        f"# ovseg eval: {ds['kind']} ({report['mode']})",
        "",
        f"{counts['images']} of {counts['images_in_dataset']} images, "
        f"{counts['pixels']} labelled pixels "
        f"({counts['unlabeled_pixels']} predicted unlabeled).",
        "",
        "| " + " | ".join(label for _, label in HEADLINE) + " |",
        "|" + "---:|" * len(HEADLINE),
        "| " + " | ".join(percent(report[key]) for key, _ in HEADLINE) + " |",
        "",
        "| class | IoU | accuracy | pixels |",
        "|---|---:|---:|---:|",
    ]
    for name, iou in report["per_class_iou"].items():
        acc = report["per_class_accuracy"][name]
        pixels = counts["class_pixels"][name]
        lines.append(f"| {name} | {percent(iou)} | {percent(acc)} | {pixels} |")
    lines += [
        "",
        "Configuration:",
        "",
        "```json",
        json.dumps(report["config"], indent=2, default=str),
        "```",
        "",
    ]
    return "\n".join(lines)


def plot_confusion(matrix: np.ndarray, classes: list[str], path: Path, title: str = "") -> Path:
    """Row-normalised confusion matrix (rows: truth, columns: prediction + unlabeled) as PNG;
    class names on the axes up to :data:`MAX_TICK_LABELS` classes (indices beyond)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    k = len(classes)
    rows = matrix.sum(axis=1, keepdims=True)
    norm = np.divide(matrix, rows, out=np.zeros(matrix.shape, float), where=rows > 0)
    side = min(4 + 0.3 * k, 40 if k <= MAX_TICK_LABELS else 20)
    fig = Figure(figsize=(side + 1, side))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    image = ax.imshow(norm, cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of true pixels")
    if k <= MAX_TICK_LABELS:
        font = max(4, 10 - k // 20)
        ax.set_xticks(range(k + 1), [*classes, "unlabeled"], rotation=90, fontsize=font)
        ax.set_yticks(range(k), classes, fontsize=font)
    ax.set_xlabel(
        "predicted (class index; last column: unlabeled)" if k > MAX_TICK_LABELS else "predicted"
    )
    ax.set_ylabel("ground truth")
    ax.set_title(title)
    fig.tight_layout()
    return atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=100))


def write_reports(report: dict[str, Any], out: Path, cm: ConfusionMatrix) -> dict[str, Path]:
    """Write ``out`` (JSON), ``out.with_suffix('.md')`` and ``<stem>_confusion.png``."""
    paths = {
        "json": out,
        "markdown": out.with_suffix(".md"),
        "plot": out.with_name(f"{out.stem}_confusion.png"),
    }
    plot_confusion(
        cm.matrix,
        report["dataset"]["classes"],
        paths["plot"],
        f"{report['dataset']['kind']} ({report['mode']}): mIoU {percent(report['miou'])}",
    )
    atomic_write_text(paths["markdown"], markdown(report))
    report = report | {"files": {k: str(v) for k, v in paths.items()}}
    atomic_write_text(paths["json"], json.dumps(report, indent=2, allow_nan=False) + "\n")
    return paths


def _nan_to_none(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


def build_report(
    dataset,
    cm: ConfusionMatrix,
    mode: str,
    config,
    counts: dict,
    predictions,
    cache_dir: Path | None,
) -> dict[str, Any]:
    """The report dict of an evaluation: scores in [0, 1] (None where undefined), the
    dataset, the configuration (hashed), counts and the confusion matrix."""
    import ovseg

    s = cm.scores()
    names = dataset.classes
    cfg = asdict(config) | {
        "grid": dict(config.grid),
        "method_options": dict(config.method_options),
        "hash": config.key(),
    }
    if mode == "predictions":
        cfg = {
            "data": config.data,
            "kind": config.kind,
            "split": config.split,
            "predictions": str(Path(predictions).resolve()),
        }
    return {
        "miou": _nan_to_none(s["miou"]),
        "fwiou": _nan_to_none(s["fwiou"]),
        "pixel_accuracy": _nan_to_none(s["pixel_accuracy"]),
        "mean_accuracy": _nan_to_none(s["mean_accuracy"]),
        "per_class_iou": {n: _nan_to_none(v) for n, v in zip(names, s["iou"], strict=True)},
        "per_class_accuracy": {
            n: _nan_to_none(v) for n, v in zip(names, s["accuracy"], strict=True)
        },
        "mode": mode,
        "dataset": {
            "root": config.data,
            "kind": dataset.kind,
            "split": config.split,
            "classes": names,
            "prompts": dataset.prompts,
            "background_index": dataset.background_index,
        },
        "config": cfg,
        "counts": counts
        | {
            "pixels": cm.total,
            "unlabeled_pixels": int(cm.matrix[:, -1].sum()),
            "class_pixels": dict(zip(names, cm.matrix.sum(1).tolist(), strict=True)),
        },
        "confusion_matrix": cm.matrix.tolist(),
        "confusion_columns": [*names, "unlabeled"],
        "cache": str(cache_dir) if cache_dir else None,
        "ovseg_version": getattr(ovseg, "__version__", None),
    }
