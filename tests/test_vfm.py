"""build_vfm: RADIO and DINOv2/DINOv3 (transformers) behind one interface, on tiny models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ovseg.models.vfm import VFM_ALIASES, VFM_TINY, build_vfm


@pytest.fixture(scope="module", params=VFM_TINY)
def vfm(request):
    return build_vfm(request.param, "cpu")


def test_interface(vfm, synthetic_image):
    """Every VFM: ``vfm(vfm.preprocess(image))`` -> (1, h, w, D); ``dense_features`` the same
    map as (1, D, h, w); the key of its bank files in ``name``."""
    p = vfm.patch_size
    assert vfm.dim == 32 and p in (14, 16) and vfm.name in VFM_TINY
    x = vfm.preprocess(synthetic_image)
    assert x.shape[-2:] == tuple(max(round(s / p) * p, p) for s in synthetic_image.shape[:2])
    out = vfm(torch.cat([x, x]))
    assert out.shape == (2, x.shape[-2] // p, x.shape[-1] // p, 32)
    torch.testing.assert_close(out[0], out[1], rtol=1e-5, atol=1e-5)  # per image
    dense = vfm.dense_features(synthetic_image)
    torch.testing.assert_close(dense, out[:1].permute(0, 3, 1, 2).float(), rtol=1e-5, atol=1e-5)
    assert float(dense.std()) > 0.01  # not a constant map


def test_radio_checks_its_input():
    vfm = build_vfm("radio-tiny-random", "cpu")
    p = vfm.patch_size
    with pytest.raises(ValueError, match=f"multiple of the patch size {p}"):
        vfm(torch.rand(1, 3, p + 1, p))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        vfm(torch.rand(3, p, p))
    with pytest.raises(TypeError, match="floats"):
        vfm(torch.zeros(1, 3, p, p, dtype=torch.uint8))


def test_radio_dense_features_follow_the_reference_steps(synthetic_image):
    """pil_to_tensor / 255, bilinear resize (align_corners=False) to the nearest multiples of
    the patch, then RADIO; the map is (1, D, h, w). (DINO's steps: tests/test_corrclipv2.py.)"""
    vfm = build_vfm("radio-tiny-random", "cpu")
    h, w = synthetic_image.shape[:2]  # 120 x 160
    size = vfm.input_size(h, w)
    p = vfm.patch_size
    assert size == tuple(max(round(s / p) * p, p) for s in (h, w))
    x = torch.from_numpy(synthetic_image).permute(2, 0, 1)[None].float() / 255
    x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    torch.testing.assert_close(vfm.preprocess(synthetic_image), x, rtol=0, atol=0)
    got = vfm.dense_features(synthetic_image)
    assert got.shape == (1, 32, size[0] // p, size[1] // p)
    with torch.no_grad():
        want = vfm.backbone(x, feature_fmt="NCHW").features
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert float(got.std()) > 0.1  # not a constant map


def test_radio_mean_std_come_from_the_model():
    vfm = build_vfm("radio-tiny-random", "cpu")
    np.testing.assert_allclose(vfm.mean, (0.48145466, 0.4578275, 0.40821073), rtol=1e-6)
    assert vfm.kind == "radio" and vfm.name == "radio-tiny-random"
    assert build_vfm(vfm, "cpu") is vfm


def test_specs_and_errors(tmp_path, monkeypatch):
    assert VFM_ALIASES["radiov3"] == "c-radio_v3-l"  # CorrCLIPv2's default VFM
    assert VFM_ALIASES["dinov2"] == "hf:facebook/dinov2-with-registers-large"
    monkeypatch.setenv("OVSEG_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="ovseg weights download c-radio_v3-l"):
        build_vfm("radiov3", "cpu")
    with pytest.raises(FileNotFoundError, match="hf download facebook/dinov2-with-registers-large"):
        build_vfm("dinov2", "cpu")
    assert build_vfm("tiny-random", "cpu").name == "dinov2-tiny"  # the bank tests' VFM
    with pytest.raises(ValueError, match="unknown VFM 'dino'.*radiov3"):
        build_vfm("dino", "cpu")
    with pytest.raises(TypeError, match="vfm must be"):
        build_vfm(3, "cpu")
    with pytest.raises(ValueError, match="RADIO architectures only"):
        build_vfm("dinov3", "cpu", random_weights=True)
    with pytest.raises(FileNotFoundError, match="not found"):
        build_vfm(f"c-radio_v3-l:{tmp_path / 'none.pth.tar'}", "cpu")


def test_random_weights_warn():
    with pytest.warns(UserWarning, match="RANDOM weights"):
        vfm = build_vfm("c-radio_v3-b", "cpu", random_weights=True)
    assert (vfm.dim, vfm.patch_size, vfm.backbone.arch.depth) == (768, 16, 12)
