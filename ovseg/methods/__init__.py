"""Training-free dense open-vocabulary segmentation methods, reproduced exactly.

SCLIP, ClearCLIP and NACLIP (with PAMR) on an open_clip ViT, ProxyCLIP and CorrCLIP with DINO
(CorrCLIP also with SAM regions), following each reference repository's mmseg protocol
number for number:

- :mod:`~ovseg.methods.geometry`: mmcv resize, normalisation, window placement, padding,
  position-table interpolation (generic, shared with other methods);
- :mod:`~ovseg.methods.clip_blocks`: each method's last block -> dense patch features;
- :mod:`~ovseg.methods.slide`: sliding-window / whole-image cosine logits for any encoder;
- :mod:`~ovseg.methods.pamr`: PAMR refinement;
- :mod:`~ovseg.methods.proxyclip`, :mod:`~ovseg.methods.corrclip`: the DINO-guided methods;
- :mod:`~ovseg.methods.regions`: region id maps, CorrCLIP's merging, scope and vote;
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
