"""DINO ViT on timm: official key layout, strict loading, DINO's own forward.

The forward is checked against a plain-torch re-implementation written from DINO's
``vision_transformer.py`` (explicit matrices, per-head loops) and the position-table
interpolation against a hand-written bicubic kernel with DINO's ``(g + 0.1) / sqrt(N)`` scale.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ovseg.methods.dino import (
    DINO_ARCHS,
    build_dino,
    dino_embed,
    dino_feature_map,
    dino_grid,
    dino_last_features,
    dino_last_qkv,
    dino_pos_encoding,
    dino_tokens,
    tiny_dino,
)
from ovseg.models.weights import DINO_CHECKPOINTS


def _official_keys(depth: int) -> list[str]:
    """The key layout of DINO's backbone checkpoints (its vision_transformer.VisionTransformer
    with num_classes=0)."""
    keys = ["cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias"]
    for i in range(depth):
        for name in (
            "norm1.weight",
            "norm1.bias",
            "attn.qkv.weight",
            "attn.qkv.bias",
            "attn.proj.weight",
            "attn.proj.bias",
            "norm2.weight",
            "norm2.bias",
            "mlp.fc1.weight",
            "mlp.fc1.bias",
            "mlp.fc2.weight",
            "mlp.fc2.bias",
        ):
            keys.append(f"blocks.{i}.{name}")
    return keys + ["norm.weight", "norm.bias"]


# ---- independent implementation -------------------------------------------------------------


def _cubic_weights(t: float, a: float = -0.75) -> list[float]:
    """Keys' cubic convolution weights for offsets -1, 0, 1, 2 (torch's bicubic, A = -0.75)."""

    def near(x):  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return [far(t + 1), near(t), near(1 - t), far(2 - t)]


def _bicubic_matrix(n_in: int, n_out: int, scale: float) -> np.ndarray:
    """``(n_out, n_in)`` resampling matrix: source ``x = (i + 0.5) / scale - 0.5``, taps
    clamped to the border (align_corners=False with an explicit scale factor)."""
    m = np.zeros((n_out, n_in))
    for i in range(n_out):
        x = (i + 0.5) / scale - 0.5
        x0 = math.floor(x)
        for off, wgt in zip(range(-1, 3), _cubic_weights(x - x0), strict=True):
            m[i, min(max(x0 + off, 0), n_in - 1)] += wgt
    return m


def _pos_reference(pos: torch.Tensor, gh: int, gw: int, same: bool) -> torch.Tensor:
    """DINO's interpolate_pos_encoding from the formula: (1, 1 + N, D) -> (1, 1 + gh*gw, D)."""
    if same:
        return pos
    n = pos.shape[1] - 1
    side = int(math.sqrt(n))
    grid = pos[0, 1:].double().numpy().reshape(side, side, -1)
    rows = _bicubic_matrix(side, gh, (gh + 0.1) / math.sqrt(n))
    cols = _bicubic_matrix(side, gw, (gw + 0.1) / math.sqrt(n))
    out = np.einsum("ia,jb,abd->ijd", rows, cols, grid).reshape(gh * gw, -1)
    return torch.cat([pos[0, :1].double(), torch.from_numpy(out)])[None].float()


def _ln(x, w, b, eps=1e-6):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * w + b


def _patches(img: torch.Tensor, p: int) -> torch.Tensor:
    """(3, H, W) -> (gh * gw, 3 * p * p), row-major patches, remainder cropped."""
    gh, gw = img.shape[1] // p, img.shape[2] // p
    x = img[:, : gh * p, : gw * p].reshape(3, gh, p, gw, p)
    return x.permute(1, 3, 0, 2, 4).reshape(gh * gw, 3 * p * p)


def _dino_reference(sd: dict, heads: int, img: torch.Tensor, p: int):
    """Final-norm tokens (1 + N, D) and last-block q, k of one (3, H, W) image, written from
    DINO's vision_transformer.py with explicit matrices."""
    d = sd["cls_token"].shape[-1]
    n_tab = sd["pos_embed"].shape[1] - 1
    h, w = img.shape[1:]
    gh, gw = h // p, w // p
    x = _patches(img, p) @ sd["patch_embed.proj.weight"].reshape(d, -1).T
    x = x + sd["patch_embed.proj.bias"]
    x = torch.cat([sd["cls_token"][0], x])
    same = gh * gw == n_tab and h == w
    x = x + _pos_reference(sd["pos_embed"], gh, gw, same)[0]
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    hd = d // heads
    q_last = k_last = None
    for i in range(depth):
        g = lambda n, i=i: sd[f"blocks.{i}.{n}"]  # noqa: E731
        y = _ln(x, g("norm1.weight"), g("norm1.bias"))
        qkv = y @ g("attn.qkv.weight").T + g("attn.qkv.bias")
        q, k, v = qkv[:, :d], qkv[:, d : 2 * d], qkv[:, 2 * d :]
        if i == depth - 1:
            q_last, k_last = q, k
        outs = []
        for hh in range(heads):
            sl = slice(hh * hd, (hh + 1) * hd)
            a = torch.softmax(q[:, sl] @ k[:, sl].T * hd**-0.5, dim=-1)
            outs.append(a @ v[:, sl])
        x = x + torch.cat(outs, dim=1) @ g("attn.proj.weight").T + g("attn.proj.bias")
        y = _ln(x, g("norm2.weight"), g("norm2.bias"))
        y = F.gelu(y @ g("mlp.fc1.weight").T + g("mlp.fc1.bias"))
        x = x + y @ g("mlp.fc2.weight").T + g("mlp.fc2.bias")
    return _ln(x, sd["norm.weight"], sd["norm.bias"]), q_last, k_last


# ---- tests ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dino8():
    return tiny_dino(patch_size=8, seed=0)


@pytest.mark.parametrize("arch", sorted(DINO_ARCHS))
def test_random_arch_has_official_layout(arch):
    spec = DINO_ARCHS[arch]
    model = build_dino(arch, device="meta")  # layout only, no random init
    sd = model.state_dict()
    assert list(sd) == _official_keys(spec["depth"])
    p, d = spec["patch_size"], spec["embed_dim"]
    assert sd["pos_embed"].shape == (1, (224 // p) ** 2 + 1, d)
    assert sd["patch_embed.proj.weight"].shape == (d, 3, p, p)
    assert sd["blocks.0.attn.qkv.weight"].shape == (3 * d, d)
    assert sd["blocks.0.mlp.fc1.weight"].shape == (4 * d, d)
    assert model.blocks[0].attn.num_heads == spec["num_heads"]
    assert model.norm.eps == 1e-6 and not model.training


def test_real_architecture_random_state_dict_loads():
    gen = torch.Generator().manual_seed(1)
    shapes = {k: v.shape for k, v in build_dino("dino_vitb8", device="meta").state_dict().items()}
    assert sum(math.prod(s) for s in shapes.values()) > 85e6  # the published 85M
    sd = {k: torch.randn(s, generator=gen).half() for k, s in shapes.items()}
    model = build_dino("dino_vitb8", sd)
    for k, v in model.state_dict().items():
        assert v.dtype == torch.float32 and v.device.type == "cpu"
        assert torch.equal(v, sd[k].float()), k
    sd["norm.bias"].zero_()  # the model holds copies
    assert model.norm.bias.abs().sum() > 0
    x = torch.randn(1, 3, 64, 72)
    assert dino_last_features(model, x).shape == (1, 1 + 8 * 9, 768)


def test_mismatched_state_dict_is_named():
    tiny_sd = tiny_dino(8).state_dict()
    with pytest.raises(ValueError) as err:
        build_dino("dino_vitb8", tiny_sd)
    msg = str(err.value)
    assert "dino_vitb8" in msg
    assert "missing keys: blocks.2.norm1.weight" in msg
    assert "pos_embed: got (1, 785, 64), expected (1, 785, 768)" in msg

    meta = build_dino("dino_vits16", device="meta").state_dict()
    sd = {k: torch.zeros(v.shape) for k, v in meta.items()}
    extra = dict(sd, **{"head.weight": torch.zeros(2, 384)})
    with pytest.raises(ValueError, match=r"unexpected keys: head\.weight"):
        build_dino("dino_vits16", extra)
    prefixed = {f"module.backbone.{k}": v for k, v in sd.items()}
    with pytest.raises(ValueError, match="training checkpoint"):
        build_dino("dino_vits16", prefixed)
    with pytest.raises(TypeError):
        build_dino("dino_vits16", [("cls_token", sd["cls_token"])])
    with pytest.raises(TypeError):
        build_dino("dino_vits16", dict(sd, cls_token=np.zeros((1, 1, 384))))


def test_tiny_state_dict_round_trip(dino8):
    sd = dino8.state_dict()
    again = tiny_dino(8, seed=5)
    assert not torch.equal(again.pos_embed, dino8.pos_embed)
    again.load_state_dict(sd)
    x = torch.randn(1, 3, 64, 80)
    assert torch.equal(dino_last_features(again, x), dino_last_features(dino8, x))
    # the global RNG is not touched by tiny_dino
    state = torch.random.get_rng_state()
    tiny_dino(16, seed=3)
    assert torch.equal(state, torch.random.get_rng_state())


@pytest.mark.parametrize(
    ("size", "same"),
    [((224, 224), True), ((336, 336), False), ((217, 341), False), ((112, 448), False)],
)
def test_pos_encoding_matches_formula(size, same):
    model = tiny_dino(16, seed=2)  # N = 196: (112, 448) has 7 x 28 = 196 tokens, H != W
    h, w = size
    gh, gw = dino_grid(model, h, w)
    got = dino_pos_encoding(model, h, w)
    want = _pos_reference(model.pos_embed.detach(), gh, gw, same)
    assert got.shape == (1, 1 + gh * gw, model.embed_dim)
    assert (got - want).abs().max().item() < 1e-5
    if same:
        assert got is model.pos_embed
    else:  # the +0.1 scale factor matters: size=(gh, gw) gives other numbers
        by_size = F.interpolate(
            model.pos_embed[:, 1:].reshape(1, 14, 14, -1).permute(0, 3, 1, 2),
            size=(gh, gw),
            mode="bicubic",
        )
        by_size = by_size.permute(0, 2, 3, 1).reshape(1, gh * gw, -1)
        assert (got[:, 1:] - by_size).abs().max().item() > 1e-3


@pytest.mark.parametrize("size", [(64, 64), (217, 141), (56, 336)])
def test_forward_matches_plain_reimplementation(dino8, size):
    torch.manual_seed(0)
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        feats = dino_last_features(dino8, x)
        fmap = dino_feature_map(dino8, x)
        q, k, v = dino_last_qkv(dino8, x)
        per_block = dino_tokens(dino8, x)
        emb = dino_embed(dino8, x)
    sd = {k_: t.detach() for k_, t in dino8.state_dict().items()}
    gh, gw = size[0] // 8, size[1] // 8
    assert emb.shape == (2, 1 + gh * gw, 64) and len(per_block) == 2
    assert fmap.shape == (2, 64, gh, gw)
    assert torch.equal(dino8.norm(per_block[-1]), feats)
    for b in range(2):
        ref, rq, rk = _dino_reference(sd, 2, x[b], 8)
        assert (feats[b] - ref).abs().max().item() < 1e-4
        assert (q[b] - rq).abs().max().item() < 1e-4
        assert (k[b] - rk).abs().max().item() < 1e-4
        grid = ref[1:].T.reshape(64, gh, gw)
        assert (fmap[b] - grid).abs().max().item() < 1e-4
    assert v.shape == q.shape == (2, 1 + gh * gw, 64)


def test_checkpoint_table():
    # The registry is ovseg.models.weights; its keys are the architectures build_dino knows.
    assert set(DINO_CHECKPOINTS) == set(DINO_ARCHS)
    ck = DINO_CHECKPOINTS["dino_vitb8"]
    assert ck.url == (
        "https://dl.fbaipublicfiles.com/dino/dino_vitbase8_pretrain/dino_vitbase8_pretrain.pth"
    )
    assert ck.filename == "dino_vitbase8_pretrain.pth" and ck.arch == "dino_vitb8"
    assert DINO_CHECKPOINTS["dino_vits16"].filename == "dino_deitsmall16_pretrain.pth"
    for entry in DINO_CHECKPOINTS.values():
        assert entry.url.endswith("/" + entry.filename)
        # pinned from a public mirror where one gives the file's size and SHA-256
        assert entry.pinned == (entry.name == "dino_vitb16") and entry.source
    # The parameter counts DINO's README gives (ViT-S 21M, ViT-B 85M), from the built layout.
    params = {
        arch: sum(p.numel() for p in build_dino(arch, device="meta").parameters())
        for arch in DINO_ARCHS
    }
    assert {arch: n // 10**6 for arch, n in params.items()} == {
        "dino_vits16": 21,
        "dino_vits8": 21,
        "dino_vitb16": 85,
        "dino_vitb8": 85,
    }


def test_bad_arguments(dino8):
    with pytest.raises(ValueError, match="unknown DINO arch"):
        build_dino("vit_b")
    with pytest.raises(ValueError):
        tiny_dino(patch_size=14)
    with pytest.raises(ValueError):
        tiny_dino(embed_dim=65, num_heads=2)
    with pytest.raises(ValueError):
        dino_embed(dino8, torch.zeros(3, 64, 64))
    with pytest.raises(ValueError):
        dino_embed(dino8, torch.zeros(1, 1, 64, 64))
    with pytest.raises(ValueError, match="smaller than one"):
        dino_embed(dino8, torch.zeros(1, 3, 4, 64))
    with pytest.raises(TypeError):
        dino_embed(dino8, torch.zeros(1, 3, 64, 64, dtype=torch.uint8))
    with pytest.raises(TypeError):
        dino_embed(torch.nn.Linear(2, 2), torch.zeros(1, 3, 64, 64))
