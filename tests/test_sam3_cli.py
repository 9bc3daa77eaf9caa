"""SAM 3 on the command line with the tiny random model: ``--threshold``, the mixed method
``naclip+sam3``, and ``ovseg segment --ray`` with ``--sam sam3-tiny-random --method sam3``
(its outputs equal the local run's, byte for byte)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ovseg.cli import build_parser, main
from ovseg.cli._args import method_settings
from ovseg.models.sam3_weights import SAM3_TINY

THRESHOLD = 0.27


@pytest.fixture(scope="module")
def images(camvid_dir, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("frames")
    frames = sorted((camvid_dir / "images").glob("*.png"))
    for i in (len(frames) // 2, len(frames) // 2 + 1):
        image = Image.open(frames[i]).convert("RGB").resize((240, 180), Image.BILINEAR)
        image.save(folder / frames[i].name)
    return folder


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}  # fmt: skip


def test_threshold_flag_is_the_methods_option():
    parse = build_parser().parse_args
    base = ["segment", "x.png", "--classes", "car", "-o", "out", "--sam", SAM3_TINY]
    settings = method_settings(parse([*base, "--method", "sam3", "--threshold", "0.3"]))
    assert settings["options"] == {"threshold": 0.3}
    same = method_settings(parse([*base, "--method", "sam3", "--option", "threshold=0.3"]))
    assert same["options"] == settings["options"]
    with pytest.raises(ValueError, match="threshold must be in"):
        method_settings(parse([*base, "--method", "sam3", "--threshold", "1.5"]))
    with pytest.raises(ValueError, match="--threshold is the instance score threshold"):
        method_settings(
            parse([*base, "--method", "naclip", "--clip", "tiny-random", "--threshold", "0.3"])
        )


def test_tiny_stand_in_of_sam3_is_the_tiny_sam3():
    from ovseg.models.presets import tiny_models

    assert tiny_models({"sam": "sam3"})["sam"] == SAM3_TINY
    assert tiny_models({"sam": "facebook/sam3"})["sam"] == SAM3_TINY
    assert tiny_models({"sam": "vit_b"})["sam"] == "tiny-random"


def test_mixed_method_on_the_command_line(images, tmp_path):
    out = tmp_path / "out"
    code = main(["segment", str(images), "--sam", SAM3_TINY, "--clip", "tiny-random",
                 "--method", "naclip+sam3", "--templates", "simple", "--classes", "car", "road",
                 "--threshold", str(THRESHOLD), "-o", str(out), "--no-progress"])  # fmt: skip
    assert code == 0
    labels = sorted(out.glob("*_labels.png"))
    assert len(labels) == 2
    run = json.loads((out / "ovseg_run.json").read_text())
    assert "naclip+sam3" in json.dumps(run) and str(THRESHOLD) in json.dumps(run)


def test_ray_run_of_sam3_equals_the_local_run(images, tmp_path):
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    from ovseg.distributed.segment import MANIFEST

    args = ["segment", str(images), "--sam", SAM3_TINY, "--method", "sam3", "--classes", "car",
            "road", "--threshold", str(THRESHOLD), "--no-progress"]  # fmt: skip
    local, remote = tmp_path / "local", tmp_path / "ray"
    assert main([*args, "-o", str(local)]) == 0
    ray.init(address="local", num_cpus=1, include_dashboard=False, logging_level="warning")
    try:
        assert main([*args, "-o", str(remote), "--ray", "--workers", "1"]) == 0
    finally:
        ray.shutdown()
    ours, theirs = _files(remote), _files(local)
    assert ours.pop(MANIFEST)
    assert ours == theirs
    coco = json.loads((local / "instances.json").read_text())
    assert coco["annotations"] and np.all([a["score"] > 0 for a in coco["annotations"]])


def test_bench_times_sam3s_instances(camvid_dir, tmp_path, capsys):
    out = tmp_path / "bench"
    code = main(["bench", "--sam", SAM3_TINY, "--method", "sam3", "--repeats", "1",
                 "--data", str(camvid_dir), "-o", str(out), "--stem", "s3"])  # fmt: skip
    assert code == 0
    result = json.loads((out / "s3.json").read_text())
    assert result["same_instances"] and result["max_score_diff"] < 1e-4
    assert len(result["seconds"]["per_class"]) == len(result["seconds"]["batched"]) == 1
    assert (out / "s3.md").read_text().startswith("# SAM 3: 11 classes")
    assert main(["bench", "--sam", SAM3_TINY, "--method", "naclip", "-o", str(out)]) == 2
    assert "finds no instances" in capsys.readouterr().err
    assert main(["bench", "--sam", "tiny-random", "--method", "sam3", "-o", str(out)]) == 2
