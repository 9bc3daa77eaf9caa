"""benchmarks/references.py: its command line, and (given a reference checkout) its shims.

The argument tests always run. The reference test runs SCLIP's own segmentor, through the
benchmark's mmseg shims, on a tiny random CLIP against ``ovseg.methods.dense`` on the same
weights and query features; it needs a checkout of ``wangf3014/SCLIP`` named by
``OVSEG_SCLIP_REF`` and is skipped (saying so) without one.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture()
def refs(monkeypatch):
    for var in ("OVSEG_SCLIP_REF", "OVSEG_CLEARCLIP_REF", "OVSEG_NACLIP_REF",
                "OVSEG_PROXYCLIP_REF", "OVSEG_DINO_REF"):  # fmt: skip
        monkeypatch.delenv(var, raising=False)
    return _load("references")


def _error(refs, argv, capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        refs.parse_args(argv)
    assert exc.value.code == 2
    return capsys.readouterr().err


def test_no_checkout_is_one_clear_error(refs, capsys):
    err = _error(refs, [], capsys)
    assert "give at least one reference checkout" in err and "--sclip" in err


def test_a_folder_that_is_not_the_checkout(refs, tmp_path, capsys):
    err = _error(refs, ["--naclip", str(tmp_path)], capsys)
    assert "not a naclip checkout" in err and "naclip.py" in err


def test_proxyclip_needs_dino_code(refs, tmp_path, capsys):
    (tmp_path / "proxyclip_segmentor.py").write_text("")
    err = _error(refs, ["--proxyclip", str(tmp_path)], capsys)
    assert "--dino-repo" in err


@pytest.mark.parametrize("flag", ["--frames", "--repeats"])
def test_counts_at_least_one(refs, tmp_path, capsys, flag):
    (tmp_path / "clip_segmentor.py").write_text("")
    err = _error(refs, ["--sclip", str(tmp_path), flag, "0"], capsys)
    assert "at least 1" in err


def test_checkouts_from_the_environment(refs, tmp_path, monkeypatch):
    (tmp_path / "clip_segmentor.py").write_text("")
    monkeypatch.setenv("OVSEG_SCLIP_REF", str(tmp_path))
    args = refs.parse_args(["--frames", "1"])
    assert args.checkouts == {"sclip": tmp_path.resolve()}


def test_generated_frames_and_comparison(refs, tmp_path):
    images, source = refs.frames(tmp_path / "absent", 2)
    assert len(images) == 2 and images[0].shape == (360, 480, 3) and "generated" in source
    a = np.random.default_rng(0).random((3, 4, 5)).astype(np.float32)
    b = a.copy()
    b[0, 0, 0] += 0.25
    out = refs.compare(a, b)
    assert out["max_abs_diff"] == pytest.approx(0.25, abs=1e-6)
    assert refs.compare(a, a[:2])["shape_mismatch"] == [[3, 4, 5], [2, 4, 5]]


def test_results_never_overwrite(refs, tmp_path):
    first = refs.write_json(tmp_path / "r.json", {"a": 1})
    second = refs.write_json(tmp_path / "r.json", {"a": 2})
    assert first != second and first.exists() and second.exists()


SCLIP_REF = os.environ.get("OVSEG_SCLIP_REF")


@pytest.mark.skipif(not SCLIP_REF, reason="OVSEG_SCLIP_REF (a wangf3014/SCLIP checkout) not set")
def test_sclip_reference_matches_ovseg(tmp_path):
    open_clip = pytest.importorskip("open_clip")
    cv2 = pytest.importorskip("cv2")
    from open_clip.model import CLIPTextCfg, CLIPVisionCfg

    from ovseg.methods.config import method_config
    from ovseg.methods.dense import dense_probabilities

    sys.path.insert(0, str(BENCH))
    try:
        shims = _load("reference_shims")
    finally:
        sys.path.remove(str(BENCH))
    torch.manual_seed(0)  # heads of 64 channels, as OpenAI's build_model assumes
    clip = open_clip.model.CLIP(
        embed_dim=32,
        vision_cfg=CLIPVisionCfg(layers=2, width=128, head_width=64, patch_size=16, image_size=224),
        text_cfg=CLIPTextCfg(context_length=77, vocab_size=49408, width=64, heads=1, layers=1),
        quick_gelu=True,  # OpenAI's activation, which SCLIP's CLIP class always uses
    ).eval()
    with torch.no_grad():
        for tensor in clip.state_dict().values():  # what a float16 checkpoint holds
            if tensor.is_floating_point():
                tensor.copy_(tensor.half().float())
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (8, 10, 3)).astype(np.float32)
    image = np.clip(cv2.resize(base, (250, 190), interpolation=cv2.INTER_CUBIC), 0, 255)
    image = image.astype(np.uint8)
    cfg = method_config("sclip", None, short_side=240)
    classes = ["sky", "road", "tree"]
    ref = shims.build_reference("sclip", Path(SCLIP_REF), clip, classes, cfg, tmp_path)
    theirs = ref(image)
    text = ref.segmentor.query_features.float()
    with torch.inference_mode():
        ours = dense_probabilities("sclip", clip.visual, image, text, [0, 1, 2], 3, cfg)
    assert theirs.shape == (3, 190, 250)
    np.testing.assert_allclose(ours.numpy(), theirs, atol=2e-4)


def test_trident_and_corrclip_checkouts(refs, tmp_path, capsys):
    (tmp_path / "trident.py").write_text("")
    (tmp_path / "CorrCLIPv1").mkdir()
    (tmp_path / "CorrCLIPv1" / "corrclip_segmentor.py").write_text("")
    assert "--dino-repo" in _error(refs, ["--trident", str(tmp_path)], capsys)
    dino = tmp_path / "dino"
    dino.mkdir()
    (dino / "vision_transformer.py").write_text("")
    args = refs.parse_args(
        ["--trident", str(tmp_path), "--corrclip", str(tmp_path), "--dino-repo", str(dino)]
    )
    assert set(args.checkouts) == {"trident", "corrclip"}
    assert refs.DINO["trident"] == "dino_vitb16" and refs.DINO["corrclip"] == "dino_vitb8"


def test_corrclip_regions_are_numbered_by_area(refs):
    image = np.zeros((60, 80, 3), np.uint8)
    image[:, 40:] = 200  # two colours: a left and a right half
    image[10:30, 5:25] = 100  # a square inside the left half
    ids = refs.regions_of(image, min_area=50)
    assert ids.dtype == np.int64 and ids.shape == (60, 80)
    areas = [int((ids == i).sum()) for i in range(1, int(ids.max()) + 1)]
    assert areas == sorted(areas) and areas[0] == 400 and len(areas) == 3
    assert (refs.regions_of(image, min_area=1000) == 0).sum() == 400  # the square left out
