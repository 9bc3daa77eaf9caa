"""Summaries, markdown and atomic JSON/markdown files for ``ovseg bench`` results."""

from __future__ import annotations

import json
import os
import platform
import statistics
from pathlib import Path

import torch

from ovseg._io import atomic_write_text

STAGES = ("encoder", "proposals", "scoring", "fusion")


def median(values) -> float:
    values = [v for v in values if v is not None]
    return float(statistics.median(values)) if values else float("nan")


def machine_info(device: torch.device) -> dict:
    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or "unknown",
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _ratio(a: float, b: float) -> float | None:
    return a / b if b and b == b and a == a else None


def summarize(
    records: list[dict], config, method_rows: dict | None = None, method_errors: dict | None = None
) -> dict:
    """Medians over every (image, repeat) run, and ratios plain / ovseg; with ``method_rows``
    ({row: (method, options)}), the dense methods' medians and ratios plain / method."""
    plain = [run for rec in records for run in rec["plain"]]
    ours = [run for rec in records for run in rec["ovseg"]]
    stages: dict[str, dict] = {}
    for stage in (*STAGES, "end_to_end"):
        if stage == "end_to_end":
            row = {"plain": median(sum(r[s] for s in STAGES) for r in plain)}
        else:
            row = {"plain": median(r[stage] for r in plain)}
        for kind in config.scorers:
            if stage in ("encoder", "proposals"):
                value = median(r[stage] for r in ours)
            elif stage == "end_to_end":
                value = median(
                    r["encoder"] + r["proposals"] + r[kind]["scoring"] + r[kind]["fusion"]
                    for r in ours
                )
            else:
                value = median(r[kind][stage] for r in ours)
            row[kind] = value
            row[f"ratio_{kind}"] = _ratio(row["plain"], value)
        stages[stage] = row
    clicks = [rec["clicks"] for rec in records if rec.get("clicks")]
    if clicks:
        row = {"plain": median(t for c in clicks for t in c["plain"])}
        for kind in config.scorers:
            row[kind] = median(t for c in clicks for t in c[kind])
            row[f"ratio_{kind}"] = _ratio(row["plain"], row[kind])
        stages["click"] = row
    adaptive = [a for rec in records for a in rec["adaptive"]]
    return {
        "stages": stages,
        "methods": _summarize_methods(records, config, stages, method_rows, method_errors),
        "masks": {
            "plain_produced": median(r["masks"] for r in plain),
            "ovseg_produced": median(r["masks"] for r in ours),
            "scored": median(rec["scored_masks"] for rec in records),
        },
        "clip_passes_per_image": {
            "plain": median(r["clip_passes"] for r in plain),
            **{k: median(r[k]["clip_passes"] for r in ours) for k in config.scorers},
        },
        "peak_mb": {
            "plain": median(r["peak_mb"] for r in plain),
            "ovseg": median(r["peak_mb"] for r in ours),
        },
        "adaptive": {
            "proposals": median(a["proposals"] for a in adaptive),
            "masks": median(a["masks"] for a in adaptive),
            "recall_of_full_grid_masks": median(a["recall"] for a in adaptive),
        }
        if adaptive
        else None,
    }


def _summarize_methods(records, config, stages, rows, errors) -> dict:
    """{row: medians of a dense method's runs, ratios of the end-to-end pipelines to it}."""
    errors = errors or {}
    out = {}
    for key, (name, options) in (rows or {}).items():
        entries = [rec["methods"][key] for rec in records if key in rec.get("methods", {})]
        runs = [run for e in entries for run in e["runs"]]
        per_image = median(r["per_image"] for r in runs)
        row = {
            "method": name,
            "options": dict(options),
            "windows": median(e.get("windows") for e in entries),
            "batch_windows": median(e.get("batch_windows") for e in entries),
            "runs": len(runs),
            "probabilities": median(r["probabilities"] for r in runs),
            "labels": median(r["labels"] for r in runs),
            "per_image": per_image,
            "peak_mb": median(r["peak_mb"] for r in runs),
            "ratio_plain": _ratio(stages["end_to_end"]["plain"], per_image),
            **{f"ratio_{k}": _ratio(stages["end_to_end"][k], per_image) for k in config.scorers},
            "error": errors.get(name),
        }
        out[key] = row
    return out


def _fmt(x, digits: int = 3) -> str:
    if x is None or x != x:
        return "n/a"
    return f"{x:.{digits}f}" if abs(x) < 100 else f"{x:.1f}"


def to_markdown(results: dict) -> str:
    """A markdown report: setup, fairness notes, and the table of medians and ratios."""
    c, m, s = results["config"], results["machine"], results["summary"]
    kinds = c["scorers"]
    sam2 = c["sam"].startswith("sam2")
    plain_generator = (
        "Meta's `SAM2AutomaticMaskGenerator` (its sam2 package) on the same weights; ovseg = "
        "transformers' Sam2Model, decoded in batches, the IoU filter before upsampling"
        if sam2
        else "`SamAutomaticMaskGenerator`; ovseg = batched low-resolution decode, filters at low "
        "resolution, survivors upsampled"
    )
    filters = (
        "pred IoU 0.8, stability 0.95, NMS 0.7"
        if sam2
        else "pred IoU 0.88, stability 0.95, NMS 0.7"
    )
    where = m.get("gpu") or f"CPU, {m['cpu_count']} cores ({m['torch_threads']} torch threads)"
    lines = [
        f"# ovseg bench: SAM {c['sam']} + CLIP {c['clip']} on {m['device']}",
        "",
        f"- Machine: {where}; {m['platform']}; torch {m['torch']}.",
        f"- Data: {results['data']}, {len(results['records'])} image(s) x {c['repeats']} "
        f"repeat(s); medians over all runs.",
        "- Weights: "
        + (
            "tiny random test models"
            if c["sam"] in ("tiny-random", "sam2-tiny-random")
            else "random (timing only; same architectures as the released checkpoints)"
        )
        + (
            "; both sides hold the same weights."
            if sam2
            else "; both sides share the same model objects."
        ),
        f"- Proposals: {c['points_per_side']}x{c['points_per_side']} grid on both sides, "
        + (
            f"SAM's default quality filters ({filters})"
            if c["filters"]
            else "quality filters off (NMS 0.7)"
        )
        + f". Plain = {plain_generator}"
        + (", fused SDPA attention in the encoder." if c["fused"] and not sam2 else "."),
        f"- Scoring: both sides score the same {_fmt(s['masks']['scored'], 0)} masks per image "
        f"(median): connected components >= {c['min_area']} px of the ground-truth label map. "
        "Plain = one CLIP pass per mask (PIL crop of the mask box, outside greyed, open_clip "
        "preprocess, batch size 1); ovseg crop = batched masked crops (32 per pass); ovseg "
        "dense = one CLIP pass per image, features pooled in each mask.",
        "- End to end = encoder + proposals + scoring + fusion (text embeddings computed once "
        "per vocabulary on both sides, not timed). Click = one point after `set_image`: "
        "SAM's best mask + its scoring + fusion, vs "
        + ("`SAM2ImagePredictor.predict`" if sam2 else "`SamPredictor.predict`")
        + " + one plain crop.",
        "",
        "| stage | plain (s) | "
        + " | ".join(f"ovseg {k} (s) | plain/ovseg {k}" for k in kinds)
        + " |",
        "|---|---:|" + "---:|---:|" * len(kinds),
    ]
    for stage, row in s["stages"].items():
        cells = [f"{_fmt(row[k])} | {_fmt(row[f'ratio_{k}'], 2)}x" for k in kinds]
        lines.append(
            f"| {stage.replace('_', ' ')} | {_fmt(row['plain'])} | " + " | ".join(cells) + " |"
        )
    passes = s["clip_passes_per_image"]
    lines += [
        "",
        f"- Masks produced by the grid (median): plain {_fmt(s['masks']['plain_produced'], 0)}, "
        f"ovseg {_fmt(s['masks']['ovseg_produced'], 0)}; masks scored: "
        f"{_fmt(s['masks']['scored'], 0)} on both sides.",
        "- CLIP image passes per image: plain "
        + _fmt(passes["plain"], 0)
        + ", "
        + ", ".join(f"ovseg {k} {_fmt(passes[k], 0)}" for k in kinds)
        + ".",
        f"- Peak memory above baseline ({'CUDA allocator' if m.get('gpu') else 'process RSS'}, "
        f"MiB): plain {_fmt(s['peak_mb']['plain'], 0)}, ovseg {_fmt(s['peak_mb']['ovseg'], 0)}.",
    ]
    if s.get("adaptive"):
        a = s["adaptive"]
        lines.append(
            f"- Adaptive grid (coarse {c['points_per_side'] // 2}x"
            f"{c['points_per_side'] // 2} + uncovered fine points): proposals "
            f"{_fmt(a['proposals'])} s, {_fmt(a['masks'], 0)} masks, recall of the full "
            f"grid's masks at IoU 0.9: {_fmt(a['recall_of_full_grid_masks'], 2)}."
        )
    for note in c.get("notes") or []:
        lines.append(f"- {note}")
    if s.get("methods"):
        lines += ["", *_methods_markdown(c, s, m)]
    return "\n".join(lines) + "\n"


def _methods_markdown(c: dict, s: dict, m: dict) -> list[str]:
    kinds = c["scorers"]
    plain = s["stages"]["end_to_end"]["plain"]
    from ovseg.methods.registry import method_class

    classes = {row["method"]: method_class(row["method"]) for row in s["methods"].values()}
    tiny = "tiny-random" if c["sam"] == "tiny-random" else None
    dinos = sorted(
        f"DINO {tiny or c['dino'] or cls.hints['dino']} ({name})"
        for name, cls in classes.items()
        if "dino" in cls.needs
    )
    sams = sorted(name for name, cls in classes.items() if "sam" in cls.needs)
    lines = [
        "## Per-pixel methods"
        + (f" ({', '.join(sams)} with the SAM encoder and refinement)" if sams else " (no SAM)"),
        "",
        f"Per image: the method's pixel probabilities on an image it has not seen (the "
        "Segmenter's probability cache cleared), then its labels and result "
        f"(`Segmenter.segment`). Models: CLIP {c['clip']}"
        + "".join(f", {d}" for d in dinos)
        + (f", SAM {c['sam']} ({', '.join(sams)})" if sams else "")
        + (", tiny random test models" if c["sam"] == "tiny-random" else ", random weights")
        + "; the CLIP model object above; the same frames and repeats. Ratios: the "
        f"plain pipeline's end to end ({_fmt(plain)} s) and ovseg's SAM + CLIP end to end over "
        "the method's seconds per image. Windows: sliding windows per image (windows per "
        f"forward pass). Peak memory above baseline, {'CUDA' if m.get('gpu') else 'RSS'}, MiB.",
        "",
        "| method | windows (batch) | probabilities (s) | labels + result (s) | per image (s) "
        "| plain / method | "
        + " | ".join(f"ovseg {k} / method" for k in kinds)
        + " | peak (MiB) |",
        "|---|---:|---:|---:|---:|---:|" + "---:|" * len(kinds) + "---:|",
    ]
    for key, row in s["methods"].items():
        if row.get("error") or not row["runs"]:
            reason = row.get("error") or "no timed run"
            lines.append(f"| {key} | failed: {reason.replace('|', '/')} |")
            continue
        windows = f"{_fmt(row['windows'], 0)} ({_fmt(row['batch_windows'], 0)})"
        ratios = " | ".join(f"{_fmt(row[f'ratio_{k}'], 1)}x" for k in kinds)
        lines.append(
            f"| {key} | {windows} | {_fmt(row['probabilities'])} | {_fmt(row['labels'])} | "
            f"{_fmt(row['per_image'])} | **{_fmt(row['ratio_plain'], 1)}x** | {ratios} | "
            f"{_fmt(row['peak_mb'], 0)} |"
        )
    return lines


def write_results(results: dict, out_dir: str | Path, stem: str | None = None) -> dict[str, Path]:
    """Write ``STEM.json`` and ``STEM.md`` atomically; the default stem names models and device."""
    c = results["config"]
    device = results["machine"]["device"].split(":")[0]
    stem = stem or f"bench_{c['sam']}_{c['clip']}_{device}".replace("/", "-")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / f"{stem}.json", "markdown": out / f"{stem}.md"}
    atomic_write_text(paths["json"], json.dumps(results, indent=2, default=float) + "\n")
    atomic_write_text(paths["markdown"], to_markdown(results))
    return paths
