"""The grid decoder against segment_anything's own MaskDecoder on the same model and prompts."""

import pytest
import torch

from ovseg.models.tiny import tiny_sam
from ovseg.proposals.decoder import decode_points


@pytest.fixture(scope="module")
def setup():
    sam = tiny_sam(seed=1)
    gen = torch.Generator().manual_seed(0)
    features = torch.randn(1, 64, 16, 16, generator=gen)
    coords = torch.rand(24, 1, 2, generator=gen, dtype=torch.float64) * 256
    labels = torch.ones(24, 1, dtype=torch.int)
    with torch.inference_mode():
        sparse, dense = sam.prompt_encoder(points=(coords, labels), boxes=None, masks=None)
        low, iou = sam.mask_decoder(
            image_embeddings=features,
            image_pe=sam.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=True,
        )
    return sam, features, coords, low, iou


def test_equals_mask_decoder_multimask_output(setup):
    sam, features, coords, ref_low, ref_iou = setup
    low, iou, kept = decode_points(sam, features, coords)
    assert kept.tolist() == list(range(24))
    torch.testing.assert_close(iou, ref_iou, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(low, ref_low, atol=1e-5, rtol=1e-5)


def test_iou_threshold_keeps_exactly_the_prompts_with_a_passing_candidate(setup):
    sam, features, coords, ref_low, ref_iou = setup
    best = ref_iou.max(1).values.sort().values
    threshold = float(best[11:13].mean())  # midway between two prompts: no float-rounding tie
    assert float(best[12] - best[11]) > 1e-5  # both sides clear of it (IoUs agree to 1e-6)
    low, iou, kept = decode_points(sam, features, coords, iou_threshold=threshold)
    expected = torch.nonzero((ref_iou > threshold).any(1)).flatten()
    assert 0 < len(kept) < 24 and kept.tolist() == expected.tolist()
    torch.testing.assert_close(low, ref_low[kept], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(iou, ref_iou[kept], atol=1e-6, rtol=1e-6)


def test_no_prompt_passing_the_threshold_gives_empty_outputs(setup):
    sam, features, coords, _, _ = setup
    low, iou, kept = decode_points(sam, features, coords, iou_threshold=1e9)
    assert low.shape == (0, 3, 64, 64) and iou.shape == (0, 3) and kept.numel() == 0
