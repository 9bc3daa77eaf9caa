"""CLIP weights load from their caches only: missing weights fail at once (no network, no
retries) with what is missing, where it was looked for and the command that fetches it;
cached weights load with no network; ``ovseg weights download`` is the one path online."""

from __future__ import annotations

import socket

import pytest
import torch

from ovseg.models.build import build_clip
from ovseg.models.tiny import TINY_CLIP_IMAGE_SIZE, tiny_clip

ARCH = "ovseg-test-tiny"
MEAN, STD = (0.1, 0.2, 0.3), (0.4, 0.5, 0.6)


@pytest.fixture
def offline(monkeypatch):
    """Any attempt to open a network connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("no network access allowed")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture
def wdir(tmp_path, monkeypatch):
    monkeypatch.setenv("OVSEG_WEIGHTS_DIR", str(tmp_path / "w"))
    return tmp_path / "w"


@pytest.fixture
def tiny_tags(monkeypatch):
    """Register the tiny CLIP as an open_clip architecture with two pretrained tags: one on
    the Hugging Face Hub, one at a URL."""
    import open_clip

    cfg = {
        "embed_dim": 32,
        "vision_cfg": {
            "layers": 2,
            "width": 64,
            "head_width": 32,
            "patch_size": 16,
            "image_size": TINY_CLIP_IMAGE_SIZE,
        },
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2,
                     "layers": 2},
    }  # fmt: skip
    monkeypatch.setitem(open_clip.factory._MODEL_CONFIGS, ARCH, cfg)
    tags = {
        "hub": {"hf_hub": "ovseg/tiny-clip/", "mean": MEAN, "std": STD, "quick_gelu": True},
        "url": {"url": "https://example.invalid/weights/tiny-clip.pt", "hf_hub": ""},
    }
    monkeypatch.setitem(open_clip.pretrained._PRETRAINED, ARCH, tags)
    return tags


def _hub_file(wdir, repo="ovseg/tiny-clip", name="open_clip_model.safetensors"):
    """Where huggingface_hub caches ``name`` of ``repo`` (revision main) under the weights."""
    rev = "0" * 40
    base = wdir / "open_clip" / f"models--{repo.replace('/', '--')}"
    (base / "refs").mkdir(parents=True)
    (base / "refs" / "main").write_text(rev)
    path = base / "snapshots" / rev / name
    path.parent.mkdir(parents=True)
    return path


def test_missing_open_clip_weights_fail_at_once_with_the_command(wdir, offline):
    # "at once": no network attempt at all (the offline fixture fails the test on one), so
    # nothing can be retried; speed itself is for benchmarks, not tests
    with pytest.raises(FileNotFoundError) as info:
        build_clip("ViT-B-16/openai", "cpu")
    message = str(info.value)
    assert "ovseg weights download ViT-B-16/openai" in message
    assert str(wdir / "open_clip") in message and "timm/vit_base_patch16_clip_224.openai" in message


def test_missing_hugging_face_model_fails_at_once_with_the_command(offline, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # even when online mode is allowed
    with pytest.raises(FileNotFoundError) as info:
        build_clip("hf:ovseg-test/no-such-model", "cpu")
    assert "ovseg weights download hf:ovseg-test/no-such-model" in str(info.value)


def test_cached_hub_weights_load_offline_with_the_tags_settings(wdir, tiny_tags, offline):
    from safetensors.torch import save_file

    reference = tiny_clip(seed=3)
    save_file(reference.state_dict(), str(_hub_file(wdir)))
    backend = build_clip(f"{ARCH}/hub", "cpu")
    for key, value in reference.state_dict().items():
        assert torch.equal(backend.model.state_dict()[key], value), key
    assert tuple(backend.mean) == MEAN and tuple(backend.std) == STD
    from open_clip.transformer import QuickGELU

    assert any(isinstance(m, QuickGELU) for m in backend.model.modules())  # as the tag says


def test_cached_url_weights_load_offline(wdir, tiny_tags, offline):
    reference = tiny_clip(seed=4)
    path = wdir / "open_clip" / "tiny-clip.pt"
    path.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), path)
    backend = build_clip(f"{ARCH}/url", "cpu")
    key = "visual.conv1.weight"
    assert torch.equal(backend.model.state_dict()[key], reference.state_dict()[key])


def test_weights_download_fetches_into_the_weights_folder(wdir, tiny_tags, capsys, monkeypatch):
    import open_clip
    from safetensors.torch import save_file

    from ovseg.cli import main

    def fake_download(cfg, cache_dir=None, **kwargs):  # what open_clip's download leaves
        assert cache_dir == str(wdir / "open_clip")
        path = _hub_file(wdir)
        save_file(tiny_clip(seed=5).state_dict(), str(path))
        return str(path)

    monkeypatch.setattr(open_clip.pretrained, "download_pretrained", fake_download)
    assert main(["weights", "download", f"{ARCH}/hub"]) == 0
    assert f"{ARCH}/hub: cached in" in capsys.readouterr().out
    assert main(["weights", "download", f"{ARCH}/nope"]) == 1
    assert "unknown pretrained tag" in capsys.readouterr().err
