"""``Segmenter(sam="sam3-tiny-random", method="sam3")``: the dense map, its segments (SAM 3's
instances), per-pixel probabilities with synonyms and background names, ``instances``, prompts
through SAM 3's tracker, and the errors, on the tiny random SAM 3 and a CamVid frame.

Label comparisons skip pixels whose best probability lies within 1e-4 of the background
threshold or whose two best rows are within 1e-4 of each other."""

from __future__ import annotations

import numpy as np
import pytest

from ovseg.models.sam3_weights import SAM3_TINY, build_sam3
from ovseg.pipeline import Segmenter
from ovseg.proposals.sam3_detector import Sam3Detector

CLASSES = ["road; street", "car", "tree"]
BACKGROUND = ["sky"]
THRESHOLD = 0.2  # instance scores of the tiny model on this frame lie near 0.28-0.37
MARGIN = 1e-4


@pytest.fixture(scope="module")
def sam():
    return build_sam3(SAM3_TINY, "cpu")


@pytest.fixture(scope="module")
def seg(sam):
    return Segmenter(sam=sam, device="cpu", method="sam3", threshold=THRESHOLD, batch_size=4)


@pytest.fixture(scope="module")
def image(camvid_dir):
    from ovseg.image import load_image

    frames = sorted((camvid_dir / "images").glob("*.png"))
    return load_image(frames[len(frames) // 2])


def test_segment_is_the_methods_map_with_its_instances_as_segments(seg, sam, image):
    result = seg.segment(image, CLASSES, background=BACKGROUND)
    probs = seg.pixel_probabilities(image, CLASSES, background=BACKGROUND)
    assert probs.shape == (3, *image.shape[:2]) and probs.dtype == np.float32
    every = seg.pixel_probabilities(image, [*CLASSES, *BACKGROUND])  # the background as a class
    np.testing.assert_allclose(every[:3], probs, atol=1e-6)
    rows = np.concatenate([probs, every[3:]])  # the Segmenter's rows: classes, background
    top2 = np.sort(rows, axis=0)[-2:]
    cut = seg.config().background_threshold
    clear = (np.abs(top2[1] - cut) > MARGIN) & (top2[1] - top2[0] > MARGIN)
    want = rows.argmax(0)
    want = np.where((rows.max(0) < cut) | (want == 3), -1, want)
    assert clear.mean() > 0.9
    np.testing.assert_array_equal(result.label_map[clear], want[clear])

    found = seg.instances(image, CLASSES, background=BACKGROUND)
    ref = Sam3Detector(sam, batch_size=1).instances(
        image, ["road", "street", "car", "tree", "sky"], [0, 0, 1, 2, 3], num_classes=3,
        threshold=THRESHOLD, mask_threshold=0.5, dedup_iou=0.5,
    )  # fmt: skip
    assert len(found) == len(ref) > 0
    np.testing.assert_array_equal(found.class_index, ref.class_index)
    np.testing.assert_allclose(found.score, ref.score, atol=1e-5)
    assert found.mask.shape == (len(found), *image.shape[:2]) and found.mask.dtype == bool
    assert found.box.shape == (len(found), 4) and np.all(found.score > THRESHOLD)
    # segments: the instances that own pixels (each its instance's class and score), then one
    # segment per class for the labelled pixels left
    owned = [s for s in result.segments if s.proposal_score > 0]
    assert owned and len(owned) <= len(found)
    for s in owned:
        i = int(np.argmin(np.abs(found.score - s.proposal_score)))
        assert abs(found.score[i] - s.proposal_score) < 1e-6
        assert s.class_index == found.class_index[i] and not (s.mask & ~found.mask[i]).any()


def test_synonyms_take_the_max_and_options_go_per_call(seg, image):
    pair = seg.pixel_probabilities(image, ["road", "street"])
    entry = seg.pixel_probabilities(image, ["road; street"])
    np.testing.assert_allclose(entry[0], pair.max(0), atol=1e-5)
    strict = seg.instances(image, ["road; street"], threshold=0.99)
    assert len(strict) == 0
    no_sem = seg.pixel_probabilities(image, ["car"], semantic=False)
    assert (no_sem <= seg.pixel_probabilities(image, ["car"]) + 1e-6).all()


def test_prompts_go_through_sam3s_tracker(seg, image):
    box = [[40, 60, 260, 300]]
    masks = seg.propose(image, boxes=box)
    assert len(masks) == 1 and masks.masks.shape[1:] == image.shape[:2]
    result = seg.segment(image, ["road", "car"], boxes=box)
    prompted = [s for s in result.segments if s.proposal_score > 0]
    assert prompted and not (prompted[0].mask & ~masks.masks[0]).any()
    assert abs(prompted[0].proposal_score - float(masks.scores[0])) < 1e-6


def test_errors_name_the_problem(sam, image):
    with pytest.raises(ValueError, match="method 'sam3' needs a SAM 3 model"):
        Segmenter(sam="tiny-random", device="cpu", method="sam3")
    with pytest.raises(ValueError, match="method 'sam3' needs"):
        Segmenter(sam=None, device="cpu", method="sam3")
    with pytest.raises(ValueError, match="refine"):
        Segmenter(sam=sam, device="cpu", method="sam3", refine="masks")
    with pytest.raises(ValueError, match="unknown option"):
        Segmenter(sam=sam, device="cpu", method="sam3", coarse_thresh=0.1)
    naclip = Segmenter(None, "tiny-random", "cpu", method="naclip")
    with pytest.raises(ValueError, match="finds no instances"):
        naclip.instances(image, ["car"])
    with pytest.raises(ValueError, match="automatic mask grid"):
        Segmenter(sam=sam, device="cpu", method="sam3").propose(image)


def test_by_name_and_through_ovseg_segment(image):
    import ovseg

    small = image[::4, ::4].copy()
    result = ovseg.segment(
        small, ["road", "car"], sam=SAM3_TINY, method="sam3", device="cpu", threshold=THRESHOLD
    )
    assert result.label_map.shape == small.shape[:2] and result.label_map.dtype == np.int32


def test_video_objects_are_sam3s_tracks(camvid_dir, monkeypatch):
    """SAM 3 finds and tracks the objects itself: no keyframe grid runs, and the stream's
    track ids are SAM 3's object ids (on every frame: new objects appear with new ids)."""
    from ovseg.image import load_image
    from ovseg.proposals.sam3_video import Sam3VideoStream
    from ovseg.video import VideoStream

    paths = sorted((camvid_dir / "images").glob("*.png"))[:3]
    frames = [load_image(p)[::3, ::3].copy() for p in paths]
    sam = build_sam3(SAM3_TINY, "cpu")
    sam.model.max_num_objects = 8  # the random model finds ~50; each is tracked (CPU time)
    seg = Segmenter(sam=sam, device="cpu", method="sam3", threshold=THRESHOLD)
    monkeypatch.setattr(seg, "propose", lambda *a, **k: pytest.fail("no grid with SAM 3"))
    stream = VideoStream(seg, ["car"], min_area=0)
    reference = Sam3VideoStream(sam, ["car"])
    seen: set[int] = set()
    for frame in frames:
        result = stream.step(frame)
        want = reference.step(frame)
        # SAM 3's ids, less those the stream dropped (the younger of two that overlap), which
        # never come back
        assert stream.tracks and set(stream.tracks) <= set(want.obj_ids.tolist())
        assert not set(stream.tracks) & set(stream.ended)
        tracked = {s.track_id for s in result.segments if s.track_id is not None}
        assert tracked <= set(want.obj_ids.tolist())
        seen |= tracked
    assert seen and stream.state_dict() is None  # SAM 3's memory is not saved: a rerun


def test_cli_segment_writes_instances_and_a_map(image, tmp_path):
    import json

    from PIL import Image

    from ovseg.cli import main

    path = tmp_path / "frame.png"
    Image.fromarray(image).save(path)
    out = tmp_path / "out"
    code = main(["segment", str(path), "--sam", SAM3_TINY, "--method", "sam3", "--classes",
                 "car", "traffic light", "road", "--option", f"threshold={THRESHOLD}", "-o",
                 str(out), "--no-progress"])  # fmt: skip
    assert code == 0 and (out / "frame.png_labels.png").is_file()
    coco = json.loads((out / "instances.json").read_text())
    assert [c["name"] for c in coco["categories"]] == ["car", "traffic light", "road"]
    assert coco["annotations"] and all(a["score"] > 0 for a in coco["annotations"])


def test_ground_returns_sam3s_instances_of_the_phrase(seg, image):
    import ovseg

    found = seg.instances(image, ["road; street"])
    result = ovseg.ground(image, "road; street", segmenter=seg)
    order = np.argsort(-found.score, kind="stable")
    assert len(result.candidates) == len(found) > 1
    np.testing.assert_allclose([r.score for r in result.candidates], found.score[order])
    for r, i in zip(result.candidates, order, strict=True):
        assert np.array_equal(r.mask, found.mask[i]) and np.isnan(r.similarity)
    assert result.matches == result.candidates[:1]
    cut = float(np.median(found.score))
    some = ovseg.ground(image, "road; street", segmenter=seg, threshold=cut)
    assert [r.score for r in some.matches] == [r.score for r in result.candidates if r.score >= cut]
    both = ovseg.ground(image, ["road; street", "tree"], segmenter=seg, negatives="car")
    want = seg.instances(image, ["road; street", "tree"], background=["car"])
    assert [len(r.candidates) for r in both] == [(want.class_index == k).sum() for k in (0, 1)]
    with pytest.raises(ValueError, match="own instances"):
        ovseg.ground(image, "road", segmenter=seg, category="road")


def test_cli_eval_runs_sam3(camvid_dir, tmp_path):
    import json

    from ovseg.cli import main

    report = tmp_path / "r.json"
    code = main(["eval", "--data", str(camvid_dir), "--dataset", "camvid", "--out", str(report),
                 "--sam", SAM3_TINY, "--method", "sam3", "--option", f"threshold={THRESHOLD}",
                 "--limit", "1", "--no-progress"])  # fmt: skip
    got = json.loads(report.read_text())
    assert code == 0 and got["config"]["method"] == "sam3" and got["counts"]["computed"] == 1
    assert 0.0 <= got["miou"] <= 1.0
