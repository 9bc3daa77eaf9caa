"""The README's examples, run as written with the tiny random models: each gives a non-empty
result (the labels are meaningless; the plumbing is what is checked)."""

from __future__ import annotations

import numpy as np
import pytest

import ovseg
from ovseg.grounding import heatmap

TINY = dict(sam="tiny-random", clip="tiny-random")


@pytest.fixture(scope="module")
def street(tmp_path_factory, camvid_frame):
    from PIL import Image

    path = tmp_path_factory.mktemp("readme") / "street.jpg"
    Image.open(camvid_frame).convert("RGB").save(path)
    return path


def test_top_example(street, tmp_path):
    result = ovseg.segment(street, classes=["road; street", "red truck", "sky"], **TINY)
    assert (result.label_map != ovseg.UNLABELED).all()
    files = result.save(tmp_path, "street")
    assert {p.name for p in files.values()} >= {"street_labels.png", "street_overlay.png",
                                                "street.json"}  # fmt: skip


def test_python_api_block(street):
    seg = ovseg.Segmenter(sam="tiny-random", clip="tiny-random", method="naclip", device=None)
    r = seg.segment(street, ["road; street", "car", "sky"], background=["tree"])
    assert r.segments and (r.label_map >= 0).any()
    probs = seg.pixel_probabilities(street, ["road; street", "car", "sky"])
    assert probs.shape[0] == 3
    seg.set_image(street)
    h, w = seg.image.shape[:2]
    rough = np.zeros((h, w), bool)
    rough[150:250, 300:420] = True
    strokes = np.zeros((h, w), bool)
    strokes[200, 320:400] = True
    prompts = [
        dict(points=[[410, 220], [300, 330]], point_labels=[1, 0]),
        dict(boxes=[[350, 150, 470, 260]]),
        dict(mask_input=rough),
        dict(scribble=strokes),
    ]
    for prompt in prompts:
        r = seg.segment(None, ["red truck", "road"], **prompt)
        assert r.segments[0].proposal_score > 0, prompt
    refined = ovseg.Segmenter(**TINY, method="naclip", refine="masks")
    assert refined.segment(street, ["road", "car"]).segments
    proxy = ovseg.Segmenter(sam=None, clip="tiny-random", method="proxyclip", dino="tiny-random")
    assert (proxy.segment(street, ["road", "car"]).label_map >= 0).all()
    detections = r.to_supervision()
    assert len(detections) == len(r.segments)


def test_grounding_block(street):
    from PIL import Image

    img = np.asarray(Image.open(street))
    seg = ovseg.Segmenter(**TINY)
    r = ovseg.ground(img, "the blue cup", negatives=["person"], segmenter=seg)
    assert r.found and r.mask is not None and r.point is not None
    assert [c.index for c in r.candidates]
    assert ovseg.ground(img, "blue", category="cup", distractors=["bowl", "plate"],
                        segmenter=seg).candidates is not None  # fmt: skip
    both = ovseg.ground(img, ["the red truck", "the sky"], segmenter=seg)
    assert len(both) == 2 and all(x.found for x in both)
    assert ovseg.ground(img, "car", threshold=0.0, segmenter=seg).matches
    masks = np.zeros((2, *img.shape[:2]), bool)
    masks[0, :100], masks[1, 100:] = True, True
    assert ovseg.ground(img, "car", candidates=masks, segmenter=seg).found
    assert ovseg.ground(img, "car", candidates={"boxes": [[10, 10, 200, 200]]}, segmenter=seg).found
    heat = heatmap(img, "car", segmenter=seg)
    assert heat.shape == img.shape[:2] and heat.max() > 0


def test_segment_command(street, tmp_path):
    from ovseg.cli import main

    out = tmp_path / "out"
    code = main(["segment", str(street), "--classes", "road", "car", "sky", "-o", str(out),
                 "--sam", "tiny-random", "--clip", "tiny-random"])  # fmt: skip
    assert code == 0
    assert (out / "street.jpg_labels.png").is_file() and (out / "instances.json").is_file()
