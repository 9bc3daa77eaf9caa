"""The public contract of ovseg.segment / Segmenter, on real CamVid frames when present."""

import numpy as np
import pytest
from PIL import Image

import ovseg
from ovseg.api import default_segmenter
from ovseg.proposals.grid import GridOptions

CLASSES = ["road; street", "sky", "car", "building"]
OFF = dict(pred_iou_thresh=0.0, stability_score_thresh=0.0, points_per_side=8)


def _check_contract(result, shape, classes):
    assert isinstance(result, ovseg.SegmentationResult)
    assert result.classes == classes
    assert result.label_map.shape == shape and result.label_map.dtype == np.int32
    assert result.confidence.shape == shape and result.confidence.dtype == np.float32
    assert ((result.label_map >= ovseg.UNLABELED) & (result.label_map < len(classes))).all()
    assert result.confidence.min() >= 0 and result.confidence.max() <= 1
    assert ((result.label_map == ovseg.UNLABELED) == (result.confidence == 0)).all()
    for seg in result.segments:
        assert seg.mask.shape == shape and seg.mask.dtype == bool
        assert (result.label_map[seg.mask] == seg.class_index).all()
        x0, y0, x1, y1 = seg.box
        ys, xs = np.nonzero(seg.mask)
        assert (x0, y0, x1, y1) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)


@pytest.mark.parametrize("kind", ["path", "str", "pil", "array", "gray"])
def test_segment_contract_for_every_input_kind(kind, camvid_frame, camvid_image):
    inputs = {
        "path": camvid_frame,
        "str": str(camvid_frame),
        "pil": Image.open(camvid_frame),
        "array": camvid_image,
        "gray": np.asarray(Image.open(camvid_frame).convert("L")),
    }
    result = ovseg.segment(
        inputs[kind], CLASSES, sam="tiny-random", clip="tiny-random", device="cpu",
        method="sam-clip", **OFF,
    )  # fmt: skip
    _check_contract(result, camvid_image.shape[:2], CLASSES)
    assert result.segments, "the unfiltered grid of the tiny model always yields masks"
    assert (result.label_map != ovseg.UNLABELED).any()


def test_segment_is_deterministic(camvid_image):
    a = ovseg.segment(camvid_image, CLASSES, sam="tiny-random", clip="tiny-random")
    fresh = ovseg.Segmenter("tiny-random", "tiny-random", "cpu")
    b = fresh.segment(camvid_image, CLASSES)
    np.testing.assert_array_equal(a.label_map, b.label_map)
    np.testing.assert_array_equal(a.confidence, b.confidence)


def test_default_segmenter_is_cached():
    assert default_segmenter("tiny-random", "tiny-random", "cpu") is default_segmenter(
        "tiny-random", "tiny-random", "cpu"
    )


@pytest.mark.parametrize(
    "prompts",
    [
        dict(points=[[240, 300]]),
        dict(points=[[240, 300], [240, 50]], point_labels=[1, 0]),
        dict(boxes=[[0, 200, 480, 360]]),
        dict(boxes=[[0, 200, 480, 360], [100, 0, 300, 100]]),
        dict(boxes=[[0, 200, 480, 360]], points=[[240, 300]]),
    ],
)
def test_prompted_segment_contract(tiny_segmenter, camvid_image, prompts):
    result = tiny_segmenter.segment(camvid_image, CLASSES, **prompts)
    _check_contract(result, camvid_image.shape[:2], CLASSES)
    n_objects = len(prompts.get("boxes", [None]))
    assert 1 <= len(result.segments) <= n_objects


def test_rough_mask_and_scribble_prompts(tiny_segmenter, synthetic_image):
    rough = np.zeros(synthetic_image.shape[:2], bool)
    rough[70:110, 20:70] = True
    r1 = tiny_segmenter.segment(synthetic_image, ["red", "green"], mask_input=rough)
    scribble = np.zeros_like(rough)
    scribble[50, 105:135] = True
    r2 = tiny_segmenter.segment(synthetic_image, ["red", "green"], scribble=scribble)
    for r in (r1, r2):
        _check_contract(r, rough.shape, ["red", "green"])
        assert len(r.segments) == 1


def test_propose_then_score_then_fuse_equals_segment(tiny_segmenter, synthetic_image):
    from ovseg.fusion import fuse

    masks = tiny_segmenter.propose(synthetic_image)
    scores = tiny_segmenter.score(masks, ["sky", "road"])
    assert scores.shape == (len(masks), 2) and np.allclose(scores.sum(1), 1, atol=1e-5)
    fused = fuse(masks.masks, scores, ["sky", "road"], image=synthetic_image)
    direct = tiny_segmenter.segment(synthetic_image, ["sky", "road"])
    np.testing.assert_array_equal(fused.label_map, direct.label_map)


def test_background_names_and_threshold_unlabel_pixels(tiny_segmenter, synthetic_image):
    r = tiny_segmenter.segment(synthetic_image, ["sky"], score_threshold=1.0)
    assert (r.label_map == ovseg.UNLABELED).all() or (r.confidence[r.label_map == 0] == 1).all()
    masks = tiny_segmenter.propose(synthetic_image)
    with_bg = tiny_segmenter.score(masks, ["sky"], background=["road", "tree", "car"])
    assert ((with_bg == 0) | (with_bg > 0.25)).all()


def test_scorers_and_hf_backend_run_end_to_end(synthetic_image):
    for clip, scorer in [("tiny-random", "dense"), ("hf-tiny-random", "both")]:
        seg = ovseg.Segmenter("tiny-random", clip, "cpu", scorer=scorer, method="sam-clip")
        r = seg.segment(synthetic_image, ["sky", "road"], **OFF)
        _check_contract(r, synthetic_image.shape[:2], ["sky", "road"])


def test_set_image_embeds_once_per_image(synthetic_image):
    seg = ovseg.Segmenter("tiny-random", "tiny-random", "cpu", method="sam-clip")
    seg.set_image(synthetic_image)
    for x in (10, 50, 90):
        seg.segment(None, ["a", "b"], points=[[x, 20]])
    seg.segment(synthetic_image.copy(), ["a", "b"], points=[[5, 5]])
    assert seg.proposer.encoder_calls == 1


def test_misuse_of_state_is_runtime_error():
    seg = ovseg.Segmenter("tiny-random", "tiny-random", "cpu", method="sam-clip")
    with pytest.raises(RuntimeError, match="set_image"):
        seg.segment(None, ["a"])


@pytest.mark.parametrize(
    "classes, error",
    [
        ([], ValueError),
        (["road", " "], ValueError),
        (["road", "road"], ValueError),
        ("road", TypeError),
    ],
)
def test_bad_classes_fail_before_any_work(classes, error, tmp_path):
    missing = tmp_path / "not-read.png"  # the class check comes first
    with pytest.raises(error):
        ovseg.segment(missing, classes, sam="tiny-random", clip="tiny-random")


@pytest.mark.parametrize(
    "make, error",
    [
        (lambda p: p / "missing.png", FileNotFoundError),
        (lambda p: (p / "text.png").write_text("not an image") and p / "text.png", ValueError),
        (lambda p: np.zeros((0, 5, 3), np.uint8), ValueError),
        (lambda p: np.zeros((5, 5, 2), np.uint8), ValueError),
        (lambda p: np.full((5, 5, 3), 2.0), ValueError),
        (lambda p: "x" * 3, FileNotFoundError),
        (lambda p: 12, TypeError),
    ],
)
def test_bad_images(make, error, tmp_path):
    with pytest.raises(error):
        ovseg.segment(make(tmp_path), ["road"], sam="tiny-random", clip="tiny-random")


def test_truncated_file_is_value_error(tmp_path, synthetic_image):
    path = tmp_path / "cut.png"
    Image.fromarray(synthetic_image).save(path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match="cut.png"):
        ovseg.segment(path, ["road"], sam="tiny-random", clip="tiny-random")


@pytest.mark.parametrize(
    "prompts, match",
    [
        (dict(points=[[500, 10]]), "outside"),
        (dict(boxes=[[50, 50, 10, 60]]), "inverted"),
        (dict(points=[[5, 5], [6, 6]], point_labels=[1]), "1 entries for 2"),
        (dict(points_per_side=0), "points_per_side"),
        (dict(points=[[5, 5]], points_per_side=4), "automatic mode only"),
        (dict(no_such_option=3), "unknown option"),
        (dict(score_threshold=-0.1), "score_threshold"),
    ],
)
def test_bad_prompts_and_options(tiny_segmenter, synthetic_image, prompts, match):
    with pytest.raises(ValueError, match=match):
        tiny_segmenter.segment(synthetic_image, ["road"], **prompts)


def test_grid_options_object_on_segmenter(synthetic_image):
    seg = ovseg.Segmenter(
        "tiny-random",
        "tiny-random",
        "cpu",
        grid=GridOptions(
            points_per_side=4, pred_iou_thresh=0, stability_score_thresh=0, box_nms_thresh=1.0
        ),
    )
    assert len(seg.propose(synthetic_image)) == 4 * 4 * 3
