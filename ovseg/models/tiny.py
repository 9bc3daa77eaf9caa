"""Tiny randomly initialised models for tests and smoke runs.

Both models are built from the real architecture classes (``segment_anything.modeling`` and
``open_clip.model.CLIP``) with small sizes, so every code path of ovseg runs on a CPU in
seconds. Their weights are random: the masks and labels they produce are meaningless and only
useful for checking shapes, plumbing and determinism.
"""

from __future__ import annotations

from functools import partial

import torch

from ovseg.constants import SAM_PIXEL_MEAN, SAM_PIXEL_STD

TINY_SAM_IMAGE_SIZE = 256
TINY_CLIP_IMAGE_SIZE = 64


def tiny_sam(seed: int = 0):
    """A ``segment_anything.modeling.Sam`` with a 2-block ViT encoder on 256x256 inputs.

    The image embedding is 16x16 (patch 16) with 64 channels; prompt encoder and mask decoder
    are SAM's own classes at that width. Deterministic for a given ``seed``.
    """
    from segment_anything.modeling import (
        ImageEncoderViT,
        MaskDecoder,
        PromptEncoder,
        Sam,
        TwoWayTransformer,
    )

    size, patch, dim = TINY_SAM_IMAGE_SIZE, 16, 64
    grid = size // patch
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        sam = Sam(
            image_encoder=ImageEncoderViT(
                img_size=size,
                patch_size=patch,
                embed_dim=32,
                depth=2,
                num_heads=2,
                mlp_ratio=2.0,
                out_chans=dim,
                qkv_bias=True,
                norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
                use_rel_pos=True,
                window_size=8,
                global_attn_indexes=(1,),
            ),
            prompt_encoder=PromptEncoder(
                embed_dim=dim,
                image_embedding_size=(grid, grid),
                input_image_size=(size, size),
                mask_in_chans=8,
            ),
            mask_decoder=MaskDecoder(
                num_multimask_outputs=3,
                transformer=TwoWayTransformer(depth=2, embedding_dim=dim, mlp_dim=128, num_heads=2),
                transformer_dim=dim,
                iou_head_depth=2,
                iou_head_hidden_dim=32,
            ),
            pixel_mean=list(SAM_PIXEL_MEAN),
            pixel_std=list(SAM_PIXEL_STD),
        )
    return sam.eval()


def tiny_clip(seed: int = 0):
    """An ``open_clip.model.CLIP`` with a 2-layer ViT (64x64 input, patch 16) and a 2-layer text
    transformer using the real CLIP BPE tokenizer vocabulary (49,408 tokens, context 77).

    Embedding dimension 32. Deterministic for a given ``seed``.
    """
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIP(
            embed_dim=32,
            vision_cfg=CLIPVisionCfg(
                layers=2, width=64, head_width=32, patch_size=16, image_size=TINY_CLIP_IMAGE_SIZE
            ),
            text_cfg=CLIPTextCfg(context_length=77, vocab_size=49408, width=32, heads=2, layers=2),
        )
    return model.eval()


def clip_bpe_tokenizer():
    """A ``transformers.CLIPTokenizer`` built offline from open_clip's bundled BPE vocabulary.

    CLIP's BPE is the same in both libraries, so this tokenizer matches the real one without a
    download.
    """
    from open_clip.tokenizer import SimpleTokenizer
    from transformers import CLIPTokenizer

    simple = SimpleTokenizer()
    special = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}
    vocab = {special.get(k, k): v for k, v in simple.encoder.items()}
    return CLIPTokenizer(vocab=vocab, merges=list(simple.bpe_ranks.keys()))


def tiny_hf_clip(seed: int = 0):
    """A ``transformers.CLIPModel`` of the same tiny size as :func:`tiny_clip`, with an offline
    CLIP tokenizer. Returns ``(model, tokenizer)``."""
    from transformers import CLIPConfig, CLIPModel

    config = CLIPConfig(
        text_config=dict(
            vocab_size=49408,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=77,
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=49407,
        ),
        vision_config=dict(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=TINY_CLIP_IMAGE_SIZE,
            patch_size=16,
        ),
        projection_dim=32,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPModel(config)
    return model.eval(), clip_bpe_tokenizer()
