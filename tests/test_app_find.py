"""The app's "find all" box on the tiny random SAM 3: its handlers give the segmenter's
instances listed by score, each toggled on the canvas; it is offered only for a method that
finds instances (asked of the method protocol)."""

from __future__ import annotations

import numpy as np
import pytest

from ovseg.app import find as F
from ovseg.app import handlers as H
from ovseg.app.render import render
from ovseg.models.sam3_weights import SAM3_TINY, build_sam3
from ovseg.pipeline import Segmenter
from ovseg.viz import palette

THRESHOLD = 0.27  # no instance score of the tiny model on this frame within 0.005 of it
PHRASES = "car, road; street, tree"


@pytest.fixture(scope="module")
def seg():
    return Segmenter(sam=build_sam3(SAM3_TINY, "cpu"), device="cpu", method="sam3", batch_size=4)


@pytest.fixture(scope="module")
def image(camvid_dir):
    from ovseg.image import load_image

    frames = sorted((camvid_dir / "images").glob("*.png"))
    return load_image(frames[len(frames) // 2])


def _loaded(seg, image):
    session = H.upload(seg, None, image, name="frame.png")
    assert session.image is not None and not session.warning, session.status
    return session


def test_find_all_lists_the_segmenters_instances_by_score(seg, image):
    assert F.available(seg)
    session = F.find_all(seg, _loaded(seg, image), PHRASES, THRESHOLD)
    assert not session.warning, session.status
    ref = seg.instances(image, ["car", "road; street", "tree"], threshold=THRESHOLD)
    found = session.found
    assert len(found) == len(ref) > 1
    order = np.argsort(-ref.score.astype(np.float64), kind="stable")
    np.testing.assert_array_equal(found.class_index, ref.class_index[order])
    np.testing.assert_array_equal(found.score, ref.score[order])
    np.testing.assert_array_equal(found.mask, ref.mask[order])
    assert np.all(np.diff(found.score) <= 0) and np.all(found.score > THRESHOLD)
    labels = F.found_labels(session)
    names = ["car", "road; street", "tree"]
    assert labels == [
        f"#{i + 1} {names[c]} {s:.2f}"
        for i, (c, s) in enumerate(zip(found.class_index, found.score, strict=True))
    ]
    counts = np.bincount(found.class_index, minlength=3)
    assert session.status == (
        f"Found {len(found)} instances: "
        f"{counts[0]} car, {counts[1]} road; street, {counts[2]} tree."
    )
    view = render(session)
    assert view.found == labels and view.found_visible == labels


def test_each_instance_toggles_on_the_canvas(seg, image):
    session = F.find_all(seg, _loaded(seg, image), PHRASES, THRESHOLD)
    found = session.found
    plain = np.asarray(render(H.upload(seg, None, image)).canvas)
    shown = np.asarray(render(session).canvas)
    # a pixel of the top instance, inside no other instance and off every outline
    m = found.mask[0]
    inner = np.zeros_like(m)
    inner[1:-1, 1:-1] = m[1:-1, 1:-1] & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]
    alone = inner & ~found.mask[1:].any(0)
    assert alone.any()
    y, x = np.argwhere(alone)[0]
    want = np.round(0.5 * plain[y, x] + 0.5 * palette(len(found))[0].astype(np.float64))
    np.testing.assert_array_equal(shown[y, x], want.astype(np.uint8))
    labels = F.found_labels(session)
    F.set_found_visible(session, labels[1:])  # hide the top instance
    assert session.found_hidden == {0}
    view = render(session)
    assert view.found_visible == labels[1:]
    np.testing.assert_array_equal(np.asarray(view.canvas)[y, x], plain[y, x])
    F.set_found_visible(session, labels)
    np.testing.assert_array_equal(np.asarray(render(session).canvas)[y, x], shown[y, x])


def test_found_instances_stay_over_the_class_map(seg, image):
    session = F.find_all(seg, _loaded(seg, image), "car", THRESHOLD)
    settings = H.Settings("road, car, sky", "simple", 0.0)
    session = H.run_automatic(seg, session, settings)
    assert session.result is not None and session.found is not None
    view = render(session)
    assert view.found == F.found_labels(session) and view.classes


def test_mistakes_become_messages(seg, image):
    assert F.find_all(seg, None, "car").warning
    session = _loaded(seg, image)
    assert F.find_all(seg, session, "car", 1.5).warning and "threshold" in session.status
    assert F.find_all(seg, session, "car, car").warning and "Phrases" in session.status
    session = F.find_all(seg, session, "car", THRESHOLD)
    F.find_all(seg, session, "  ")  # empty phrases clear the instances
    assert session.found is None and not session.warning and render(session).found == []


def test_not_offered_for_a_method_without_instances(image):
    dense = Segmenter(None, "tiny-random", device="cpu", method="naclip", templates="simple")
    assert not F.available(dense)
    session = F.find_all(dense, H.upload(dense, None, image), "car")
    assert session.warning and "finds no instances" in session.status and session.found is None


def test_build_app_shows_the_box_only_for_instances(seg):
    gr = pytest.importorskip("gradio")
    from ovseg.app import build_app

    def find_box(app):
        boxes = [c for c in app.blocks.values() if getattr(c, "elem_id", None) == "ovseg-found"]
        assert len(boxes) == 1
        return boxes[0]

    assert find_box(build_app(seg, models={"sam": "sam3-tiny-random", "clip": "-"})).visible
    dense = Segmenter(None, "tiny-random", device="cpu", method="naclip", templates="simple")
    app = build_app(dense, models={"sam": "-", "clip": "tiny-random"})
    assert isinstance(app, gr.Blocks) and not find_box(app).visible
