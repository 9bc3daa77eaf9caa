"""``ovseg eval --scorer oracle`` builds SAM only: CLIP is never loaded."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ovseg.eval.runner import evaluate

GRID = {
    "points_per_side": 4,
    "pred_iou_thresh": 0.0,
    "stability_score_thresh": 0.0,
    "box_nms_thresh": 1.0,
}


def _folder_dataset(root):
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    (root / "classes.txt").write_text("road\nsky\n")
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(
            root / "images" / f"im{i}.png"
        )
        label = np.zeros((40, 56), np.uint8)
        label[:15] = 1
        Image.fromarray(label).save(root / "labels" / f"im{i}.png")
    return root


def test_oracle_does_not_load_clip(tmp_path, monkeypatch):
    import ovseg.models.build as build
    from ovseg.pipeline import Segmenter

    data = _folder_dataset(tmp_path / "data")
    seg = Segmenter(sam="tiny-random", clip="tiny-random")
    kw = dict(sam="tiny-random", clip="tiny-random", grid=GRID, progress=False, short_side=0)
    with_segmenter = evaluate(data, tmp_path / "a.json", scorer="oracle", segmenter=seg, **kw)

    def no_clip(*args, **kwargs):
        raise AssertionError("the oracle must not build CLIP")

    monkeypatch.setattr(build, "build_clip", no_clip)
    monkeypatch.setattr("ovseg.models.bundle.build_clip", no_clip)
    alone = evaluate(data, tmp_path / "b.json", scorer="oracle", device="cpu", **kw)
    assert alone["mode"] == "oracle" and alone["miou"] == pytest.approx(with_segmenter["miou"])
    assert alone["confusion_matrix"] == with_segmenter["confusion_matrix"]
