"""Tests for ovseg.weights and ``ovseg weights``, with the network mocked in memory."""

from __future__ import annotations

import argparse
import hashlib
import io
import re
import urllib.error
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import ovseg
from ovseg.cli import weights as cli_weights
from ovseg.models import weights

PAYLOAD = bytes(range(256)) * 4096 + b"tail"  # ~1 MiB: several download chunks


class FakeResponse(io.BytesIO):
    """Stands in for an HTTP response: ``read``, ``headers`` and context management."""

    def __init__(self, data: bytes, *, fail_after: int | None = None, length: int | None = None):
        super().__init__(data)
        self.headers = {"Content-Length": str(len(data) if length is None else length)}
        self.fail_after = fail_after

    def read(self, n: int = -1) -> bytes:
        if self.fail_after is not None and self.tell() >= self.fail_after:
            raise ConnectionResetError("connection reset by peer")
        return super().read(n)


class FakeNet:
    """Serves ``PAYLOAD`` (or ``data``) for any URL and records the calls."""

    def __init__(self, data: bytes = PAYLOAD, **response_kwargs):
        self.data = data
        self.response_kwargs = response_kwargs
        self.calls: list[str] = []

    def __call__(self, url: str) -> FakeResponse:
        self.calls.append(url)
        return FakeResponse(self.data, **self.response_kwargs)


def _entry(data: bytes = PAYLOAD, **changes) -> weights.Checkpoint:
    fields = dict(
        name="fake",
        arch="vit_b",
        url="https://example.invalid/fake_tiny.pth",
        filename="fake_tiny.pth",
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
    )
    fields.update(changes)
    return weights.Checkpoint(**fields)


@pytest.fixture
def wdir(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "w"
    monkeypatch.setenv(weights.ENV_VAR, str(folder))
    monkeypatch.setattr(weights, "SAM_CHECKPOINTS", {"fake": _entry()})
    monkeypatch.setattr(weights, "DINO_CHECKPOINTS", {})
    monkeypatch.setattr(weights, "_VERIFIED", set())
    return folder


def _net(monkeypatch, **kwargs) -> FakeNet:
    net = FakeNet(**kwargs)
    monkeypatch.setattr(weights, "_open_url", net)
    return net


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_registry_is_consistent():
    import segment_anything

    assert set(weights.SAM_CHECKPOINTS) == {"vit_b", "vit_l", "vit_h"}
    for name, c in weights.SAM_CHECKPOINTS.items():
        assert c.name == name and c.arch in segment_anything.sam_model_registry
        assert c.url.startswith("https://dl.fbaipublicfiles.com/segment_anything/")
        assert c.url.rsplit("/", 1)[1] == c.filename and c.arch in c.filename
        assert re.fullmatch(r"[0-9a-f]{64}", c.sha256) and c.size > 100_000_000
        assert c.input_size == 1024 and len(c.pixel_mean) == len(c.pixel_std) == 3


def test_good_download(wdir, monkeypatch):
    net = _net(monkeypatch)
    path = weights.download("fake", progress=False)
    assert path == wdir / "fake_tiny.pth"
    assert path.read_bytes() == PAYLOAD
    assert net.calls == ["https://example.invalid/fake_tiny.pth"]
    assert _leftovers(wdir) == ["fake_tiny.pth"]
    weights.verify(path, weights.get_checkpoint("fake"))


def test_download_to_dest_dir(wdir, tmp_path, monkeypatch):
    _net(monkeypatch)
    path = weights.download("fake", progress=False, dest_dir=tmp_path / "elsewhere")
    assert path == tmp_path / "elsewhere" / "fake_tiny.pth" and path.is_file()
    assert not wdir.exists()


@pytest.mark.parametrize(
    "entry, message",
    [
        (_entry(sha256=hashlib.sha256(b"other").hexdigest()), "SHA-256 mismatch"),
        (_entry(size=len(PAYLOAD) + 1), "size"),
    ],
)
def test_corrupt_download_leaves_nothing(wdir, monkeypatch, entry, message):
    monkeypatch.setattr(weights, "SAM_CHECKPOINTS", {"fake": entry})
    monkeypatch.setattr(weights, "DINO_CHECKPOINTS", {})
    _net(monkeypatch)
    with pytest.raises(ValueError, match=message) as info:
        weights.download("fake", progress=False)
    assert "fake_tiny.pth" in str(info.value)
    assert _leftovers(wdir) == []


def test_interrupted_download_leaves_nothing(wdir, monkeypatch):
    _net(monkeypatch, fail_after=len(PAYLOAD) // 2)
    with pytest.raises(ConnectionError, match="could not download") as info:
        weights.download("fake", progress=False)
    assert isinstance(info.value.__cause__, ConnectionResetError)
    assert _leftovers(wdir) == []


def test_short_stream_is_an_interrupted_download(wdir, monkeypatch):
    _net(monkeypatch, data=PAYLOAD[:1000], length=len(PAYLOAD))
    with pytest.raises(ConnectionError, match="1000 of"):
        weights.download("fake", progress=False)
    assert _leftovers(wdir) == []


def test_network_error_is_reported(wdir, monkeypatch):
    def offline(url):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(weights, "_open_url", offline)
    with pytest.raises(OSError, match="no route to host") as info:
        weights.download("fake", progress=False)
    assert isinstance(info.value.__cause__, urllib.error.URLError)
    assert _leftovers(wdir) == []


def test_cached_file_is_not_downloaded_again(wdir, monkeypatch):
    net = _net(monkeypatch)
    first = weights.download("fake", progress=False)
    assert weights.download("fake", progress=False) == first
    assert weights.ensure_checkpoint("fake") == first
    assert len(net.calls) == 1
    weights.download("fake", progress=False, force=True)
    assert len(net.calls) == 2


def test_cached_corrupt_file(wdir, monkeypatch):
    net = _net(monkeypatch)
    wdir.mkdir()
    bad = wdir / "fake_tiny.pth"
    bad.write_bytes(PAYLOAD[:-1] + b"X")
    with pytest.raises(ValueError) as info:
        weights.ensure_checkpoint("fake")
    assert str(bad) in str(info.value) and "ovseg weights download fake" in str(info.value)
    assert net.calls == []
    assert weights.ensure_checkpoint("fake", download_missing=True) == bad
    assert bad.read_bytes() == PAYLOAD and len(net.calls) == 1


def test_missing_file_message(wdir, monkeypatch):
    net = _net(monkeypatch)
    with pytest.raises(FileNotFoundError) as info:
        weights.ensure_checkpoint("fake")
    message = str(info.value)
    for part in ("fake_tiny.pth", str(wdir), weights.ENV_VAR, "ovseg weights download fake"):
        assert part in message
    assert net.calls == []
    assert weights.ensure_checkpoint("fake", download_missing=True).read_bytes() == PAYLOAD


def test_unknown_name(wdir):
    for call in (weights.download, weights.ensure_checkpoint, weights.get_checkpoint):
        with pytest.raises(ValueError, match="known checkpoints: .*fake"):
            call("vit_q")


def test_weights_dir_resolution(tmp_path, monkeypatch):
    monkeypatch.setenv(weights.ENV_VAR, str(tmp_path / "custom"))
    assert weights.weights_dir() == tmp_path / "custom"
    monkeypatch.delenv(weights.ENV_VAR)
    checkout = Path(ovseg.__file__).resolve().parents[1] / "weights"
    if checkout.is_dir():
        assert weights.weights_dir() == checkout
    monkeypatch.setattr(weights, "_checkout_weights_dir", lambda: None)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert weights.weights_dir() == tmp_path / "home" / ".cache" / "ovseg" / "weights"


def test_verify_with_prefix_or_unknown_hash(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(PAYLOAD)
    digest = hashlib.sha256(PAYLOAD).hexdigest()
    weights.verify(path, _entry(sha256=digest[:8]))
    weights.verify(path, _entry(sha256=None, size=None))
    wrong = "0" * 8 if not digest.startswith("0" * 8) else "1" * 8
    with pytest.raises(ValueError, match=f"prefix mismatch.*expected {wrong}, got {digest[:8]}"):
        weights.verify(path, _entry(sha256=wrong))
    with pytest.raises(FileNotFoundError):
        weights.verify(tmp_path / "absent.bin", _entry())


@settings(max_examples=30, deadline=None)
@given(data=st.binary(min_size=1, max_size=2048), index=st.integers(0, 2047))
def test_verify_detects_any_flipped_byte(tmp_path_factory, data, index):
    path = tmp_path_factory.mktemp("v") / "f.bin"
    entry = _entry(data)
    path.write_bytes(data)
    weights.verify(path, entry)
    index %= len(data)
    path.write_bytes(data[:index] + bytes([data[index] ^ 0xFF]) + data[index + 1 :])
    with pytest.raises(ValueError, match="SHA-256 mismatch"):
        weights.verify(path, entry)


def test_load_state_dict_round_trip(tmp_path):
    from safetensors.torch import save_file

    state = {"layer.weight": torch.randn(3, 4), "layer.bias": torch.arange(3.0)}
    torch.save(state, tmp_path / "a.pth")
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "b.pth")
    save_file(state, str(tmp_path / "c.safetensors"))
    for name in ("a.pth", "b.pth", "c.safetensors"):
        loaded = weights.load_state_dict(tmp_path / name)
        assert loaded.keys() == state.keys()
        for key, value in state.items():
            assert torch.equal(loaded[key], value) and loaded[key].device.type == "cpu"


def test_load_state_dict_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        weights.load_state_dict(tmp_path / "absent.pth")
    for name in ("junk.pth", "junk.safetensors"):
        (tmp_path / name).write_bytes(b"this is not a checkpoint" * 10)
        with pytest.raises(ValueError, match=re.escape(str(tmp_path / name))):
            weights.load_state_dict(tmp_path / name)
    torch.save([torch.zeros(1)], tmp_path / "list.pth")
    with pytest.raises(ValueError, match="does not hold a state dict"):
        weights.load_state_dict(tmp_path / "list.pth")


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="ovseg")
    cli_weights.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_list_and_verify(wdir, monkeypatch, capsys):
    assert _cli(["weights", "list"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"fake\s+vit_b\s+.*missing", out) and "open_clip" in out
    assert _cli(["weights", "verify"]) == 0
    assert "nothing to verify" in capsys.readouterr().out
    assert _cli(["weights", "verify", "fake"]) == 1
    assert "not found" in capsys.readouterr().err

    _net(monkeypatch)
    assert _cli(["weights", "download", "fake", "--no-progress"]) == 0
    assert capsys.readouterr().out.strip() == str(wdir / "fake_tiny.pth")
    assert _cli(["weights", "verify"]) == 0
    assert "ok  fake" in capsys.readouterr().out
    assert _cli(["weights", "list"]) == 0
    assert re.search(r"fake\s+vit_b\s+.*verified", capsys.readouterr().out)

    (wdir / "fake_tiny.pth").write_bytes(b"broken")
    assert _cli(["weights", "verify", "fake"]) == 1
    captured = capsys.readouterr()
    assert "size" in captured.err and len(captured.err.strip().splitlines()) == 1
    assert _cli(["weights", "list", "--quick"]) == 0
    assert "bad size" in capsys.readouterr().out


def test_cli_errors_are_one_line(wdir, monkeypatch, capsys):
    assert _cli(["weights", "download", "vit_q"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("ovseg weights: error:") and "known checkpoints" in err
    assert "Traceback" not in err
    assert _cli(["weights", "verify", "vit_q"]) == 1
    assert _cli(["weights"]) == 2


def test_cli_download_clip_spec_goes_through_the_clip_libraries(wdir, capsys):
    # HF_HUB_OFFLINE is set by conftest: open_clip cannot fetch, and the error says what to do.
    assert _cli(["weights", "download", "ViT-B-32/openai"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("ovseg weights: error:") and "ViT-B-32/openai" in err
    assert "ovseg weights download ViT-B-32/openai" in err
    assert _cli(["weights", "download", "NoSuchNet/openai"]) == 1
    assert "not an open_clip architecture" in capsys.readouterr().err


def test_dino_registry_entries_and_offline_message(tmp_path, monkeypatch):
    from ovseg.models.build import build_dino

    monkeypatch.setenv("OVSEG_WEIGHTS_DIR", str(tmp_path))
    assert set(weights.DINO_CHECKPOINTS) == {"dino_vitb8", "dino_vitb16", "dino_vits8",
                                             "dino_vits16"}  # fmt: skip
    for name, c in weights.DINO_CHECKPOINTS.items():
        assert c.url.startswith("https://dl.fbaipublicfiles.com/dino/") and c.filename in c.url
        assert weights.get_checkpoint(name) is c
    with pytest.raises(FileNotFoundError, match="ovseg weights download dino_vitb8"):
        build_dino("dino_vitb8", "cpu")
    with pytest.raises(FileNotFoundError, match="not found"):
        build_dino(f"dino_vitb8:{tmp_path / 'missing.pth'}", "cpu")
    with pytest.raises(ValueError, match="unknown DINO"):
        build_dino("dino_vitl99", "cpu")
    with pytest.raises(TypeError):
        build_dino(3, "cpu")


def test_dino_official_format_state_dict_loads(tmp_path):
    import torch

    from ovseg.methods.dino import build_dino as arch
    from ovseg.models.build import build_dino

    state = arch("dino_vits16").state_dict()
    path = tmp_path / "dino_deitsmall16_pretrain.pth"
    torch.save(state, path)
    model = build_dino(f"dino_vits16:{path}", "cpu")
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key])
    with pytest.raises(ValueError, match="does not match"):
        build_dino(f"dino_vitb16:{path}", "cpu")


def test_weights_list_shows_sam_and_dino(tmp_path, monkeypatch, capsys):
    from ovseg.cli import main

    monkeypatch.setenv("OVSEG_WEIGHTS_DIR", str(tmp_path))
    assert main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    for name in ("vit_b", "vit_h", "dino_vitb8", "dino_vitb16"):
        assert f"  {name} " in out
    assert "dino_vitbase8_pretrain.pth" in out


def test_cli_download_a_preset_fetches_each_of_its_models(monkeypatch, capsys):
    from ovseg.models.presets import PRESETS

    fetched = []
    monkeypatch.setattr(cli_weights, "_download_one", lambda name, args: fetched.append(name))
    assert _cli(["weights", "download", "best", "balanced", "vit_b"]) == 0
    best, balanced = PRESETS["best"], PRESETS["balanced"]
    assert fetched == [best.sam, best.dino, best.clip, balanced.sam, balanced.dino, balanced.clip]

    monkeypatch.setattr(cli_weights, "_download_one", lambda name, args: fetched.append(name) or 1)
    fetched.clear()
    assert _cli(["weights", "download", "fast"]) == 1
    assert fetched == [PRESETS["fast"].sam]  # stops at the first failure
