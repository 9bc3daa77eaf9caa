"""Our prompted masks against segment_anything's own SamPredictor on the same tiny model."""

import numpy as np
import pytest
from segment_anything import SamPredictor

from ovseg.models.tiny import tiny_sam
from ovseg.proposals.prompts import make_prompt
from ovseg.proposals.sam import Proposer
from ovseg.structures import Masks, masks_to_boxes


@pytest.fixture(scope="module")
def sam():
    return tiny_sam()


@pytest.fixture(scope="module")
def image(synthetic_image):
    return synthetic_image


@pytest.fixture(scope="module")
def proposer(sam, image):
    p = Proposer(sam)
    p.set_image(image)
    return p


@pytest.fixture(scope="module")
def reference(sam, image):
    ref = SamPredictor(sam)
    ref.set_image(image)
    return ref


def _ref(reference, multimask, **kw):
    masks, scores, _ = reference.predict(multimask_output=multimask, **kw)
    best = int(np.argmax(scores))
    return masks[best], scores[best]


@pytest.mark.parametrize(
    "prompt, multimask",
    [
        (dict(point_coords=np.array([[40.0, 80.0]]), point_labels=np.array([1])), True),
        (
            dict(
                point_coords=np.array([[40.0, 80.0], [120.0, 50.0]]), point_labels=np.array([1, 0])
            ),
            False,
        ),
        (dict(box=np.array([20.0, 70.0, 70.0, 110.0])), False),
        (
            dict(
                point_coords=np.array([[40.0, 90.0]]),
                point_labels=np.array([1]),
                box=np.array([20.0, 70.0, 70.0, 110.0]),
            ),
            False,
        ),
    ],
)
def test_prompted_mask_equals_sam_predictor(proposer, reference, image, prompt, multimask):
    ours = proposer.predict(
        make_prompt(
            image.shape[:2],
            points=prompt.get("point_coords"),
            point_labels=prompt.get("point_labels"),
            boxes=None if "box" not in prompt else prompt["box"][None],
        )
    )
    mask, score = _ref(reference, multimask, **prompt)
    assert len(ours) == 1
    np.testing.assert_array_equal(ours.masks[0], mask)
    assert ours.scores[0] == pytest.approx(score, abs=1e-6)
    np.testing.assert_array_equal(ours.boxes, masks_to_boxes(mask[None]))


def test_rough_mask_prompt_equals_sam_predictor_with_same_logits(proposer, reference, image):
    rough = np.zeros(image.shape[:2], bool)
    rough[70:110, 20:70] = True
    prompt = make_prompt(image.shape[:2], mask=rough)
    logits = proposer._mask_logits(rough)
    side = 4 * proposer.model.prompt_encoder.image_embedding_size[0]
    assert logits.shape == (1, side, side)
    pts, labels = prompt.all_points()
    mask, score = _ref(reference, False, point_coords=pts, point_labels=labels, mask_input=logits)
    np.testing.assert_array_equal(proposer.predict(prompt).masks[0], mask)


def test_several_boxes_equal_one_call_per_box(proposer, reference, image):
    boxes = np.array([[20, 70, 70, 110], [100, 30, 140, 90], [0, 0, 160, 60]], np.float32)
    ours = proposer.predict(make_prompt(image.shape[:2], boxes=boxes))
    assert len(ours) == 3
    for i, box in enumerate(boxes):
        mask, score = _ref(reference, False, box=box)
        assert (ours.masks[i] == mask).mean() > 0.999
        assert ours.scores[i] == pytest.approx(score, abs=1e-4)


def test_embedding_is_cached_by_content(sam, image):
    p = Proposer(sam, cache_size=2)
    assert p.set_image(image) is True
    assert p.set_image(image.copy()) is False
    other = image[::-1].copy()
    assert p.set_image(other) is True
    assert p.set_image(image) is False  # still cached: no encoder run
    assert p.encoder_calls == 2
    third = np.roll(image, 7, axis=1)
    p.set_image(third)  # evicts `other`, the least recently used
    assert p.set_image(other) is True
    assert p.encoder_calls == 4


def test_cached_embedding_gives_same_masks(sam, image):
    p = Proposer(sam)
    prompt = make_prompt(image.shape[:2], points=[[40, 80]])
    p.set_image(image)
    first = p.predict(prompt)
    p.set_image(image[::-1].copy())
    p.set_image(image)
    np.testing.assert_array_equal(p.predict(prompt).masks, first.masks)


def test_predict_before_set_image_is_runtime_error(sam, image):
    with pytest.raises(RuntimeError, match="set_image"):
        Proposer(sam).predict(make_prompt(image.shape[:2], points=[[1, 1]]))


def test_masks_container_indexing_and_boxes():
    m = np.zeros((3, 5, 6), bool)
    m[0, 1:3, 2:5] = True
    m[2, 4, 0] = True
    masks = Masks.from_masks(m, [0.1, 0.2, 0.3])
    assert masks.boxes.tolist() == [[2, 1, 5, 3], [0, 0, 0, 0], [0, 4, 1, 5]]
    sub = masks[[0, 2]]
    assert len(sub) == 2 and sub.scores.tolist() == pytest.approx([0.1, 0.3])
    assert masks[1].masks.shape == (1, 5, 6)
