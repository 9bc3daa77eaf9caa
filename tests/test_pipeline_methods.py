"""The dense stage in the Segmenter: pixel probabilities, every pixel labelled, masks refining.

Independent checks: the Segmenter's probabilities equal the methods' own front fed with query
embeddings built by the methods' text module; labels equal the argmax written here.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ovseg
from ovseg.constants import UNLABELED
from ovseg.pipeline import Segmenter

CLASSES = ["road; street", "car", "sky"]


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (97, 131, 3), dtype=np.uint8)
    img[:40] = (135, 190, 235)
    img[60:] = (90, 90, 90)
    return img


@pytest.fixture(scope="module", params=["naclip", "sclip", "clearclip"])
def dense_segmenter(request):
    return Segmenter(None, "tiny-random", "cpu", method=request.param)


def test_pixel_probabilities_equal_the_methods_front(dense_segmenter, image):
    from ovseg.methods.config import method_config
    from ovseg.methods.dense import dense_probabilities
    from ovseg.methods.text import OPENAI_IMAGENET_TEMPLATES, query_embeddings

    seg = dense_segmenter
    probs = seg.pixel_probabilities(image, CLASSES)
    assert probs.shape == (3, *image.shape[:2]) and probs.dtype == np.float32
    assert probs.min() >= 0 and probs.max() <= 1
    model = seg.clip.model
    queries, owners = ["road", "street", "car", "sky"], [0, 0, 1, 2]
    text = query_embeddings(model, seg.clip.tokenizer, queries, OPENAI_IMAGENET_TEMPLATES)
    expected = dense_probabilities(
        seg.method.name, model.visual, image, text, owners, 3, method_config(seg.method.name)
    )
    np.testing.assert_allclose(probs, expected.numpy(), atol=1e-5)


def test_synonyms_take_the_max_of_a_softmax_over_every_query(image):
    from ovseg.methods.config import method_config
    from ovseg.methods.dense import dense_logits
    from ovseg.scoring.vocabulary import template_sets, text_embeddings

    seg = Segmenter(None, "tiny-random", "cpu", method="sclip")
    probs = seg.pixel_probabilities(image, CLASSES, background=["tree"])
    names = ["road", "street", "car", "sky", "tree"]
    text = text_embeddings(names, template_sets()["imagenet"], seg.clip)
    config = method_config("sclip")
    logits = dense_logits("sclip", seg.clip.model.visual, image, text, config)
    soft = torch.softmax(config.logit_scale * logits, dim=0).numpy()
    expected = np.stack([np.maximum(soft[0], soft[1]), soft[2], soft[3]])
    np.testing.assert_allclose(probs, expected, atol=1e-5)


def test_segment_labels_every_pixel_by_argmax(dense_segmenter, image):
    result = dense_segmenter.segment(image, CLASSES)
    probs = dense_segmenter.pixel_probabilities(image, CLASSES)
    np.testing.assert_array_equal(result.label_map, probs.argmax(0))
    assert (result.label_map != UNLABELED).all()
    picked = np.take_along_axis(probs, result.label_map[None].astype(np.int64), 0)[0]
    np.testing.assert_allclose(result.confidence, picked, atol=1e-6)
    # segments partition the labelled pixels, one per class present
    owned = np.zeros(image.shape[:2], int)
    for s in result.segments:
        owned += s.mask
        assert (result.label_map[s.mask] == s.class_index).all()
    assert (owned == 1).all()
    assert len(result.segments) == len(np.unique(result.label_map))


def test_background_names_and_threshold_leave_pixels_unlabeled(image):
    seg = Segmenter(None, "tiny-random", "cpu", method="naclip")
    with_bg = seg.segment(image, ["car"], background=["sky", "road"])
    assert (with_bg.label_map == UNLABELED).any()
    probs = seg.pixel_probabilities(image, ["car"], background=["sky", "road"])
    # where the class is labelled, it beat both background names
    assert (probs[0][with_bg.label_map == 0] > 0).all()
    strict = seg.segment(image, CLASSES, prob_threshold=0.99)
    full = seg.pixel_probabilities(image, CLASSES)
    np.testing.assert_array_equal(strict.label_map == UNLABELED, full.max(0) < 0.99)


def test_options_override_the_reference_settings(image):
    seg = Segmenter(None, "tiny-random", "cpu", method="sclip")
    default = seg.pixel_probabilities(image, CLASSES)
    smaller = seg.pixel_probabilities(
        image, CLASSES, short_side=128, slide_crop=96, slide_stride=48
    )
    assert smaller.shape == default.shape and not np.allclose(smaller, default)
    built = Segmenter(None, "tiny-random", "cpu", method="sclip", short_side=128, slide_crop=96,
                      slide_stride=48)  # fmt: skip
    np.testing.assert_allclose(built.pixel_probabilities(image, CLASSES), smaller, atol=1e-6)
    for bad in ({"short_side": 0}, {"slide_stride": 500}, {"logit_scale": -1.0},
                {"prob_threshold": 2.0}, {"pamr_steps": -1}, {"no_such": 1}):  # fmt: skip
        with pytest.raises(ValueError):
            seg.pixel_probabilities(image, CLASSES, **bad)
    with pytest.raises(ValueError, match="unknown option.*bogus.*for method 'naclip'"):
        Segmenter(None, "tiny-random", "cpu", bogus=1)


def test_bad_constructions():
    with pytest.raises(ValueError, match="method must be one of"):
        Segmenter(None, "tiny-random", "cpu", method="nope")
    with pytest.raises(ValueError, match="DINO"):
        Segmenter(None, "tiny-random", "cpu", method="proxyclip")
    with pytest.raises(ValueError, match="needs a SAM"):
        Segmenter(None, "tiny-random", "cpu", method="sam-clip")
    with pytest.raises(ValueError, match="refine"):
        Segmenter(None, "tiny-random", "cpu", refine="boxes")
    with pytest.raises(TypeError, match="open_clip ViT"):
        Segmenter(None, "hf-tiny-random", "cpu", method="naclip")


def test_no_sam_means_no_prompts(image):
    seg = Segmenter(None, "tiny-random", "cpu")
    with pytest.raises(ValueError, match="SAM"):
        seg.segment(image, CLASSES, points=[[10, 10]])
    with pytest.raises(ValueError, match="grid options"):
        seg.segment(image, CLASSES, points_per_side=4)
    sam_clip = Segmenter("tiny-random", "tiny-random", "cpu", method="sam-clip")
    assert not sam_clip.pixel_probabilities(image, CLASSES).any()  # it labels masks, not pixels


def test_sam_is_built_on_first_use_only(tmp_path, monkeypatch, image):
    monkeypatch.setenv("OVSEG_WEIGHTS_DIR", str(tmp_path))
    seg = Segmenter("vit_b", "tiny-random", "cpu")  # no checkpoint here: fine until a prompt
    assert seg.segment(image, CLASSES).label_map.shape == image.shape[:2]
    with pytest.raises(FileNotFoundError, match="ovseg weights download vit_b"):
        seg.segment(image, CLASSES, points=[[10, 10]])


def test_prompted_masks_take_their_class_from_the_probabilities(image):
    from ovseg.structures import mask_class_scores

    seg = Segmenter("tiny-random", "tiny-random", "cpu")
    result = seg.segment(image, CLASSES, boxes=[[10, 10, 70, 60]])
    masks = seg.propose(image, boxes=[[10, 10, 70, 60]])
    probs = seg.pixel_probabilities(image, CLASSES)
    scores = mask_class_scores(masks.masks, probs)[0]
    first = result.segments[0]
    assert first.proposal_score > 0 and first.class_index == int(scores.argmax())
    assert first.score == pytest.approx(float(scores.max()), abs=1e-5)
    np.testing.assert_array_equal(first.mask, masks.masks[0])
    outside = ~masks.masks[0]
    np.testing.assert_array_equal(result.label_map[outside], probs.argmax(0)[outside])


def test_refining_masks_paint_their_class(image):
    seg = Segmenter("tiny-random", "tiny-random", "cpu", refine="masks")
    result = seg.segment(image, CLASSES, points_per_side=4, box_nms_thresh=1.0)
    instances = [s for s in result.segments if s.proposal_score > 0]
    assert instances, "the unfiltered tiny grid yields masks"
    for s in instances:
        assert (result.label_map[s.mask] == s.class_index).all()
    assert (result.label_map != UNLABELED).all()


def test_segment_front_takes_segmenter_options(image):
    a = ovseg.segment(image, CLASSES, sam=None, clip="tiny-random", method="clearclip")
    b = Segmenter(None, "tiny-random", method="clearclip").segment(image, CLASSES)
    np.testing.assert_array_equal(a.label_map, b.label_map)
    crop = ovseg.segment(image, CLASSES, sam="tiny-random", clip="tiny-random",
                         method="sam-clip", scorer="crop", margin=0.2)  # fmt: skip
    assert crop.label_map.shape == image.shape[:2]
    with pytest.raises(ValueError, match="unknown option"):
        ovseg.segment(image, CLASSES, sam=None, clip="tiny-random", bogus=1)


def test_proxyclip_through_the_segmenter_equals_its_front(image):
    from ovseg.methods.proxyclip import proxyclip_probabilities
    from ovseg.methods.text import OPENAI_IMAGENET_TEMPLATES, query_embeddings

    seg = Segmenter(None, "tiny-random", "cpu", dino="tiny-random", method="proxyclip")
    probs = seg.pixel_probabilities(image, CLASSES)
    model = seg.clip.model
    queries, owners = ["road", "street", "car", "sky"], [0, 0, 1, 2]
    text = query_embeddings(model, seg.clip.tokenizer, queries, OPENAI_IMAGENET_TEMPLATES)
    expected = proxyclip_probabilities(model.visual, seg.dino, image, text, owners, 3)
    np.testing.assert_allclose(probs, expected.numpy(), atol=1e-5)
    labels = seg.segment(image, CLASSES).label_map
    np.testing.assert_array_equal(labels, probs.argmax(0))


def test_very_elongated_images_keep_one_patch_on_the_short_side():
    from ovseg.methods.geometry import imrescale_size

    img = np.random.default_rng(0).integers(0, 255, (12, 4000, 3), dtype=np.uint8)
    assert min(imrescale_size(12, 4000, 336, 2048)) < 16  # where the references fail
    seg = Segmenter(None, "tiny-random", "cpu", method="clearclip")
    probs = seg.pixel_probabilities(img, CLASSES)
    assert probs.shape == (3, 12, 4000) and np.isfinite(probs).all()
    # an image the reference resize handles is computed with the reference settings, unchanged
    config = seg.config()
    assert seg.method.fit((97, 131), config, seg.models) is config


def test_scorer_by_name_or_object(image):
    from ovseg.scoring.regions import CropScorer

    seg = Segmenter("tiny-random", "tiny-random", "cpu", method="sam-clip", scorer="crop",
                    margin=0.3)  # fmt: skip
    assert isinstance(seg.region_scorer, CropScorer) and seg.region_scorer.margin == 0.3
    built = CropScorer(seg.clip, margin=0.3)
    other = Segmenter("tiny-random", seg.clip, "cpu", method="sam-clip", scorer=built)
    assert other.region_scorer is built
    masks = other.propose(image, boxes=[[10, 10, 70, 60]])
    np.testing.assert_allclose(other.score(masks, CLASSES, image), seg.score(masks, CLASSES, image),
                               atol=1e-6)  # fmt: skip
    per_call = seg.score(masks, CLASSES, image, scorer=built)  # the same option, per call
    np.testing.assert_allclose(per_call, other.score(masks, CLASSES, image), atol=1e-6)
    with pytest.raises(ValueError, match="window.*options of scorer='dense'"):
        Segmenter(None, seg.clip, "cpu", method="sam-clip", scorer="crop", window=3)
    with pytest.raises(TypeError, match="scorer must be"):
        Segmenter(None, seg.clip, "cpu", method="sam-clip", scorer=3)
    with pytest.raises(ValueError, match="unknown option.*margin.*for method 'naclip'"):
        Segmenter(None, seg.clip, "cpu", scorer="crop", margin=0.1)


def test_a_bad_sam_spec_fails_at_construction(tmp_path):
    with pytest.raises(ValueError, match="unknown SAM model"):
        Segmenter("vit_z", "tiny-random", "cpu")
    with pytest.raises(FileNotFoundError, match="not found"):
        Segmenter(str(tmp_path / "missing.pth"), "tiny-random", "cpu")
    with pytest.raises(TypeError, match="sam must be"):
        Segmenter(3, "tiny-random", "cpu")


def test_area_rule_with_background_names(image):
    seg = Segmenter(None, "tiny-random", "cpu", method="sclip")
    classes, bg = ["road; street", "car"], ["sky"]
    result = seg.segment(image, classes, background=bg, area_threshold=0.45)
    probs = seg.pixel_probabilities(image, classes, background=bg)  # (2, H, W), classes only

    full = seg.probabilities(image, seg.vocabulary(classes, bg), seg.config()).numpy()  # (3, H, W)
    first = full.argmax(0)
    area = np.array([(first == c).sum() for c in range(2)], float)
    kept = area > 0.45 * area.sum()
    scaled = np.concatenate([full[:2] * kept[:, None, None], full[2:]])
    expected = scaled.argmax(0)
    expected[expected == 2] = UNLABELED
    np.testing.assert_array_equal(result.label_map, expected)
    np.testing.assert_allclose(probs, full[:2], atol=1e-6)
