"""Models published as Hugging Face repositories (several files read by ``transformers``),
as opposed to the single-file checkpoints of :mod:`ovseg.models.weights`: their registry rows.

Light on purpose (no torch): ``ovseg weights list`` reads it.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SAM3_HUB_MODELS", "HubModel", "gated_help"]


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


def gated_help(model: HubModel) -> str:
    """How to get a gated repository's files (one sentence for error messages)."""
    return (
        f"{model.repo} is a gated repository ({model.licence}): request access at {model.url} "
        "(accepting the licence), log in with `hf auth login` (or set HF_TOKEN), then run: "
        f"ovseg weights download {model.name}"
    )
