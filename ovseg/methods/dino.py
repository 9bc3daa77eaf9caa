"""DINO ViT backbones (Caron et al. 2021) built from timm, with DINO's own forward.

The model class is ``timm.models.vision_transformer.VisionTransformer``: its parameter names are
the ones of DINO's official checkpoints (``cls_token``, ``pos_embed``, ``patch_embed.proj``,
``blocks.N.norm1`` / ``attn.qkv`` / ``attn.proj`` / ``norm2`` / ``mlp.fc1`` / ``mlp.fc2``,
``norm``), and for DINO's configurations (``qkv_bias=True``, LayerNorm eps 1e-6, exact GELU, MLP
ratio 4, no head) every block computes what DINO's ``vision_transformer.Block`` computes.

The forward is *not* timm's: timm resamples the position table with ``size=(h, w)``, whereas the
methods built on DINO (ProxyCLIP, CorrCLIP, Trident) call DINO's own ``prepare_tokens``, whose
``interpolate_pos_encoding`` uses bicubic interpolation with
``scale_factor = ((h + 0.1) / sqrt(N), (w + 0.1) / sqrt(N))`` (``h, w`` the token grid, ``N`` the
number of patches in the 224x224 table) and keeps the table unchanged when the token count and
both pixel sides agree. :func:`dino_embed`, :func:`dino_tokens`, :func:`dino_last_features`,
:func:`dino_feature_map` and :func:`dino_last_qkv` reproduce that forward.

All tensors are float (float32 unless the model was cast); images are ``(B, 3, H, W)``,
normalised with ImageNet mean/std (``IMAGENET_MEAN`` / ``IMAGENET_STD``, 0-1 pixel scale).
Sides that are not multiples of the patch size are cropped by the patch convolution, as in DINO.

The official checkpoints (URLs, file names) are registered in
``ovseg.models.weights.DINO_CHECKPOINTS``, keyed by the architecture names of
:data:`DINO_ARCHS`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "DINO_ARCHS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "build_dino",
    "check_dino",
    "dino_block",
    "dino_embed",
    "dino_feature_map",
    "dino_grid",
    "dino_last_features",
    "dino_last_qkv",
    "dino_pos_encoding",
    "dino_tokens",
    "load_dino_state_dict",
    "tiny_dino",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# DINO's hubconf: vit_small = 384 wide, 6 heads; vit_base = 768 wide, 12 heads; both 12 blocks,
# MLP ratio 4, qkv bias, LayerNorm eps 1e-6, trained at 224x224.
DINO_ARCHS: dict[str, dict[str, int]] = {
    "dino_vits16": {"patch_size": 16, "embed_dim": 384, "depth": 12, "num_heads": 6},
    "dino_vits8": {"patch_size": 8, "embed_dim": 384, "depth": 12, "num_heads": 6},
    "dino_vitb16": {"patch_size": 16, "embed_dim": 768, "depth": 12, "num_heads": 12},
    "dino_vitb8": {"patch_size": 8, "embed_dim": 768, "depth": 12, "num_heads": 12},
}
DINO_IMG_SIZE = 224


def _make_vit(
    patch_size: int,
    embed_dim: int,
    depth: int,
    num_heads: int,
    img_size: int = DINO_IMG_SIZE,
    device: torch.device | str | None = None,
) -> nn.Module:
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(
        img_size=img_size,
        patch_size=patch_size,
        num_classes=0,
        global_pool="token",
        embed_dim=embed_dim,
        depth=depth,
        num_heads=num_heads,
        mlp_ratio=4.0,
        qkv_bias=True,
        class_token=True,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
        act_layer=nn.GELU,
        device=device,
    )


def _check_arch(arch: str) -> dict[str, int]:
    if not isinstance(arch, str) or arch not in DINO_ARCHS:
        raise ValueError(f"unknown DINO arch {arch!r}; expected one of {sorted(DINO_ARCHS)}")
    return DINO_ARCHS[arch]


def _fmt_keys(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def load_dino_state_dict(
    model: nn.Module,
    state_dict: Mapping[str, Tensor],
    name: str = "the DINO model",
    device: torch.device | str | None = None,
) -> None:
    """Load an official-format DINO state dict into ``model`` strictly.

    The tensors are copied (float32, or the model's dtype when it has real parameters) onto
    ``device`` (default: the model's device, CPU for a model on the meta device) and assigned
    to the model, so a model built on the meta device is materialised without a random init.

    Raises:
        ValueError: missing keys, unexpected keys or shape mismatches (all named, with both
            shapes).
        TypeError: ``state_dict`` is not a mapping of str to tensors.
    """
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict must be a mapping of str to Tensor, got {type(state_dict)}")
    bad = [str(k) for k, v in state_dict.items() if not isinstance(v, Tensor)]
    if bad:
        raise TypeError(f"state_dict values must be tensors; not tensors: {_fmt_keys(bad)}")
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [str(k) for k in state_dict if k not in expected]
    shapes = [
        f"{k}: got {tuple(state_dict[k].shape)}, expected {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys: {_fmt_keys(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_fmt_keys(unexpected)}")
        if shapes:
            parts.append(f"shape mismatches: {_fmt_keys(shapes, limit=4)}")
        hint = ""
        prefixes = ("module.", "backbone.", "student", "teacher")
        if any(str(k).startswith(prefixes) for k in state_dict):
            hint = (
                " (keys look like a DINO training checkpoint: pass the 'backbone only' file, "
                "or the teacher's entries with the 'module.'/'backbone.' prefixes removed)"
            )
        raise ValueError(f"state dict does not match {name}: " + "; ".join(parts) + hint)
    ref = next(iter(expected.values()))
    if device is None:
        device = "cpu" if ref.is_meta else ref.device
    dtype = torch.float32 if ref.is_meta else ref.dtype
    tensors = {
        k: state_dict[k].detach().to(device=device, dtype=dtype, copy=True) for k in expected
    }
    model.load_state_dict(tensors, strict=True, assign=True)


def build_dino(
    arch: str = "dino_vitb8",
    state_dict: Mapping[str, Tensor] | None = None,
    *,
    device: torch.device | str | None = None,
):
    """A DINO ViT (timm ``VisionTransformer``) of architecture ``arch``, in eval mode.

    Args:
        arch: ``"dino_vitb8"``, ``"dino_vitb16"``, ``"dino_vits8"`` or ``"dino_vits16"``
            (DINO's hubconf names).
        state_dict: an official DINO backbone state dict (e.g. ``torch.load`` of a file in
            ``ovseg.models.weights.DINO_CHECKPOINTS``), loaded strictly as float32 (the model
            is built on the meta device first, so no time goes into a random init); None keeps
            timm's random init.
        device: where the parameters live (default CPU; ``"meta"`` gives a weightless model
            whose layout can be inspected).

    Raises:
        ValueError: unknown ``arch``, or a state dict whose keys or shapes do not match (the
            message names them).
        TypeError: ``state_dict`` is not a mapping of tensors.
    """
    spec = _check_arch(arch)
    if state_dict is None:
        return _make_vit(**spec, device=device).eval()
    model = _make_vit(**spec, device="meta")
    load_dino_state_dict(model, state_dict, arch, device=device)
    return model.eval()


def tiny_dino(
    patch_size: int = 8,
    seed: int = 0,
    *,
    embed_dim: int = 64,
    depth: int = 2,
    num_heads: int = 2,
    img_size: int = DINO_IMG_SIZE,
):
    """A tiny random DINO-style ViT of the same class as :func:`build_dino`, for tests.

    Every parameter is drawn from a generator seeded with ``seed`` (weights ~ N(0, 1/fan_in),
    LayerNorm scales 1 + N(0, 0.1^2), biases N(0, 0.1^2), class token and position table
    N(0, 0.5^2)), so attention maps and position interpolation are far from trivial. The global
    RNG is not touched. Eval mode.
    """
    if patch_size not in (8, 16):
        raise ValueError(f"patch_size must be 8 or 16, got {patch_size!r}")
    for name, val in (("embed_dim", embed_dim), ("depth", depth), ("num_heads", num_heads)):
        if not isinstance(val, int) or val < 1:
            raise ValueError(f"{name} must be a positive int, got {val!r}")
    if embed_dim % num_heads:
        raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
    with torch.random.fork_rng(devices=[]):
        model = _make_vit(patch_size, embed_dim, depth, num_heads, img_size=img_size)
    gen = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen, dtype=p.dtype)
            if name in ("cls_token", "pos_embed"):
                p.copy_(0.5 * noise)
            elif p.ndim >= 2:
                p.copy_(noise / math.sqrt(p[0].numel()))
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * noise)
            else:
                p.copy_(0.1 * noise)
    return model.eval()


def check_dino(model: nn.Module) -> None:
    """Raise TypeError unless ``model`` is a DINO-style timm ViT (class token, learnt table)."""
    from timm.models.vision_transformer import VisionTransformer

    if not isinstance(model, VisionTransformer):
        raise TypeError(
            f"expected a timm VisionTransformer from build_dino/tiny_dino, got {type(model)}"
        )
    if (
        model.cls_token is None
        or model.reg_token is not None
        or model.no_embed_class
        or model.pos_embed is None
    ):
        raise TypeError("DINO forward needs a class token, no register tokens and a learnt table")


def _patch_size(model: nn.Module) -> int:
    p = model.patch_embed.proj.kernel_size
    if p[0] != p[1]:
        raise TypeError(f"non-square patches {p} are not DINO's")
    return int(p[0])


def _check_images(model: nn.Module, x: Tensor) -> tuple[int, int]:
    if not isinstance(x, Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(x)}")
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"images must be (B, 3, H, W), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"images must be a float tensor (ImageNet-normalised), got {x.dtype}")
    p = _patch_size(model)
    if x.shape[2] < p or x.shape[3] < p:
        raise ValueError(f"images of {tuple(x.shape[2:])} are smaller than one {p}px patch")
    return int(x.shape[2]), int(x.shape[3])


def dino_grid(model: nn.Module, height: int, width: int) -> tuple[int, int]:
    """The token grid ``(height // patch, width // patch)`` DINO produces for an input size."""
    p = _patch_size(model)
    return height // p, width // p


def dino_pos_encoding(model: nn.Module, height: int, width: int) -> Tensor:
    """DINO's ``interpolate_pos_encoding`` for an input of ``height x width`` pixels.

    Returns the table ``(1, 1 + gh * gw, D)`` (class entry first): the stored table unchanged
    when ``gh * gw == N`` and ``height == width``; otherwise the patch part resized bicubically
    with ``scale_factor = ((gh + 0.1) / sqrt(N), (gw + 0.1) / sqrt(N))`` (no ``size``,
    ``align_corners=False``), as DINO's code does.
    """
    check_dino(model)
    pos = model.pos_embed
    n = pos.shape[1] - 1
    side = int(math.sqrt(n))
    if side * side != n:
        raise ValueError(f"position table of {n} patches is not square")
    gh, gw = dino_grid(model, height, width)
    if gh * gw == n and height == width:
        return pos
    dim = pos.shape[-1]
    patch_pos = F.interpolate(
        pos[:, 1:].reshape(1, side, side, dim).permute(0, 3, 1, 2),
        scale_factor=((gh + 0.1) / math.sqrt(n), (gw + 0.1) / math.sqrt(n)),
        mode="bicubic",
    )
    if patch_pos.shape[-2:] != (gh, gw):
        raise RuntimeError(f"position interpolation gave {tuple(patch_pos.shape[-2:])}")
    patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, gh * gw, dim)
    return torch.cat((pos[:, :1], patch_pos), dim=1)


def dino_embed(model: nn.Module, x: Tensor) -> Tensor:
    """DINO's ``prepare_tokens``: patch embedding, class token, interpolated position table.

    Args:
        x: ``(B, 3, H, W)`` float, ImageNet-normalised.

    Returns:
        ``(B, 1 + gh * gw, D)``, class token first, patches in row-major order.
    """
    check_dino(model)
    h, w = _check_images(model, x)
    tokens = model.patch_embed.proj(x).flatten(2).transpose(1, 2)
    cls = model.cls_token.expand(tokens.shape[0], -1, -1)
    tokens = torch.cat((cls, tokens), dim=1)
    tokens = tokens + dino_pos_encoding(model, h, w)
    return model.pos_drop(tokens)


def dino_block(blk: nn.Module, x: Tensor) -> Tensor:
    """One timm ViT block computed as DINO's ``Block.forward`` does.

    The attention ``softmax((q @ k^T) * scale) @ v`` per head runs through PyTorch's fused
    ``scaled_dot_product_attention`` (no mask: the flash kernels apply on the CPU and the GPU,
    the ``N x N`` weights per head are never written out): DINO's formula, equal to its explicit
    float32 computation to rounding (about 1e-6 relative; ProxyCLIP's ViT-B/8 windows have
    ``N = 1765`` tokens, where the explicit form writes 150 MB of weights per block and
    window). Layer scale, drop path and q/k norms are applied as the block defines them (all
    identities for DINO configurations). ``x``: ``(B, N, D)``.
    """
    a = blk.attn
    b, n, _ = x.shape
    qkv = a.qkv(blk.norm1(x)).reshape(b, n, 3, a.num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    q, k = a.q_norm(q), a.k_norm(k)
    y = F.scaled_dot_product_attention(q, k, v, scale=a.scale)
    y = y.transpose(1, 2).reshape(b, n, -1)
    y = a.proj_drop(a.proj(a.norm(y)))
    x = x + blk.drop_path1(blk.ls1(y))
    return x + blk.drop_path2(blk.ls2(blk.mlp(blk.norm2(x))))


def dino_tokens(model: nn.Module, x: Tensor) -> list[Tensor]:
    """The token sequence after each block (before the final norm): ``depth`` tensors
    ``(B, 1 + gh * gw, D)``."""
    tokens = dino_embed(model, x)
    out = []
    for blk in model.blocks:
        tokens = dino_block(blk, tokens)
        out.append(tokens)
    return out


def dino_last_features(model: nn.Module, x: Tensor) -> Tensor:
    """DINO's ``get_intermediate_layers(x)[0]``: the final norm of the last block's output.

    This is what ProxyCLIP (and Trident) use as DINO features. Returns ``(B, 1 + gh * gw, D)``,
    class token first.
    """
    tokens = dino_embed(model, x)
    for blk in model.blocks:
        tokens = dino_block(blk, tokens)
    return model.norm(tokens)


def dino_feature_map(model: nn.Module, x: Tensor) -> Tensor:
    """:func:`dino_last_features` with the class token dropped, as a map ``(B, D, gh, gw)``."""
    feats = dino_last_features(model, x)
    gh, gw = dino_grid(model, x.shape[2], x.shape[3])
    return feats[:, 1:].transpose(1, 2).reshape(feats.shape[0], feats.shape[2], gh, gw)


def dino_last_qkv(model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Query, key and value of the last block's attention (``attn.qkv`` on ``norm1``).

    Each is ``(B, 1 + gh * gw, D)`` with all heads side by side (head ``h`` in channels
    ``h * head_dim : (h + 1) * head_dim``), class token first: the layout ProxyCLIP's and
    CorrCLIP's forward hook on ``blocks[-1].attn.qkv`` gives after
    ``reshape(B, N, 3, heads, -1).permute(2, 0, 3, 1, 4)`` and ``transpose(1, 2).reshape``.
    CorrCLIP's features are ``q + k`` of this with the class token dropped.
    """
    tokens = dino_embed(model, x)
    for blk in model.blocks[:-1]:
        tokens = dino_block(blk, tokens)
    last = model.blocks[-1]
    qkv = last.attn.qkv(last.norm1(tokens))
    q, k, v = qkv.chunk(3, dim=-1)
    return q, k, v
