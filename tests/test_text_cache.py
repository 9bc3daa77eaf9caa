"""The disk cache of text embeddings: hits and misses, another process, corrupt files,
concurrent writers, keys that follow the weights, and the switches."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from ovseg.models.build import build_clip
from ovseg.scoring import text_cache
from ovseg.scoring.vocabulary import text_embeddings

REPO = Path(__file__).resolve().parents[1]
NAMES = ["road", "sky", "traffic light"]
TEMPLATES = ("a photo of a {}.", "a blurry photo of the {}.", "itap of my {}.")


def _spy(backend) -> list[list[str]]:
    calls: list[list[str]] = []
    original = backend.encode_text
    backend.encode_text = lambda texts: calls.append(list(texts)) or original(texts)
    return calls


def _files() -> list[Path]:
    return sorted(text_cache.text_cache_dir().glob("*.bin"))


def _env(**extra) -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), **extra}


def test_cache_folder_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("OVSEG_CACHE_DIR", str(tmp_path / "c"))
    assert text_cache.text_cache_dir() == tmp_path / "c" / "text"
    monkeypatch.setenv("OVSEG_CACHE_DIR", "  ")
    assert text_cache.cache_dir() == Path.home() / ".cache" / "ovseg"


def test_miss_then_hit_in_a_new_backend():
    backend = build_clip("tiny-random", "cpu")
    calls = _spy(backend)
    first = text_embeddings(NAMES, TEMPLATES, backend)
    assert len(calls) == 1 and len(calls[0]) == len(NAMES) * len(TEMPLATES)
    assert len(_files()) == len(NAMES)

    other = build_clip("tiny-random", "cpu")  # same weights, new objects: served from disk
    other_calls = _spy(other)
    again = text_embeddings(NAMES[::-1], TEMPLATES, other)
    assert other_calls == []
    assert torch.equal(again, first.flip(0))  # the stored float32 values, bit for bit
    text_embeddings(["car", "sky"], TEMPLATES, other)  # only the new name is embedded
    assert other_calls == [[t.replace("{}", "car") for t in TEMPLATES]]
    text_embeddings(["sky"], TEMPLATES[:2], other)  # another template set: another entry
    assert len(other_calls) == 2 and len(_files()) == len(NAMES) + 2


def test_a_second_process_reads_the_cache(tmp_path):
    backend = build_clip("tiny-random", "cpu")
    expected = text_embeddings(NAMES, TEMPLATES, backend).numpy()
    out = tmp_path / "emb.npy"
    script = textwrap.dedent(
        f"""
        import numpy as np
        from ovseg.models.build import build_clip
        from ovseg.scoring.vocabulary import text_embeddings

        backend = build_clip("tiny-random", "cpu")

        def refuse(texts):
            raise AssertionError(f"embedded again: {{texts[:1]}}")

        backend.encode_text = refuse
        np.save({str(out)!r}, text_embeddings({NAMES!r}, {TEMPLATES!r}, backend).numpy())
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, env=_env(), timeout=300)
    np.testing.assert_array_equal(np.load(out), expected)


def test_corrupt_or_misplaced_files_are_ignored_and_rewritten():
    backend = build_clip("tiny-random", "cpu")
    good = text_embeddings(NAMES, TEMPLATES, backend)
    files = _files()
    data = [f.read_bytes() for f in files]
    files[0].write_bytes(data[0][:-9])  # truncated
    flipped = bytearray(data[1])
    flipped[60] ^= 0x01  # one bit of a value
    files[1].write_bytes(bytes(flipped))
    files[2].write_bytes(data[0])  # a complete file under another key
    for f in files:
        assert text_cache.load(f.stem) is None

    fresh = build_clip("tiny-random", "cpu")
    calls = _spy(fresh)
    again = text_embeddings(NAMES, TEMPLATES, fresh)
    assert len(calls) == 1 and len(calls[0]) == 3 * len(TEMPLATES)  # all three recomputed
    torch.testing.assert_close(again, good, atol=1e-6, rtol=0)
    assert [f.read_bytes() for f in files] == [f.read_bytes() for f in _files()]
    assert all(text_cache.load(f.stem) is not None for f in files)


def test_keys_follow_the_weights():
    backend = build_clip("tiny-random", "cpu")
    model = backend.model
    before = backend.text_identity()
    assert backend.text_identity() == before  # memoised
    assert build_clip("tiny-random", "cpu").text_identity() == before  # same weights, same key
    first = text_embeddings(["road"], TEMPLATES, backend)
    with torch.no_grad():
        model.transformer.resblocks[1].mlp.c_proj.weight[0, 0] += 1e-3  # one weight, in place
    changed = backend.text_identity()
    assert changed != before
    calls = _spy(backend)
    second = text_embeddings(["road"], TEMPLATES, backend)  # neither memory nor disk serves it
    assert len(calls) == 1 and not torch.equal(first, second)
    with torch.no_grad():
        model.visual.conv1.weight.zero_()  # the image tower is not part of the text identity
    assert backend.text_identity() == changed
    model.ln_final.eps = 1e-3  # a setting, not a tensor
    text_cache._identities.clear()
    assert backend.text_identity() != changed
    double = build_clip("tiny-random", "cpu")
    double.model.double()
    assert double.text_identity() not in (before, changed)  # the dtype is part of the key


def test_the_disk_cache_can_be_turned_off(monkeypatch):
    monkeypatch.setenv("OVSEG_TEXT_CACHE", "0")
    backend = build_clip("tiny-random", "cpu")
    text_embeddings(NAMES, TEMPLATES, backend)
    assert _files() == []
    calls = _spy(backend)
    text_embeddings(NAMES, TEMPLATES, backend)  # still kept in memory
    assert calls == []


def test_clear_removes_the_files():
    text_embeddings(NAMES, TEMPLATES, build_clip("tiny-random", "cpu"))
    assert text_cache.clear() == len(NAMES)
    assert _files() == [] and text_cache.clear() == 0


def test_an_unwritable_folder_warns_once_and_still_embeds(monkeypatch, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("OVSEG_CACHE_DIR", str(blocker))
    text_cache._warned.clear()
    backend = build_clip("tiny-random", "cpu")
    with pytest.warns(RuntimeWarning, match="not cached"):
        emb = text_embeddings(NAMES, TEMPLATES, backend)
    assert emb.shape == (3, 32)


def test_concurrent_writers_and_a_reader_never_see_a_partial_file(tmp_path):
    """Two processes rewrite the same keys while a third reads them: every read is a miss or
    the exact value."""
    keys = [f"{i:064x}" for i in range(1, 9)]
    values = {k: np.random.default_rng(i).standard_normal(512).astype(np.float32) for i, k in
              enumerate(keys)}  # fmt: skip
    np.savez(tmp_path / "values.npz", **values)
    writer = textwrap.dedent(
        f"""
        import numpy as np
        from ovseg.scoring import text_cache
        values = dict(np.load({str(tmp_path / "values.npz")!r}))
        for _ in range(20):
            for k, v in values.items():
                text_cache.store(k, v)
        """
    )
    reader = textwrap.dedent(
        f"""
        import numpy as np, time
        from ovseg.scoring import text_cache
        values = dict(np.load({str(tmp_path / "values.npz")!r}))
        end, hits = time.monotonic() + 240, 0
        while hits < 400 and time.monotonic() < end:
            for k, v in values.items():
                got = text_cache.load(k)
                assert got is None or np.array_equal(got, v), k
                hits += got is not None
        assert hits >= 400, hits
        """
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code], env=_env())
        for code in (writer, writer, reader)
    ]
    assert [p.wait(timeout=300) for p in procs] == [0, 0, 0]
    assert sorted(f.stem for f in _files()) == keys
    assert not list(text_cache.text_cache_dir().glob(".*"))  # no temp file left behind


def test_cli_cache_info_and_clear(capsys, monkeypatch):
    from ovseg.cli import main

    text_embeddings(NAMES, TEMPLATES, build_clip("tiny-random", "cpu"))
    assert main(["cache", "info"]) == 0
    out = capsys.readouterr().out
    assert str(text_cache.text_cache_dir()) in out and f"entries: {len(NAMES)}" in out
    assert main(["cache", "clear"]) == 0
    assert f"removed {len(NAMES)}" in capsys.readouterr().out and _files() == []
    monkeypatch.setenv("OVSEG_TEXT_CACHE", "off")
    assert main(["cache", "info"]) == 0 and "off" in capsys.readouterr().out
    assert main(["cache"]) == 2


def test_a_backend_with_only_encode_text_keeps_memory_only():
    from ovseg.scoring.backends import ClipBackend

    tiny = build_clip("tiny-random", "cpu")

    class Plain(ClipBackend):  # a backend written before tokenize / encode_tokens existed
        model, supports_dense = tiny.model, False

        def encode_images(self, pixels):
            return tiny.encode_images(pixels)

        def dense_features(self, pixels):
            raise TypeError("no dense features")

        def encode_text(self, texts):
            with torch.inference_mode():
                feats = self.model.encode_text(tiny.tokenizer(list(texts)))
            return torch.nn.functional.normalize(feats.float(), dim=-1)

    emb = text_embeddings(NAMES, TEMPLATES, Plain())
    assert _files() == []
    torch.testing.assert_close(emb, text_embeddings(NAMES, TEMPLATES, tiny), atol=1e-5, rtol=0)
