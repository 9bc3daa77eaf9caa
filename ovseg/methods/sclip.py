"""SCLIP (Wang et al., ECCV 2024): correlative self-attention in CLIP's last block.

``A = softmax(q q^T s) + softmax(k k^T s)``, residual and MLP kept; the mmseg protocol of
:mod:`ovseg.methods.dense` with SCLIP's settings (:func:`~ovseg.methods.config.method_config`).
"""

from __future__ import annotations

from ovseg.methods.training_free import ClipMethod

__all__ = ["Sclip"]


class Sclip(ClipMethod):
    """SCLIP, exactly as ``wangf3014/SCLIP`` computes it (39.1 mIoU over eight benchmarks)."""

    name = "sclip"
