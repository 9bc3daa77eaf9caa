"""RADIO (ovseg.methods.radio, ovseg.models.radio_weights).

Two kinds of evidence:
- always: the forward against an independent float64 implementation of RADIO's formulas
  (conditioner, patchify, CPE crop of the position table by explicit bilinear weights, prefix
  tokens, pre-norm blocks written out, summary indices, feature normaliser);
- with ``OVSEG_RADIO_REPO`` pointing at a checkout of github.com/NVlabs/RADIO (its
  ``hubconf.py`` and ``radio/``; needs ``einops``): RADIO's own ``hubconf.radio_model`` loads a
  checkpoint file written here (random weights, RADIO's own model classes) and ovseg loads the
  same file; outputs are compared at several input sizes, tiny and at C-RADIOv3-L's real size.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ovseg.methods.radio import (
    RADIO_ARCHS,
    RADIO_TINY,
    RadioEncoder,
    cpe_position_embedding,
    nearest_supported_resolution,
)
from ovseg.models.radio_weights import (
    build_radio,
    convert_radio_state_dict,
    load_radio_file,
    radio_from_state_dict,
)

RADIO_REPO = os.environ.get("OVSEG_RADIO_REPO", "")


# --- independent implementation of the formulas (float64, loops where it matters) -----------


def _bilinear_weights(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in) matrix of 1-D linear interpolation, align_corners=False (half-pixel)."""
    m = np.zeros((n_out, n_in))
    for i in range(n_out):
        src = max((i + 0.5) * n_in / n_out - 0.5, 0.0)
        lo = min(int(math.floor(src)), n_in - 1)
        hi = min(lo + 1, n_in - 1)
        frac = src - lo
        m[i, lo] += 1 - frac
        m[i, hi] += frac
    return m


def _pos_reference(table: np.ndarray, grid: int, h: int, w: int) -> np.ndarray:
    """(h*w, D): the table resized to max(h, w) squared by separable weights, top-left kept."""
    if (h, w) == (grid, grid):
        return table
    side = max(h, w)
    t = table.reshape(grid, grid, -1)
    wy = _bilinear_weights(side, grid)[:h]
    wx = _bilinear_weights(side, grid)[:w]
    return np.einsum("yr,xc,rcd->yxd", wy, wx, t).reshape(h * w, -1)


def _layer_norm(x, weight, bias, eps=1e-6):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * weight + bias


def _gelu(x):
    return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


def _radio_reference(sd: dict, heads: int, n_cls: int, image: np.ndarray, p: int):
    """RADIO's forward for one image (3, H, W) in [0, 1], from the state dict alone."""
    g = {k: v.detach().double().numpy() for k, v in sd.items()}
    x = (image - g["input_conditioner.norm_mean"]) / g["input_conditioner.norm_std"]
    _, height, width = x.shape
    h, w = height // p, width // p
    patches = np.stack(
        [
            x[:, i * p : (i + 1) * p, j * p : (j + 1) * p].reshape(-1)
            for i in range(h)
            for j in range(w)
        ]
    )
    tokens = patches @ g["model.patch_generator.embedder.weight"].T
    table = g["model.patch_generator.pos_embed"][0]
    tokens = tokens + _pos_reference(table, int(math.isqrt(table.shape[0])), h, w)
    tokens = np.concatenate([g["model.patch_generator.cls_token.token"], tokens])
    n_prefix = g["model.patch_generator.cls_token.token"].shape[0]
    depth = len({k.split(".")[2] for k in g if k.startswith("model.blocks.")})
    for i in range(depth):
        b = {
            k.removeprefix(f"model.blocks.{i}."): v
            for k, v in g.items()
            if k.startswith(f"model.blocks.{i}.")
        }
        y = _layer_norm(tokens, b["norm1.weight"], b["norm1.bias"])
        qkv = y @ b["attn.qkv.weight"].T + b["attn.qkv.bias"]
        d = tokens.shape[1]
        q, k, v = (qkv[:, j * d : (j + 1) * d] for j in range(3))
        out = np.zeros_like(tokens)
        hd = d // heads
        for hh in range(heads):
            s = slice(hh * hd, (hh + 1) * hd)
            att = q[:, s] @ k[:, s].T / math.sqrt(hd)
            att = np.exp(att - att.max(1, keepdims=True))
            out[:, s] = (att / att.sum(1, keepdims=True)) @ v[:, s]
        out = out @ b["attn.proj.weight"].T + b["attn.proj.bias"]
        tokens = tokens + out * b.get("ls1.gamma", 1.0)
        y = _layer_norm(tokens, b["norm2.weight"], b["norm2.bias"])
        y = _gelu(y @ b["mlp.fc1.weight"].T + b["mlp.fc1.bias"]) @ b["mlp.fc2.weight"].T
        tokens = tokens + (y + b["mlp.fc2.bias"]) * b.get("ls2.gamma", 1.0)
    summary = tokens[:n_cls][g["summary_idxs"].astype(int)].reshape(-1)
    feats = tokens[n_prefix:]
    if "feature_normalizer.mean" in g:
        feats = (feats - g["feature_normalizer.mean"]) @ g["feature_normalizer.tx"].T
    return summary, feats.reshape(h, w, -1).transpose(2, 0, 1)


def test_nearest_supported_resolution():
    assert nearest_supported_resolution(375, 500) == (368, 496)
    assert nearest_supported_resolution(5, 1000) == (16, 992)  # 62.5 rounds to 62
    assert nearest_supported_resolution(24, 40) == (32, 32)  # Python's round: 1.5 -> 2, 2.5 -> 2


@pytest.mark.parametrize("size", [(4, 6), (7, 3), (16, 16), (16, 5), (1, 1)])
def test_cpe_crop_matches_explicit_bilinear(size):
    torch.manual_seed(0)
    table = torch.randn(1, 16 * 16, 8, dtype=torch.float64)
    got = cpe_position_embedding(table, (16, 16), size)[0].numpy()
    want = _pos_reference(table[0].numpy(), 16, *size)
    # RADIO resizes the table in float32 whatever its dtype: float32 rounding, no more
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 if size != (16, 16) else 0)


def _tiny_with_extras(seed: int = 1) -> RadioEncoder:
    """The tiny model with a feature normaliser, a non-default conditioner and 2 of 3 summary
    tokens selected: every part of the forward carries weight."""
    base = build_radio(RADIO_TINY, "cpu")
    state = {k: v.clone() for k, v in base.state_dict().items()}
    g = torch.Generator().manual_seed(seed)
    state["model.patch_generator.cls_token.token"] = torch.randn(5, 32, generator=g)
    state["input_conditioner.norm_mean"] = torch.rand(3, 1, 1, generator=g)
    state["input_conditioner.norm_std"] = 0.2 + torch.rand(3, 1, 1, generator=g)
    state["feature_normalizer.mean"] = torch.randn(32, generator=g)
    state["feature_normalizer.tx"] = torch.randn(32, 32, generator=g) / 6
    state["summary_idxs"] = torch.tensor([0, 2])
    return radio_from_state_dict(RADIO_TINY, state, {"num_cls_tokens": 3})


@pytest.mark.parametrize("size", [(64, 96), (48, 16), (256, 256)])
def test_forward_matches_independent_formulas(size):
    model = _tiny_with_extras().double()
    assert model.arch.num_cls_tokens == 3 and model.arch.num_registers == 2
    torch.manual_seed(2)
    x = torch.rand(2, 3, *size, dtype=torch.float64)
    with torch.no_grad():
        out = model(x)
    sd = model.state_dict()
    for b in range(2):
        summary, feats = _radio_reference(sd, 2, 3, x[b].numpy(), 16)
        # float64 throughout except RADIO's float32 resize of the position table
        tol = 2e-5 * max(1.0, float(np.abs(feats).max()))
        np.testing.assert_allclose(out.summary[b].numpy(), summary, rtol=0, atol=tol)
        np.testing.assert_allclose(out.features[b].numpy(), feats, rtol=0, atol=tol)
    assert out.summary.shape == (2, 64)
    assert out.features.shape == (2, 32, size[0] // 16, size[1] // 16)
    nlc = model(x, feature_fmt="NLC").features
    torch.testing.assert_close(nlc, out.features.flatten(2).transpose(1, 2), rtol=0, atol=0)


def test_forward_rejects_bad_input():
    model = build_radio(RADIO_TINY, "cpu")
    with pytest.raises(ValueError, match="multiple of the patch size 16"):
        model(torch.rand(1, 3, 40, 64))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model(torch.rand(3, 64, 64))
    with pytest.raises(TypeError, match="float"):
        model(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))
    with pytest.raises(ValueError, match="feature_fmt"):
        model(torch.rand(1, 3, 64, 64), feature_fmt="NHWC")


def test_layouts_map_to_the_same_model(tmp_path):
    """RADIO's training layout (a .pth.tar with args, read with weights_only=True) and the
    Hugging Face layout (safetensors) give the same model."""
    from safetensors.torch import save_file

    model = _tiny_with_extras()
    sd = model.state_dict()
    train = {
        "base_model." + k.removeprefix("model."): v for k, v in sd.items() if k.startswith("model.")
    }
    train = {k.replace(".gamma", ".grandma"): v.half() for k, v in train.items()}
    train.update({k: v for k, v in sd.items() if k.startswith("input_conditioner.")})
    train.update({"_" + k: v for k, v in sd.items() if k.startswith("feature_normalizer.")})
    train["_heads.0.weight"] = torch.zeros(2)  # teacher heads are dropped
    train["base_model.reg_token"] = torch.zeros(1, 4, 32)  # timm's unused registers too
    teachers = [{"name": "clip"}, {"name": "dino"}, {"name": "sam", "use_summary": False},
                {"name": "clip"}]  # fmt: skip
    args = argparse.Namespace(teachers=teachers, cls_token_per_teacher=True, dtype=torch.float32)
    path = tmp_path / "radio.pth.tar"
    torch.save({"args": args, "state_dict": train}, path)
    state, meta = load_radio_file(path)
    assert meta == {"num_cls_tokens": 3, "summary_idxs": [0, 1]}
    a = radio_from_state_dict(RADIO_TINY, state, meta, path)
    hf = {
        "radio_model." + k: v.half().float() if k.startswith("model.") else v for k, v in sd.items()
    }
    hf["radio_model.adaptors.clip.summary.weight"] = torch.zeros(2)
    save_file(hf, tmp_path / "model.safetensors")
    config = {"args": {"teachers": [{"name": n} for n in ("a", "b", "c")]}}
    (tmp_path / "config.json").write_text(json.dumps(config))  # as the hub repos have it
    b = build_radio(f"{RADIO_TINY}:{tmp_path / 'model.safetensors'}", "cpu")
    x = torch.rand(1, 3, 32, 80)
    with torch.no_grad():
        fa, fb = a(x), b(x)
    torch.testing.assert_close(fa.features, fb.features, rtol=0, atol=1e-6)
    assert b.summary_idxs.tolist() == [0, 2] and a.summary_idxs.tolist() == [0, 1]


class _Evil:
    """Any class but argparse.Namespace in a checkpoint must be refused."""


def test_loader_refuses_code_and_names_bad_keys(tmp_path):
    path = tmp_path / "evil.pth.tar"
    torch.save({"args": _Evil(), "state_dict": {}}, path)
    with pytest.raises(ValueError, match="weights_only=True"):
        load_radio_file(path)
    with pytest.raises(FileNotFoundError, match="not found"):
        load_radio_file(tmp_path / "missing.pth.tar")
    sd = build_radio(RADIO_TINY, "cpu").state_dict()
    sd.pop("model.blocks.1.mlp.fc2.bias")
    sd["model.blocks.0.attn.qkv.weight"] = torch.zeros(5, 32)
    sd["model.extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError) as err:
        radio_from_state_dict(RADIO_TINY, sd, source="my.pth")
    message = str(err.value)
    assert "missing keys (1): model.blocks.1.mlp.fc2.bias" in message
    assert "unexpected keys (1): model.extra.weight" in message
    assert "model.blocks.0.attn.qkv.weight (5, 32) != (96, 32)" in message
    with pytest.raises(ValueError, match="not a RADIO checkpoint"):
        radio_from_state_dict(RADIO_TINY, {"a.weight": torch.zeros(1)})
    spectral = {"model.blocks.0.attn.qkv.parametrizations.weight.0._u": torch.zeros(1)}
    with pytest.raises(ValueError, match="spectral"):
        convert_radio_state_dict(spectral)
    with pytest.raises(ValueError, match="unknown RADIO model"):
        build_radio("c-radio_v9", "cpu")


def test_registry_rows():
    from ovseg.models import weights

    rows = weights.RADIO_CHECKPOINTS
    assert set(rows) == {"radio_v2.5-b", "radio_v2.5-l", "c-radio_v3-b", "c-radio_v3-l"}
    assert set(rows) <= set(RADIO_ARCHS)
    assert rows["radio_v2.5-l"].size == 1_104_806_006
    assert rows["c-radio_v3-l"].url.endswith("/C-RADIOv3-L/resolve/main/c-radio-v3_l_half.pth.tar")
    assert all(name in weights.all_checkpoints() for name in rows)


# --- against RADIO's own code ---------------------------------------------------------------


@pytest.fixture(scope="module")
def hubconf():
    if not RADIO_REPO:
        pytest.skip("OVSEG_RADIO_REPO (a checkout of github.com/NVlabs/RADIO) is not set")
    pytest.importorskip("einops")
    sys.path.insert(0, str(Path(RADIO_REPO).expanduser()))
    try:
        return importlib.import_module("hubconf")
    finally:
        sys.path.pop(0)


def _reference_checkpoint(
    hubconf, path, model, kwargs, max_size, teachers, seed, normalizer=False, **extra
):
    """Write a RADIO training checkpoint of RADIO's own model ``model`` with random weights
    (and a random output standardisation with ``normalizer``)."""
    from radio.radio_model import create_model_from_args

    args = argparse.Namespace(
        model=model, model_kwargs=dict(kwargs), in_chans=None, input_size=None, pretrained=False,
        num_classes=0, drop=0.0, drop_path=None, drop_block=None, gp=None, bn_momentum=None,
        bn_eps=None, torchscript=False, initial_checkpoint=None, cpe_max_size=max_size,
        teachers=teachers, cls_token_per_teacher=True, spectral_reparam=False, damp=None,
        dtype=torch.float32, **extra,
    )  # fmt: skip
    torch.manual_seed(seed)
    base = create_model_from_args(
        argparse.Namespace(**{**vars(args), "model_kwargs": dict(kwargs)})
    )
    state = {}
    for k, v in base.state_dict().items():  # O(1) weights everywhere, LayerScale included
        if k.endswith(("gamma", "grandma", "norm1.weight", "norm2.weight")):
            v = 0.5 + torch.rand_like(v)
        else:
            v = torch.randn_like(v) * (0.5 if v.ndim > 1 else 0.2) / math.sqrt(v.shape[-1])
        state["base_model." + k] = v
    state["input_conditioner.norm_mean"] = torch.tensor([0.4, 0.5, 0.45]).view(3, 1, 1)
    state["input_conditioner.norm_std"] = torch.tensor([0.25, 0.3, 0.2]).view(3, 1, 1)
    if normalizer:
        dim = state["base_model.patch_generator.embedder.weight"].shape[0]
        state["_feature_normalizer.mean"] = torch.randn(dim) * 0.3
        state["_feature_normalizer.tx"] = torch.randn(dim, dim) / math.sqrt(dim)
    state = {k: v.half() for k, v in state.items()}  # as the published "_half" files
    torch.save({"args": args, "state_dict": state}, path)
    return path


def _compare(ref, ours, sizes, seed=0):
    worst = 0.0
    for h, w in sizes:
        x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(seed + h + w))
        with torch.no_grad():
            rs, rf = ref(x, feature_fmt="NCHW")
            os_, of = ours(x)
        assert of.shape == rf.shape and os_.shape == rs.shape
        scale = float(rf.abs().max())
        err = max(float((of - rf).abs().max()), float((os_ - rs).abs().max()))
        assert err <= 1e-4 * max(scale, 1.0), (h, w, err, scale)
        worst = max(worst, err / max(scale, 1.0))
    return worst


TEACHERS = [{"name": "clip"}, {"name": "siglip2-g"}, {"name": "dino_v2"},
            {"name": "sam", "use_summary": False}]  # fmt: skip


def test_tiny_matches_radio_hubconf(hubconf, tmp_path):
    """C-RADIOv3's model class (LayerScale as ``grandma``, timm ``reg_token``) at width 32."""
    path = _reference_checkpoint(
        hubconf, tmp_path / "tiny.pth.tar", "vit_base_patch16_v2_224",
        dict(embed_dim=32, depth=2, num_heads=2), 256, TEACHERS, seed=3, cpe_num_registers=4,
    )  # fmt: skip
    ref = hubconf.radio_model(version=str(path)).eval()
    ours = build_radio(f"{RADIO_TINY}:{path}", "cpu")
    assert ours.arch.layer_scale and ours.arch.num_cls_tokens == 4
    assert ours.summary_idxs.tolist() == ref.summary_idxs.tolist() == [0, 1, 2]
    worst = _compare(ref, ours, [(64, 96), (96, 48), (256, 256), (16, 240), (112, 80)])
    print(f"tiny C-RADIOv3-style: max |diff| / max |feature| = {worst:.2e}")


def test_tiny_v25_style_matches_radio_hubconf(hubconf, tmp_path):
    """RADIOv2.5's model class (plain timm ViT, registers from register_multiple), with the
    output standardisation of radio_v2.5-h-norm."""
    path = _reference_checkpoint(
        hubconf, tmp_path / "v25.pth.tar", "vit_base_patch16_224",
        dict(embed_dim=32, depth=2, num_heads=2), 256, TEACHERS[:3], seed=4, normalizer=True,
        register_multiple=8,
    )  # fmt: skip
    ref = hubconf.radio_model(version=str(path)).eval()
    assert type(ref.feature_normalizer).__name__ == "FeatureNormalizer"
    ours = build_radio(f"{RADIO_TINY}:{path}", "cpu")
    assert not ours.arch.layer_scale and ours.arch.num_registers == 5
    assert ours.arch.feature_normalizer
    print(f"tiny v2.5-style: {_compare(ref, ours, [(64, 96), (160, 32)]):.2e}")


@pytest.mark.slow
def test_c_radio_v3_l_size_matches_radio_hubconf(hubconf, tmp_path):
    """C-RADIOv3-L's architecture at full size (random weights), two image sizes."""
    path = _reference_checkpoint(
        hubconf, tmp_path / "l.pth.tar", "vit_large_patch16_v2_224", {}, 2048, TEACHERS,
        seed=5, cpe_num_registers=4,
    )  # fmt: skip
    ref = hubconf.radio_model(version=str(path)).eval()
    ours = build_radio(f"c-radio_v3-l:{path}", "cpu")
    assert ours.arch == RADIO_ARCHS["c-radio_v3-l"]
    worst = _compare(ref, ours, [(368, 496), (224, 224)])
    print(f"C-RADIOv3-L size: max |diff| / max |feature| = {worst:.2e}")
