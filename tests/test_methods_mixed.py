"""Mixed maps (``method="naclip+sam3"``...): SAM 3's instances for object classes over a dense
method's map for stuff classes, checked against the rule computed here from the dense method
alone (``Segmenter(method="naclip")``) and SAM 3's detector alone, on the tiny random models.

Pixels covered by two instances whose scores lie within 1e-6 are skipped (no such tie is
expected; the skip keeps the comparison away from one)."""

from __future__ import annotations

import numpy as np
import pytest

from ovseg.constants import DEFAULT_METHOD
from ovseg.methods.mixed import STUFF_NAMES, is_stuff
from ovseg.methods.registry import method_class
from ovseg.models.sam3_weights import SAM3_TINY, build_sam3
from ovseg.pipeline import Segmenter
from ovseg.proposals.sam3_detector import Sam3Detector

THRESHOLD = 0.27  # no instance score of the tiny SAM 3 on this frame within 0.005 of it
CLASSES = ["road; street", "car", "building", "person", "tree"]
BACKGROUND = ["sky"]


@pytest.fixture(scope="module")
def sam():
    return build_sam3(SAM3_TINY, "cpu")


@pytest.fixture(scope="module")
def image(camvid_dir):
    from ovseg.image import load_image

    frames = sorted((camvid_dir / "images").glob("*.png"))
    return load_image(frames[len(frames) // 2])


@pytest.fixture(scope="module")
def mixed(sam):
    return Segmenter(sam=sam, clip="tiny-random", device="cpu", method="naclip+sam3",
                     templates="simple", threshold=THRESHOLD)  # fmt: skip


@pytest.fixture(scope="module")
def dense():
    return Segmenter(None, "tiny-random", device="cpu", method="naclip", templates="simple")


def expected_map(dense_labels, stuff, sam, image, objects):
    """The rule, computed independently: stuff pixels of the dense map, then the class of the
    highest-scoring SAM 3 instance of an object class over every pixel it covers."""
    names, owners = [], []
    for j, c in enumerate(objects):
        for s in CLASSES[c].split(";"):
            names.append(s.strip())
            owners.append(j)
    names.append("sky")
    owners.append(len(objects))
    found = Sam3Detector(sam, batch_size=1).instances(
        image, names, owners, num_classes=len(objects), threshold=THRESHOLD,
        mask_threshold=0.5, dedup_iou=0.5,
    )  # fmt: skip
    want = np.where(np.isin(dense_labels, stuff), dense_labels, -1)
    scores = np.where(found.mask, found.score[:, None, None].astype(np.float64), -1.0)
    covered = found.mask.any(0)
    best = scores.argmax(0)
    want[covered] = np.asarray(objects)[found.class_index[best]][covered]
    top2 = np.sort(scores, axis=0)[-2:] if len(found) > 1 else None
    tie = np.zeros_like(covered) if top2 is None else (top2[1] - top2[0] < 1e-6) & covered
    return want, found, ~tie


def test_stuff_rule():
    assert is_stuff("road; street", None) and is_stuff("Sky", None) and not is_stuff("car", None)
    assert is_stuff("red car; car", ["car"]) and not is_stuff("road", ["car"])
    assert {"road", "sky", "building", "tree"} <= STUFF_NAMES and "car" not in STUFF_NAMES
    assert DEFAULT_METHOD != "naclip+sam3"  # an option, not the default


def test_map_is_the_rule_over_the_dense_map_and_sam3(mixed, dense, sam, image):
    result = mixed.segment(image, CLASSES, background=BACKGROUND)
    base = dense.segment(image, CLASSES, background=BACKGROUND)
    # the probabilities are the dense method's, over the whole vocabulary
    np.testing.assert_array_equal(
        mixed.pixel_probabilities(image, CLASSES, background=BACKGROUND),
        dense.pixel_probabilities(image, CLASSES, background=BACKGROUND),
    )
    want, found, clear = expected_map(base.label_map, [0, 2, 4], sam, image, [1, 3])
    assert len(found) > 0 and clear.mean() > 0.99
    assert (want[clear] >= 0).any() and np.isin(want, [0, 2, 4]).any()  # both parts label pixels
    np.testing.assert_array_equal(result.label_map[clear], want[clear])
    # an instance pixel's confidence is its instance's score
    top = int(np.argmax(found.score))
    only = found.mask[top] & (found.mask.sum(0) == 1)
    np.testing.assert_allclose(result.confidence[only], found.score[top], atol=1e-6)
    # the instances are the segments that own pixels, with SAM 3's scores
    owned = [s for s in result.segments if s.proposal_score > 0]
    assert owned and all(s.class_index in (1, 3) for s in owned)


def test_stuff_option_and_instances_of_every_class(mixed, dense, sam, image):
    result = mixed.segment(image, CLASSES, background=BACKGROUND, stuff=("car", "person"))
    base = dense.segment(image, CLASSES, background=BACKGROUND)
    want, _, clear = expected_map(base.label_map, [1, 3], sam, image, [0, 2, 4])
    np.testing.assert_array_equal(result.label_map[clear], want[clear])
    every = mixed.instances(image, CLASSES, background=BACKGROUND)
    ref = Segmenter(sam=sam, device="cpu", method="sam3", threshold=THRESHOLD).instances(
        image, CLASSES, background=BACKGROUND
    )
    np.testing.assert_array_equal(every.class_index, ref.class_index)
    np.testing.assert_array_equal(every.mask, ref.mask)
    assert mixed.method.finds_instances


def test_needs_and_errors(sam, image):
    for name in ("naclip+sam3", "proxyclip+sam3", "corrclip+sam3"):
        cls = method_class(name)
        assert (
            "sam" in cls.needs
            and "clip" in cls.needs
            and cls.needs >= method_class(name.split("+")[0]).needs
        )
    with pytest.raises(ValueError, match="needs a SAM 3 model"):
        Segmenter(sam="tiny-random", clip="tiny-random", device="cpu", method="naclip+sam3")
    with pytest.raises(ValueError, match="stuff must be"):
        Segmenter(sam=sam, clip="tiny-random", device="cpu", method="naclip+sam3", stuff="road")
    with pytest.raises(ValueError, match="threshold"):
        Segmenter(sam=sam, clip="tiny-random", device="cpu", method="naclip+sam3", threshold=2)
    corr = Segmenter(sam=sam, clip="tiny-random", dino="tiny-random", device="cpu",
                     method="corrclip+sam3", templates="simple")  # fmt: skip
    with pytest.raises(ValueError, match="needs CorrCLIP's regions"):
        corr.segment(image, CLASSES)
