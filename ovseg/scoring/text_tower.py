"""CLIP's text tower run on only the positions a batch needs.

CLIP's text transformer is causal and its output is read at one position per prompt (the
end-of-text token): positions after it change nothing. Prompts are sorted by that position and
run in batches, each batch cut just after its longest prompt's read position, so a batch of
class templates (about 10 to 20 tokens) costs a fraction of the full 77-position run, with the
same embeddings up to float rounding.

Truncation is used only where the structure is known to allow it: open_clip's built-in text
tower (``CLIP.encode_text``) and its ``TextTransformer`` (``CustomTextCLIP``), with a causal
mask, or with open_clip's padding mask in bidirectional mode, and argmax / eos / first pooling;
and transformers' ``CLIPModel``. Anything else (a class token, ``last`` pooling, a bidirectional
tower without padding mask, a Hugging Face text tower inside open_clip, an unknown model) runs
the model's own full call, batched the same way.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["BATCH_SIZE", "encode_hf_tokens", "encode_open_clip_tokens", "truncatable"]

BATCH_SIZE = 128
"""Prompts per forward pass (sorted by length, so each batch is cut to its own longest)."""

_POOLS = ("argmax", "eos", "first")
# (positions each row needs, the truncated run of a batch or None for "run the full call")
_Plan = tuple[
    Callable[[torch.Tensor], torch.Tensor],
    Callable[[torch.Tensor], "torch.Tensor | None"],
]


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


def _builtin_plan(model) -> _Plan | None:
    """The truncated run of open_clip's built-in text tower (``CLIP.encode_text``), or None."""
    from open_clip.model import CLIP
    from open_clip.transformer import text_global_pool

    if getattr(type(model), "encode_text", None) is not CLIP.encode_text:
        return None
    pool_type = getattr(model, "text_pool_type", "argmax")
    eos_id = getattr(model, "text_eos_id", None)
    if pool_type not in _POOLS or (pool_type == "eos" and eos_id is None):
        return None
    if not isinstance(getattr(model, "attn_mask", None), torch.Tensor):  # bidirectional
        return None

    def needed(ids: torch.Tensor) -> torch.Tensor:
        return _pool_index(ids, pool_type, eos_id) + 1

    def run(ids: torch.Tensor) -> torch.Tensor | None:
        n = int(needed(ids).max())
        if not _causal_cut(model.attn_mask, n):
            return None
        ids = ids[:, :n]
        cast = model.transformer.get_cast_dtype()
        x = model.token_embedding(ids).to(cast) + model.positional_embedding[:n].to(cast)
        x = model.transformer(x, attn_mask=model.attn_mask[:n, :n])
        x = text_global_pool(model.ln_final(x), ids, pool_type, eos_token_id=eos_id)
        return _project(x, model.text_projection)

    return needed, run


def _tower_plan(model) -> _Plan | None:
    """The truncated run of open_clip's ``TextTransformer`` (``CustomTextCLIP.text``), or None."""
    from open_clip.model import CustomTextCLIP
    from open_clip.transformer import TextTransformer, text_global_pool

    if getattr(type(model), "encode_text", None) is not CustomTextCLIP.encode_text:
        return None
    text = getattr(model, "text", None)
    if type(text) is not TextTransformer or text.cls_emb is not None or text.output_tokens:
        return None
    pool_type, eos_id = text.pool_type, text.eos_id
    if pool_type not in _POOLS:
        return None

    bidirectional = text.attn_mask is None
    if bidirectional and not text.use_pad_mask:  # exact only when the cut-off keys are masked
        return None

    def needed(ids: torch.Tensor) -> torch.Tensor:
        read = _pool_index(ids, pool_type, eos_id) + 1
        if not bidirectional:
            return read
        positions = torch.arange(1, ids.shape[1] + 1, device=ids.device)
        return torch.maximum(read, ((ids != text.pad_id) * positions).amax(dim=-1))

    def run(ids: torch.Tensor) -> torch.Tensor | None:
        n = int(needed(ids).max())
        if not bidirectional and not _causal_cut(text.attn_mask, n):
            return None
        ids = ids[:, :n]
        x, mask = text._embeds(ids)
        if mask is not None and mask.shape[-1] != n:
            mask = mask[..., :n, :n]
        x = text.transformer(x, attn_mask=mask)
        x = text_global_pool(text.ln_final(x), ids, pool_type, eos_token_id=eos_id)
        return _project(x, text.text_projection)

    return needed, run


def _project(x: torch.Tensor, projection) -> torch.Tensor:
    if projection is None:
        return x
    return projection(x) if isinstance(projection, torch.nn.Linear) else x @ projection


def _open_clip_plan(model) -> _Plan | None:
    try:
        import open_clip  # noqa: F401
    except ImportError:
        return None
    return _builtin_plan(model) or _tower_plan(model)


def truncatable(model) -> bool:
    """Whether ``model``'s text tower is one whose truncated run is known to be exact."""
    return _open_clip_plan(model) is not None or _hf_clip(model)


def _batches(lengths: torch.Tensor, batch_size: int):
    """Row indices sorted by length, in batches of ``batch_size``."""
    order = torch.sort(lengths.cpu(), stable=True).indices
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def _gather(n: int, parts: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    first = parts[0][1]
    out = first.new_empty((n, first.shape[-1]))
    for rows, feats in parts:
        out[rows.to(out.device)] = feats
    return out


@torch.inference_mode()
def encode_open_clip_tokens(
    model: torch.nn.Module, ids: torch.Tensor, batch_size: int = BATCH_SIZE
) -> torch.Tensor:
    """Text features of an open_clip model, as ``model.encode_text(ids)`` gives them.

    Args:
        model: an open_clip ``CLIP`` or ``CustomTextCLIP`` (any other model with
            ``encode_text`` runs its own full call).
        ids: ``(N, C)`` int64 token ids from the model's tokenizer, on the model's device.
        batch_size: prompts per forward pass.

    Returns:
        ``(N, D)`` unnormalised features in the tower's dtype; each row within float rounding of
        the full ``C``-position run. Autocast is off: the tower runs in its own dtype.
    """
    if ids.dim() != 2 or ids.shape[0] == 0:
        raise ValueError(f"ids must be (N, C) with N >= 1, got shape {tuple(ids.shape)}")
    plan = _open_clip_plan(model)
    if plan is None:
        needed, run = (lambda t: torch.zeros(len(t), dtype=torch.long)), (lambda t: None)
    else:
        needed, run = plan
    parts = []
    with torch.autocast(ids.device.type, enabled=False):
        for rows in _batches(needed(ids), batch_size):
            chunk = ids[rows.to(ids.device)]
            feats = run(chunk)
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
    batch_size: int = BATCH_SIZE,
) -> torch.Tensor:
    """Text features of a transformers model, as ``model.get_text_features`` gives them.

    Args:
        model: a transformers CLIP-style model. A ``CLIPModel`` with right-padded inputs runs
            each batch cut after its longest prompt (its tower is causal and pooled at the
            end-of-text token); other models (SigLIP, ...) get their full padded inputs.
        input_ids: ``(N, C)`` int64 ids padded to the context length, on the model's device.
        attention_mask: ``(N, C)`` 1 for real tokens, 0 for padding, or None.
        batch_size: prompts per forward pass.

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
        for rows in _batches(lengths, batch_size):
            r = rows.to(input_ids.device)
            n = int(lengths[r].max()) if cut else width
            kwargs = {"input_ids": input_ids[r, :n]}
            if attention_mask is not None:
                kwargs["attention_mask"] = attention_mask[r, :n]
            out = model.get_text_features(**kwargs)
            parts.append((rows, out if isinstance(out, torch.Tensor) else out.pooler_output))
    return _gather(n_rows, parts)
