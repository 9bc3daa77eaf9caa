"""Vision foundation models (VFMs) behind one small interface: dense features for region
queries (CorrCLIPv2's memory-bank retrieval) and for building banks.

``build_vfm(spec)`` returns a :class:`VisionFoundationModel`:

- ``vfm(pixels)``: float ``(B, 3, H, W)`` RGB in ``[0, 1]``, ``H`` and ``W`` multiples of
  ``vfm.patch_size`` -> ``(B, H / p, W / p, D)`` float features (``D = vfm.dim``). The model
  normalises with its own ``vfm.mean`` / ``vfm.std`` (RGB, ``[0, 1]`` scale).
- ``vfm.input_size(h, w)``: the size an ``h x w`` image runs at (each side rounded to the
  nearest multiple of the patch size, Python's ``round``, at least one patch).
- ``vfm.preprocess(image)`` -> ``(1, 3, H', W')``: an image (path, PIL, ``uint8 (H, W, 3)``...)
  as ``[0, 1]`` floats resized bilinearly (``align_corners=False``) to ``input_size``.
- ``vfm.dense_features(image)`` -> ``(1, D, H'/p, W'/p)`` float32: the feature map CorrCLIPv2's
  ``VFMExtractor.extract_dense`` returns for the same image (``vfms/factory.py``; it computes in
  fp16 on CUDA, ovseg in the model's dtype).

Specs (CorrCLIPv2's ``--vfm`` names first; a bank records which one built it):

- ``"radiov3"`` = ``"c-radio_v3-l"`` (CorrCLIPv2's default), ``"radiov2.5"`` = ``"radio_v2.5-l"``,
  ``"c-radio_v3-b"``, ``"radio_v2.5-b"``, ``"NAME:/path"``: RADIO (:mod:`ovseg.methods.radio`,
  weights from the registry / a file, see :mod:`ovseg.models.radio_weights`); exact to RADIO's
  own forward.
- ``"dinov2"`` = ``"hf:facebook/dinov2-with-registers-large"`` (the reference's
  ``dinov2_vitl14_reg``), ``"dinov3"`` = ``"hf:facebook/dinov3-vitl16-pretrain-lvd1689m"`` (its
  ``dinov3_vitl16``), any ``"hf:ORG/NAME"`` DINOv2 / DINOv2-with-registers / DINOv3 ViT:
  ``transformers`` models from the Hugging Face cache; the patch tokens of the last layer
  after its final norm (the reference's ``get_intermediate_layers(reshape=True)[0]``), ImageNet
  mean/std. ``transformers``' DINOv2 resizes its position table with ``size=(h, w)`` and
  antialiasing where the reference's hub model uses ``scale_factor=(h + 0.1) / 37`` without
  it: the features differ slightly at other grids, so a bank should be built and queried by
  the same implementation (RADIO's are identical).
- ``"radio-tiny-random"``, ``"dinov2-tiny-random"``, ``"dinov3-tiny-random"``: tiny random
  models of the real classes, for tests.
- a built :class:`VisionFoundationModel`.

Not provided: PE-Spatial (the reference's ``pe`` option).
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ovseg.constants import TINY
from ovseg.methods.radio import RADIO_ARCHS, nearest_supported_resolution

__all__ = [
    "VFM_ALIASES",
    "VFM_TINY",
    "VisionFoundationModel",
    "build_vfm",
    "vfm_key",
    "vfm_names",
]

VFM_ALIASES = {
    "radiov3": "c-radio_v3-l",
    "radiov2.5": "radio_v2.5-l",
    "dinov2": "hf:facebook/dinov2-with-registers-large",
    "dinov3": "hf:facebook/dinov3-vitl16-pretrain-lvd1689m",
}
"""CorrCLIPv2's VFM names (``vfms/factory.py``) -> ovseg specs."""
VFM_TINY = ("radio-tiny-random", "dinov2-tiny-random", "dinov3-tiny-random")
"""Tiny random VFMs for tests (``"tiny-random"`` is the tiny DINOv2)."""
_DINO_TYPES = ("dinov2", "dinov2_with_registers", "dinov3_vit")


def vfm_names() -> list[str]:
    """The names :func:`build_vfm` knows (besides ``NAME:/path``, ``hf:ORG/NAME``)."""
    return [*VFM_ALIASES, *(n for n in RADIO_ARCHS if n not in VFM_TINY), *VFM_TINY]


class VisionFoundationModel(nn.Module):
    """A RADIO model with its preprocessing (see the module docstring for the interface).

    Attributes: ``name`` (its key in bank file names: CorrCLIPv2's alias when one was given,
    else the spec), ``kind`` (``"radio"``), ``dim``, ``patch_size``, ``mean``, ``std``,
    ``backbone`` (the wrapped ``RadioEncoder``).
    """

    def __init__(self, name: str, backbone: nn.Module) -> None:
        super().__init__()
        self.name, self.kind, self.backbone = name, "radio", backbone
        self.dim, self.patch_size = backbone.embed_dim, backbone.patch_size
        cond = backbone.input_conditioner
        self.mean = tuple(float(v) for v in cond.norm_mean.flatten())
        self.std = tuple(float(v) for v in cond.norm_std.flatten())
        self.eval()

    def extra_repr(self) -> str:
        return f"name={self.name!r}, kind={self.kind!r}, dim={self.dim}, patch={self.patch_size}"

    @property
    def device(self) -> torch.device:
        return next(self.backbone.parameters()).device

    def input_size(self, height: int, width: int) -> tuple[int, int]:
        """The size an image of ``height x width`` runs at (nearest multiples of the patch)."""
        return nearest_supported_resolution(height, width, self.patch_size)

    def preprocess(self, image) -> Tensor:
        """``image`` (anything ``ovseg.image.load_image`` takes) -> ``(1, 3, H', W')`` float in
        ``[0, 1]`` at :meth:`input_size`, on the model's device and dtype."""
        from ovseg.image import load_image

        rgb = torch.from_numpy(load_image(image)).to(self.device)
        x = rgb.permute(2, 0, 1).unsqueeze(0).float() / 255.0
        size = self.input_size(*x.shape[-2:])
        if tuple(x.shape[-2:]) != size:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return x.to(next(self.backbone.parameters()).dtype)

    def forward(self, pixels: Tensor) -> Tensor:
        """``pixels`` ``(B, 3, H, W)`` in ``[0, 1]`` -> ``(B, H/p, W/p, D)`` features."""
        if not isinstance(pixels, Tensor) or pixels.ndim != 4 or pixels.shape[1] != 3:
            raise ValueError(f"pixels must be (B, 3, H, W), got {getattr(pixels, 'shape', pixels)}")
        if not pixels.is_floating_point():
            raise TypeError(f"pixels must be floats in [0, 1], got {pixels.dtype}")
        height, width = pixels.shape[-2:]
        p = self.patch_size
        if height % p or width % p:
            raise ValueError(
                f"input size {height}x{width} is not a multiple of the patch size {p}; "
                f"resize to {self.input_size(height, width)} (vfm.preprocess does)"
            )
        return self.backbone(pixels).features.permute(0, 2, 3, 1)

    @torch.inference_mode()
    def dense_features(self, image) -> Tensor:
        """``(1, D, H'/p, W'/p)`` float32 features of ``image`` at :meth:`input_size`."""
        return self(self.preprocess(image)).permute(0, 3, 1, 2).float()


def build_vfm(spec, device=None, random_weights: bool = False):
    """A VFM in eval mode on ``device`` (see the module docstring): RADIO as a
    :class:`VisionFoundationModel`, DINOv2 / DINOv3 as a
    :class:`~ovseg.methods.vfm.TransformersVfm` (CorrCLIPv2's preprocessing). Its ``name`` keys
    bank files: CorrCLIPv2's alias (``radiov3``, ``dinov2``...) when one was given.

    ``random_weights`` builds a registered RADIO architecture with random weights, for timing
    only (it warns). Raises ValueError (unknown name), TypeError (wrong type),
    FileNotFoundError (weights not on disk, with the command that fetches them).
    """
    from ovseg.methods.vfm import TransformersVfm, check_vfm, tiny_dinov2_vfm
    from ovseg.models.build import resolve_device
    from ovseg.models.radio_weights import build_radio

    device = resolve_device(device)
    if isinstance(spec, nn.Module) and hasattr(spec, "preprocess"):
        check_vfm(spec)
        return spec.eval().to(device)
    if not isinstance(spec, str) or not spec.strip():
        raise TypeError(f"vfm must be a name, 'NAME:/path', 'hf:ORG/NAME' or a model, got {spec!r}")
    name = VFM_ALIASES.get(spec, spec)
    if name == TINY:  # the tiny DINOv2 of the bank tests (key dinov2-tiny)
        return tiny_dinov2_vfm().to(device)
    if name.startswith("hf:") or name in ("dinov2-tiny-random", "dinov3-tiny-random"):
        if random_weights:
            raise ValueError("random_weights is supported for RADIO architectures only")
        if name.startswith("hf:"):
            model_id = name.removeprefix("hf:")
            model = _hf_dino(model_id)
            key = spec if spec in VFM_ALIASES else vfm_key(model_id)
        else:
            model, key = _tiny_dino("dinov3" if "dinov3" in name else "dinov2"), spec
        return TransformersVfm(model, key).to(device)
    if name.partition(":")[0] in RADIO_ARCHS:
        model = build_radio(name, device, random_weights=random_weights)
        return VisionFoundationModel(spec, model).to(device)
    raise ValueError(
        f"unknown VFM {spec!r}; known names: {', '.join(vfm_names())}; or 'NAME:/path' (a RADIO "
        "checkpoint of architecture NAME) or 'hf:ORG/NAME' (a DINOv2/DINOv3 Hugging Face model)"
    )


def vfm_key(model_id: str) -> str:
    """The bank key of a transformers VFM: ``dinov3`` / ``dinov2`` for those families (the
    reference's keys, ViT-L with registers), else the id made file-safe."""
    low = model_id.lower()
    for fam in ("dinov3", "dinov2"):
        if fam in low:
            return fam
    return re.sub(r"[^A-Za-z0-9.-]+", "-", model_id).strip("-")


def _hf_dino(model_id: str) -> nn.Module:
    from transformers import AutoConfig, AutoModel

    try:  # the local folder or the Hugging Face cache only
        config = AutoConfig.from_pretrained(model_id, local_files_only=True)
        if config.model_type not in _DINO_TYPES:
            raise ValueError(
                f"hf:{model_id} is a {config.model_type!r} model; VFMs are DINOv2, "
                "DINOv2 with registers or DINOv3 ViT models (or RADIO by name)"
            )
        model = AutoModel.from_pretrained(model_id, local_files_only=True)
    except OSError as e:
        raise FileNotFoundError(
            f"Hugging Face model {model_id!r} is not in the Hugging Face cache (HF_HOME or "
            f"HF_HUB_CACHE set where) and is not a local folder ({e}). Fetch it with: "
            f"hf download {model_id} (DINOv3 needs its licence accepted on the Hub first)"
        ) from e
    return model.eval()


def _tiny_dino(family: str, seed: int = 0) -> nn.Module:
    from transformers import (
        Dinov2WithRegistersConfig,
        Dinov2WithRegistersModel,
        DINOv3ViTConfig,
        DINOv3ViTModel,
    )

    common = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_register_tokens=4)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if family == "dinov3":
            model = DINOv3ViTModel(DINOv3ViTConfig(intermediate_size=128, patch_size=16, **common))
        else:
            config = Dinov2WithRegistersConfig(patch_size=14, image_size=56, **common)
            model = Dinov2WithRegistersModel(config)
    return model.eval()
