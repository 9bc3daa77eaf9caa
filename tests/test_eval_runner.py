"""The eval runner end to end: tiny models and the oracle on CamVid frames, resume, predictions
mode, reports and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ovseg.eval.datasets import IGNORE, builtin_classnames
from ovseg.eval.runner import (
    EvalConfig,
    evaluate,
    oracle_scores,
    resize_labels,
    resize_short_side,
)

CAMVID = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "camvid-val"
# Tiny random SAM passes no default quality filter: keep every grid mask.
GRID = {
    "points_per_side": 6,
    "pred_iou_thresh": 0.0,
    "stability_score_thresh": 0.0,
    "box_nms_thresh": 1.0,
}


@pytest.fixture(scope="module")
def camvid() -> Path:
    if not CAMVID.is_dir():
        pytest.skip(f"CamVid folder not found at {CAMVID}")
    return CAMVID


@pytest.fixture(scope="module")
def segmenter():
    from ovseg.pipeline import Segmenter

    return Segmenter(sam="tiny-random", clip="tiny-random", templates="simple", method="sam-clip")


def _run(camvid, out, segmenter, **kw):
    kw = {
        "sam": "tiny-random",
        "clip": "tiny-random",
        "templates": "simple",
        "limit": 2,
        "grid": GRID,
        "short_side": 180,
        "segmenter": segmenter,
        "progress": False,
    } | kw
    return evaluate(camvid, out, **kw)


def test_oracle_scores_majority_and_ignore():
    label = np.array([[0, 0, 1, IGNORE], [1, 1, IGNORE, IGNORE]])
    masks = np.zeros((3, 2, 4), bool)
    masks[0, :, :2] = True  # 0, 0, 1, 1 -> tie, lowest index 0
    masks[1, :, 1:3] = True  # 0, 1, 1, ignore -> 1
    masks[2, :, 3] = True  # ignore only -> no class
    s = oracle_scores(masks, label, 3)
    assert s.tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 0]]
    with pytest.raises(ValueError):
        oracle_scores(masks[:, :1], label, 3)


def test_resize_helpers():
    image = np.zeros((30, 40, 3), np.uint8)
    assert resize_short_side(image, 15).shape == (15, 20, 3)
    assert resize_short_side(image, None) is image
    lab = np.arange(6).reshape(2, 3) - 1
    up = resize_labels(lab, (4, 6))
    assert up.shape == (4, 6) and set(np.unique(up)) == set(np.unique(lab))
    np.testing.assert_array_equal(resize_labels(up, (2, 3)), lab)


def test_config_key_changes_with_options():
    a = EvalConfig("d", "camvid")
    assert a.key() == EvalConfig("d", "camvid").key()
    assert a.key() != EvalConfig("d", "camvid", grid={"points_per_side": 8}).key()
    assert a.key() != EvalConfig("d", "camvid", score_threshold=0.1).key()


def test_tiny_models_and_oracle_end_to_end(camvid, segmenter, tmp_path):
    tiny = _run(camvid, tmp_path / "tiny.json", segmenter)
    oracle = _run(camvid, tmp_path / "oracle.json", segmenter, scorer="oracle")
    names = builtin_classnames("camvid")[0]
    for report, stem in ((tiny, "tiny"), (oracle, "oracle")):
        assert set(report["per_class_iou"]) == set(names)
        assert report["counts"]["images"] == 2 and report["counts"]["computed"] == 2
        on_disk = json.loads((tmp_path / f"{stem}.json").read_text())
        assert on_disk["miou"] == report["miou"]
        for key in (
            "miou",
            "per_class_iou",
            "pixel_accuracy",
            "fwiou",
            "mean_accuracy",
            "config",
            "counts",
        ):
            assert key in on_disk
        assert (tmp_path / f"{stem}.md").read_text().startswith("# ovseg eval: camvid")
        with Image.open(tmp_path / f"{stem}_confusion.png") as im:
            assert im.size[0] > 100
        assert len(list(Path(report["cache"]).glob("*.png"))) == 2
    assert tiny["mode"] == "model" and oracle["mode"] == "oracle"
    # the oracle labels each proposal with its majority class: far above random CLIP scores
    assert oracle["miou"] > tiny["miou"] + 0.01
    assert oracle["pixel_accuracy"] > tiny["pixel_accuracy"]
    assert oracle["config"]["short_side"] == 180
    # scoring the cached oracle predictions again gives the same numbers
    again = evaluate(
        camvid, tmp_path / "again.json", predictions=oracle["cache"], limit=2, progress=False
    )
    assert again["mode"] == "predictions"
    for key in ("miou", "fwiou", "pixel_accuracy", "mean_accuracy", "per_class_iou"):
        assert again[key] == oracle[key], key
    assert again["confusion_matrix"] == oracle["confusion_matrix"]


def test_resume_after_interruption(camvid, segmenter, tmp_path, monkeypatch):
    calls = []
    fail_at = [2]
    original = type(segmenter).label

    def flaky(self, image, *args, **kwargs):
        calls.append(image.shape)
        if len(calls) == fail_at[0]:
            raise KeyboardInterrupt("simulated interruption")
        return original(self, image, *args, **kwargs)

    monkeypatch.setattr(type(segmenter), "label", flaky)
    out = tmp_path / "run.json"
    with pytest.raises(KeyboardInterrupt):
        _run(camvid, out, segmenter)
    assert not out.exists()
    cached = list((tmp_path / "run_cache").glob("*/*.png"))
    assert len(cached) == 1
    before = cached[0].stat().st_mtime_ns
    calls.clear()
    fail_at[0] = None
    report = _run(camvid, out, segmenter)
    assert len(calls) == 1  # only the second image is recomputed
    assert report["counts"]["cached"] == 1 and report["counts"]["computed"] == 1
    assert cached[0].stat().st_mtime_ns == before
    # a different configuration does not reuse the cache
    calls.clear()
    _run(camvid, out, segmenter, score_threshold=0.5, limit=1)
    assert len(calls) == 1


def _write_predictions(camvid: Path, folder: Path, stems: list[str], value) -> None:
    folder.mkdir(exist_ok=True)
    for stem in stems:
        with Image.open(camvid / "labels" / f"{stem}.png") as im:
            size = im.size
        Image.fromarray(np.full(size[::-1], value, np.uint8)).save(folder / f"{stem}.png")


def test_predictions_mode(camvid, tmp_path):
    stems = sorted(p.stem for p in (camvid / "labels").glob("*.png"))[:2]
    # ground truth copied as prediction: perfect scores (the ignore value 11 becomes unlabeled)
    folder = tmp_path / "gt"
    folder.mkdir()
    for stem in stems:
        lab = np.asarray(Image.open(camvid / "labels" / f"{stem}.png")).copy()
        lab[lab == 11] = 255
        Image.fromarray(lab).save(folder / f"{stem}_labels.png")
    perfect = evaluate(camvid, tmp_path / "p.json", predictions=folder, limit=2, progress=False)
    assert perfect["miou"] == 1.0 and perfect["pixel_accuracy"] == 1.0
    # all unlabeled: every labelled pixel is a miss
    _write_predictions(camvid, tmp_path / "none", stems, 255)
    none = evaluate(
        camvid, tmp_path / "n.json", predictions=tmp_path / "none", limit=2, progress=False
    )
    assert none["miou"] == 0.0 and none["counts"]["unlabeled_pixels"] == none["counts"]["pixels"]


def test_predictions_mode_errors(camvid, tmp_path):
    stems = sorted(p.stem for p in (camvid / "labels").glob("*.png"))[:2]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        evaluate(camvid, tmp_path / "r.json", predictions=tmp_path / "missing", progress=False)
    _write_predictions(camvid, tmp_path / "one", stems[:1], 0)
    with pytest.raises(FileNotFoundError, match=stems[1]):
        evaluate(camvid, tmp_path / "r.json", predictions=tmp_path / "one", limit=2, progress=False)
    _write_predictions(camvid, tmp_path / "bad", stems, 42)
    with pytest.raises(ValueError, match="42"):
        evaluate(camvid, tmp_path / "r.json", predictions=tmp_path / "bad", limit=2, progress=False)
    small = tmp_path / "small"
    small.mkdir()
    for stem in stems:
        Image.fromarray(np.zeros((5, 5), np.uint8)).save(small / f"{stem}.png")
    with pytest.raises(ValueError, match=stems[0]):
        evaluate(camvid, tmp_path / "r.json", predictions=small, limit=2, progress=False)


def test_bad_arguments(tmp_path):
    with pytest.raises(FileNotFoundError):
        evaluate(tmp_path / "nope", tmp_path / "r.json")
    data = tmp_path / "d"
    (data / "images").mkdir(parents=True)
    (data / "labels").mkdir()
    (data / "classes.txt").write_text("a\nb\n")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(data / "images" / "x.png")
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(data / "labels" / "x.png")
    for kw in ({"scorer": "magic"}, {"limit": 0}, {"score_threshold": 2.0}, {"short_side": -5}):
        with pytest.raises(ValueError):
            evaluate(data, tmp_path / "r.json", predictions=data / "labels", **kw)
    with pytest.raises(ValueError, match=".json"):
        evaluate(data, tmp_path / "r.txt", predictions=data / "labels")


def test_cli(camvid, tmp_path, capsys):
    from ovseg.cli import main

    stems = sorted(p.stem for p in (camvid / "labels").glob("*.png"))[:2]
    _write_predictions(camvid, tmp_path / "pred", stems, 3)
    out = tmp_path / "cli.json"
    code = main(
        [
            "eval",
            "--data",
            str(camvid),
            "--predictions",
            str(tmp_path / "pred"),
            "--limit",
            "2",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert code == 0 and out.exists()
    report = json.loads(out.read_text())
    assert report["per_class_iou"]["road"] > 0 and report["per_class_iou"]["sky"] == 0.0
    assert "mIoU" in capsys.readouterr().out
    code = main(["eval", "--data", str(tmp_path / "nope"), "--out", str(out)])
    assert code == 1 and "does not exist" in capsys.readouterr().err


def test_cli_tiny_oracle(camvid, tmp_path):
    from ovseg.cli import main

    out = tmp_path / "o.json"
    code = main(
        [
            "eval",
            "--data",
            str(camvid),
            "--sam",
            "tiny-random",
            "--clip",
            "tiny-random",
            "--scorer",
            "oracle",
            "--limit",
            "1",
            "--points-per-side",
            "8",
            "--pred-iou-thresh",
            "0",
            "--stability-score-thresh",
            "0",
            "--box-nms-thresh",
            "1",
            "--short-side",
            "180",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert code == 0
    report = json.loads(out.read_text())
    assert report["config"]["short_side"] == 180 and report["config"]["scorer"] == "oracle"
    assert report["miou"] > 0


def _fake_voc(root: Path, n: int = 2) -> Path:
    base = root / "VOC2012"
    rng = np.random.default_rng(0)
    for i in range(n):
        (base / "JPEGImages").mkdir(parents=True, exist_ok=True)
        (base / "SegmentationClass").mkdir(parents=True, exist_ok=True)
        image = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
        Image.fromarray(image).save(base / "JPEGImages" / f"im{i}.jpg")
        label = np.zeros((48, 64), np.uint8)
        label[10:30, 20:50] = 15  # person
        label[0, :] = 255
        Image.fromarray(label).save(base / "SegmentationClass" / f"im{i}.png")
    return root


def test_background_protocol_voc21(segmenter, tmp_path):
    data = _fake_voc(tmp_path / "voc")
    report = evaluate(
        data,
        tmp_path / "voc.json",
        kind="voc21",
        sam="tiny-random",
        clip="tiny-random",
        templates="simple",
        grid=GRID,
        segmenter=segmenter,
        progress=False,
    )
    # unlabeled pixels become background; the protocol's defaults are recorded
    assert report["counts"]["unlabeled_pixels"] == 0
    assert report["config"]["short_side"] == 336 and report["config"]["score_threshold"] == 0.1
    assert report["dataset"]["background_index"] == 0
    assert report["counts"]["pixels"] == 2 * 47 * 64
    blank = tmp_path / "blank"
    blank.mkdir()
    for i in range(2):
        Image.fromarray(np.full((48, 64), 255, np.uint8)).save(blank / f"im{i}.png")
    voc20 = evaluate(data, tmp_path / "voc20.json", kind="voc20", predictions=blank, progress=False)
    assert voc20["counts"]["pixels"] == 2 * 20 * 30  # background ignored
    assert voc20["counts"]["unlabeled_pixels"] == voc20["counts"]["pixels"]


def test_background_names_skip_class_synonyms(segmenter, tmp_path):
    from ovseg.eval.datasets import open_dataset
    from ovseg.eval.predict import Predictor as _Predictor

    root = tmp_path / "coco"
    (root / "images" / "val2017").mkdir(parents=True)
    (root / "annotations" / "val2017").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "images" / "val2017" / "1.jpg")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(
        root / "annotations" / "val2017" / "1_instanceTrainIds.png"
    )
    ds = open_dataset(root)
    predictor = _Predictor(EvalConfig(str(root), ds.kind, method="sam-clip"), ds, segmenter)
    assert "bed" in ds.classes and "bed" not in predictor.background
    assert "sky" in predictor.background and 0 not in predictor.fg


def test_sliding_window_dense_scoring_runs_and_keys_the_cache(camvid_dir, tmp_path):
    from ovseg.eval.runner import evaluate

    grid = {"points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}
    common = dict(
        sam="tiny-random",
        clip="tiny-random",
        method="sam-clip",
        grid=grid,
        limit=1,
        short_side=180,
        progress=False,
    )
    slid = evaluate(camvid_dir, tmp_path / "slid.json", window=64, **common)
    whole = evaluate(camvid_dir, tmp_path / "whole.json", **common)
    assert slid["config"]["window"] == 64 and whole["config"]["window"] is None
    assert slid["config"]["hash"] != whole["config"]["hash"]
    assert 0.0 <= slid["miou"] <= 1.0
    with pytest.raises(ValueError, match="needs scorer='dense'"):
        evaluate(camvid_dir, tmp_path / "x.json", window=64, scorer="crop", **common)
