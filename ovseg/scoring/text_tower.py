"""CLIP's text tower run on only the positions a batch needs.

CLIP's text transformer is causal and its output is read at one position per prompt (the
end-of-text token): positions after it change nothing. Prompts are sorted by that position and
run in a few batches (:func:`~ovseg.scoring.text_prefix.length_batches`), each cut just after
its longest prompt's read position, so class templates (about 10 to 20 tokens) cost a fraction
of the full 77-position run, with the same embeddings up to float rounding. Where the tower's
blocks are open_clip's default ones, each prefix several prompts share runs once
(:mod:`ovseg.scoring.text_prefix`).

Truncation is used only where the structure is known to allow it: open_clip's built-in text
tower (``CLIP.encode_text``) and its ``TextTransformer`` (``CustomTextCLIP``), with a causal
mask, or with open_clip's padding mask in bidirectional mode, and argmax / eos / first pooling;
and transformers' ``CLIPModel``. Anything else (a class token, ``last`` pooling, a bidirectional
tower without padding mask, a Hugging Face text tower inside open_clip, an unknown model) runs
the model's own full call, batched the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ovseg.scoring.text_prefix import can_share, length_batches, shared_hidden

__all__ = ["POSITIONS", "encode_hf_tokens", "encode_open_clip_tokens", "truncatable"]

POSITIONS = 16384
"""Token positions per forward pass (rows x the batch's longest row): 880 class prompts of about
10 tokens run in one pass; the MLP's activations stay near 128 MB at width 512."""

_POOLS = ("argmax", "eos", "first")


@dataclass(frozen=True)
class _Tower:
    """The parts of an open_clip text tower a truncated run needs."""

    token_embedding: torch.nn.Module
    positional_embedding: torch.Tensor
    transformer: torch.nn.Module
    ln_final: torch.nn.Module
    projection: torch.nn.Module | torch.Tensor | None
    attn_mask: torch.Tensor | None  # None: bidirectional with open_clip's padding mask
    pool_type: str
    eos_id: int | None
    pad_id: int = 0
    embeds: Callable | None = None  # TextTransformer._embeds (builds the padding mask)


def _open_clip_tower(model) -> _Tower | None:
    """``model``'s text tower where its truncated run is known to be exact, else None: open_clip's
    built-in tower (``CLIP.encode_text``) or ``TextTransformer`` (``CustomTextCLIP``), causal or
    bidirectional with the padding mask, no class token, argmax / eos / first pooling."""
    try:
        from open_clip.model import CLIP, CustomTextCLIP
        from open_clip.transformer import TextTransformer
    except ImportError:
        return None
    encode = getattr(type(model), "encode_text", None)
    if encode is CLIP.encode_text:
        tower = _Tower(
            model.token_embedding, model.positional_embedding, model.transformer,
            model.ln_final, model.text_projection, model.attn_mask,
            getattr(model, "text_pool_type", "argmax"), getattr(model, "text_eos_id", None),
        )  # fmt: skip
    elif encode is CustomTextCLIP.encode_text and type(getattr(model, "text", None)) is (
        TextTransformer
    ):
        text = model.text
        if text.cls_emb is not None or text.output_tokens:
            return None
        if text.attn_mask is None and not text.use_pad_mask:  # every key counts
            return None
        tower = _Tower(
            text.token_embedding, text.positional_embedding, text.transformer, text.ln_final,
            text.text_projection, text.attn_mask, text.pool_type, text.eos_id, text.pad_id,
            text._embeds if text.attn_mask is None else None,
        )  # fmt: skip
    else:
        return None
    if tower.pool_type not in _POOLS or (tower.pool_type == "eos" and tower.eos_id is None):
        return None
    if tower.attn_mask is None and tower.embeds is None:
        return None
    return tower


def _pool_index(ids: torch.Tensor, pool_type: str, eos_id: int | None) -> torch.Tensor:
    """(N,) position each row is read at, by open_clip's ``text_global_pool`` rule."""
    if pool_type == "argmax":
        return ids.argmax(dim=-1)
    if pool_type == "eos":
        return (ids == eos_id).int().argmax(dim=-1)
    return torch.zeros(ids.shape[0], dtype=torch.long, device=ids.device)


def _causal_cut(mask: torch.Tensor | None, length: int) -> bool:
    """Whether no position before ``length`` attends to one at or after it."""
    if mask is None or mask.dim() != 2:
        return False
    return bool(torch.isneginf(mask[:length, length:]).all())


def _needed(tower: _Tower, ids: torch.Tensor) -> torch.Tensor:
    """(N,) positions each row needs: up to its read position (and, bidirectional, its last
    non-padding token)."""
    read = _pool_index(ids, tower.pool_type, tower.eos_id) + 1
    if tower.attn_mask is not None:
        return read
    positions = torch.arange(1, ids.shape[1] + 1, device=ids.device)
    return torch.maximum(read, ((ids != tower.pad_id) * positions).amax(dim=-1))


def _pool_project(tower: _Tower, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    from open_clip.transformer import text_global_pool

    x = text_global_pool(tower.ln_final(x), ids, tower.pool_type, eos_token_id=tower.eos_id)
    return _project(x, tower.projection)


def _run_truncated(tower: _Tower, ids: torch.Tensor) -> torch.Tensor | None:
    """One batch cut after its longest row's needed positions; None where the mask does not
    allow the cut (then the model's own call runs)."""
    n = int(_needed(tower, ids).max())
    ids = ids[:, :n]
    if tower.embeds is not None:  # TextTransformer's padding mask, built for n positions
        x, mask = tower.embeds(ids)
    else:
        if not _causal_cut(tower.attn_mask, n):
            return None
        cast = tower.transformer.get_cast_dtype()
        x = tower.token_embedding(ids).to(cast) + tower.positional_embedding[:n].to(cast)
        mask = tower.attn_mask[:n, :n]
    return _pool_project(tower, tower.transformer(x, attn_mask=mask), ids)


def _run_shared(tower: _Tower, ids, needed, positions) -> torch.Tensor | None:
    """Every row through :func:`~ovseg.scoring.text_prefix.shared_hidden`, or None where the
    layout does not allow it (a padding mask, other blocks, a row read at its first token)."""
    if tower.embeds is not None or len(ids) < 2 or int(needed.min()) < 2:
        return None
    if not can_share(tower.transformer, tower.attn_mask, int(needed.max())):
        return None
    hidden = shared_hidden(
        tower.token_embedding, tower.positional_embedding, tower.transformer, ids, needed,
        positions,
    )  # fmt: skip
    return _project(tower.ln_final(hidden), tower.projection)


def _project(x: torch.Tensor, projection) -> torch.Tensor:
    if projection is None:
        return x
    return projection(x) if isinstance(projection, torch.nn.Linear) else x @ projection


def truncatable(model) -> bool:
    """Whether ``model``'s text tower is one whose truncated run is known to be exact."""
    return _open_clip_tower(model) is not None or _hf_clip(model)


def _gather(n: int, parts: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    first = parts[0][1]
    out = first.new_empty((n, first.shape[-1]))
    for rows, feats in parts:
        out[rows.to(out.device)] = feats
    return out


@torch.inference_mode()
def encode_open_clip_tokens(
    model: torch.nn.Module,
    ids: torch.Tensor,
    positions: int = POSITIONS,
    share_prefixes: bool = True,
) -> torch.Tensor:
    """Text features of an open_clip model, as ``model.encode_text(ids)`` gives them.

    Args:
        model: an open_clip ``CLIP`` or ``CustomTextCLIP`` (any other model with
            ``encode_text`` runs its own full call).
        ids: ``(N, C)`` int64 token ids from the model's tokenizer, on the model's device.
        positions: token positions per forward pass (rows x padded length).
        share_prefixes: run each prefix that prompts share once (:mod:`ovseg.scoring.
            text_prefix`) where the tower's layout allows it.

    Returns:
        ``(N, D)`` unnormalised features in the tower's dtype; each row within float rounding of
        the full ``C``-position run. Autocast is off: the tower runs in its own dtype.
    """
    if ids.dim() != 2 or ids.shape[0] == 0:
        raise ValueError(f"ids must be (N, C) with N >= 1, got shape {tuple(ids.shape)}")
    tower = _open_clip_tower(model)
    parts = []
    with torch.autocast(ids.device.type, enabled=False):
        full = torch.full((len(ids),), ids.shape[1], dtype=torch.long)
        needed = _needed(tower, ids) if tower is not None else full
        if tower is not None and share_prefixes:
            shared = _run_shared(tower, ids, needed, positions)
            if shared is not None:
                return shared
        for rows in length_batches(needed, positions):
            chunk = ids[rows.to(ids.device)]
            feats = _run_truncated(tower, chunk) if tower is not None else None
            parts.append((rows, feats if feats is not None else model.encode_text(chunk)))
    return _gather(len(ids), parts)


def _hf_clip(model) -> bool:
    """A transformers ``CLIPModel`` whose text model is transformers' own causal CLIP tower."""
    try:
        from transformers import CLIPModel, CLIPTextModel
    except ImportError:
        return False
    return isinstance(model, CLIPModel) and type(getattr(model, "text_model", None)) is (
        CLIPTextModel
    )


@torch.inference_mode()
def encode_hf_tokens(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    positions: int = POSITIONS,
) -> torch.Tensor:
    """Text features of a transformers model, as ``model.get_text_features`` gives them.

    Args:
        model: a transformers CLIP-style model. A ``CLIPModel`` with right-padded inputs runs
            each batch cut after its longest prompt (its tower is causal and pooled at the
            end-of-text token); other models (SigLIP, ...) get their full padded inputs.
        input_ids: ``(N, C)`` int64 ids padded to the context length, on the model's device.
        attention_mask: ``(N, C)`` 1 for real tokens, 0 for padding, or None.
        positions: token positions per forward pass (rows x padded length).

    Returns:
        ``(N, D)`` unnormalised projected features in the model's dtype.
    """
    if input_ids.dim() != 2 or input_ids.shape[0] == 0:
        raise ValueError(f"input_ids must be (N, C) with N >= 1, got {tuple(input_ids.shape)}")
    n_rows, width = input_ids.shape
    cut = _hf_clip(model)
    if cut:
        eos = model.text_model.eos_token_id
        pool = input_ids.argmax(-1) if eos == 2 else (input_ids == eos).int().argmax(-1)
        lengths = pool + 1
    else:
        lengths = torch.full((n_rows,), width, dtype=torch.long)
    parts = []
    with torch.autocast(input_ids.device.type, enabled=False):
        for rows in length_batches(lengths, positions):
            r = rows.to(input_ids.device)
            n = int(lengths[r].max()) if cut else width
            kwargs = {"input_ids": input_ids[r, :n]}
            if attention_mask is not None:
                kwargs["attention_mask"] = attention_mask[r, :n]
            out = model.get_text_features(**kwargs)
            parts.append((rows, out if isinstance(out, torch.Tensor) else out.pooler_output))
    return _gather(n_rows, parts)
