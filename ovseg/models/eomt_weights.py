"""EoMT (Encoder-only Mask Transformer) on ``transformers``: the tiny random configuration and
the builder of the region generator of CorrCLIP's ``mask_generator="eomt"``.

Specs for :func:`build_eomt`:

- ``"eomt"``: EoMT-L COCO panoptic 640 (``tue-mps/coco_panoptic_eomt_large_640``, the
  reference's checkpoint) from the Hugging Face cache (``ovseg weights download eomt``);
- a Hugging Face id (``"ORG/NAME"``, from the cache) or a local folder of a ``transformers``
  EoMT checkpoint (``config.json`` with ``model_type`` ``eomt``), read offline;
- a built ``EomtForUniversalSegmentation``;
- ``"eomt-tiny-random"``: a tiny random model of the real class (64x64 input, patch 8, 133
  COCO-panoptic classes), offline, for tests.

Every model comes back in eval mode without masked attention (the reference's inference).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import torch

from ovseg.constants import EOMT, EOMT_TINY
from ovseg.models.hub import EOMT_HUB_MODELS
from ovseg.proposals.eomt import is_eomt_model, prepare_eomt

__all__ = ["build_eomt", "check_eomt_spec", "fetch_eomt", "tiny_eomt", "tiny_eomt_config"]


def tiny_eomt_config(num_labels: int = 133):
    """The ``transformers.EomtConfig`` of ``"eomt-tiny-random"``: the real architecture,
    small: width 32, 3 layers (the last 2 with queries), 2 heads, 16 queries, 1 register token,
    64x64 inputs with patch 8 (mask logits 16x16 after one upscale block)."""
    from transformers import EomtConfig

    return EomtConfig(
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=2,
        image_size=64,
        patch_size=8,
        num_blocks=2,
        num_upscale_blocks=1,
        num_queries=16,
        num_register_tokens=1,
        num_labels=num_labels,
        initializer_range=0.2,
    )


def tiny_eomt(seed: int = 0, num_labels: int = 133):
    """``"eomt-tiny-random"``: an ``EomtForUniversalSegmentation`` of
    :func:`tiny_eomt_config`, deterministic for a given ``seed``.

    Drawn so that regions appear (transformers' init keeps no query: every class probability
    far below the 0.8 a query needs, and masks of half the image each, which overlap too much
    to survive the panoptic merge): the class head with standard deviation 1; the mask
    embeddings scaled by 3, with a constant offset of -2 on every mask logit (the upscale
    block's first output channel made constant 1, the mask head's output on that channel -2),
    so that each mask covers a smaller part of the image.
    """
    from transformers import EomtForUniversalSegmentation

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = EomtForUniversalSegmentation(tiny_eomt_config(num_labels))
        with torch.no_grad():
            model.class_predictor.weight.normal_(0.0, 1.0)
            norm = model.upscale_block.block[-1].layernorm2d
            norm.weight[0], norm.bias[0] = 0.0, 1.0
            fc3 = model.mask_head.fc3
            fc3.weight.mul_(3.0)
            fc3.bias.mul_(3.0)
            fc3.weight[0], fc3.bias[0] = 0.0, -2.0
    return prepare_eomt(model)


def _is_hub_id(spec: str) -> bool:
    if Path(spec).suffix in (".pt", ".pth", ".safetensors", ".bin"):
        return False
    return bool(re.fullmatch(r"[\w.-]+/[\w.-]+", spec)) and not Path(spec).expanduser().exists()


def _missing(repo: str) -> str:
    from huggingface_hub import constants

    return (
        f"EoMT weights ({repo}) are not in the Hugging Face cache ({constants.HF_HUB_CACHE}; "
        "HF_HOME or HF_HUB_CACHE set it) and are not a local folder. Fetch them with: "
        + (
            f"ovseg weights download {EOMT}"
            if repo == EOMT_HUB_MODELS[EOMT].repo
            else f"hf download {repo}"
        )  # fmt: skip
    )


def check_eomt_spec(spec) -> None:
    """Raise at once for an EoMT spec that could never load, without loading anything.

    Raises:
        FileNotFoundError: a hub id (or ``"eomt"``) whose ``config.json`` is not in the Hugging
            Face cache, a folder without ``config.json`` (the message says how to fetch it).
        ValueError: not a known name, hub id, folder or model. TypeError: another type.
    """
    if is_eomt_model(spec):
        return
    if isinstance(spec, Path):
        spec = str(spec)
    if not isinstance(spec, str):
        raise TypeError(f"an EoMT model must be a name, hub id, folder or model, got {spec!r}")
    if spec == EOMT_TINY:
        return
    if spec in EOMT_HUB_MODELS or _is_hub_id(spec):
        from huggingface_hub import try_to_load_from_cache

        repo = EOMT_HUB_MODELS[spec].repo if spec in EOMT_HUB_MODELS else spec
        if not isinstance(try_to_load_from_cache(repo, "config.json"), str):
            raise FileNotFoundError(_missing(repo))
        return
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"EoMT folder {spec} has no config.json")
        return
    raise ValueError(
        f"unknown EoMT model {spec!r}; known: {EOMT}, {EOMT_TINY}, a Hugging Face id (e.g. "
        f"{EOMT_HUB_MODELS[EOMT].repo}) or a local folder of a transformers EoMT checkpoint"
    )


def build_eomt(spec, device=None, *, random_weights: bool = False):
    """An ``EomtForUniversalSegmentation`` in eval mode without masked attention on
    ``device`` (see the module docstring for ``spec``).

    ``random_weights=True`` with ``"eomt"`` builds the official architecture (EoMT-L, 640,
    133 classes) with random weights (for timing only: it warns).

    Raises:
        FileNotFoundError: weights not in the cache or a folder that does not load (the message
            says how to fetch them). ValueError: an unknown name or a checkpoint of another
            model. TypeError: a spec of the wrong type.
    """
    from ovseg.models._device import RANDOM_WARNING, resolve_device

    device = resolve_device(device)
    if is_eomt_model(spec):
        return prepare_eomt(spec).to(device)
    if isinstance(spec, Path):
        spec = str(spec)
    if spec == EOMT_TINY:
        return tiny_eomt().to(device)
    if spec == EOMT and random_weights:
        from transformers import EomtConfig, EomtForUniversalSegmentation

        warnings.warn(RANDOM_WARNING.format(what="EoMT"), UserWarning, stacklevel=2)
        return prepare_eomt(EomtForUniversalSegmentation(EomtConfig(num_labels=133))).to(device)
    check_eomt_spec(spec)
    source = EOMT_HUB_MODELS[spec].repo if spec in EOMT_HUB_MODELS else spec
    from transformers import AutoConfig, EomtForUniversalSegmentation

    try:
        config = AutoConfig.from_pretrained(source, local_files_only=True)
        if config.model_type != "eomt":
            raise ValueError(f"{source} holds a {config.model_type!r} model, not EoMT ('eomt')")
        model = EomtForUniversalSegmentation.from_pretrained(source, local_files_only=True)
    except OSError as e:
        if Path(source).expanduser().is_dir():
            raise FileNotFoundError(f"EoMT folder {source} does not load: {e}") from e
        raise FileNotFoundError(_missing(source)) from e
    return prepare_eomt(model).to(device)


def fetch_eomt(name: str = EOMT) -> str:
    """Download the transformers files of an EoMT hub model (``"eomt"`` or a hub id) into the
    Hugging Face cache; return the snapshot folder. The only function of ovseg that downloads
    EoMT.

    Raises:
        OSError: no network or another download failure (the message says so).
    """
    from huggingface_hub import constants, snapshot_download

    model = EOMT_HUB_MODELS.get(name)
    repo = model.repo if model else name
    ignore = list(model.ignore) if model else ["*.bin", "*.pt", "*.pth", "*.ckpt"]
    try:
        return snapshot_download(repo, ignore_patterns=ignore)
    except OSError as e:
        raise OSError(
            f"could not download {repo} into {constants.HF_HUB_CACHE} ({e}); check the network "
            "connection and the model id"
        ) from e
