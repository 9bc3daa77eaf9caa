"""The method protocol: every registered method answers it the same way, options travel one
way (construction, then per call, the same names), and a method added as one module plus one
registry line runs everywhere a method runs."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest

from ovseg.methods.config import MethodConfig, method_config
from ovseg.methods.protocol import NEEDS, Method
from ovseg.methods.registry import METHODS, method_class, method_names
from ovseg.pipeline import Segmenter

CLASSES = ["road; street", "car", "sky"]


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(3).integers(0, 256, (72, 96, 3), dtype=np.uint8)


@pytest.mark.parametrize("name", method_names())
def test_every_method_declares_what_the_protocol_asks(name):
    cls = method_class(name)
    assert issubclass(cls, Method) and cls.name == name
    assert cls.needs <= set(NEEDS)
    assert issubclass(cls.Config, MethodConfig) and cls.Config.__dataclass_params__.frozen
    config = cls.configure()
    assert config.method == name and set(cls.options_names()) >= {"score_threshold", "refine"}
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.score_threshold = 0.5  # type: ignore[misc]
    with pytest.raises(ValueError, match=f"unknown option.*for method '{re.escape(name)}'"):
        cls.configure(None, no_such_option=1)
    for need in ("clip", "dino", "sam"):
        if need in cls.needs:
            specs = {"clip": "x", "dino": "x", "sam": "x", need: None}
            with pytest.raises(ValueError, match=f"method '{re.escape(name)}' needs"):
                cls.check_specs(specs)


def test_unknown_method_names_the_known_ones():
    with pytest.raises(ValueError, match="method must be one of naclip, sclip"):
        method_class("maskclip")
    with pytest.raises(ValueError, match="method must be one of"):
        Segmenter(None, "tiny-random", "cpu", method="maskclip")


def test_a_methods_options_go_with_it_at_construction_and_per_call():
    seg = Segmenter(
        "tiny-random", "tiny-random", "cpu", dino="tiny-random", method="trident",
        coarse_thresh=0.1,
    )  # fmt: skip
    assert seg.config().coarse_thresh == 0.1
    assert seg.config(coarse_thresh=0.3).coarse_thresh == 0.3  # per call, same name
    assert seg.config("voc21").coarse_thresh == 0.1  # the caller's choice over the preset
    assert seg.config("context60").prob_threshold == 0.15  # the preset where not given
    with pytest.raises(ValueError, match="coarse_thresh"):
        Segmenter(None, "tiny-random", "cpu", method="naclip", coarse_thresh=0.1)


def test_short_side_given_to_clearclip_is_clearclips(image):
    """The option reaches the method: ClearCLIP at 336 is ClearCLIP's own front at 336, not
    its 448 default (it used to go to a region scorer, silently)."""
    import torch

    from ovseg.methods.dense import dense_probabilities

    seg = Segmenter(None, "tiny-random", "cpu", method="clearclip", short_side=336)
    got = seg.pixel_probabilities(image, ["car", "sky"])
    vocab = seg.vocabulary(["car", "sky"])
    text = vocab.text_embeddings(seg.clip)
    visual = seg.clip.model.visual
    want = dense_probabilities(
        "clearclip", visual, image, text, [0, 1], 2, method_config("clearclip", short_side=336)
    )
    np.testing.assert_allclose(got, want.numpy(), atol=1e-6)
    default = Segmenter(None, seg.clip, "cpu", method="clearclip")
    assert not np.allclose(default.pixel_probabilities(image, ["car", "sky"]), got, atol=1e-3)
    assert torch.is_tensor(text)


def test_grid_options_need_a_mask_source(image):
    seg = Segmenter("tiny-random", "tiny-random", "cpu", method="naclip")
    with pytest.raises(ValueError, match="add refine='masks'"):
        seg.segment(image, CLASSES, points_per_side=4)
    with pytest.raises(ValueError, match="unknown option"):
        seg.segment(image, CLASSES, bogus=1)
    result = seg.segment(image, CLASSES, refine="masks", points_per_side=4)
    assert result.label_map.shape == image.shape[:2]


ADDING = Path(__file__).resolve().parents[1] / "docs" / "methods" / "adding.md"


@pytest.fixture
def example_method(monkeypatch):
    """The worked example of the docs page "Adding a method", read from the page: its module
    (the block marked ``file: ovseg/methods/patch_cosine.py``) loaded under that name, and its
    registry line (the ``+`` line of the registry diff) added to the registry."""
    import importlib.util
    import sys

    from docs_examples import import_file_block, registry_entries

    module_block = import_file_block(ADDING, "ovseg/methods/patch_cosine.py")
    ((name, target),) = registry_entries(import_file_block(ADDING, "ovseg/methods/registry.py"))
    module_name = target.partition(":")[0]
    assert module_name == "ovseg.methods.patch_cosine"
    module = importlib.util.module_from_spec(
        importlib.util.spec_from_loader(module_name, loader=None)
    )
    exec(compile(module_block.code, module_block.where, "exec"), module.__dict__)
    monkeypatch.setitem(sys.modules, module_name, module)
    monkeypatch.setitem(METHODS, name, target)
    return name


def test_a_new_method_is_one_module_and_one_registry_line(example_method, image, tmp_path):
    assert example_method == "patch-cosine"
    import ovseg
    from ovseg.cli import main
    from ovseg.video import segment_video

    seg = Segmenter("tiny-random", "tiny-random", "cpu", method=example_method)
    probs = seg.pixel_probabilities(image, CLASSES)
    assert probs.shape == (3, *image.shape[:2]) and np.isfinite(probs).all()
    result = seg.segment(image, CLASSES)
    np.testing.assert_array_equal(result.label_map, probs.argmax(0))
    boxed = seg.segment(image, CLASSES, boxes=[[10, 10, 60, 50]])  # prompts work unchanged
    assert any(s.proposal_score > 0 for s in boxed.segments)
    frames = [image, np.roll(image, 3, axis=1)]
    video = list(segment_video(seg, iter(frames), ["road", "car"], points_per_side=4))
    assert len(video) == 2
    same = ovseg.segment(image, CLASSES, sam=None, clip="tiny-random", method=example_method)
    np.testing.assert_array_equal(same.label_map, result.label_map)
    path = tmp_path / "im.png"
    from PIL import Image

    Image.fromarray(image).save(path)
    args = ["segment", str(path), "--classes", "road", "car", "--sam", "tiny-random"]
    code = main([*args, "--clip", "tiny-random", "--method", example_method, "-o",
                 str(tmp_path / "out"), "--no-progress"])  # fmt: skip
    assert code == 0 and (tmp_path / "out" / "im.png_labels.png").is_file()
