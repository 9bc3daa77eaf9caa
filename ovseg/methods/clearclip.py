"""ClearCLIP (Lan et al., ECCV 2024): CLIP's last block without residual or MLP.

``A = softmax(q q^T s)``, output ``out(A v)`` alone, windows padded to 16; the mmseg protocol of
:mod:`ovseg.methods.dense` with ClearCLIP's settings (:func:`~ovseg.methods.config.method_config`).
"""

from __future__ import annotations

from ovseg.methods.training_free import ClipMethod

__all__ = ["ClearClip"]


class ClearClip(ClipMethod):
    """ClearCLIP, exactly as ``mc-lan/ClearCLIP`` computes it (38.1 mIoU over eight benchmarks)."""

    name = "clearclip"
