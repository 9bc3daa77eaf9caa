"""SAM 3's tracker on point, box and mask prompts against the official ``transformers``
pipeline (``Sam3TrackerProcessor`` -> ``Sam3TrackerModel`` -> ``post_process_masks``), the
reference model holding the same tiny random weights as ``sam3-tiny-random`` (mapped as
``transformers`` maps ``facebook/sam3`` into ``Sam3TrackerModel``).

Masks are compared exactly except where the reference's upsampled logit lies within 1e-3 of 0.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ovseg.models.sam3_weights import SAM3_TINY, build_sam3
from ovseg.proposals.prompts import make_prompt
from ovseg.proposals.sam3 import Sam3Bundle
from ovseg.proposals.sam3_detector import Sam3Detector
from ovseg.proposals.sam3_tracker import Sam3TrackerProposer

LOGIT_BAND = 1e-3


@pytest.fixture(scope="module")
def sam() -> Sam3Bundle:
    return build_sam3(SAM3_TINY, "cpu")


@pytest.fixture(scope="module")
def reference(sam):
    """(Sam3TrackerModel with the bundle's weights, Sam3TrackerProcessor)."""
    from transformers import Sam3TrackerConfig, Sam3TrackerModel, Sam3TrackerProcessor

    tc = sam.model.config.tracker_config
    config = Sam3TrackerConfig(
        vision_config=tc.vision_config,
        prompt_encoder_config=tc.prompt_encoder_config.to_dict(),
        mask_decoder_config=tc.mask_decoder_config.to_dict(),
    )
    model = Sam3TrackerModel(config).eval()
    renames = {
        "detector_model.vision_encoder.backbone.": "vision_encoder.backbone.",
        "tracker_neck.": "vision_encoder.neck.",
        "tracker_model.": "",
    }
    state = {}
    for key, value in sam.model.state_dict().items():
        for old, new in renames.items():
            if key.startswith(old):
                state[new + key.removeprefix(old)] = value
    expected = model.state_dict()
    assert not set(expected) - set(state)
    model.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=True)
    return model, Sam3TrackerProcessor(image_processor=sam.processor.image_processor)


@pytest.fixture(scope="module")
def image(camvid_image) -> np.ndarray:
    return camvid_image


def run_reference(reference, image, multimask, input_masks=None, **prompts):
    model, processor = reference
    inputs = processor(images=image, return_tensors="pt", **prompts)
    with torch.inference_mode():
        out = model(**inputs, multimask_output=multimask, input_masks=input_masks)
    size = tuple(image.shape[:2])
    up = F.interpolate(out.pred_masks[0], size, mode="bilinear", align_corners=False)
    masks = processor.post_process_masks(out.pred_masks, inputs["original_sizes"])[0]
    return masks.numpy(), out.iou_scores[0].numpy(), out.pred_masks[0].numpy(), up.numpy()


def assert_close(ours, ref):
    (masks, iou, low), (rmasks, riou, rlow, rup) = ours, ref
    np.testing.assert_allclose(iou, riou.reshape(iou.shape), atol=1e-4, rtol=0)
    # logits reach |500| on random weights: float32 sums of that size differ by ~1e-5 of the
    # largest, whatever the element's own size (measured 1.2e-3 at a logit of 2 beside 80s)
    rlow = rlow.reshape(low.shape)
    np.testing.assert_allclose(low, rlow, atol=1e-4 * float(np.abs(rlow).max()), rtol=0)
    clear = np.abs(rup.reshape(masks.shape)) > LOGIT_BAND
    assert np.array_equal(masks[clear], rmasks.reshape(masks.shape)[clear])
    assert (~clear).mean() < 1e-3


def test_points_boxes_and_masks_equal_the_official_pipeline(sam, reference, image):
    proposer = Sam3TrackerProposer(sam)
    assert proposer.set_image(image) in (True, False) and proposer.image_shape == image.shape[:2]
    pts = np.array([[100.5, 200.25], [300.0, 100.0]], np.float32)
    labels = np.array([1, 0])
    box = np.array([50.0, 60.0, 300.0, 250.0], np.float32)
    boxes = np.array([[50, 60, 300, 250], [10, 10, 100, 100]], np.float32)

    ours = proposer.predict_arrays(pts[:1], labels[:1], multimask_output=True)
    ref = run_reference(reference, image, True, input_points=[[pts[:1].tolist()]],
                        input_labels=[[[1]]])  # fmt: skip
    assert ours[0].shape == (3, *image.shape[:2])
    assert_close(ours, ref)

    ours = proposer.predict_arrays(pts, labels, multimask_output=False)
    ref = run_reference(reference, image, False, input_points=[[pts.tolist()]],
                        input_labels=[[labels.tolist()]])  # fmt: skip
    assert_close(ours, ref)

    ours = proposer.predict_arrays(pts[:1], labels[:1], box=box, multimask_output=False)
    ref = run_reference(reference, image, False, input_points=[[pts[:1].tolist()]],
                        input_labels=[[[1]]], input_boxes=[[box.tolist()]])  # fmt: skip
    assert_close(ours, ref)

    ours = proposer.predict_arrays(box=boxes, multimask_output=False)
    ref = run_reference(reference, image, False, input_boxes=[boxes.tolist()])
    assert ours[0].shape == (2, 1, *image.shape[:2])
    assert_close(ours, ref)

    mask_logits = np.where(ours[2][0] > 0, 8.0, -8.0).astype(np.float32)  # (1, h, w)
    ours = proposer.predict_arrays(pts[:1], labels[:1], mask_input=mask_logits,
                                   multimask_output=False)  # fmt: skip
    ref = run_reference(reference, image, False, input_masks=torch.from_numpy(mask_logits)[None],
                        input_points=[[pts[:1].tolist()]], input_labels=[[[1]]])  # fmt: skip
    assert_close(ours, ref)


def test_predict_policy(sam, image):
    proposer = Sam3TrackerProposer(sam)
    proposer.set_image(image)
    h, w = image.shape[:2]
    one = proposer.predict(make_prompt((h, w), points=[[120, 80]]))
    masks, scores, _ = proposer.predict_arrays(np.array([[120, 80]]), np.array([1]))
    best = int(np.argmax(scores))
    assert len(one) == 1 and np.array_equal(one.masks[0], masks[best])
    two = proposer.predict(make_prompt((h, w), boxes=[[10, 10, 100, 90], [200, 100, 400, 300]]))
    assert len(two) == 2
    rough = np.zeros((h, w), bool)
    rough[100:200, 150:300] = True
    assert len(proposer.predict(make_prompt((h, w), mask=rough))) == 1


def test_image_encoder_is_shared_with_text_prompts(sam, synthetic_image):
    bundle = Sam3Bundle(sam.model, sam.processor)
    proposer = Sam3TrackerProposer(bundle)
    Sam3Detector(bundle).instances(synthetic_image, ["car"], threshold=0.3)
    assert bundle.encoder_calls == 1
    assert proposer.set_image(synthetic_image) is False  # the bundle had it
    assert proposer.set_image(synthetic_image) is False and proposer.encoder_calls == 1
    proposer.clear_cache()
    with pytest.raises(RuntimeError, match="set_image"):
        _ = proposer.image_shape


def test_detector_only_model_refuses_prompts(sam, synthetic_image):
    from ovseg.proposals.prompts import make_prompt

    proposer = Sam3TrackerProposer(Sam3Bundle(sam.detector, sam.processor))
    proposer.set_image(synthetic_image)  # embeds (text prompts share it); prompts refused
    with pytest.raises(ValueError, match="tracker"):
        proposer.predict(make_prompt(synthetic_image.shape[:2], boxes=[[2, 2, 30, 30]]))
    with pytest.raises(TypeError):
        Sam3TrackerProposer(sam.model)
