"""Very elongated images (30000 x 20): SAM's resize used to round the short side to 0 pixels
("height and width must be > 0"); the region scorers must not need gigabytes either."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ovseg.models.tiny import tiny_clip, tiny_sam
from ovseg.proposals.grid import GridOptions, automatic_masks
from ovseg.proposals.prompts import make_prompt
from ovseg.proposals.sam import Proposer
from ovseg.scoring.backends import OpenClipBackend
from ovseg.scoring.regions import CropScorer, DenseScorer

KEEP_ALL = GridOptions(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0)


@pytest.fixture(scope="module")
def proposer():
    return Proposer(tiny_sam())


@pytest.fixture(scope="module")
def backend():
    return OpenClipBackend(tiny_clip(), name="tiny")


@pytest.mark.parametrize("shape", [(30000, 20), (20, 30000), (5000, 1)])
def test_sam_embeds_and_decodes_elongated_images(proposer, shape):
    image = np.random.default_rng(0).integers(0, 255, (*shape, 3), dtype=np.uint8)
    proposer.set_image(image)
    assert proposer.image_shape == shape
    masks = automatic_masks(proposer, KEEP_ALL)
    assert len(masks) > 0 and masks.masks.shape[1:] == shape
    prompted = proposer.predict(make_prompt(shape, [[0, 0]], [1]))
    assert prompted.masks.shape == (1, *shape)
    mask = np.zeros(shape, bool)
    mask[: shape[0] // 2, : max(1, shape[1] // 2)] = True
    assert proposer.predict(make_prompt(shape, mask=mask)).masks.shape == (1, *shape)


def test_region_scorers_on_an_elongated_image(proposer, backend):
    image = np.random.default_rng(1).integers(0, 255, (30000, 20, 3), dtype=np.uint8)
    proposer.set_image(image)
    masks = automatic_masks(proposer, KEEP_ALL)
    for scorer in (CropScorer(backend), DenseScorer(backend)):
        emb = scorer.embed(image, masks)
        assert emb.shape[0] == len(masks) and torch.isfinite(emb).all()
    # the dense pass keeps a bounded aspect ratio, at least one patch on the short side
    fh, fw, _ = DenseScorer(backend).feature_map(image).shape
    assert fw >= 1 and fh <= 8 * 2 * backend.image_size // 16


def test_crop_of_a_huge_box_matches_roi_align_where_it_is_exact():
    from torchvision.ops import roi_align

    from ovseg.scoring.regions import _crop

    x = torch.rand(1, 3, 40, 30)
    rois = torch.tensor([[0, 1.0, 2.0, 25.0, 30.0], [0, -5.0, -3.0, 40.0, 44.0]])
    assert torch.equal(_crop(x, rois, 8), roi_align(x, rois, 8, aligned=True))
    big = torch.tensor([[0, -2000.0, -2000.0, 2000.0, 2000.0], [0, 1.0, 2.0, 25.0, 30.0]])
    out = _crop(x, big, 8)  # the big box is sampled 16 x 16 per crop pixel, the small exactly
    assert torch.equal(out[1:], roi_align(x, big[1:], 8, aligned=True))
    assert torch.allclose(out[:1], roi_align(x, big[:1], 8, sampling_ratio=16, aligned=True))
