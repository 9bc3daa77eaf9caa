"""Evaluation: benchmark readers, segmentation metrics and the ``ovseg eval`` runner."""

from ovseg.eval.datasets import KINDS, Sample, SegDataset, detect_kind, open_dataset
from ovseg.eval.metrics import ConfusionMatrix, PanopticQuality, semantic_to_segments
from ovseg.eval.runner import PROTOCOL_DEFAULTS, EvalOptions, evaluate, oracle_scores

__all__ = [
    "KINDS",
    "PROTOCOL_DEFAULTS",
    "ConfusionMatrix",
    "EvalOptions",
    "PanopticQuality",
    "Sample",
    "SegDataset",
    "detect_kind",
    "evaluate",
    "open_dataset",
    "oracle_scores",
    "semantic_to_segments",
]
