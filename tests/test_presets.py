"""Quality presets: which method and models each word picks, and how given models win."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ovseg.cli import main
from ovseg.constants import DEFAULT_CLIP, DEFAULT_METHOD, DEFAULT_SAM, TINY
from ovseg.methods.registry import METHODS
from ovseg.models.build import check_sam_spec, dino_names
from ovseg.models.presets import DEFAULT_QUALITY, PRESETS, resolve_models


def test_every_preset_names_known_models_and_a_method():
    import open_clip

    for preset in PRESETS.values():
        assert preset.method in METHODS
        check_sam_spec(preset.sam)
        arch, tag = preset.clip.split("/")
        assert open_clip.get_pretrained_cfg(arch, tag), preset.clip
        assert preset.dino is None or preset.dino in dino_names()
    # ordered by published quality: each preset is worth its extra cost
    scores = [PRESETS[q].published_miou for q in ("fast", "balanced", "best")]
    assert scores == sorted(scores) and len(set(scores)) == 3


def test_nothing_given_is_the_default_preset():
    best = PRESETS[DEFAULT_QUALITY]
    assert resolve_models(None, {}) == {
        "method": best.method, "clip": best.clip, "sam": best.sam, "dino": best.dino,
    }  # fmt: skip


def test_a_preset_fills_what_is_not_given():
    got = resolve_models("balanced", {"clip": TINY, "sam": None})
    assert got == {"method": "trident", "clip": TINY, "sam": None, "dino": "dino_vitb16"}


def test_models_given_without_a_preset_get_the_plain_defaults():
    got = resolve_models(None, {"sam": TINY})
    assert got == {"method": DEFAULT_METHOD, "clip": DEFAULT_CLIP, "sam": TINY, "dino": None}
    assert resolve_models(None, {"method": "sclip"})["sam"] == DEFAULT_SAM


@pytest.mark.parametrize(
    ("quality", "given", "error", "match"),
    [
        ("turbo", {}, ValueError, "quality must be one of"),
        ("fast", {"model": "x"}, TypeError, "unknown model option"),
    ],
)
def test_bad_presets(quality, given, error, match):
    with pytest.raises(error, match=match):
        resolve_models(quality, given)


def test_segment_with_a_preset_and_tiny_models(monkeypatch):
    built = []
    import ovseg.api

    real = ovseg.api.default_segmenter

    def spy(sam, clip, device=None, **options):
        seg = real(sam, clip, device, **options)
        built.append(seg)
        return seg

    monkeypatch.setattr(ovseg.api, "default_segmenter", spy)
    image = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    result = ovseg.segment(image, ["road", "sky"], quality="fast", clip=TINY, sam=TINY)
    assert result.label_map.shape == (48, 64)
    assert [s.method.name for s in built] == ["naclip"] and built[0].dino is None
    with pytest.raises(ValueError, match="quality must be one of"):
        ovseg.segment(image, ["road"], quality="turbo")


def test_cli_records_the_preset_choice(tmp_path):
    from PIL import Image

    Image.fromarray(np.full((40, 56, 3), 120, np.uint8)).save(tmp_path / "a.png")
    args = ["segment", str(tmp_path / "a.png"), "--classes", "road", "sky", "--no-progress"]
    tiny = ["--sam", TINY, "--clip", TINY, "--dino", TINY, "--device", "cpu"]
    assert main([*args, "-o", str(tmp_path / "o1"), "--quality", "balanced", *tiny]) == 0
    run = json.loads((tmp_path / "o1" / "ovseg_run.json").read_text())
    assert run["settings"]["method"] == "trident"
    assert main([*args, "-o", str(tmp_path / "o2"), *tiny]) == 0
    run = json.loads((tmp_path / "o2" / "ovseg_run.json").read_text())
    assert run["settings"]["method"] == DEFAULT_METHOD  # models given: plain defaults
