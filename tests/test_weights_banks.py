"""``ovseg weights download bank-*``: CorrCLIPv2's published banks fetched file by file from
their Hugging Face dataset into the weights folder (the network replaced by a recorder)."""

from __future__ import annotations

import huggingface_hub
import pytest

from ovseg.cli import main
from ovseg.models.hub import PUBLISHED_BANKS, fetch_bank


@pytest.fixture
def hub(monkeypatch):
    calls = []

    def download(repo_id, filename, *, repo_type=None, local_dir=None, **kw):
        calls.append((repo_id, filename, repo_type))
        path = local_dir / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
        return str(path)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    return calls


def test_each_bank_is_its_three_reference_files():
    assert set(PUBLISHED_BANKS) == {"bank-coco-b", "bank-coco-l", "bank-monet-b", "bank-monet-l"}
    assert PUBLISHED_BANKS["bank-monet-l"].files == (
        "memory_bank/clip_embeddings/monet_metaclip_l.pt",
        "memory_bank/clip_embeddings/monet_dfnclip_b.pt",
        "memory_bank/vfm_embeddings/monet_radiov3.faiss",
    )
    with pytest.raises(ValueError, match="published banks: bank-coco-b"):
        fetch_bank("bank-mars-b")


def test_download_lands_in_the_weights_folder_and_is_listed(hub, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OVSEG_WEIGHTS_DIR", str(tmp_path))
    assert main(["weights", "list", "--quick"]) == 0
    assert "bank-coco-b  CorrCLIPv2 bank" in capsys.readouterr().out.replace("  missing", "")
    assert main(["weights", "download", "bank-coco-b"]) == 0
    folder = tmp_path / "banks" / "bank-coco-b"
    assert f"--bank {folder}" in capsys.readouterr().out
    assert hub == [("dk258/CorrCLIPv2", f, "dataset") for f in PUBLISHED_BANKS["bank-coco-b"].files]
    assert all((folder / f).is_file() for f in PUBLISHED_BANKS["bank-coco-b"].files)
    assert main(["weights", "list", "--quick"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if "bank-coco-b" in x)
    assert line.endswith("downloaded")


def test_a_failed_download_is_one_line(monkeypatch, tmp_path, capsys):
    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    assert main(["weights", "download", "bank-monet-b", "--dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err == "ovseg weights: error: could not download bank-monet-b: network unreachable\n"
