"""Region scoring against the CLIP libraries' own image encoders."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ovseg.models.build import build_clip
from ovseg.scoring.regions import CropScorer, DenseScorer, make_scorer, square_boxes
from ovseg.structures import Masks


@pytest.fixture(scope="module")
def clip():
    return build_clip("tiny-random", "cpu")


@pytest.fixture(scope="module")
def hf_clip():
    return build_clip("hf-tiny-random", "cpu")


def _box_mask(shape, x0, y0, x1, y1):
    m = np.zeros(shape, bool)
    m[y0:y1, x0:x1] = True
    return m


def _image(seed=0):
    return np.random.default_rng(seed).integers(0, 256, (120, 160, 3), dtype=np.uint8)


def test_crop_of_input_sized_box_is_the_image_region(clip):
    s = clip.image_size  # 64 for the tiny model
    img = _image()
    masks = Masks.from_masks(_box_mask(img.shape[:2], 30, 20, 30 + s, 20 + s)[None])
    crop = CropScorer(clip, margin=0.0, fill="none").crops(img, masks)[0]
    expected = torch.from_numpy(img[20 : 20 + s, 30 : 30 + s]).permute(2, 0, 1).float() / 255
    torch.testing.assert_close(crop, expected, atol=1e-5, rtol=0)


def test_grey_fill_replaces_outside_pixels_with_clip_mean(clip):
    s = clip.image_size
    img = _image(1)
    mask = _box_mask(img.shape[:2], 30, 20, 30 + s, 20 + s)
    mask[20 : 20 + s // 2, 30 : 30 + s] = False  # keep only the lower half of the box
    masks = Masks.from_masks(mask[None])
    masks.boxes[:] = [30, 20, 30 + s, 20 + s]
    crop = CropScorer(clip, margin=0.0, fill="grey").crops(img, masks)[0]
    mean = torch.tensor(clip.mean).view(3, 1, 1)
    torch.testing.assert_close(
        crop[:, : s // 2 - 1], mean.expand(3, s // 2 - 1, s), atol=1e-5, rtol=0
    )
    lower = torch.from_numpy(img[20 + s // 2 + 1 : 20 + s, 30 : 30 + s]).permute(2, 0, 1) / 255
    torch.testing.assert_close(crop[:, s // 2 + 1 :], lower.float(), atol=1e-5, rtol=0)


@pytest.mark.parametrize("fill", ["grey", "blur", "none"])
def test_region_embedding_equals_open_clip_encode_image_on_same_crop(clip, fill):
    img = _image(2)
    masks = Masks.from_masks(
        np.stack(
            [_box_mask(img.shape[:2], 10, 10, 50, 90), _box_mask(img.shape[:2], 60, 5, 150, 40)]
        )
    )
    scorer = CropScorer(clip, margin=0.15, fill=fill, batch_size=1)
    crops = scorer.crops(img, masks)
    assert crops.shape == (2, 3, clip.image_size, clip.image_size)
    with torch.no_grad():
        ref = F.normalize(clip.model.encode_image(clip.normalize(crops)), dim=-1)
    torch.testing.assert_close(scorer.embed(img, masks), ref, atol=1e-5, rtol=1e-5)


def test_region_embedding_equals_transformers_image_features(hf_clip):
    img = _image(3)
    masks = Masks.from_masks(_box_mask(img.shape[:2], 10, 10, 50, 90)[None])
    scorer = CropScorer(hf_clip)
    crops = scorer.crops(img, masks)
    with torch.no_grad():
        out = hf_clip.model.get_image_features(pixel_values=hf_clip.normalize(crops))
    ref = F.normalize(getattr(out, "pooler_output", out), dim=-1)
    torch.testing.assert_close(scorer.embed(img, masks), ref, atol=1e-5, rtol=1e-5)


def test_square_boxes_are_square_centred_and_grown():
    boxes = np.array([[10, 20, 30, 60]], np.float32)
    sq = square_boxes(boxes, 0.25)
    assert sq[0, 2] - sq[0, 0] == pytest.approx(60) and sq[0, 3] - sq[0, 1] == pytest.approx(60)
    assert (sq[0, 0] + sq[0, 2]) / 2 == pytest.approx(20)
    assert (sq[0, 1] + sq[0, 3]) / 2 == pytest.approx(40)


@pytest.mark.parametrize("backend", ["tiny-random", "hf-tiny-random"])
def test_dense_feature_map_shape_and_unit_norm(backend):
    clip = build_clip(backend, "cpu")
    feats = DenseScorer(clip, short_side=48).feature_map(_image(4))
    assert feats.shape == (3, 4, 32)  # 120x160 -> 48x64 -> 3x4 patches of 16
    torch.testing.assert_close(feats.norm(dim=-1), torch.ones(3, 4), atol=1e-5, rtol=0)


def test_dense_embedding_of_one_patch_mask_is_that_patch(clip):
    img = _image(5)
    scorer = DenseScorer(clip, short_side=120)  # 120x160 -> 112x160 grid 7x10 patches
    feats = scorer.feature_map(img)
    fh, fw, _ = feats.shape
    ph, pw = img.shape[0] / fh, img.shape[1] / fw
    mask = np.zeros(img.shape[:2], bool)
    mask[int(2 * ph) + 1 : int(3 * ph) - 1, int(4 * pw) + 1 : int(5 * pw) - 1] = True
    emb = scorer.embed(img, Masks.from_masks(mask[None]))[0]
    assert torch.dot(emb, feats[2, 4]).item() == pytest.approx(1.0, abs=1e-5)


def test_make_scorer_rejects_unknown_kind_and_bad_options(clip):
    with pytest.raises(ValueError, match="scorer must be one of"):
        make_scorer("pixel", clip)
    with pytest.raises(ValueError, match="fill"):
        make_scorer("crop", clip, fill="pink")
    with pytest.raises(ValueError, match="margin"):
        make_scorer("crop", clip, margin=-1)


def test_sliding_window_covering_the_image_equals_one_pass(clip):
    img = _image(6)  # 120x160 -> short side 64 -> 64x80 (patch 16)
    whole = DenseScorer(clip, short_side=64).feature_map(img)
    slid = DenseScorer(clip, short_side=64, window=128, stride=16).feature_map(img)
    torch.testing.assert_close(slid, whole, atol=1e-5, rtol=1e-5)


def test_sliding_window_averages_the_windows_covering_each_patch(clip):
    img = _image(7)
    scorer = DenseScorer(clip, short_side=64, window=48, stride=32)  # 64x80: 4x5 patches
    feats = scorer.feature_map(img)
    assert feats.shape == (4, 5, 32)
    resized = F.interpolate(
        torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255,
        size=(64, 80),
        mode="bilinear",
        align_corners=False,
        antialias=True,
    )
    norm = clip.normalize(resized)
    corner = clip.dense_features(norm[:, :, 0:48, 0:48])[0]  # the only window on patch (0, 0)
    torch.testing.assert_close(feats[0, 0], corner[0, 0], atol=1e-5, rtol=1e-5)
    # windows start at y in {0, 16}, x in {0, 32}: patch (0, 2) lies in (0, 0) and (0, 32) only
    a = corner[0, 2]
    b = clip.dense_features(norm[:, :, 0:48, 32:80])[0][0, 0]
    torch.testing.assert_close(feats[0, 2], F.normalize(a + b, dim=-1), atol=1e-5, rtol=1e-5)


def test_bad_window_options(clip):
    with pytest.raises(ValueError, match="window"):
        DenseScorer(clip, window=50)
    with pytest.raises(ValueError, match="stride"):
        DenseScorer(clip, window=48, stride=7)


def test_dense_scorers_need_a_vit_tower_and_say_so():
    from ovseg.models.build import build_clip as build

    with pytest.warns(UserWarning, match="RANDOM"):
        resnet = build("RN50", "cpu", random_weights=True)
    assert not resnet.supports_dense
    for kind in ("dense", "both"):
        with pytest.raises(ValueError, match="scorer='crop'"):
            make_scorer(kind, resnet)
    assert isinstance(make_scorer("crop", resnet), CropScorer)
    assert build("tiny-random", "cpu").supports_dense
    assert build("hf-tiny-random", "cpu").supports_dense
