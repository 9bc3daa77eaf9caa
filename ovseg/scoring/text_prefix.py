"""A causal text transformer run once per shared prompt prefix.

Class prompts are templates times names: ``"a photo of a {}."`` gives the same first tokens for
every name. In a causal transformer the hidden states of a prefix do not depend on what follows,
so each shared prefix (a *stem*) runs once, and each prompt runs only its own remaining tokens
(its *tail*), attending to its stem's keys and values at every layer. For 11 names x 80
templates this runs 3,804 token positions (padding included) instead of 8,072 (truncated) or
67,760 (all 77 positions), with the same outputs up to float rounding.

Used for open_clip's default residual attention blocks with the standard causal mask (the
layout of every CLIP text tower open_clip ships); :func:`can_share` says when.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["BATCH_OVERHEAD", "can_share", "length_batches", "shared_hidden", "stem_lengths"]

BATCH_OVERHEAD = 256
"""The cost of one more forward pass, in token positions (its kernel launches and thread
synchronisation across every block), weighed against padding when prompts are batched."""
STEMS_PER_CHUNK = 256  # stems whose keys and values are held at once (ViT-B/16: 13 MB a position)


def length_batches(
    lengths: torch.Tensor, positions: int, overhead: int | None = None
) -> list[torch.Tensor]:
    """Row indices sorted by length, in batches of at most ``positions`` padded positions (rows
    x the batch's longest row; a longer row goes alone), chosen to minimise the padded
    positions plus ``overhead`` per batch (default :data:`BATCH_OVERHEAD`): one long prompt
    does not pad a batch of short ones, and lengths that differ little share a pass."""
    overhead = BATCH_OVERHEAD if overhead is None else overhead
    values, order = torch.sort(lengths.cpu(), stable=True)
    distinct, counts = torch.unique_consecutive(values, return_counts=True)
    distinct, counts = distinct.tolist(), counts.tolist()

    def cost(rows: int, length: int) -> float:
        per = max(1, positions // max(length, 1))
        return rows * length + overhead * -(-rows // per)

    best, cut = [0.0], [0]  # best[j]: cheapest split of the first j distinct lengths
    for j in range(1, len(distinct) + 1):
        rows, options = 0, []
        for i in range(j - 1, -1, -1):
            rows += counts[i]
            options.append((best[i] + cost(rows, distinct[j - 1]), i))
        value, i = min(options)
        best.append(value)
        cut.append(i)
    groups, j = [], len(distinct)
    while j > 0:
        groups.append((cut[j], j))
        j = cut[j]
    batches, offsets = [], [0, *torch.tensor(counts).cumsum(0).tolist()]
    for i, j in reversed(groups):
        rows = order[offsets[i] : offsets[j]]
        per = max(1, positions // max(distinct[j - 1], 1))
        batches += [rows[k : k + per] for k in range(0, len(rows), per)]
    return batches


def can_share(transformer: torch.nn.Module, attn_mask: torch.Tensor | None, length: int) -> bool:
    """Whether ``transformer`` is open_clip's ``Transformer`` of default blocks (plain
    ``nn.MultiheadAttention``, no cross-attention) under the standard causal mask over
    ``length`` positions: the layout whose blocks this module runs itself."""
    from open_clip.transformer import ResidualAttentionBlock, Transformer

    if type(transformer) is not Transformer or attn_mask is None or attn_mask.dim() != 2:
        return False
    if attn_mask.shape[0] < length:
        return False
    causal = torch.ones(length, length, dtype=torch.bool, device=attn_mask.device).tril()
    mask = attn_mask[:length, :length]
    if not (torch.isneginf(mask[~causal]).all() and (mask[causal] == 0).all()):
        return False
    for block in transformer.resblocks:
        attn = getattr(block, "attn", None)
        if type(block) is not ResidualAttentionBlock or hasattr(block, "ln_1_kv"):
            return False
        if type(attn) is not torch.nn.MultiheadAttention or not attn._qkv_same_embed_dim:
            return False
        if attn.bias_k is not None or attn.bias_v is not None or attn.add_zero_attn:
            return False
        if attn.training and attn.dropout:  # dropout is not reproduced here
            return False
    return True


def stem_lengths(rows: list[tuple[int, ...]]) -> list[int]:
    """Per row, the length of its stem: its longest common prefix with any other row, at least
    1 and at most its length minus 1 (every row keeps its last token in its tail)."""
    order = sorted(range(len(rows)), key=rows.__getitem__)
    shared = [0] * len(rows)
    for a, b in zip(order[:-1], order[1:], strict=True):
        ra, rb = rows[a], rows[b]
        k, n = 0, min(len(ra), len(rb))
        while k < n and ra[k] == rb[k]:
            k += 1
        shared[a], shared[b] = max(shared[a], k), max(shared[b], k)
    return [min(max(s, 1), len(r) - 1) for s, r in zip(shared, rows, strict=True)]


def _block(block, x: torch.Tensor, mask: torch.Tensor, past=None):
    """One ``ResidualAttentionBlock`` on ``x`` (B, T, W) whose keys are ``past`` (B, H, S, d)
    keys and values followed by its own; ``mask`` (B or 1, 1, T, S + T) bool, True = attend.
    Returns (x, keys, values) with the new keys and values (B, H, T, d)."""
    attn = block.attn
    b, t, w = x.shape
    heads = attn.num_heads
    q, k, v = F.linear(block.ln_1(x), attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    q, k, v = (z.reshape(b, t, heads, w // heads).transpose(1, 2) for z in (q, k, v))
    keys, values = (k, v)
    if past is not None:
        keys, values = torch.cat([past[0], k], 2), torch.cat([past[1], v], 2)
    out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
    x = x + block.ls_1(attn.out_proj(out.transpose(1, 2).reshape(b, t, w)))
    x = x + block.ls_2(block.mlp(block.ln_2(x)))
    return x, k, v


def _embed(token_embedding, positional_embedding, ids, positions, dtype) -> torch.Tensor:
    return token_embedding(ids).to(dtype) + positional_embedding[positions].to(dtype)


def shared_hidden(
    token_embedding: torch.nn.Module,
    positional_embedding: torch.Tensor,
    transformer: torch.nn.Module,
    ids: torch.Tensor,
    needed: torch.Tensor,
    positions: int,
) -> torch.Tensor:
    """Hidden states ``(N, W)`` after the last block at each row's position ``needed - 1``.

    Args:
        ids: ``(N, C)`` token ids; ``needed``: ``(N,)`` positions each row needs (>= 2).
        positions: token positions per forward pass (rows x padded length).
    """
    device, dtype = ids.device, transformer.get_cast_dtype()
    lengths = needed.tolist()
    rows = [tuple(r[:n]) for r, n in zip(ids.tolist(), lengths, strict=True)]
    stems = stem_lengths(rows)
    keys = [r[:s] for r, s in zip(rows, stems, strict=True)]
    unique = sorted(set(keys), key=len)
    index = {k: i for i, k in enumerate(unique)}
    group = torch.tensor([index[k] for k in keys])
    out = None
    for start in range(0, len(unique), STEMS_PER_CHUNK):  # stems, then the tails they serve
        chunk = unique[start : start + STEMS_PER_CHUNK]
        past = _run_stems(
            token_embedding, positional_embedding, transformer, chunk, positions, device, dtype
        )
        members = torch.nonzero((group >= start) & (group < start + len(chunk))).flatten()
        tails = torch.tensor([lengths[i] - stems[i] for i in members.tolist()])
        for batch in length_batches(tails, positions):
            part = members[batch]
            hidden = _run_tails(
                token_embedding, positional_embedding, transformer, ids, part,
                [stems[i] for i in part.tolist()], [lengths[i] for i in part.tolist()], past,
                (group[part] - start).to(device),
            )  # fmt: skip
            if out is None:
                out = hidden.new_empty((len(rows), hidden.shape[-1]))
            out[part.to(device)] = hidden
    return out


def _run_stems(token_embedding, positional_embedding, transformer, stems, positions, device,
               dtype):  # fmt: skip
    """Keys and values (blocks, B, H, S, d) of every stem at every block, padded at the end to
    the longest stem S (stems sorted by length, run in length batches)."""
    blocks = transformer.resblocks
    attn = blocks[0].attn
    shape = (len(blocks), len(stems), attn.num_heads, max(len(k) for k in stems),
             attn.embed_dim // attn.num_heads)  # fmt: skip
    keys = torch.zeros(shape, dtype=dtype, device=device)
    values = torch.zeros(shape, dtype=dtype, device=device)
    batches = length_batches(torch.tensor([len(k) for k in stems]), positions)
    for batch in batches:  # ranges of the sorted stems
        lo, hi = int(batch[0]), int(batch[-1]) + 1
        s = len(stems[hi - 1])
        ids = torch.zeros((hi - lo, s), dtype=torch.long, device=device)
        for i, k in enumerate(stems[lo:hi]):
            ids[i, : len(k)] = torch.tensor(k)
        x = _embed(token_embedding, positional_embedding, ids, torch.arange(s, device=device),
                   dtype)  # fmt: skip
        mask = torch.ones(s, s, dtype=torch.bool, device=device).tril()[None, None]
        for i, block in enumerate(blocks):
            x, k, v = _block(block, x, mask)
            keys[i, lo:hi, :, :s] = k
            values[i, lo:hi, :, :s] = v
    return keys, values


def _run_tails(token_embedding, positional_embedding, transformer, ids, rows, stems, lengths,
               past, group):  # fmt: skip
    """Each row's tokens after its stem, attending to its stem (``past`` keys and values indexed
    by ``group``) and causally to its own; the hidden state at its last needed position."""
    device, dtype = ids.device, transformer.get_cast_dtype()
    n = len(stems)
    stem = torch.tensor(stems, device=device)
    t = max(length - s for length, s in zip(lengths, stems, strict=True))
    positions = (stem[:, None] + torch.arange(t, device=device)).clamp(max=ids.shape[1] - 1)
    x = _embed(token_embedding, positional_embedding, ids[rows.to(device)].gather(1, positions),
               positions, dtype)  # fmt: skip
    keys, values = past[0][:, group], past[1][:, group]
    s = keys.shape[3]
    mask = torch.cat(
        [
            (torch.arange(s, device=device) < stem[:, None])[:, None, :].expand(n, t, s),
            torch.ones(t, t, dtype=torch.bool, device=device).tril().expand(n, t, t),
        ],
        dim=2,
    )[:, None]
    for i, block in enumerate(transformer.resblocks):
        x, _, _ = _block(block, x, mask, (keys[i], values[i]))
    read = torch.tensor(lengths, device=device) - 1 - stem
    return x[torch.arange(n, device=device), read]
