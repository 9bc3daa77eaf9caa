"""NACLIP (Hajimiri et al., WACV 2025): neighbourhood attention in CLIP's last block, then PAMR.

``A = softmax(k k^T s + Omega)`` (a Gaussian over patch positions), ``out(A v)`` alone; PAMR
on the full-size logits; the mmseg protocol of :mod:`ovseg.methods.dense` with NACLIP's
settings (:func:`~ovseg.methods.config.method_config`).
"""

from __future__ import annotations

from ovseg.methods.config import NaclipConfig
from ovseg.methods.training_free import ClipMethod

__all__ = ["Naclip"]


class Naclip(ClipMethod):
    """NACLIP, exactly as ``sinahmr/NACLIP`` computes it (42.5 mIoU over eight benchmarks,
    PAMR included)."""

    name = "naclip"
    Config = NaclipConfig
