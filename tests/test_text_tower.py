"""The truncated text tower equals the full 77-position run, for every layout it truncates, and
falls back to the model's own call for the layouts it cannot truncate safely."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F

open_clip = pytest.importorskip("open_clip")

from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg, CustomTextCLIP  # noqa: E402

from ovseg.methods.text import OPENAI_IMAGENET_TEMPLATES  # noqa: E402
from ovseg.scoring.text_tower import (  # noqa: E402
    encode_hf_tokens,
    encode_open_clip_tokens,
    truncatable,
)

NAMES = ["sky", "sign symbol", "bicyclist", "a very long name of an unusual traffic object"]
CAMVID = ["sky", "building", "pole", "road", "sidewalk", "tree", "sign symbol", "fence", "car",
          "pedestrian", "bicyclist"]  # fmt: skip
LONG = " ".join(["word"] * 90)  # longer than the context: the tokenizer cuts it at 77
PROMPTS = [t.format(n) for n in NAMES for t in OPENAI_IMAGENET_TEMPLATES[::8]] + [LONG, "x"]
TOL = 1e-5


@functools.cache
def _tokenizer():
    return open_clip.get_tokenizer("ViT-B-16")


def _ids(prompts=PROMPTS):
    return _tokenizer()(prompts)


def _vision():
    return CLIPVisionCfg(layers=1, width=32, head_width=16, patch_size=16, image_size=32)


def _text_cfg(**text) -> CLIPTextCfg:
    return CLIPTextCfg(**{**dict(width=32, heads=2, layers=2), **text})


def _clip(custom: bool = False, seed: int = 0, use_pad_mask: bool = False, **text):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        cls = CustomTextCLIP if custom else CLIP
        model = cls(embed_dim=16, vision_cfg=_vision(), text_cfg=_text_cfg(**text))
    if use_pad_mask:  # TextTransformer's option, not in CLIPTextCfg
        model.text.use_pad_mask = True
    return model


def _lengths(model) -> list[tuple[int, int]]:
    """(batch, sequence length) of each call of the text transformer, recorded by a hook."""
    seen: list[tuple[int, int]] = []
    tower = model.text if isinstance(model, CustomTextCLIP) else model
    tower.transformer.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[:2]))
    return seen


def _assert_same(full: torch.Tensor, fast: torch.Tensor) -> None:
    full, fast = F.normalize(full.double(), dim=-1), F.normalize(fast.double(), dim=-1)
    assert fast.shape == full.shape
    assert (1 - (full * fast).sum(-1)).abs().max().item() <= TOL  # cosine of final embeddings
    assert (full - fast).abs().max().item() <= TOL


def _positions(model) -> list[int]:
    """Token positions each call of the first block's ``ln_1`` sees (batch x length), whichever
    path runs the blocks."""
    seen: list[int] = []
    tower = model.text if isinstance(model, CustomTextCLIP) else model
    tower.transformer.resblocks[0].ln_1.register_forward_pre_hook(
        lambda m, args: seen.append(args[0].shape[0] * args[0].shape[1])
    )
    return seen


LAYOUTS = [
    (False, {}),  # tiny_clip's layout: built-in tower, argmax pooling
    (False, {"pool_type": "eos", "eos_id": 49407}),
    (False, {"pool_type": "first"}),
    (True, {}),  # CustomTextCLIP with open_clip's TextTransformer
    (True, {"pool_type": "eos", "eos_id": 49407}),
    (True, {"no_causal_mask": True, "use_pad_mask": True, "pad_id": 0}),  # masked padding
]


@pytest.mark.parametrize("custom, text", LAYOUTS)
def test_truncated_open_clip_equals_full_run(custom, text):
    model = _clip(custom, **text).eval()
    ids = _ids()
    with torch.inference_mode():
        full = model.encode_text(ids)
    assert truncatable(model)
    seen = _lengths(model)
    fast = encode_open_clip_tokens(model, ids, positions=160, share_prefixes=False)
    _assert_same(full, fast)
    assert sum(b for b, _ in seen) == len(PROMPTS)
    if text.get("pool_type") == "first":  # read at the start-of-text token: one position
        assert seen == [(len(PROMPTS), 1)]
    else:  # only the long prompt's batch runs all 77
        lengths = [n for _, n in seen]
        assert len(seen) > 2 and lengths.count(77) == 1 and max(n for n in lengths if n != 77) < 20
        assert sum(b * n for b, n in seen) < 0.4 * 77 * len(PROMPTS)


@pytest.mark.parametrize(
    "custom, text, positions", [(c, t, 16384) for c, t in LAYOUTS] + [(0, {}, 70), (1, {}, 70)]
)
def test_shared_prefixes_equal_full_run(custom, text, positions, monkeypatch):
    from ovseg.scoring import text_prefix

    monkeypatch.setattr(text_prefix, "BATCH_OVERHEAD", 0)  # batches by padding alone
    model = _clip(custom, **text).eval()
    prompts = [*PROMPTS, PROMPTS[3], "a photo of a", "a photo of a car in a photo of a car"]
    ids = _ids(prompts)
    with torch.inference_mode():
        full = model.encode_text(ids)
    calls, seen = _lengths(model), _positions(model)
    _assert_same(full, encode_open_clip_tokens(model, ids, positions=positions))
    needed = (ids.argmax(-1) + 1).sum().item()
    if text.get("pool_type") == "first" or "use_pad_mask" in text:  # the truncated path
        assert calls
    else:  # blocks run directly, on fewer positions than the truncated run would
        assert not calls and sum(seen) < needed


def test_shared_prefixes_one_prompt_and_templates_times_names(monkeypatch):
    from ovseg.scoring import text_prefix

    monkeypatch.setattr(text_prefix, "BATCH_OVERHEAD", 0)
    model = _clip().eval()
    prompts = [t.format(n) for n in CAMVID for t in OPENAI_IMAGENET_TEMPLATES]
    ids = _ids(prompts)
    with torch.inference_mode():
        full = model.encode_text(ids)
        one = model.encode_text(ids[:1])
    positions = _positions(model)
    _assert_same(full, encode_open_clip_tokens(model, ids))
    assert sum(positions) < 0.6 * (ids.argmax(-1) + 1).sum().item()  # stems run once
    _assert_same(one, encode_open_clip_tokens(model, ids[:1]))


def test_shared_prefixes_in_several_chunks_of_stems(monkeypatch):
    from ovseg.scoring import text_prefix

    monkeypatch.setattr(text_prefix, "STEMS_PER_CHUNK", 3)
    model = _clip().eval()
    ids = _ids(PROMPTS)
    with torch.inference_mode():
        full = model.encode_text(ids)
    _assert_same(full, encode_open_clip_tokens(model, ids, positions=40))


def test_stem_lengths():
    from ovseg.scoring.text_prefix import stem_lengths

    rows = [(1, 2, 3, 9), (1, 2, 4, 9), (1, 2, 3, 5, 9), (1, 2, 3, 9), (7, 8), (1, 9)]
    assert stem_lengths(rows) == [3, 2, 3, 3, 1, 1]


class _Wrapped(CLIP):
    def encode_text(self, text, normalize: bool = False):
        return super().encode_text(text, normalize) * 2.0


@pytest.mark.parametrize(
    "make",
    [
        lambda: _clip(no_causal_mask=True),  # bidirectional, no padding mask: every key counts
        lambda: _clip(pool_type="last"),  # read at position 77
        lambda: _clip(True, no_causal_mask=True),  # TextTransformer, bidirectional
        lambda: _clip(True, embed_cls=True),  # a class token appended after the padding
        lambda: _Wrapped(embed_dim=16, vision_cfg=_vision(), text_cfg=_text_cfg()),
    ],
    ids=["no-mask", "last", "tower-no-mask", "cls", "override"],
)
def test_unknown_or_unsafe_layouts_run_the_full_call(make):
    model = make().eval()
    ids = _ids()
    with torch.inference_mode():
        full = model.encode_text(ids)
    assert not truncatable(model)
    seen = _lengths(model)
    fast = encode_open_clip_tokens(model, ids, positions=160)
    torch.testing.assert_close(fast, full, atol=1e-5, rtol=0)
    cls_token = getattr(getattr(model, "text", None), "cls_emb", None) is not None
    assert {n for _, n in seen} == {77 + cls_token}  # every position, every batch


def test_real_size_vit_b16_text_tower():
    """ViT-B-16's text tower (12 layers, width 512, 8 heads) with random weights."""
    cfg = open_clip.get_model_config("ViT-B-16")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = CLIP(cfg["embed_dim"], _vision(), CLIPTextCfg(**cfg["text_cfg"])).eval()
    assert model.transformer.width == 512 and len(model.transformer.resblocks) == 12
    ids = _ids([t.format(n) for n in NAMES[1:3] for t in OPENAI_IMAGENET_TEMPLATES[:4]])
    with torch.inference_mode():
        full = model.encode_text(ids)
    _assert_same(full, encode_open_clip_tokens(model, ids, positions=30))


def test_hf_clip_pads_to_the_longest():
    from ovseg.models.build import build_clip

    backend = build_clip("hf-tiny-random", "cpu")
    enc = backend.tokenizer(
        PROMPTS, padding="max_length", max_length=77, truncation=True, return_tensors="pt"
    )
    with torch.inference_mode():
        full = backend.model.get_text_features(**enc).pooler_output
    seen: list[int] = []
    backend.model.text_model.register_forward_pre_hook(
        lambda m, args, kwargs: seen.append(kwargs["input_ids"].shape[1]), with_kwargs=True
    )
    assert truncatable(backend.model)
    _assert_same(full, encode_hf_tokens(backend.model, **enc, positions=160))
    assert max(seen) == 77 and min(seen) < 20
    _assert_same(full, backend.encode_text(PROMPTS))


def test_hf_models_other_than_clip_get_their_full_inputs():
    from transformers import SiglipConfig, SiglipModel

    config = SiglipConfig(
        text_config=dict(
            vocab_size=1000, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=2, max_position_embeddings=16,
        ),
        vision_config=dict(
            hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
            image_size=32, patch_size=16,
        ),
    )  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = SiglipModel(config).eval()
    ids = torch.randint(2, 1000, (6, 16))
    ids[:, 10:] = 1  # padding at the end: SigLIP reads the last position, so all 16 count
    with torch.inference_mode():
        full = model.get_text_features(input_ids=ids).pooler_output
    assert not truncatable(model)
    torch.testing.assert_close(encode_hf_tokens(model, ids, positions=64), full, atol=1e-5, rtol=0)


def test_bad_ids():
    model = _clip()
    with pytest.raises(ValueError, match="ids must be"):
        encode_open_clip_tokens(model, torch.zeros(0, 77, dtype=torch.long))
    with pytest.raises(ValueError, match="input_ids must be"):
        encode_hf_tokens(model, torch.zeros(77, dtype=torch.long))


def test_length_batches():
    from ovseg.scoring.text_prefix import length_batches

    lengths = torch.tensor([9, 3, 77, 3, 4, 9, 3])
    batches = length_batches(lengths, positions=1000, overhead=0)
    assert sorted(torch.cat(batches).tolist()) == list(range(7))
    assert [lengths[b].tolist() for b in batches] == [[3, 3, 3], [4], [9, 9], [77]]
    assert len(length_batches(lengths, positions=1000, overhead=10_000)) == 1  # 7 x 77 <= 1000
    capped = length_batches(torch.full((10,), 5), positions=20, overhead=0)
    assert [len(b) for b in capped] == [4, 4, 2]  # at most 20 positions a pass
