"""SAM 2's shared-work grid decoder against ``transformers``' own ``Sam2MaskDecoder`` (through
``Sam2Proposer.decode``) on a tiny random SAM 2 and the same prompts."""

import numpy as np
import pytest
import torch

from ovseg.models.build import build_sam
from ovseg.proposals.sam2 import Sam2Proposer
from ovseg.proposals.sam2_decoder import _nested, _unnest, decode_points, prepare

B = 12


@pytest.fixture(scope="module")
def setup():
    model = build_sam("sam2-tiny-random", "cpu")
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        for p in model.parameters():  # spread the outputs away from the random init's
            p.add_(torch.randn_like(p) * 0.1)
    proposer = Sam2Proposer(model)
    image = np.random.RandomState(0).randint(0, 256, (90, 130, 3)).astype(np.uint8)
    proposer.set_image(image)
    gen = torch.Generator().manual_seed(1)
    coords = torch.rand(B, 1, 2, generator=gen) * proposer.side
    labels = torch.ones(B, 1, dtype=torch.int)
    masks = torch.randn(B, 1, proposer.low_res_side, proposer.low_res_side, generator=gen) * 4
    return model, proposer, coords, labels, masks


def _reference(proposer, coords, labels, mask_input, multimask):
    with torch.inference_mode():
        low, iou = proposer.decode(coords, labels, mask_input, multimask)
    k = 3 if multimask else 1
    return low.reshape(len(coords), k, *low.shape[-2:]), iou.reshape(len(coords), k)


@pytest.mark.parametrize("multimask", [True, False])
@pytest.mark.parametrize("with_mask", [False, True])
def test_equals_sam2_mask_decoder(setup, multimask, with_mask):
    model, proposer, coords, labels, masks = setup
    mask_input = masks if with_mask else None
    ref_low, ref_iou = _reference(proposer, coords, labels, mask_input, multimask)
    with torch.inference_mode():
        image = prepare(model, proposer.features)
        low, iou, kept = decode_points(model, image, coords, labels, mask_input, multimask)
    assert kept.tolist() == list(range(B))
    torch.testing.assert_close(iou, ref_iou, atol=1e-5, rtol=0)
    torch.testing.assert_close(low, ref_low, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("multimask", [True, False])
def test_iou_threshold_keeps_exactly_the_prompts_with_a_passing_candidate(setup, multimask):
    model, proposer, coords, labels, _ = setup
    ref_low, ref_iou = _reference(proposer, coords, labels, None, multimask)
    if multimask:
        best = ref_iou.max(1).values
    else:  # the single-mask output picks among all four tokens' IoUs: use the picked ones
        best = ref_iou[:, 0]
    ordered = best.sort().values
    threshold = float(ordered[B // 2 - 1 : B // 2 + 1].mean())  # midway: no rounding tie
    with torch.inference_mode():
        image = prepare(model, proposer.features)
        low, iou, kept = decode_points(model, image, coords, labels, None, multimask, threshold)
    passing = set(torch.nonzero(best > threshold).flatten().tolist())
    assert passing <= set(kept.tolist()) and len(passing) == B // 2
    if multimask:  # a prompt is kept when one of its three candidates passes
        assert kept.tolist() == sorted(passing)
    torch.testing.assert_close(low, ref_low[kept], atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(iou, ref_iou[kept], atol=1e-5, rtol=0)


def test_no_prompt_passing_gives_empty_outputs(setup):
    model, proposer, coords, labels, _ = setup
    with torch.inference_mode():
        image = prepare(model, proposer.features)
        low, iou, kept = decode_points(model, image, coords, labels, None, True, 2.0)
    side = proposer.low_res_side
    assert low.shape == (0, 3, side, side) and iou.shape == (0, 3) and kept.numel() == 0


@pytest.mark.parametrize("levels", [1, 2])
def test_nested_pixel_order_round_trips(levels):
    x = torch.arange(2 * 3 * 8 * 8 * 4**levels, dtype=torch.float32)
    x = x.view(2, 3, 8 * 2**levels, 8 * 2**levels)
    nested = _nested(x, levels)
    assert nested.shape == (2, 64 * 4**levels, 3)
    back = _unnest(nested.transpose(1, 2), 8, 8, levels)
    assert torch.equal(back, x)


def test_bfloat16_autocast_agrees_with_float32(setup):
    """The decoder under bfloat16 autocast (on the float32 embedding): the candidates' IoUs within
    0.03 and the logits within 3% (L2, relative) of float32's."""
    model, proposer, coords, labels, masks = setup
    with torch.inference_mode():
        image = prepare(model, proposer.features)
        low, iou, _ = decode_points(model, image, coords, labels)
        low_m, iou_m, _ = decode_points(model, image, coords, labels, masks, False)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half = prepare(model, proposer.features)
            low16, iou16, _ = decode_points(model, half, coords, labels)
            low16_m, iou16_m, _ = decode_points(model, half, coords, labels, masks, False)
    for a, b in ((iou16, iou), (iou16_m, iou_m)):
        assert (a.float() - b).abs().max() < 0.03
    for a, b in ((low16, low), (low16_m, low_m)):
        assert (a.float() - b).norm() / b.norm() < 0.03
