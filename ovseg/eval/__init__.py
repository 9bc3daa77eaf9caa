"""Evaluation: benchmark readers, segmentation metrics and the ``ovseg eval`` runner."""

from ovseg.eval.datasets import KINDS, Sample, SegDataset, detect_kind, open_dataset
from ovseg.eval.metrics import ConfusionMatrix, PanopticQuality, semantic_to_segments

__all__ = [
    "KINDS",
    "ConfusionMatrix",
    "PanopticQuality",
    "Sample",
    "SegDataset",
    "detect_kind",
    "open_dataset",
    "semantic_to_segments",
]
