"""Pinned official files and bad weight files: every registry entry with a published size or
SHA-256 refuses a junk file (size first, then hash) and ``ovseg weights verify`` never says
``ok`` for it; bad checkpoint files (text, a malicious pickle, .npz, truncated safetensors,
junk SAM 2 / DINO / CLIP) give one clear line, never a traceback, and no pickled code runs."""

from __future__ import annotations

import dataclasses
import json
import os
import re

import numpy as np
import pytest
import torch
from PIL import Image

from ovseg.cli import main
from ovseg.models import weights

JUNK = bytes(range(250)) * 4  # 1,000 bytes
TINY_CLIP = "ovseg-test-tiny-pins"


@pytest.fixture
def wdir(tmp_path, monkeypatch):
    folder = tmp_path / "w"
    folder.mkdir()
    monkeypatch.setenv(weights.ENV_VAR, str(folder))
    monkeypatch.setattr(weights, "_VERIFIED", set())
    return folder


class _Marker:
    """Unpickling this object calls ``open(path, "w")``: it creates ``path``."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture
def bad_files(tmp_path):
    """Each bad file by kind, and the marker a malicious pickle would create."""
    from safetensors.torch import save_file

    marker = tmp_path / "pickle-ran"
    files = {
        "text": tmp_path / "passwd",
        "pickle": tmp_path / "evil.bin",
        "npz": tmp_path / "weights.npz",
        "truncated": tmp_path / "cut.safetensors",
        "junk": tmp_path / "junk.pt",
    }
    files["text"].write_text("root:x:0:0:root:/root:/bin/bash\n")
    torch.save({"weight": _Marker(marker)}, files["pickle"])
    np.savez(files["npz"], weight=np.zeros(3))
    save_file({"weight": torch.zeros(1000)}, str(tmp_path / "whole.safetensors"))
    data = (tmp_path / "whole.safetensors").read_bytes()
    files["truncated"].write_bytes(data[: len(data) // 2])
    files["junk"].write_bytes(JUNK)
    return files, marker


def test_every_official_file_is_pinned_or_says_why():
    entries = [*weights.all_checkpoints().values(), *weights.CLIP_FILES.values()]
    pinned = {c.name for c in entries if c.pinned}
    sam2 = {n for n in weights.SAM2_CHECKPOINTS}
    assert {"vit_b", "vit_l", "vit_h", "dino_vitb16", *sam2} <= pinned and len(sam2) == 8
    assert "ViT-B-16-quickgelu/metaclip_fullcc" in pinned
    for c in entries:
        assert c.source, c.name
        if c.sha256 is not None:
            assert re.fullmatch(r"[0-9a-f]{64}", c.sha256), c.name
            assert c.source.startswith("https://"), c.name
        if c.size is not None:
            assert c.size > 50_000_000 and c.sha256 is not None, c.name
        if not c.pinned:
            assert c.source.startswith("not found"), c.name
    digests = [c.sha256 for c in entries if c.sha256]
    assert len(set(digests)) == len(digests)  # no digest copied onto two files


def test_junk_file_is_refused_for_every_pinned_entry_size_first(wdir, monkeypatch, capsys):
    pinned = {n: c for n, c in weights.all_checkpoints().items() if c.pinned}
    for c in weights.all_checkpoints().values():
        (wdir / c.filename).write_bytes(JUNK)
    hashed = []
    real_sha256sum = weights.sha256sum
    monkeypatch.setattr(weights, "sha256sum", lambda p: hashed.append(p) or real_sha256sum(p))
    for name, c in pinned.items():
        with pytest.raises(ValueError, match=f"size 1000 bytes does not match .*{c.size}"):
            weights.ensure_checkpoint(name)
        # with the size right, the hash refuses it
        with pytest.raises(ValueError, match="SHA-256 mismatch"):
            weights.verify(wdir / c.filename, dataclasses.replace(c, size=len(JUNK)))
    assert len(hashed) == len(pinned)  # only the size-matching calls hashed the file

    assert main(["weights", "verify"]) == 1
    out, err = capsys.readouterr()
    assert not re.search(r"^(ok|loads)\b", out, re.M)  # nothing vouched for
    lines = err.strip().splitlines()
    assert len(lines) == len(weights.all_checkpoints()) and "Traceback" not in err
    assert all(line.startswith("ovseg weights: error:") for line in lines)
    assert main(["weights", "list", "--quick"]) == 0
    listing = capsys.readouterr().out
    assert re.search(r"sam2\.1_hiera_large\s+\S+\s+[\d.]+ MiB\s+bad size", listing)
    assert re.search(r"dino_vitb8\s+\S+\s+\?\s+unpinned", listing)


def test_unpinned_entry_is_read_as_a_state_dict_never_called_ok(wdir, capsys):
    torch.save({"cls_token": torch.zeros(1, 1, 8)}, wdir / "dino_vitbase8_pretrain.pth")
    assert main(["weights", "verify", "dino_vitb8"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("loads  dino_vitb8") and "no published size or SHA-256" in out


def _clip_cache(wdir, data: bytes):
    """Put ``data`` where open_clip's hub cache keeps the metaclip preset's safetensors."""
    repo = wdir / "open_clip" / "models--timm--vit_base_patch16_clip_224.metaclip_2pt5b"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "open_clip_model.safetensors").write_bytes(data)
    return snapshot / "open_clip_model.safetensors"


def test_pinned_clip_file_is_checked_before_it_loads(wdir, capsys):
    from ovseg.models.build import build_clip

    path = _clip_cache(wdir, JUNK)
    spec = "ViT-B-16-quickgelu/metaclip_fullcc"
    with pytest.raises(ValueError, match=f"SHA-256 mismatch.*ovseg weights download {spec}"):
        build_clip(spec, "cpu")
    assert main(["weights", "verify", spec]) == 1
    out, err = capsys.readouterr()
    assert "ok" not in out and str(path) in err and len(err.strip().splitlines()) == 1
    assert main(["weights", "verify"]) == 1  # found among the cached files
    assert "SHA-256 mismatch" in capsys.readouterr().err


@pytest.fixture(scope="module")
def tiny_clip_arch(tmp_path_factory):
    """A tiny open_clip architecture, so that ARCH:PATH builds in milliseconds."""
    import open_clip

    from ovseg.models.build import build_clip

    cfg = {
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2,
                     "layers": 1},
    }  # fmt: skip
    folder = tmp_path_factory.mktemp("clipcfg")
    (folder / f"{TINY_CLIP}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(folder / f"{TINY_CLIP}.json")
    good = folder / "good.pt"
    torch.save(open_clip.create_model(TINY_CLIP).state_dict(), good)
    build_clip(f"{TINY_CLIP}:{good}", "cpu")  # a right file loads: the bad ones fail on loading
    return TINY_CLIP


@pytest.mark.parametrize("kind", ["text", "pickle", "npz", "truncated", "junk"])
def test_bad_clip_file_is_one_clear_line(tiny_clip_arch, bad_files, kind, tmp_path, capsys):
    from ovseg.models.build import build_clip

    files, marker = bad_files
    spec = f"{tiny_clip_arch}:{files[kind]}"
    with pytest.raises(ValueError, match=f"CLIP checkpoint {re.escape(str(files[kind]))} does"):
        build_clip(spec, "cpu")
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(image)
    argv = ["segment", str(image), "--classes", "road", "car", "-o", str(tmp_path / "out"),
            "--sam", "tiny-random", "--clip", spec, "--no-progress"]  # fmt: skip
    assert main(argv) != 0
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert err.startswith("ovseg segment: error: CLIP checkpoint") and str(files[kind]) in err
    assert not marker.exists()  # the pickled call never ran


@pytest.mark.parametrize("kind", ["text", "pickle", "truncated", "junk"])
def test_bad_sam2_and_dino_files_are_one_clear_line(bad_files, kind, wdir, tmp_path, capsys):
    from ovseg.models.build import build_dino
    from ovseg.models.sam2_weights import build_sam2

    files, marker = bad_files
    path = re.escape(str(files[kind]))
    with pytest.raises(
        ValueError, match=f"(cannot load checkpoint|cannot read safetensors.*) {path}"
    ):
        build_sam2(f"sam2.1_hiera_tiny:{files[kind]}", "cpu")
    with pytest.raises(
        ValueError, match=f"(cannot load checkpoint|cannot read safetensors.*) {path}"
    ):
        build_dino(f"dino_vitb8:{files[kind]}", "cpu")
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(image)
    argv = ["segment", str(image), "--classes", "road", "car", "-o", str(tmp_path / "out"),
            "--sam", "tiny-random", "--clip", "tiny-random", "--method", "trident",
            "--dino", f"dino_vitb16:{files[kind]}", "--no-progress"]  # fmt: skip
    assert main(argv) != 0
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1 and str(files[kind]) in err
    assert not marker.exists()


def test_junk_registry_sam2_and_dino_files_are_refused(wdir):
    from ovseg.models.build import build_dino
    from ovseg.models.sam2_weights import build_sam2

    for name in ("sam2.1_hiera_tiny", "sam2_hiera_large", "dino_vitb16", "dino_vitb8"):
        (wdir / weights.get_checkpoint(name).filename).write_bytes(JUNK)
    for name in ("sam2.1_hiera_tiny", "sam2_hiera_large"):
        with pytest.raises(ValueError, match="size 1000 bytes.*ovseg weights download"):
            build_sam2(name, "cpu")
    with pytest.raises(ValueError, match="size 1000 bytes"):
        build_dino("dino_vitb16", "cpu")
    with pytest.raises(ValueError, match="cannot load checkpoint"):  # no pin: refused on load
        build_dino("dino_vitb8", "cpu")
    assert os.listdir(wdir)  # nothing deleted behind the user's back
