"""The segmentation methods: one protocol, one module each, one registry.

- :mod:`~ovseg.methods.protocol`: what a method is to the rest of ovseg (``Method``:
  ``needs``, a typed ``Config``, ``probabilities``, ``predict``, ``finish``,
  ``mask_scores``; ``Finished``); :mod:`~ovseg.methods.registry`: the methods by name;
- the methods: :mod:`~ovseg.methods.sclip`, :mod:`~ovseg.methods.clearclip`,
  :mod:`~ovseg.methods.naclip` (on an open_clip ViT, :mod:`~ovseg.methods.training_free`),
  :mod:`~ovseg.methods.proxyclip`, :mod:`~ovseg.methods.trident`,
  :mod:`~ovseg.methods.corrclip` (with DINO, Trident also with SAM, CorrCLIP with regions),
  :mod:`~ovseg.methods.corrclipv2`, :mod:`~ovseg.methods.samclip` and
  :mod:`~ovseg.methods.sam3` (SAM 3's instances and dense map; trained, not training-free),
  :mod:`~ovseg.methods.mixed` (``"naclip+sam3"``...: SAM 3 for objects, a dense method for
  stuff);
  the training-free ones follow each reference repository's mmseg protocol number for number.

Their building blocks:

- :mod:`~ovseg.methods.geometry`: mmcv resize, normalisation, window placement, padding,
  position-table interpolation (generic, shared with other methods);
- :mod:`~ovseg.methods.clip_blocks`: each method's last block -> dense patch features;
- :mod:`~ovseg.methods.slide`: sliding-window / whole-image cosine logits for any encoder;
- :mod:`~ovseg.methods.pamr`: PAMR refinement;
- :mod:`~ovseg.methods.proxyclip`, :mod:`~ovseg.methods.corrclip`: the DINO-guided methods;
- :mod:`~ovseg.methods.regions`: region id maps, CorrCLIP's merging, scope and vote;
- :mod:`~ovseg.methods.corrclipv2`: CorrCLIPv2 (a VFM's correlations, retrieval from a memory
  bank, DMCE), with :mod:`~ovseg.methods.bank` (reading banks, FAISS) and
  :mod:`~ovseg.methods.vfm` (the VFM interface);
- :mod:`~ovseg.methods.config`: per-method, per-benchmark settings;
- :mod:`~ovseg.methods.classnames`: each method's class-name files;
- :mod:`~ovseg.methods.text`: template-averaged query embeddings;
- :mod:`~ovseg.methods.dense`: the per-image front (probabilities, labels);
- :mod:`~ovseg.methods.pixelmap`: the probabilities at the input size as a lazy, tiled map
  (:mod:`~ovseg.methods.tiles`: its windows and sources).

Submodules are imported on first use of a name, so ``import ovseg.methods`` stays light.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "Method": "ovseg.methods.protocol",
    "Finished": "ovseg.methods.protocol",
    "method_class": "ovseg.methods.registry",
    "method_names": "ovseg.methods.registry",
    "MethodConfig": "ovseg.methods.config",
    "method_config": "ovseg.methods.config",
    "class_names": "ovseg.methods.classnames",
    "query_list": "ovseg.methods.classnames",
    "query_embeddings": "ovseg.methods.text",
    "OPENAI_IMAGENET_TEMPLATES": "ovseg.methods.text",
    "dense_logits": "ovseg.methods.dense",
    "dense_probabilities": "ovseg.methods.dense",
    "dense_pixelmap": "ovseg.methods.dense",
    "PixelMap": "ovseg.methods.pixelmap",
    "predict_labels": "ovseg.methods.dense",
    "dense_features": "ovseg.methods.clip_blocks",
    "slide_logits": "ovseg.methods.slide",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ovseg.methods' has no attribute {name!r}")
