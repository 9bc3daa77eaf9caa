"""RADIO image encoders (NVIDIA's RADIOv2.5 and C-RADIOv3) on timm's ViT blocks, computing what
RADIO's own ``RADIOModel.forward`` returns, without RADIO's code or ``trust_remote_code``.

Facts from NVlabs/RADIO (``hubconf.py``, ``radio/radio_model.py``, ``enable_cpe_support.py``,
``vit_patch_generator.py``, ``cls_token.py``, ``input_conditioner.py``, ``feature_normalizer.py``,
``extra_timm_models.py``; GitHub main of 2025-10):

- Input: RGB in ``[0, 1]``, height and width multiples of the patch size (16); RADIO raises
  otherwise and offers ``get_nearest_supported_resolution``: ``round(side / 16) * 16``, at least
  16 (Python's ``round``). The input conditioner inside the model normalises with the mean/std
  stored in the checkpoint (OpenAI CLIP's by default).
- Backbone: a timm ``VisionTransformer`` whose ``patch_embed``, ``cls_token`` and ``pos_embed``
  are replaced by a CPE patch generator, run as patch generator -> blocks -> ``norm`` (an
  identity unless the checkpoint was trained with ``model_norm``; ``norm_pre`` is never run).
  The generator: patches flattened as ``(c, y, x)`` and projected by a bias-free linear layer;
  plus a position table of ``(2048 / 16)^2 = 128 x 128`` entries; then the prefix tokens are
  prepended (``num_cls_tokens`` summary tokens, one per distinct teacher, then
  ``num_registers`` registers). C-RADIOv3-B/L (timm ``vit_*_patch16_v2_224``) have LayerScale
  (stored as ``ls1.grandma``, RADIO's rename of ``gamma``) and an unused timm ``reg_token``.
- Position table at inference (CPE, eval mode): for a ``h x w`` patch grid other than the full
  table, resize the table bilinearly (``align_corners=False``, in float32) to ``max(h, w)``
  squared, keep the top-left ``h x w``. (C-RADIOv3 was released with ``align_corners=True``;
  RADIO's code switched to ``False`` on 2025-06-28 and ``torch.hub`` runs GitHub main.)
- Outputs (``forward``): ``summary`` = the summary tokens at ``summary_idxs`` (the first slot of
  each distinct teacher with ``use_summary``), flattened to ``(B, len(idxs) * D)``; ``features``
  = the tokens after all prefix tokens, through the feature normaliser if the checkpoint has
  one (``(x - mean) @ tx.T``), as ``(B, D, H/16, W/16)`` with ``feature_fmt='NCHW'``.
- No windowed attention: ViTDet windows are an opt-in of ``torch.hub.load`` that C-RADIOv3 does
  not support and CorrCLIPv2 does not use; adaptors (teacher heads) are not loaded either.

How CorrCLIPv2 (zdk258/CorrCLIP, ``CorrCLIPv2/vfms/factory.py``) uses it: ``radiov3`` =
``c-radio_v3-l`` (default), ``radiov2.5`` = ``radio_v2.5-l``; the whole image at its own size,
``pil_to_tensor / 255``, resized bilinearly (``align_corners=False``) to the nearest supported
resolution, ``model(x, feature_fmt='NCHW')[1]``: the spatial features only (fp16 autocast on
CUDA; ovseg computes in float32). They are then resized bilinearly to the image size,
L2-normalised over channels, and each region's query is the mean of the normalised features
over its mask, L2-normalised again (``corrclip_segmentor.py``,
``memory_bank_builder/generate_vfm_embeddings.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ovseg.constants import OPENAI_MEAN, OPENAI_STD

__all__ = [
    "RADIO_ARCHS",
    "RADIO_TINY",
    "RadioArch",
    "RadioEncoder",
    "RadioOutput",
    "cpe_position_embedding",
    "nearest_supported_resolution",
]

RADIO_TINY = "radio-tiny-random"


@dataclass(frozen=True)
class RadioArch:
    """Hyperparameters of one RADIO ViT.

    ``num_cls_tokens`` summary tokens (one per distinct teacher) and ``num_registers`` registers
    precede the patches. ``layer_scale``, ``final_norm``, ``feature_normalizer`` and the register
    count are read from a checkpoint when one is loaded (``ovseg.models.radio_weights``).
    """

    embed_dim: int
    depth: int
    num_heads: int
    num_cls_tokens: int
    num_registers: int
    layer_scale: bool
    patch_size: int = 16
    max_resolution: int = 2048
    preferred_resolution: int = 512
    mlp_ratio: float = 4.0
    final_norm: bool = False
    feature_normalizer: bool = False
    pos_align_corners: bool = False

    @property
    def grid(self) -> int:
        """Side of the position table in patches (RADIO rounds the maximum size up)."""
        return -(-self.max_resolution // self.patch_size)


# Sizes: timm's ViT-B/L (RADIO's model names vit_*_patch16_224 for v2.5, vit_*_patch16_v2_224
# for C-RADIOv3). Summary tokens: four teachers each (README: v2.5 clip, siglip, dino_v2, sam;
# C-RADIOv3 clip, siglip2-g, dino_v2, sam). Registers: 4 for C-RADIOv3 (8 prefix tokens, as
# timm's conversion of the published weights has); for v2.5 an assumption the file overrides.
RADIO_ARCHS: dict[str, RadioArch] = {
    "radio_v2.5-b": RadioArch(768, 12, 12, 4, 4, False, preferred_resolution=768),
    "radio_v2.5-l": RadioArch(1024, 24, 16, 4, 4, False, preferred_resolution=768),
    "c-radio_v3-b": RadioArch(768, 12, 12, 4, 4, True),
    "c-radio_v3-l": RadioArch(1024, 24, 16, 4, 4, True),
    RADIO_TINY: RadioArch(32, 2, 2, 2, 2, True, max_resolution=256, preferred_resolution=64),
}


class RadioOutput(NamedTuple):
    """``summary``: ``(B, S * D)`` float; ``features``: ``(B, D, h, w)`` (NCHW) or ``(B, h*w, D)``
    (NLC), ``h, w`` = input height and width over the patch size."""

    summary: Tensor
    features: Tensor


def nearest_supported_resolution(height: int, width: int, step: int = 16) -> tuple[int, int]:
    """RADIO's ``get_nearest_supported_resolution``: each side rounded to a multiple of ``step``
    (Python's ``round``), at least ``step``."""
    return tuple(max(int(round(side / step) * step), step) for side in (height, width))


def cpe_position_embedding(
    pos_embed: Tensor, grid: tuple[int, int], size: tuple[int, int], align_corners: bool = False
) -> Tensor:
    """RADIO's eval-mode CPE position embedding for a ``size = (h, w)`` patch grid.

    ``pos_embed``: ``(1, R * C, D)`` table of a ``grid = (R, C)`` layout. Returns
    ``(1, h * w, D)`` in ``pos_embed``'s dtype: the table itself when ``(h, w) == (R, C)``, else
    the table resized bilinearly (float32) to ``max(h, w)`` squared, top-left ``h x w`` kept.
    """
    rows, cols = grid
    h, w = size
    if (rows, cols) == (h, w):
        return pos_embed
    table = pos_embed.reshape(1, rows, cols, -1).permute(0, 3, 1, 2)
    side = max(h, w)
    table = F.interpolate(
        table.float(), size=(side, side), mode="bilinear", align_corners=align_corners
    ).to(pos_embed.dtype)
    table = table[..., :h, :w]
    if table.shape[-2:] != (h, w):  # never in practice: kept as RADIO has it
        table = F.interpolate(
            table.float(), size=(h, w), mode="bilinear", align_corners=align_corners
        ).to(pos_embed.dtype)
    return table.flatten(2).permute(0, 2, 1)


class InputConditioner(nn.Module):
    """``(x - norm_mean) / norm_std`` per channel (buffers ``(3, 1, 1)``, for ``[0, 1]`` input)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("norm_mean", torch.tensor(OPENAI_MEAN).view(3, 1, 1))
        self.register_buffer("norm_std", torch.tensor(OPENAI_STD).view(3, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.norm_mean) / self.norm_std


class _Tokens(nn.Module):
    def __init__(self, count: int, dim: int) -> None:
        super().__init__()
        self.token = nn.Parameter(torch.randn(count, dim) * dim**-0.5)


class PatchGenerator(nn.Module):
    """RADIO's ``ViTPatchGenerator`` at inference: patchify, project, add the CPE position
    embedding, prepend the summary and register tokens."""

    def __init__(self, arch: RadioArch) -> None:
        super().__init__()
        p, d = arch.patch_size, arch.embed_dim
        self.arch = arch
        self.embedder = nn.Linear(3 * p * p, d, bias=False)
        self.pos_embed = nn.Parameter(torch.randn(1, arch.grid**2, d) * d**-0.5)
        self.cls_token = _Tokens(arch.num_cls_tokens + arch.num_registers, d)

    def forward(self, x: Tensor) -> Tensor:
        b, c, height, width = x.shape
        p = self.arch.patch_size
        h, w = height // p, width // p
        patches = x.reshape(b, c, h, p, w, p).permute(0, 2, 4, 1, 3, 5).reshape(b, h * w, -1)
        patches = self.embedder(patches)
        grid = (self.arch.grid, self.arch.grid)
        pos = cpe_position_embedding(self.pos_embed, grid, (h, w), self.arch.pos_align_corners)
        patches = patches + pos
        prefix = self.cls_token.token.unsqueeze(0).expand(b, -1, -1)
        return torch.cat([prefix, patches], dim=1)


class _Backbone(nn.Module):
    def __init__(self, arch: RadioArch) -> None:
        super().__init__()
        from timm.models.vision_transformer import Block

        self.patch_generator = PatchGenerator(arch)
        init = 1e-5 if arch.layer_scale else None
        self.blocks = nn.Sequential(
            *(
                Block(
                    arch.embed_dim, arch.num_heads, arch.mlp_ratio, qkv_bias=True, init_values=init
                )
                for _ in range(arch.depth)
            )
        )
        self.norm = nn.LayerNorm(arch.embed_dim, eps=1e-6) if arch.final_norm else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.blocks(self.patch_generator(x)))


class FeatureNormalizer(nn.Module):
    """RADIO's output standardisation of the spatial features: ``(x - mean) @ tx.T``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("tx", torch.eye(dim))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) @ self.tx.T


class RadioEncoder(nn.Module):
    """A RADIO model: ``forward(x) -> RadioOutput(summary, features)`` as RADIO's ``forward``.

    Parameter names follow RADIO's ``RADIOModel`` (``input_conditioner.*``,
    ``model.patch_generator.*``, ``model.blocks.N.*`` with timm's ``ls1.gamma``,
    ``feature_normalizer.*``, ``summary_idxs``), so its checkpoints map one to one
    (``ovseg.models.radio_weights``). Built with random weights; eval mode.
    """

    def __init__(self, arch: RadioArch, name: str = "radio") -> None:
        super().__init__()
        self.arch = arch
        self.name = name
        self.input_conditioner = InputConditioner()
        self.model = _Backbone(arch)
        self.feature_normalizer = (
            FeatureNormalizer(arch.embed_dim) if arch.feature_normalizer else nn.Identity()
        )
        self.register_buffer("summary_idxs", torch.arange(arch.num_cls_tokens))
        self.eval()

    @property
    def patch_size(self) -> int:
        return self.arch.patch_size

    @property
    def embed_dim(self) -> int:
        return self.arch.embed_dim

    def nearest_supported_resolution(self, height: int, width: int) -> tuple[int, int]:
        """The input size RADIO runs an image of ``height x width`` at (see the module doc)."""
        return nearest_supported_resolution(height, width, self.arch.patch_size)

    def forward(self, x: Tensor, feature_fmt: str = "NCHW") -> RadioOutput:
        """``x``: float ``(B, 3, H, W)`` RGB in ``[0, 1]``, ``H`` and ``W`` multiples of
        :attr:`patch_size`. Returns :class:`RadioOutput` (``feature_fmt`` ``"NCHW"`` or
        ``"NLC"``)."""
        if not isinstance(x, Tensor) or x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"x must be a (B, 3, H, W) tensor, got {getattr(x, 'shape', x)}")
        if not x.is_floating_point():
            raise TypeError(f"x must be a float tensor in [0, 1], got {x.dtype}")
        if feature_fmt not in ("NCHW", "NLC"):
            raise ValueError(f"feature_fmt must be 'NCHW' or 'NLC', got {feature_fmt!r}")
        p = self.arch.patch_size
        height, width = x.shape[-2:]
        if height % p or width % p:
            raise ValueError(
                f"input size {height}x{width} is not a multiple of the patch size {p}; resize to "
                f"{self.nearest_supported_resolution(height, width)} first"
            )
        tokens = self.model(self.input_conditioner(x))
        summary = tokens[:, : self.arch.num_cls_tokens][:, self.summary_idxs].flatten(1)
        features = self.feature_normalizer(
            tokens[:, self.arch.num_cls_tokens + self.arch.num_registers :]
        )
        if feature_fmt == "NCHW":
            features = features.reshape(x.shape[0], height // p, width // p, -1)
            features = features.permute(0, 3, 1, 2)
        return RadioOutput(summary, features)
