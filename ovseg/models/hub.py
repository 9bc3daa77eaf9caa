"""Models published as Hugging Face repositories (several files read by ``transformers``),
as opposed to the single-file checkpoints of :mod:`ovseg.models.weights`: their registry rows.

Light on purpose (no torch): ``ovseg weights list`` reads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "EOMT_HUB_MODELS",
    "PUBLISHED_BANKS",
    "SAM3_HUB_MODELS",
    "HubModel",
    "PublishedBank",
    "fetch_bank",
    "gated_help",
]


@dataclass(frozen=True)
class HubModel:
    """One model published as a Hugging Face repository.

    Attributes:
        name: the ovseg name (``"sam3"``).
        repo: the Hugging Face repository id.
        gated: whether the repository asks each user to accept its licence first.
        licence: the licence the weights are published under.
        ignore: file patterns of the repository ovseg does not need (not downloaded).
        weights_file: the weights file ``transformers`` reads.
        size, sha256: of ``weights_file``, where published (None: unknown, not checked).
        source: where the row's facts come from.
    """

    name: str
    repo: str
    gated: bool
    licence: str
    ignore: tuple[str, ...] = ()
    weights_file: str = "model.safetensors"
    size: int | None = None
    sha256: str | None = None
    source: str = ""

    @property
    def url(self) -> str:
        return f"https://huggingface.co/{self.repo}"


# facebook/sam3 holds the transformers checkpoint (config.json, model.safetensors, the processor
# and tokenizer files) and Meta's own sam3.pt (3,450,062,241 bytes, SHA-256
# 9999e2341ceef5e136daa386eecb55cb414446a00ac2b55eb2dfd2f7c3cf8c9e, as third-party scripts that
# verify their download record it; not published by Meta). ovseg reads the transformers files
# only and skips sam3.pt. No published size or digest of model.safetensors was found, so those
# checks are off; transformers checks the weights key by key when it loads them.
SAM3_HUB_MODELS: dict[str, HubModel] = {
    "sam3": HubModel(
        name="sam3",
        repo="facebook/sam3",
        gated=True,
        licence="SAM License",
        ignore=("*.pt", "*.pth"),
        source="huggingface.co/facebook/sam3 (model card: 848M parameters, SAM License)",
    )
}


# tue-mps/coco_panoptic_eomt_large_640 holds EoMT's own checkpoint (pytorch_model.bin, read by
# CorrCLIP's reference code) and the transformers checkpoint (config.json, model.safetensors,
# preprocessor_config.json); ovseg reads the transformers files only. No published digest.
EOMT_HUB_MODELS: dict[str, HubModel] = {
    "eomt": HubModel(
        name="eomt",
        repo="tue-mps/coco_panoptic_eomt_large_640",
        gated=False,
        licence="MIT",
        ignore=("*.bin", "*.pt", "*.pth", "*.ckpt"),
        source="huggingface.co/tue-mps/coco_panoptic_eomt_large_640 (EoMT-L, DINOv2, COCO "
        "panoptic, 640 x 640); the checkpoint of CorrCLIP's `eomt` mask generator",
    )
}


def gated_help(model: HubModel) -> str:
    """How to get a gated repository's files (one sentence for error messages)."""
    return (
        f"{model.repo} is a gated repository ({model.licence}): request access at {model.url} "
        "(accepting the licence), log in with `hf auth login` (or set HF_TOKEN), then run: "
        f"ovseg weights download {model.name}"
    )


@dataclass(frozen=True)
class PublishedBank:
    """One of CorrCLIPv2's published memory banks (Hugging Face dataset ``dk258/CorrCLIPv2``):
    three files in the reference's ``memory_bank/`` layout, which
    :class:`~ovseg.methods.bank.MemoryBank` reads unchanged.

    Attributes:
        name: the ovseg name (``"bank-coco-b"``).
        corpus: ``"coco"`` (118k unlabeled COCO images) or ``"monet"`` (synthetic MONET
            images, nothing shared with the test sets).
        clip: the main CLIP's store key (``"metaclip_b"``, ``"metaclip_l"``); the auxiliary
            store is DFN ViT-B/16's (``"dfnclip_b"``), the index RADIOv3-L's.
        size: the total size as the reference's README gives it (rounded; no digest is
            published, so nothing is checked beyond what the files' loaders check).
    """

    name: str
    corpus: str
    clip: str
    size: str
    repo: str = "dk258/CorrCLIPv2"

    @property
    def files(self) -> tuple[str, ...]:
        stores = "memory_bank/clip_embeddings"
        return (
            f"{stores}/{self.corpus}_{self.clip}.pt",
            f"{stores}/{self.corpus}_dfnclip_b.pt",
            f"memory_bank/vfm_embeddings/{self.corpus}_radiov3.faiss",
        )


# sizes: the "Memory bank" table of CorrCLIPv2/README.md (zdk258/CorrCLIP at 103bc18)
PUBLISHED_BANKS: dict[str, PublishedBank] = {
    b.name: b
    for b in (
        PublishedBank("bank-coco-b", "coco", "metaclip_b", "5.8 GB"),
        PublishedBank("bank-coco-l", "coco", "metaclip_l", "7.2 GB"),
        PublishedBank("bank-monet-b", "monet", "metaclip_b", "3.0 GB"),
        PublishedBank("bank-monet-l", "monet", "metaclip_l", "3.7 GB"),
    )
}


def fetch_bank(name: str, dest_dir: str | Path | None = None) -> Path:
    """Download a published bank's files (resumable; files already there are kept) into
    ``dest_dir/name`` (default: the weights folder's ``banks/``) and return that folder, to be
    given as ``bank=`` / ``--bank``.

    Raises:
        ValueError: an unknown name. OSError: the download failed (network, disk).
    """
    from huggingface_hub import hf_hub_download

    from ovseg.models.weights import weights_dir

    if name not in PUBLISHED_BANKS:
        raise ValueError(f"unknown bank {name!r}; published banks: {', '.join(PUBLISHED_BANKS)}")
    bank = PUBLISHED_BANKS[name]
    folder = Path(dest_dir) if dest_dir is not None else weights_dir() / "banks"
    folder = folder / name
    for file in bank.files:
        hf_hub_download(bank.repo, file, repo_type="dataset", local_dir=folder)
    return folder
