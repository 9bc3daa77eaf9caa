"""Video stream: ids, new objects, running-mean classes, the SAM 1 propagator against
``SamPredictor``, resuming from a saved state, and bad options."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ovseg.structures import Masks, masks_to_boxes
from ovseg.video.propagate import Propagator, SamPromptPropagator
from ovseg.video.stream import VideoStream, segment_video

H, W = 64, 96
CAR, TREE = (200, 30, 30), (30, 160, 40)


def synthetic_clip(n=10, late=5):
    """A car moving right from frame 0, a tree appearing at frame ``late``."""
    frames = []
    for i in range(n):
        a = np.zeros((H, W, 3), np.uint8)
        a[: H // 3] = (135, 190, 235)
        a[H // 3 :] = (90, 90, 90)
        a[30:50, 5 + 4 * i : 25 + 4 * i] = CAR
        if i >= late:
            a[8:24, 60:80] = TREE
        frames.append(a)
    return frames


def colour_masks(frame):
    masks = [(frame == c).all(-1) for c in (CAR, TREE)]
    return np.stack([m for m in masks if m.any()])


class ColourPropagator(Propagator):
    """A test double that follows each object by its colour (an ideal tracker), so the
    stream's own logic is what the tests check."""

    def __init__(self):
        self.colours, self.frame = {}, None

    def step(self, frame):
        self.frame = frame
        ids = np.asarray(sorted(self.colours), np.int64)
        masks = np.stack([(frame == self.colours[t]).all(-1) for t in ids]) if len(ids) else \
            np.zeros((0, *frame.shape[:2]), bool)  # fmt: skip
        return ids, masks, np.ones(len(ids), np.float32)

    def add(self, track_id, mask):
        self.colours[track_id] = tuple(self.frame[mask][0])

    def remove(self, track_id):
        self.colours.pop(track_id, None)


@pytest.fixture
def oracle_segmenter(monkeypatch):
    """The tiny models, with SAM's grid replaced by the clip's true object masks."""
    from ovseg.pipeline import Segmenter

    seg = Segmenter("tiny-random", "tiny-random", device="cpu")
    monkeypatch.setattr(seg, "propose", lambda image, **kw: Masks.from_masks(colour_masks(image)))
    return seg


def track_ids(result):
    return {s.track_id: s for s in result.segments if s.track_id is not None}


def test_ids_are_stable_and_a_late_object_gets_a_new_id(oracle_segmenter):
    stream = VideoStream(oracle_segmenter, ["sky", "road", "car", "tree"],
                         propagator=ColourPropagator(), keyframe_every=3)  # fmt: skip
    frames = synthetic_clip()
    results = [stream.step(f) for f in frames]
    for i, (frame, r) in enumerate(zip(frames, results, strict=True)):
        ids = track_ids(r)
        # keyframes are 0, 3, 6, 9: the tree (from frame 5) is found on frame 6
        assert sorted(ids) == ([1] if i < 6 else [1, 2]), (i, sorted(ids))
        car = (frame == CAR).all(-1)
        assert np.array_equal(ids[1].mask, car)
        assert tuple(ids[1].box) == tuple(masks_to_boxes(car[None])[0])
    assert stream.tracks[2].first_frame == 6 and stream.tracks[1].frames == 10


def test_class_is_the_running_mean_so_labels_do_not_flicker(oracle_segmenter, monkeypatch):
    """Per frame the car's probabilities alternate between 'car' and 'truck' (car stronger on
    average): every frame still labels it car, the running mean's argmax."""
    classes = ["road", "car", "truck"]
    calls = {"n": 0}

    def probs(image, vocab, config, regions=None):
        p = np.zeros((3, H, W), np.float32)
        p[0] = 1.0
        car = (image == CAR).all(-1)
        odd = calls["n"] % 2
        calls["n"] += 1
        p[:, car] = np.array([0.0, 0.45, 0.55] if odd else [0.0, 0.7, 0.3])[:, None]
        return torch.from_numpy(p)

    monkeypatch.setattr(oracle_segmenter, "probabilities", probs)
    stream = VideoStream(oracle_segmenter, classes, propagator=ColourPropagator())
    frames = synthetic_clip(late=99)
    seen, expected_sum = [], np.zeros(3)
    for n, f in enumerate(frames):
        r = stream.step(f)
        expected_sum += [0.0, 0.45, 0.55] if n % 2 else [0.0, 0.7, 0.3]
        car = track_ids(r)[1]
        seen.append(car.class_index)
        assert car.score == pytest.approx(expected_sum.max() / (n + 1), abs=1e-6)
    assert seen == [1] * len(frames)  # a per-frame argmax would say truck on odd frames


def test_stuff_classes_are_never_tracked(oracle_segmenter, monkeypatch):
    def probs(image, vocab, config, regions=None):
        p = np.zeros((2, H, W), np.float32)
        p[0] = 1.0  # everything, the car included, is road
        return torch.from_numpy(p)

    monkeypatch.setattr(oracle_segmenter, "probabilities", probs)
    stream = VideoStream(oracle_segmenter, ["road", "car"], stuff=["road"],
                         propagator=ColourPropagator())  # fmt: skip
    for f in synthetic_clip(3):
        r = stream.step(f)
        dense = oracle_segmenter.label(f, stream.vocab).label_map  # nothing painted
        assert not track_ids(r) and np.array_equal(r.label_map, dense)


def test_sam_propagator_equals_sam_predictor(tiny_segmenter):
    """One batched step of the SAM 1 propagator gives, per object, SamPredictor.predict's mask
    for the object's grown previous box and previous low-resolution logits."""
    from segment_anything import SamPredictor

    proposer = tiny_segmenter.proposer
    frames = synthetic_clip(3)
    prop = SamPromptPropagator(proposer)
    prop.step(frames[0])
    for t, m in enumerate(colour_masks(synthetic_clip(6)[5]), start=1):
        prop.add(t, m)
    state = prop.state_dict()
    ids, masks, scores = prop.step(frames[1])
    reference = SamPredictor(proposer.model)
    reference.set_image(frames[1])
    for i, t in enumerate(ids):
        box = prop._grown(state["boxes"][i], H, W)
        ref, ref_scores, ref_low = reference.predict(
            box=box, mask_input=state["logits"][i], multimask_output=False
        )
        assert (ref[0] != masks[i]).mean() < 1e-3
        assert scores[i] == pytest.approx(ref_scores[0], abs=1e-4)
        np.testing.assert_allclose(prop._logits[int(t)].numpy(), ref_low, atol=1e-3)


def test_resume_from_a_saved_state_gives_the_same_results(tiny_segmenter):
    frames = synthetic_clip(8, late=3)
    options = dict(keyframe_every=2, points_per_side=4)
    classes = ["sky", "road", "car", "tree"]
    full = VideoStream(tiny_segmenter, classes, **options)
    expected = [full.step(f) for f in frames]
    first = VideoStream(tiny_segmenter, classes, **options)
    for f in frames[:5]:
        first.step(f)
    state = {k: np.array(v) for k, v in first.state_dict().items()}
    resumed = VideoStream(tiny_segmenter, classes, **options)
    resumed.load_state_dict(state)
    for f, e in zip(frames[5:], expected[5:], strict=True):
        r = resumed.step(f)
        assert np.array_equal(r.label_map, e.label_map)
        assert [s.track_id for s in r.segments] == [s.track_id for s in e.segments]
    assert [t.id for t in resumed.all_tracks] == [t.id for t in full.all_tracks]


def test_segment_video_yields_results_with_track_ids(tiny_segmenter):
    results = segment_video(tiny_segmenter, iter(synthetic_clip(4)), ["road", "car"],
                                           keyframe_every=2, points_per_side=4)  # fmt: skip
    results = list(results)
    assert len(results) == 4 and all(r.shape == (H, W) for r in results)
    assert any(s.track_id is not None for r in results for s in r.segments)
    assert all(s.track_id is None or s.track_id >= 1 for r in results for s in r.segments)


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(keyframe_every=0), "keyframe_every"),
        (dict(match_iou=0), "match_iou"),
        (dict(stuff=["sky"]), "stuff"),
        (dict(min_area=-1), "min_area"),
        (dict(points_per_side=0), "points_per_side"),
        (dict(bogus=1), "unknown option"),
    ],
)
def test_bad_options_fail_before_any_frame(tiny_segmenter, options, message):
    with pytest.raises(ValueError, match=message):
        segment_video(tiny_segmenter, iter([]), ["road", "car"], **options)


def test_frames_of_another_size_are_refused(tiny_segmenter):
    stream = VideoStream(tiny_segmenter, ["road"], points_per_side=2)
    stream.step(np.zeros((H, W, 3), np.uint8))
    with pytest.raises(ValueError, match="frame 1 is 48x32"):
        stream.step(np.zeros((32, 48, 3), np.uint8))


@pytest.fixture(scope="module")
def sam2_segmenter():
    pytest.importorskip("transformers")
    from ovseg.pipeline import Segmenter

    return Segmenter("sam2-tiny-random", "tiny-random", device="cpu")


def test_sam2_propagator_equals_propagate(sam2_segmenter):
    """The SAM 2 path of the stream gives, frame after frame, what ovseg.proposals.propagate
    (equal to Meta's SAM2VideoPredictor) gives for the same masks on the same frames."""
    from ovseg.proposals.propagate import propagate
    from ovseg.video.propagate import Sam2VideoPropagator, default_propagator

    prop = default_propagator(sam2_segmenter)
    assert isinstance(prop, Sam2VideoPropagator)
    assert type(sam2_segmenter.proposer.model).__name__ == "Sam2VideoModel"
    frames = synthetic_clip(4, late=0)
    first = colour_masks(frames[0])
    prop.step(frames[0])
    prop.add_many({1: first[0], 2: first[1]})
    ours = [prop.step(f) for f in frames[1:]]
    reference = propagate(prop.tracker.model, iter(frames), {0: {1: first[0], 2: first[1]}})
    reference = list(reference)[1:]
    for (ids, masks, scores), ref in zip(ours, reference, strict=True):
        assert ids.tolist() == ref.obj_ids.tolist() == [1, 2]
        assert np.array_equal(masks, ref.masks)
        np.testing.assert_allclose(scores, ref.scores, atol=1e-6)


def test_sam2_stream_keeps_ids(sam2_segmenter, monkeypatch):
    monkeypatch.setattr(
        sam2_segmenter, "propose", lambda image, **kw: Masks.from_masks(colour_masks(image))
    )
    stream = VideoStream(sam2_segmenter, ["road", "car", "tree"], keyframe_every=3)
    results = [stream.step(f) for f in synthetic_clip(7, late=4)]
    assert stream.state_dict() is None  # SAM 2's memory is not saved: a rerun starts over
    assert set(track_ids(results[0])) == {1}  # the car
    tracked_tree = [t for t in stream.all_tracks if t.first_frame == 6]
    assert tracked_tree and tracked_tree[0].id > 1  # found on keyframe 6 with a new id
    assert all(ids <= set(range(1, stream.next_id)) for ids in map(set, map(track_ids, results)))
