"""``ovseg eval --method``: each dense method with its own class names, per-dataset settings
and prediction rule; predictions checked against the methods' front called directly."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from ovseg.eval.runner import evaluate
from ovseg.result import read_label_png


def _voc(root, n=2, size=(60, 90)):
    base = root / "VOC2012"
    (base / "JPEGImages").mkdir(parents=True)
    (base / "SegmentationClass").mkdir(parents=True)
    rng = np.random.default_rng(1)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(
            base / "JPEGImages" / f"im{i}.png"
        )
        label = np.zeros(size, np.uint8)
        label[10:40, 20:70] = 15
        Image.fromarray(label).save(base / "SegmentationClass" / f"im{i}.png")
    return root


@pytest.mark.parametrize("method", ["sclip", "naclip"])
def test_voc21_predictions_follow_the_methods_own_protocol(method, tmp_path):
    from ovseg.eval.datasets import open_dataset
    from ovseg.methods.classnames import class_names
    from ovseg.methods.config import method_config
    from ovseg.methods.dense import dense_probabilities, predict_labels
    from ovseg.methods.text import query_embeddings
    from ovseg.pipeline import Segmenter
    from ovseg.scoring.vocabulary import resolve_templates, text_embeddings

    data = _voc(tmp_path / "voc")
    seg = Segmenter(None, "tiny-random", "cpu", method=method)
    out = tmp_path / f"{method}.json"
    # short_side shrunk so the tiny test runs fast; every other setting is the reference's
    report = evaluate(data, out, kind="voc21", segmenter=seg, progress=False,
                      method_options={"short_side": 96})  # fmt: skip
    assert report["config"]["method"] == method and report["dataset"]["background_index"] == 0
    classes = class_names(method, "voc21")
    assert len(classes) == 21 and len(classes[0]) == 26  # the 26 background words
    queries = [q for names in classes for q in names]
    owners = [i for i, names in enumerate(classes) for _ in names]
    # The queries with the 80 ImageNet templates, as the method's own code embeds them ...
    own = query_embeddings(seg.clip.model, seg.clip.tokenizer, queries)
    # ... are what the evaluation used: its embeddings, cached on the backend, agree with
    # them to rounding (other text batches). The labels are argmax and threshold cuts, so
    # they are recomputed from those very embeddings and must then be equal bit for bit.
    text = text_embeddings(queries, resolve_templates("imagenet"), seg.clip)
    torch.testing.assert_close(text, own, atol=1e-5, rtol=0)
    config = method_config(method, "voc21", short_side=96)
    assert config.prob_threshold == 0.1
    ds = open_dataset(data, "voc21")
    cache = json.loads(out.read_text())["cache"]
    for i in range(len(ds)):
        sample = ds[i]
        probs = dense_probabilities(method, seg.clip.model.visual, sample.image, text, owners,
                                    21, config)  # fmt: skip
        expected = predict_labels(probs, config, 0).numpy()
        got = read_label_png(f"{cache}/{ds.items[i][0]}.png")
        np.testing.assert_array_equal(got, expected)


def test_dense_method_refuses_sam_clip_options(tmp_path):
    data = _voc(tmp_path / "voc", n=1)
    for bad in ({"window": 224}, {"grid": {"points_per_side": 4}}, {"score_threshold": 0.2},
                {"method_options": {"bogus": 1}}, {"method": "magic"}):  # fmt: skip
        with pytest.raises(ValueError):
            evaluate(data, tmp_path / "x.json", kind="voc21", clip="tiny-random", sam=None,
                     progress=False, **bad)  # fmt: skip


def test_cli_method_on_camvid(camvid_dir, tmp_path, capsys):
    from ovseg.cli import main

    out = tmp_path / "c.json"
    args = ["eval", "--data", str(camvid_dir), "--clip", "tiny-random", "--method", "clearclip"]
    code = main([*args, "--short-side", "96", "--limit", "1", "--out", str(out), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    report = json.loads(out.read_text())
    assert report["config"]["method"] == "clearclip"
    assert report["config"]["method_options"] == {"short_side": 96}
    assert 0.0 <= report["miou"] <= 1.0


def test_predictions_written_by_ovseg_segment_are_read(camvid_dir, tmp_path):
    from ovseg.cli import main

    images = sorted((camvid_dir / "images").glob("*.png"))[:2]
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "labels").mkdir()
    (data / "classes.txt").write_text((camvid_dir / "classes.txt").read_text())
    for path in images:
        (data / "images" / path.name).write_bytes(path.read_bytes())
        (data / "labels" / path.name).write_bytes((camvid_dir / "labels" / path.name).read_bytes())
    lines = (data / "classes.txt").read_text().splitlines()
    classes = [line.split(":")[0].strip() for line in lines if line.strip()]
    out = tmp_path / "seg"
    code = main(["segment", str(data / "images"), "--classes", ",".join(classes), "-o", str(out),
                 "--sam", "tiny-random", "--clip", "tiny-random"])  # fmt: skip
    assert code == 0
    report = evaluate(data, tmp_path / "r.json", kind="camvid", predictions=out, progress=False)
    assert report["counts"]["images"] == 2 and 0.0 <= report["miou"] <= 1.0


def test_options_object_and_keywords_agree(tmp_path):
    from ovseg.eval import EvalOptions

    data = _voc(tmp_path / "voc", n=1)
    blank = tmp_path / "blank"
    blank.mkdir()
    Image.fromarray(np.zeros((60, 90), np.uint8)).save(blank / "im0.png")
    a = evaluate(data, tmp_path / "a.json", EvalOptions(kind="voc21", predictions=blank),
                 progress=False)  # fmt: skip
    b = evaluate(data, tmp_path / "b.json", kind="voc21", predictions=blank, progress=False)
    assert a["miou"] == b["miou"] and a["confusion_matrix"] == b["confusion_matrix"]
    c = evaluate(data, tmp_path / "c.json", EvalOptions(kind="voc20"), kind="voc21",
                 predictions=blank, progress=False)  # fmt: skip
    assert c["dataset"]["kind"] == "voc21"
    with pytest.raises(ValueError, match="unknown evaluate option"):
        evaluate(data, tmp_path / "d.json", kindd="voc21")
    with pytest.raises(TypeError, match="EvalOptions"):
        evaluate(data, tmp_path / "d.json", {"kind": "voc21"})
