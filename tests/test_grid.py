"""The fast grid path against segment_anything's own generator, and the fused-attention patch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conditioning import assert_equal_where
from segment_anything import SamAutomaticMaskGenerator

from ovseg.models.tiny import tiny_sam
from ovseg.proposals.grid import GridOptions, automatic_masks, fused_attention, uses_fused_attention
from ovseg.proposals.sam import Proposer


def _ious(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    fa = torch.from_numpy(a).flatten(1).float()
    fb = torch.from_numpy(b).flatten(1).float()
    inter = fa @ fb.T
    return (inter / (fa.sum(1, keepdim=True) + fb.sum(1) - inter).clamp(min=1)).numpy()


def _both(image, seed=0, **options):
    sam = tiny_sam(seed)
    plain = SamAutomaticMaskGenerator(sam, **options).generate(image)
    proposer = Proposer(sam)
    proposer.set_image(image)
    ours = automatic_masks(proposer, GridOptions(**options))
    return np.array([r["segmentation"] for r in plain]).reshape(-1, *image.shape[:2]), ours


# Masks are logits > 0; ovseg's decoder and SAM's agree to 1e-5 (tests/test_decoder.py), so a
# pixel whose logit is farther than this from 0 is on the same side in both, on any CPU.
LOGIT_TOL = 1e-4


@pytest.mark.parametrize("seed", [0, 1])
def test_filters_off_every_plain_mask_is_identical(synthetic_image, seed, monkeypatch):
    """Every plain mask is one of ovseg's, pixel for pixel wherever ovseg's logit is clear of
    the cut (pixels within LOGIT_TOL of it may go either way: a few per mask)."""
    import ovseg.proposals.grid as grid

    logits = []
    upsample = grid._upsample

    def recording(proposer, low, *args):
        p = proposer.predictor
        up = proposer.model.postprocess_masks(low.logits[:, None], p.input_size, p.original_size)
        logits.append(up[:, 0].numpy())
        return upsample(proposer, low, *args)

    monkeypatch.setattr(grid, "_upsample", recording)
    plain, ours = _both(
        synthetic_image,
        seed,
        points_per_side=6,
        points_per_batch=32,
        pred_iou_thresh=0.0,
        stability_score_thresh=0.0,
        box_nms_thresh=1.0,
    )
    assert len(plain) == 3 * 36
    assert len(ours) == len(plain)
    (logits,) = logits
    clear = np.abs(logits) > LOGIT_TOL
    # the tiny model's logits are small (|logit| ~0.03 on average): about 0.3% of the pixels
    # lie within LOGIT_TOL of 0
    assert_equal_where(ours.masks, logits > 0, clear, 0.99, "mask pixels")
    for m in plain:
        same = ((ours.masks == m[None]) | ~clear).all(axis=(1, 2))
        assert same.any(), "a plain mask differs from every ovseg mask where both are clear"
    assert np.all(np.diff(ours.scores) <= 0)  # sorted by predicted IoU


def test_filters_on_match_within_tolerance(synthetic_image):
    """Predicted-IoU filter (same values on both sides) + NMS on low-resolution boxes: every
    plain mask has an ovseg mask at IoU >= 0.9 and the counts differ by at most 10%."""
    plain, ours = _both(
        synthetic_image,
        0,
        points_per_side=8,
        pred_iou_thresh=0.1,
        stability_score_thresh=0.0,
        box_nms_thresh=0.9,
    )
    assert len(plain) > 0
    assert abs(len(ours) - len(plain)) <= max(1, len(plain) // 10)
    assert (_ious(plain, ours.masks).max(1) >= 0.9).all()


def test_max_masks_and_adaptive(synthetic_image):
    proposer = Proposer(tiny_sam())
    proposer.set_image(synthetic_image)
    options = dict(
        points_per_side=8, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0
    )
    full = automatic_masks(proposer, GridOptions(**options))
    top = automatic_masks(proposer, GridOptions(max_masks=5, **options))
    np.testing.assert_array_equal(top.masks, full.masks[:5])
    adaptive = automatic_masks(proposer, GridOptions(adaptive=True, **options))
    # The coarse 4x4 grid's masks cover every fine point on this image, so only coarse points
    # (3 masks each) are decoded; they are grid points, so their masks are the full grid's (up
    # to pixels flipped by float rounding in other batch shapes).
    assert len(adaptive) == 3 * 16
    assert adaptive.masks.shape[1:] == synthetic_image.shape[:2]
    match = np.abs(adaptive.scores[:, None] - full.scores[None]).argmin(1)
    np.testing.assert_allclose(adaptive.scores, full.scores[match], atol=1e-5)
    assert (np.diag(_ious(adaptive.masks, full.masks[match])) >= 0.99).all()


def test_adaptive_never_decodes_more_points_than_the_full_grid(synthetic_image, monkeypatch):
    import ovseg.proposals.grid as grid

    proposer = Proposer(tiny_sam())
    proposer.set_image(synthetic_image)
    decoded = []
    original = grid._decode
    monkeypatch.setattr(
        grid, "_decode", lambda p, pts, o: decoded.append(len(pts)) or original(p, pts, o)
    )
    # Filters that keep nothing: the coarse pass covers nothing, every other point follows.
    automatic_masks(proposer, GridOptions(points_per_side=8, adaptive=True, pred_iou_thresh=1.0))
    assert decoded == [16, 48]


@pytest.mark.parametrize(
    "bad",
    [
        dict(points_per_side=0),
        dict(pred_iou_thresh=1.5),
        dict(points_per_batch=0),
        dict(box_nms_thresh=-0.1),
    ],
)
def test_grid_options_validation(bad):
    with pytest.raises(ValueError):
        GridOptions(**bad)


def test_fused_attention_matches_original_and_switches_back():
    sam = tiny_sam()
    with torch.no_grad():
        for m in sam.image_encoder.modules():
            if getattr(m, "use_rel_pos", False):  # non-zero relative positions: exercise the bias
                m.rel_pos_h.normal_(std=0.5)
                m.rel_pos_w.normal_(std=0.5)
    x = torch.randn(2, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        reference = sam.image_encoder(x)
        assert fused_attention(sam) == 2 and uses_fused_attention(sam)
        fused = sam.image_encoder(x)
        assert fused_attention(sam, enabled=False) == 2 and not uses_fused_attention(sam)
        restored = sam.image_encoder(x)
    torch.testing.assert_close(fused, reference, rtol=1e-4, atol=1e-4)
    assert torch.equal(restored, reference)


def test_fused_attention_is_per_instance():
    a, b = tiny_sam(), tiny_sam()
    fused_attention(a)
    assert uses_fused_attention(a) and not uses_fused_attention(b)
