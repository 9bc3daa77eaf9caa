"""CLIP backends: one small interface over open_clip and Hugging Face transformers models.

A backend turns normalised pixel batches and strings into L2-normalised embeddings in a shared
space. Preprocessing constants (input size, mean, std) come from the model's own config, so they
never drift from the weights.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ovseg.constants import OPENAI_MEAN, OPENAI_STD


class ClipBackend(ABC):
    """Common interface of the CLIP models ovseg scores regions with.

    Attributes:
        name: a readable identifier of the model (used in cache keys and reports).
        image_size: side S of the square input the image tower expects.
        mean, std: per-channel normalisation for RGB in [0, 1].
        logit_scale: the model's learned temperature (multiplies cosine similarities).
    """

    name: str
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    logit_scale: float
    model: torch.nn.Module

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @abstractmethod
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """``pixels`` B x 3 x S x S, normalised with ``mean``/``std`` -> B x D, unit norm."""

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """N strings -> the text tower's inputs on the model's device: ``input_ids`` (N, C)
        int64 padded to the context length C (and ``attention_mask`` (N, C) where the model
        takes one). Cache keys of text embeddings are built from these ids; a backend without
        it (one that only overrides :meth:`encode_text`) keeps its embeddings in memory only."""
        raise NotImplementedError(f"{type(self).__name__} does not tokenize")

    def encode_tokens(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        """:meth:`tokenize`'s output -> N x D float32, unit norm. Runs only the positions each
        batch needs (see :mod:`ovseg.scoring.text_tower`); equal to the full run up to float
        rounding."""
        raise NotImplementedError(f"{type(self).__name__} does not encode tokens")

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """N strings -> N x D float32, unit norm. Subclasses implement this, or
        :meth:`tokenize` and :meth:`encode_tokens`."""
        return self.encode_tokens(self.tokenize(texts))

    def text_identity(self) -> str:
        """Hex SHA-256 identifying the text tower's weights and structure (not its device):
        what the disk cache of text embeddings is keyed on. Computed once per set of weights
        and remembered (see :func:`ovseg.scoring.text_cache.text_identity`)."""
        from ovseg.scoring.text_cache import text_identity

        return text_identity(self.model)

    @property
    @abstractmethod
    def supports_dense(self) -> bool:
        """Whether :meth:`dense_features` works: a ViT image tower with a class token."""

    @abstractmethod
    def dense_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """``pixels`` B x 3 x H x W (H, W multiples of the patch size) -> B x h x w x D patch
        embeddings in the joint space, unit norm (ClearCLIP-style last block: query-query
        attention, no residual, no MLP)."""

    def normalize(self, rgb01: torch.Tensor) -> torch.Tensor:
        """B x 3 x H x W RGB in [0, 1] -> normalised input for this model."""
        mean = torch.tensor(self.mean, device=rgb01.device, dtype=rgb01.dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=rgb01.device, dtype=rgb01.dtype).view(1, 3, 1, 1)
        return (rgb01 - mean) / std


def _qq_attention(x: torch.Tensor, q_w, q_b, v_w, v_b, out_w, out_b, heads: int) -> torch.Tensor:
    """Query-query self-attention (ClearCLIP) over tokens x: B x L x C -> B x L x C."""
    b, n, c = x.shape
    q = F.linear(x, q_w, q_b).view(b, n, heads, c // heads).transpose(1, 2)
    v = F.linear(x, v_w, v_b).view(b, n, heads, c // heads).transpose(1, 2)
    out = F.scaled_dot_product_attention(q, q, v)
    return F.linear(out.transpose(1, 2).reshape(b, n, c), out_w, out_b)


def _interpolate_pos(pos: torch.Tensor, n_prefix: int, grid: tuple[int, int]) -> torch.Tensor:
    """Resize a (n_prefix + g*g) x C positional table to (n_prefix + grid[0]*grid[1]) x C."""
    prefix, patches = pos[:n_prefix], pos[n_prefix:]
    side = int(round(patches.shape[0] ** 0.5))
    if (side, side) == tuple(grid):
        return pos
    patches = patches.reshape(1, side, side, -1).permute(0, 3, 1, 2)
    patches = F.interpolate(patches, size=grid, mode="bicubic", align_corners=False)
    return torch.cat([prefix, patches.permute(0, 2, 3, 1).reshape(grid[0] * grid[1], -1)])


class OpenClipBackend(ClipBackend):
    """An ``open_clip`` model (``CLIP`` or ``CustomTextCLIP``) with its tokenizer."""

    def __init__(self, model: torch.nn.Module, tokenizer=None, name: str = "open_clip"):
        import open_clip

        self.model = model.eval()
        self.name = name
        self.tokenizer = tokenizer or open_clip.tokenizer.SimpleTokenizer(
            context_length=getattr(model, "context_length", 77)
        )
        size = getattr(model.visual, "image_size", 224)
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        cfg = open_clip.get_model_preprocess_cfg(model)
        self.mean = tuple(cfg.get("mean", OPENAI_MEAN))
        self.std = tuple(cfg.get("std", OPENAI_STD))
        self.logit_scale = float(model.logit_scale.exp().item())

    @torch.inference_mode()
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels.to(self.device, self.dtype)
        return F.normalize(self.model.encode_image(x).float(), dim=-1)

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        return {"input_ids": self.tokenizer(list(texts)).to(self.device)}

    def encode_tokens(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        from ovseg.scoring.text_tower import encode_open_clip_tokens

        feats = encode_open_clip_tokens(self.model, tokens["input_ids"])
        return F.normalize(feats.float(), dim=-1)

    @property
    def supports_dense(self) -> bool:
        visual = self.model.visual
        return all(hasattr(visual, a) for a in ("transformer", "conv1", "class_embedding"))

    @torch.inference_mode()
    def dense_features(self, pixels: torch.Tensor) -> torch.Tensor:
        visual = self.model.visual
        if not self.supports_dense:
            raise TypeError(
                f"dense scoring needs a ViT image tower with a class token; "
                f"{self.name} has {type(visual).__name__}"
            )
        x = pixels.to(self.device, self.dtype)
        x = visual.conv1(x)
        b, c, h, w = x.shape
        x = x.flatten(2).transpose(1, 2)
        cls = visual.class_embedding.to(x.dtype).expand(b, 1, c)
        x = torch.cat([cls, x], dim=1)
        x = x + _interpolate_pos(visual.positional_embedding.to(x.dtype), 1, (h, w))
        x = visual.patch_dropout(x)
        x = visual.ln_pre(x)
        blocks = visual.transformer.resblocks
        seq_first = not getattr(visual.transformer, "batch_first", True)
        x = x.transpose(0, 1) if seq_first else x
        for block in blocks[:-1]:
            x = block(x)
        x = x.transpose(0, 1) if seq_first else x
        last = blocks[-1]
        attn = last.attn
        q_w, k_w, v_w = attn.in_proj_weight.chunk(3)
        q_b, k_b, v_b = attn.in_proj_bias.chunk(3)
        x = _qq_attention(
            last.ln_1(x),
            q_w,
            q_b,
            v_w,
            v_b,
            attn.out_proj.weight,
            attn.out_proj.bias,
            attn.num_heads,
        )
        x = visual.ln_post(x[:, 1:])
        if visual.proj is not None:
            x = x @ visual.proj
        return F.normalize(x.float(), dim=-1).reshape(b, h, w, -1)


class HFClipBackend(ClipBackend):
    """A Hugging Face ``transformers`` CLIP or SigLIP model with its tokenizer."""

    def __init__(self, model: torch.nn.Module, tokenizer, name: str = "hf", image_processor=None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        vcfg = model.config.vision_config
        self.image_size = int(vcfg.image_size)
        self.patch_size = int(vcfg.patch_size)
        mean = getattr(image_processor, "image_mean", None) or OPENAI_MEAN
        std = getattr(image_processor, "image_std", None) or OPENAI_STD
        self.mean, self.std = tuple(mean), tuple(std)
        self.logit_scale = float(model.logit_scale.exp().item())
        self.context_length = int(model.config.text_config.max_position_embeddings)

    @staticmethod
    def _pooled(out) -> torch.Tensor:
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    @torch.inference_mode()
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        out = self.model.get_image_features(pixel_values=pixels.to(self.device, self.dtype))
        return F.normalize(self._pooled(out).float(), dim=-1)

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        enc = self.tokenizer(
            list(texts),
            padding="max_length",
            truncation=True,
            max_length=self.context_length,
            return_tensors="pt",
        )
        keep = ("input_ids", "attention_mask")
        return {k: v.to(self.device) for k, v in enc.items() if k in keep}

    def encode_tokens(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        from ovseg.scoring.text_tower import encode_hf_tokens

        feats = encode_hf_tokens(self.model, tokens["input_ids"], tokens.get("attention_mask"))
        return F.normalize(feats.float(), dim=-1)

    @property
    def supports_dense(self) -> bool:
        vm = getattr(self.model, "vision_model", None)
        return hasattr(self.model, "visual_projection") and hasattr(
            getattr(vm, "embeddings", None), "class_embedding"
        )

    @torch.inference_mode()
    def dense_features(self, pixels: torch.Tensor) -> torch.Tensor:
        vm = self.model.vision_model
        if not self.supports_dense:
            raise TypeError(
                f"dense scoring supports CLIP-style HF models; {self.name} is "
                f"{type(self.model).__name__}"
            )
        x = pixels.to(self.device, self.dtype)
        h, w = x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size
        emb = vm.embeddings
        patches = emb.patch_embedding(x).flatten(2).transpose(1, 2)
        cls = emb.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        tokens = torch.cat([cls, patches], dim=1)
        tokens = tokens + _interpolate_pos(emb.position_embedding.weight.to(x.dtype), 1, (h, w))
        tokens = vm.pre_layrnorm(tokens)
        layers = vm.encoder.layers
        for layer in layers[:-1]:
            out = layer(tokens, None)
            tokens = out[0] if isinstance(out, tuple) else out
        sa = layers[-1].self_attn
        tokens = _qq_attention(
            layers[-1].layer_norm1(tokens),
            sa.q_proj.weight,
            sa.q_proj.bias,
            sa.v_proj.weight,
            sa.v_proj.bias,
            sa.out_proj.weight,
            sa.out_proj.bias,
            sa.num_heads,
        )
        tokens = vm.post_layernorm(tokens[:, 1:])
        feats = self.model.visual_projection(tokens)
        return F.normalize(feats.float(), dim=-1).reshape(x.shape[0], h, w, -1)
