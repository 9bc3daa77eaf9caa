"""Memory banks for CorrCLIPv2: build one from a folder of unlabeled images, inspect it.

:func:`build_bank` runs the reference builder's steps (masks, manifest, CLIP stores, VFM keys
and FAISS index) with ovseg's models, resumable and incremental; :func:`bank_info` describes
a bank folder (ovseg's or the reference's published ones). Reading a bank for segmentation is
:class:`ovseg.methods.bank.MemoryBank`.
"""

from __future__ import annotations

from ovseg.bank.build import build_bank
from ovseg.bank.info import bank_info

__all__ = ["bank_info", "build_bank"]
