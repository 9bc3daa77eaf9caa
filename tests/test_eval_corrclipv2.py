"""``ovseg eval --method corrclipv2 --bank BANK`` on a tiny VOC-layout dataset with tiny random
models and a tiny bank built by ``ovseg bank build``: CorrCLIPv2's own class file and
per-dataset settings apply, the bank reaches the method (one built with another VFM is
refused), and a missing bank folder fails before any work."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from ovseg.cli import main
from ovseg.result import read_label_png

pytest.importorskip("faiss")

TINY = ["--sam", "tiny-random", "--clip", "tiny-random", "--dino", "tiny-random"]


def _voc(root, n=2, size=(40, 56)):
    base = root / "VOC2012"
    (base / "JPEGImages").mkdir(parents=True)
    (base / "SegmentationClass").mkdir(parents=True)
    rng = np.random.default_rng(3)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(
            base / "JPEGImages" / f"im{i}.png"
        )
        label = np.zeros(size, np.uint8)
        label[10:30, 20:50] = 15
        Image.fromarray(label).save(base / "SegmentationClass" / f"im{i}.png")
    return root


@pytest.mark.filterwarnings("ignore:ovseg")
def test_eval_corrclipv2_with_a_bank(tmp_path, capsys):
    from ovseg.methods.corrclipv2 import CorrCLIPv2

    data = _voc(tmp_path / "voc")
    bank = tmp_path / "bank"
    build = ["bank", "build", str(data / "VOC2012" / "JPEGImages"), "-o", str(bank), *TINY]
    small = ["--short-side", "56"]  # short sides shrunk so the tiny test runs fast
    code = main([*build, *small, "--crop", "112", "--vfm", "tiny-random", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    out = tmp_path / "run" / "v2.json"
    run = ["eval", "--data", str(data), "--dataset", "voc21", "--method", "corrclipv2",
           "--bank", str(bank), *TINY, *small, "--no-progress"]  # fmt: skip
    code = main([*run, "--vfm", "tiny-random", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    report = json.loads(out.read_text())
    config = report["config"]
    assert config["method"] == "corrclipv2" and config["bank"] == str(bank.resolve())
    assert config["vfm"] == "tiny-random" and report["counts"]["images"] == 2
    assert config["method_options"]["short_side"] == 56
    # CorrCLIPv2's own protocol on VOC21: its class file (background words in class 0) and
    # its per-dataset threshold
    assert len(CorrCLIPv2.class_file("voc21")) == 21
    assert CorrCLIPv2.configure("voc21").prob_threshold == 0.2
    assert report["dataset"]["background_index"] == 0
    for stem in ("im0", "im1"):
        labels = read_label_png(f"{report['cache']}/{stem}.png")
        assert labels.shape == (40, 56) and labels.max() <= 20

    # the bank is the method's: one built with other models is refused, in one line
    code = main([*run, "--vfm", "dinov3-tiny-random", "--out", str(tmp_path / "other.json")])
    err = capsys.readouterr().err
    assert code == 1 and "dinov3-tiny-random" in err and "Traceback" not in err

    # a missing bank folder fails before any model is built
    code = main([*run, "--vfm", "tiny-random", "--bank", str(tmp_path / "none"),
                 "--out", str(tmp_path / "none.json")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1 and "bank folder not found" in err
