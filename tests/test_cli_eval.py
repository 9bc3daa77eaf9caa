"""``ovseg eval`` prints metrics as percentages with a % sign; the JSON keeps fractions."""

from __future__ import annotations

import json
import re

import numpy as np
from PIL import Image


def test_printed_miou_is_the_stored_fraction_in_percent(tmp_path, capsys):
    from ovseg.cli import main

    data, preds = tmp_path / "data", tmp_path / "preds"
    for folder in (data / "images", data / "labels", preds):
        folder.mkdir(parents=True)
    (data / "classes.txt").write_text("road\nsky\ncar\n")
    label = np.zeros((20, 30), np.uint8)
    label[:5] = 1
    label[15:, :3] = 2
    pred = np.zeros_like(label)
    pred[:4] = 1
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(data / "images" / "a.png")
    Image.fromarray(label).save(data / "labels" / "a.png")
    Image.fromarray(pred).save(preds / "a.png")
    out = tmp_path / "r.json"
    code = main(["eval", "--data", str(data), "--predictions", str(preds), "--out", str(out)])
    assert code == 0
    stored = json.loads(out.read_text())["miou"]
    printed = re.search(r"mIoU ([0-9.]+)%", capsys.readouterr().out)
    assert printed and float(printed.group(1)) == round(100 * stored, 2)
    assert "%" in out.with_suffix(".md").read_text()


def test_cuda_without_a_gpu_fails_before_the_dataset_is_read(tmp_path, capsys, monkeypatch):
    import torch

    from ovseg.cli import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code = main(
        ["eval", "--data", str(tmp_path), "--out", str(tmp_path / "r.json"), "--device", "cuda"]
    )
    assert code == 1 and "CUDA is not available" in capsys.readouterr().err
