"""Vision foundation models (VFMs) as CorrCLIPv2 uses them: dense features of one image.

CorrCLIPv2 reads a VFM in three places, always through the same two steps (its
``vfms/factory.py``, ``VFMExtractor.extract_dense``): the correlation matrix of the main map,
the retrieval queries of the image's regions, and the keys of the bank's index. ovseg takes any
object with this interface:

- ``name``: ``str``, the VFM's key in bank file names (``{bank}_{name}.faiss``): the
  reference's ``radiov3``, ``radiov2.5``, ``dinov2``, ``dinov3``, ``pe``, or any other;
- ``dim``: ``int``, the feature size ``D``;
- ``preprocess(image)``: RGB uint8 ``(H, W, 3)`` -> pixels ``(1, 3, h, w)`` float on the
  model's device (the model's own normalisation and resize);
- ``vfm(pixels)``: ``(B, 3, h, w)`` -> spatial features ``(B, h', w', D)``.

:func:`vfm_dense` runs both and returns ``(1, D, h', w')`` float32: the reference's
``extract_dense(img)[0]`` (which it returns as float16 on CUDA). The reference then resizes the
map bilinearly to the image it works on and L2-normalises every pixel over ``D``.

:class:`TransformersVfm` adapts a transformers ViT backbone whose ``last_hidden_state`` starts
with a class token and register tokens (``Dinov2Model``, ``Dinov2WithRegistersModel``,
``DINOv3ViTModel``) with the reference's DINOv2/DINOv3 preprocessing: pixels / 255,
ImageNet mean/std, then, when a side is not a multiple of the patch, a bilinear resize
(``align_corners=False``) to ``max(p, round(side / p) * p)``; features = the normed patch tokens
(``get_intermediate_layers(x, reshape=True)[0]`` of the hub models).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "TransformersVfm", "tiny_dinov2_vfm", "vfm_dense"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def check_vfm(vfm: object) -> None:
    """Raise TypeError unless ``vfm`` has the interface above."""
    missing = [a for a in ("name", "dim", "preprocess") if not hasattr(vfm, a)]
    if missing or not callable(vfm):
        raise TypeError(
            f"a VFM needs `name`, `dim`, `preprocess(image)` and `vfm(pixels) -> (B, h, w, D)`; "
            f"{type(vfm).__name__} lacks {missing or ['__call__']}"
        )


def vfm_dense(vfm, image: np.ndarray) -> Tensor:
    """Dense VFM features ``(1, D, h', w')`` float32 of an RGB uint8 image ``(H, W, 3)``."""
    check_vfm(vfm)
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3:
        raise TypeError("image must be a uint8 numpy array (H, W, 3)")
    with torch.inference_mode():
        feats = vfm(vfm.preprocess(image))
    if feats.ndim != 4 or feats.shape[0] != 1 or feats.shape[-1] != vfm.dim:
        raise ValueError(
            f"VFM {vfm.name!r} must return (1, h, w, {vfm.dim}) features, got {tuple(feats.shape)}"
        )
    return feats.permute(0, 3, 1, 2).float().contiguous()


class TransformersVfm(nn.Module):
    """A transformers DINOv2 / DINOv3 backbone with the reference's preprocessing.

    Args:
        model: ``Dinov2Model``, ``Dinov2WithRegistersModel`` or ``DINOv3ViTModel`` (any model
            whose ``last_hidden_state`` is ``[class, registers..., patches...]`` after the
            final norm, with ``config.patch_size`` and ``config.hidden_size``).
        name: the key of bank files built with it (the reference's ``dinov2`` / ``dinov3`` for
            DINOv2-L with registers / DINOv3-L).
    """

    def __init__(self, model: nn.Module, name: str):
        super().__init__()
        config = getattr(model, "config", None)
        if config is None or not hasattr(config, "patch_size"):
            raise TypeError(f"{type(model).__name__} is not a transformers ViT backbone")
        if not isinstance(name, str) or not name.strip():
            raise ValueError("name must be a non-empty string")
        self.model = model.eval()
        self.name = name
        p = config.patch_size
        self.patch = int(p[0] if isinstance(p, (tuple, list)) else p)
        self.dim = int(config.hidden_size)
        self.prefix = 1 + int(getattr(config, "num_register_tokens", 0) or 0)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def patch_size(self) -> int:
        return self.patch

    @torch.inference_mode()
    def dense_features(self, image: np.ndarray) -> Tensor:
        """``(1, D, h, w)`` float32 features of an RGB uint8 image (:func:`vfm_dense`)."""
        return vfm_dense(self, image)

    def preprocess(self, image: np.ndarray) -> Tensor:
        """``(H, W, 3)`` uint8 -> ``(1, 3, h, w)`` float32, ImageNet-normalised, sides rounded
        to multiples of the patch (``round`` as Python's, ties to even)."""
        x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).contiguous()
        x = x.to(torch.float32).div(255)
        mean = torch.as_tensor(IMAGENET_MEAN, dtype=torch.float32).view(-1, 1, 1)
        std = torch.as_tensor(IMAGENET_STD, dtype=torch.float32).view(-1, 1, 1)
        x = x.sub_(mean).div_(std).unsqueeze(0).to(self.device)
        h, w = x.shape[-2:]
        p = self.patch
        size = (max(p, int(round(h / p)) * p), max(p, int(round(w / p)) * p))
        if size != (h, w):
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return x

    def forward(self, pixels: Tensor) -> Tensor:
        """``(B, 3, h, w)`` -> ``(B, h / p, w / p, D)`` normed patch tokens."""
        b, _, h, w = pixels.shape
        out = self.model(pixel_values=pixels.to(next(self.model.parameters()).dtype))
        tokens = out.last_hidden_state[:, self.prefix :]
        return tokens.reshape(b, h // self.patch, w // self.patch, self.dim)


def tiny_dinov2_vfm(seed: int = 0, dim: int = 64, name: str = "dinov2-tiny") -> TransformersVfm:
    """A tiny random ``Dinov2WithRegistersModel`` (patch 14, 2 blocks, 4 registers) as a VFM,
    for tests. Deterministic for a given ``seed``."""
    from transformers import Dinov2WithRegistersConfig, Dinov2WithRegistersModel

    config = Dinov2WithRegistersConfig(
        hidden_size=dim,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=2 * dim,
        patch_size=14,
        image_size=56,
        num_register_tokens=4,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Dinov2WithRegistersModel(config)
        for p in model.parameters():  # livelier than the default init
            p.data.add_(0.05 * torch.randn_like(p))
    return TransformersVfm(model.eval(), name)
