"""The benchmark's building blocks and the ``ovseg bench`` command on the tiny models."""

from __future__ import annotations

import json
from collections import deque

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from ovseg.bench.methods import BENCH_METHODS, method_rows, parse_methods
from ovseg.bench.plain import PlainPipeline, label_components, synthetic_scene
from ovseg.bench.runner import BenchConfig
from ovseg.cli import main


def _bfs_components(lab: np.ndarray) -> set[bytes]:
    seen = np.zeros(lab.shape, bool)
    out = set()
    h, w = lab.shape
    for y0 in range(h):
        for x0 in range(w):
            if seen[y0, x0]:
                continue
            comp = np.zeros(lab.shape, bool)
            queue = deque([(y0, x0)])
            seen[y0, x0] = True
            while queue:
                y, x = queue.popleft()
                comp[y, x] = True
                for ny, nx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                    if (
                        0 <= ny < h
                        and 0 <= nx < w
                        and not seen[ny, nx]
                        and lab[ny, nx] == lab[y0, x0]
                    ):
                        seen[ny, nx] = True
                        queue.append((ny, nx))
            out.add(comp.tobytes())
    return out


@settings(max_examples=60, deadline=None)
@given(
    arrays(np.int64, st.tuples(st.integers(1, 12), st.integers(1, 12)), elements=st.integers(0, 3))
)
def test_label_components_match_bfs(lab):
    masks = label_components(lab)
    assert {m.tobytes() for m in masks} == _bfs_components(lab)
    assert (masks.sum(0) == 1).all()  # a partition of the image


def test_label_components_ignore_and_min_area():
    lab = np.array([[0, 0, 1, 2], [0, 1, 1, 2], [3, 3, 0, 0]])
    masks = label_components(lab, ignore=(2,), min_area=2)
    assert len(masks) == 4  # 0 (top-left), 0 (bottom-right), 1, 3; label 2 ignored
    assert not masks[:, :2, 3].any()
    with pytest.raises(ValueError):
        label_components(np.zeros((2, 2, 2)))


def test_synthetic_scene_is_deterministic():
    a, la = synthetic_scene(3)
    b, lb = synthetic_scene(3)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(la, lb)
    assert a.shape == (360, 480, 3) and a.dtype == np.uint8 and len(label_components(la)) >= 4


def test_plain_scoring_is_one_clip_pass_per_mask():
    from ovseg.models.build import build_clip
    from ovseg.models.tiny import tiny_sam

    image, lab = synthetic_scene(0, (96, 128))
    masks = label_components(lab)
    clip = build_clip("tiny-random", "cpu")
    plain = PlainPipeline(tiny_sam(), clip.model, clip.image_size, clip.mean, clip.std)
    probs = plain.score(image, masks, plain.text_features(["sky", "road"]))
    assert probs.shape == (len(masks), 2) and plain.clip_calls == len(masks)
    np.testing.assert_allclose(probs.sum(1), 1, rtol=1e-5)
    label = plain.fuse(masks, probs)
    assert label.dtype == np.int32 and (label >= 0).all()


@pytest.mark.parametrize(
    "bad",
    [
        dict(images=0),
        dict(repeats=0),
        dict(scorers=("fast",)),
        dict(scorers=()),
        dict(methods=("naclip", "fast")),
        dict(batch_windows=(0,)),
    ],
)
def test_config_validation(bad):
    with pytest.raises(ValueError):
        BenchConfig(**bad)


def test_parse_methods():
    assert parse_methods("naclip,sclip,clearclip,proxyclip") == BENCH_METHODS
    assert parse_methods("all") == BENCH_METHODS
    assert parse_methods("none") == ()
    assert parse_methods(" sclip , sclip,naclip") == ("sclip", "naclip")
    assert parse_methods("sam-clip,trident") == ("sam-clip", "trident")  # any registered one
    for bad in ("samclip", "naclip,nope", ""):
        with pytest.raises(ValueError, match="--methods"):
            parse_methods(bad)


def test_method_rows_add_batch_sizes():
    rows = method_rows(BenchConfig(methods=("sclip", "naclip"), batch_windows=(1, 16)))
    assert list(rows) == [
        "sclip",
        "sclip batch_windows=1",
        "sclip batch_windows=16",
        "naclip",
        "naclip batch_windows=1",
        "naclip batch_windows=16",
    ]
    assert rows["naclip batch_windows=16"] == ("naclip", {"batch_windows": 16})


@pytest.mark.parametrize("value", ["naclip,fast", "maskclip", ","])
def test_bad_method_names_are_one_line_errors(tmp_path, capsys, value):
    assert main(["bench", "--tiny", "--methods", value, "-o", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ovseg bench: error: unknown method")
    assert "naclip, sclip, clearclip, proxyclip" in err and not list(tmp_path.iterdir())


def test_half_needs_cuda(tmp_path, capsys):
    assert main(["bench", "--tiny", "--half", "--device", "cpu", "-o", str(tmp_path)]) == 2
    assert "CUDA" in capsys.readouterr().err


@pytest.mark.parametrize("data", ["camvid", "generated"])
def test_bench_command_writes_json_and_markdown(tmp_path, data, request):
    args = [
        "bench",
        "--tiny",
        "--images",
        "1",
        "--repeats",
        "1",
        "--points-per-side",
        "4",
        "--clicks",
        "1",
        "--device",
        "cpu",
        "-o",
        str(tmp_path),
        "--stem",
        "run",
    ]
    if data == "camvid":  # the dense methods skipped; all four on the generated frame
        args += ["--data", str(request.getfixturevalue("camvid_dir")), "--methods", "none"]
    else:
        args += ["--data", str(tmp_path / "absent")]
    assert main(args) == 0
    results = json.loads((tmp_path / "run.json").read_text())
    markdown = (tmp_path / "run.md").read_text()
    s = results["summary"]
    assert set(s["stages"]) == {"encoder", "proposals", "scoring", "fusion", "end_to_end", "click"}
    for row in s["stages"].values():
        assert row["plain"] > 0 and row["crop"] > 0 and row["dense"] > 0
        assert row["ratio_dense"] == pytest.approx(row["plain"] / row["dense"])
    rec = results["records"][0]
    assert rec["scored_masks"] > 0
    assert s["clip_passes_per_image"]["plain"] == rec["scored_masks"]
    assert s["clip_passes_per_image"]["dense"] == 1
    assert s["clip_passes_per_image"]["crop"] == -(-rec["scored_masks"] // 32)
    assert ("generated" in results["data"]) == (data == "generated")
    assert "| end to end |" in markdown and "SamAutomaticMaskGenerator" in markdown
    assert not list(tmp_path.glob(".run*"))  # no temp files left behind
    methods = s["methods"]
    if data == "camvid":
        assert methods == {} and rec["methods"] == {} and "Per-pixel methods" not in markdown
        return
    assert list(methods) == list(BENCH_METHODS) and results["method_errors"] == {}
    plain = s["stages"]["end_to_end"]["plain"]
    for name, row in methods.items():
        assert row["method"] == name and row["error"] is None and row["runs"] == 1
        assert row["probabilities"] > 0 and row["labels"] > 0
        assert row["per_image"] == pytest.approx(row["probabilities"] + row["labels"])
        assert row["ratio_plain"] == pytest.approx(plain / row["per_image"])
        assert row["ratio_plain"] > 0
        assert row["ratio_dense"] > 0 and row["windows"] >= 1 and row["batch_windows"] >= 1
        assert f"| {name} | " in markdown
    assert "## Per-pixel methods (no SAM)" in markdown
    assert "DINO tiny-random (proxyclip)" in markdown


@pytest.mark.gpu
def test_bench_half_on_gpu(tmp_path):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    args = [
        "bench",
        "--tiny",
        "--images",
        "1",
        "--repeats",
        "1",
        "--points-per-side",
        "4",
        "--device",
        "cuda",
        "--half",
        "-o",
        str(tmp_path),
        "--stem",
        "gpu",
    ]
    assert main(args) == 0
    assert json.loads((tmp_path / "gpu.json").read_text())["machine"]["gpu"]
