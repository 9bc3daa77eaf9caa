import warnings

import pytest
import torch

from ovseg.models.build import build_clip, build_sam, resolve_device
from ovseg.models.tiny import tiny_clip, tiny_hf_clip, tiny_sam
from ovseg.scoring.backends import HFClipBackend, OpenClipBackend


def test_tiny_models_are_deterministic_real_architectures():
    from open_clip.model import CLIP
    from segment_anything.modeling import Sam

    a, b = tiny_sam(), tiny_sam()
    assert isinstance(a, Sam)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name
    assert isinstance(tiny_clip(), CLIP)


def test_build_sam_accepts_names_objects_and_paths(tmp_path):
    sam = tiny_sam(seed=3)
    assert build_sam(sam, "cpu") is sam
    assert isinstance(build_sam("tiny-random", "cpu"), type(sam))
    missing = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        build_sam(str(missing), "cpu")
    path = tmp_path / "tiny.pth"
    torch.save(sam.state_dict(), path)
    with pytest.raises(ValueError, match="SAM encoder width"):
        build_sam(path, "cpu")  # a tiny encoder is none of vit_b/l/h


def test_build_sam_unknown_name_lists_known_ones():
    with pytest.raises(ValueError, match="vit_b.*vit_l.*vit_h|vit_h.*vit_l.*vit_b"):
        build_sam("vit_xxl", "cpu")


def test_registered_sam_without_weights_names_file_and_command(tmp_path, monkeypatch):
    monkeypatch.setenv("OVSEG_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError) as e:
        build_sam("vit_b", "cpu")
    msg = str(e.value)
    assert "sam_vit_b_01ec64.pth" in msg and str(tmp_path) in msg
    assert "ovseg weights download vit_b" in msg


def test_random_weights_build_real_architecture_and_warn_loudly():
    with pytest.warns(UserWarning, match="RANDOM weights"):
        clip = build_clip("RN50", "cpu", random_weights=True)
    assert isinstance(clip, OpenClipBackend) and clip.image_size == 224


def test_build_clip_specs():
    assert isinstance(build_clip("tiny-random", "cpu"), OpenClipBackend)
    assert isinstance(build_clip("hf-tiny-random", "cpu"), HFClipBackend)
    model = tiny_clip()
    assert build_clip(model, "cpu").model is model
    backend = build_clip(tiny_hf_clip(), "cpu")
    assert isinstance(backend, HFClipBackend)
    assert build_clip(backend, "cpu") is backend


@pytest.mark.parametrize(
    "spec, error, match",
    [
        ("NoSuchNet/openai", ValueError, "not an open_clip architecture"),
        ("ViT-B-16", ValueError, "needs pretrained weights"),
        ("ViT-B-16/not-a-tag", ValueError, "unknown pretrained tag"),
        ("ViT-B-16:/no/such/file.pt", FileNotFoundError, "not found"),
        (42, TypeError, "clip must be"),
    ],
)
def test_bad_clip_specs(spec, error, match):
    with pytest.raises(error, match=match):
        build_clip(spec, "cpu")


def test_missing_hf_model_is_file_not_found_with_command(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="ovseg weights download hf:"):
        build_clip("hf:ovseg-nonexistent/clip-model", "cpu")


def test_missing_open_clip_weights_are_file_not_found(tmp_path, monkeypatch):
    monkeypatch.setenv("OVSEG_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(FileNotFoundError, match="ovseg weights download ViT-B-32/openai"):
            build_clip("ViT-B-32/openai", "cpu")


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="device"):
        resolve_device("toaster")


def test_openai_format_state_dict_loads_as_arch_colon_path(tmp_path):
    """``clip="ARCH-quickgelu:/path.pt"``: a state dict with OpenAI's key names (those of
    ``clip.model.CLIP``) loads into open_clip with QuickGELU, weights unchanged."""
    import json

    import open_clip
    import torch

    name = "ovseg-test-tiny-quickgelu"
    cfg = {
        "embed_dim": 32,
        "quick_gelu": True,
        "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2,
                     "layers": 2},
    }  # fmt: skip
    (tmp_path / f"{name}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp_path / f"{name}.json")
    torch.manual_seed(0)
    source = open_clip.create_model(name)
    state = {k: v for k, v in source.state_dict().items() if k != "attn_mask"}
    openai_keys = {"positional_embedding", "text_projection", "logit_scale",
                   "token_embedding.weight", "ln_final.weight", "visual.class_embedding",
                   "visual.positional_embedding", "visual.proj", "visual.conv1.weight",
                   "visual.ln_pre.weight", "visual.ln_post.bias",
                   "visual.transformer.resblocks.0.attn.in_proj_weight",
                   "visual.transformer.resblocks.1.mlp.c_fc.weight",
                   "transformer.resblocks.0.mlp.c_proj.bias"}  # fmt: skip
    assert openai_keys <= set(state)
    path = tmp_path / "openai.pt"
    torch.save(state, path)
    backend = build_clip(f"{name}:{path}", "cpu")
    loaded = backend.model.state_dict()
    for key, value in state.items():
        assert torch.equal(loaded[key], value), key
    gelu = backend.model.visual.transformer.resblocks[0].mlp.gelu
    assert type(gelu).__name__ == "QuickGELU"
    with pytest.raises(FileNotFoundError):
        build_clip(f"{name}:{tmp_path / 'missing.pt'}", "cpu")
