"""SAM 3 (Segment Anything with Concepts) on ``transformers``: the registry row, the tiny random
configuration and the builder.

ovseg runs SAM 3 as one ``transformers.Sam3VideoModel``: its ``detector_model`` (a
``Sam3Model``: text and box prompts -> instances, presence and semantic heads), its
``tracker_model`` (points, boxes and masks, SAM 2 style, with memory for video) and the
tracker's own neck over the detector's ViT, so one backbone pass serves every head. The model
and its processor (image processor and CLIP BPE tokenizer) travel together as a
:class:`~ovseg.proposals.sam3.Sam3Bundle`.

Specs for :func:`build_sam3`:

- ``"sam3"``: Meta's checkpoint ``facebook/sam3`` from the Hugging Face cache (gated: request
  access on its page, log in, then ``ovseg weights download sam3``);
- a Hugging Face id (``"ORG/NAME"`` with ``sam3`` in the name) or a local folder of a
  ``transformers`` SAM 3 checkpoint (``Sam3VideoModel``, ``Sam3Model`` or
  ``Sam3LiteTextModel``; a detector-only checkpoint runs text prompts only), read offline;
- a built ``Sam3VideoModel`` / ``Sam3Model`` / ``Sam3LiteTextModel`` (given the processor of
  the official checkpoints: images resized to the model's side, CLIP's BPE tokenizer with 32
  tokens), or a :class:`~ovseg.proposals.sam3.Sam3Bundle`;
- ``"sam3-tiny-random"``: a tiny random model of the real classes (112x112 input, about 3M
  parameters), offline, tokenizer included, for tests.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import torch

from ovseg.models.hub import SAM3_HUB_MODELS, HubModel, gated_help
from ovseg.proposals.sam3 import Sam3Bundle, is_sam3_model

__all__ = [
    "SAM3",
    "SAM3_TINY",
    "build_sam3",
    "check_sam3_spec",
    "fetch_sam3",
    "is_sam3_spec",
    "sam3_processor",
    "tiny_sam3",
    "tiny_sam3_config",
]

SAM3 = "sam3"
SAM3_TINY = "sam3-tiny-random"
TINY_SAM3_IMAGE_SIZE = 112
_TEXT_TOKENS = 32  # Sam3Processor pads every prompt to 32 tokens


def tiny_sam3_config():
    """The ``transformers.Sam3VideoConfig`` of ``"sam3-tiny-random"``: the real architecture,
    small: a ViT of width 32 with 2 layers on 112x112 inputs (patch 14), a CLIP text encoder of
    width 32 with 2 layers and CLIP's 49,408-token vocabulary, detector and tracker of width 128
    (DETR encoder 1 layer, decoder 2 layers, 20 queries; one memory-attention layer). The
    tracker needs a width above its 64 memory channels, as ``transformers`` builds it.

    Weights are drawn with standard deviation 0.2 (transformers' default 0.02 leaves every
    score at 0.25 and every mask probability at 0.5), so scores and masks spread and tests can
    compare away from the thresholds. The video model's detection thresholds are lowered to
    0.15 (new objects 0.16), where this model's scores lie, so that it tracks objects, and its
    memory windows shortened (3 memory frames, 4 object pointers, 2 conditioning frames,
    reconditioning every 4 frames, hot start over 4 frames) so that short clips reach them.
    """
    from transformers import (
        Sam3Config,
        Sam3TrackerVideoConfig,
        Sam3VideoConfig,
        Sam3VisionConfig,
        Sam3ViTConfig,
    )

    side, patch = TINY_SAM3_IMAGE_SIZE, 14
    width, hidden = 32, 128  # ViT and text encoder; detector and tracker
    init = 0.2  # the wider parts at 0.1: the same spread of activations (std ~ 1 / sqrt(width))
    grid = side // patch
    heads = dict(num_attention_heads=2, initializer_range=init)
    wide = dict(num_attention_heads=2, initializer_range=0.1)
    layers = dict(hidden_size=hidden, intermediate_size=2 * hidden, **wide)

    def vision(scales):
        backbone = Sam3ViTConfig(
            hidden_size=width,
            intermediate_size=2 * width,
            num_hidden_layers=2,
            image_size=side,
            patch_size=patch,
            window_size=4,
            global_attn_indexes=[1],
            pretrain_image_size=56,
            **heads,
        )
        return Sam3VisionConfig(
            backbone_config=backbone,
            fpn_hidden_size=hidden,
            scale_factors=scales,
            backbone_feature_sizes=[[4 * grid] * 2, [2 * grid] * 2, [grid] * 2],
            initializer_range=init,
        )

    detector = Sam3Config(
        vision_config=vision([4.0, 2.0, 1.0, 0.5]),
        text_config=dict(
            vocab_size=49408,
            hidden_size=width,
            intermediate_size=2 * width,
            projection_dim=width,
            num_hidden_layers=2,
            max_position_embeddings=_TEXT_TOKENS,
            **heads,
        ),
        geometry_encoder_config=dict(**layers, num_layers=1),
        detr_encoder_config=dict(**layers, num_layers=1),
        detr_decoder_config=dict(**layers, num_layers=2, num_queries=20),
        mask_decoder_config=dict(hidden_size=hidden, **wide),
        initializer_range=0.1,
    )
    tracker = Sam3TrackerVideoConfig(  # the tracker's neck has three levels, as Meta's SAM 2 neck
        vision_config=vision([4.0, 2.0, 1.0]),
        prompt_encoder_config=dict(hidden_size=hidden, image_size=side, patch_size=patch),
        mask_decoder_config=dict(
            hidden_size=hidden, mlp_dim=2 * hidden, num_attention_heads=2, iou_head_hidden_dim=64
        ),
        memory_attention_hidden_size=hidden,
        memory_attention_num_layers=1,
        memory_attention_feed_forward_hidden_size=2 * hidden,
        memory_attention_rope_feat_sizes=[grid, grid],
        memory_encoder_hidden_size=hidden,
        memory_encoder_output_channels=64,
        mask_downsampler_embed_dim=hidden,
        memory_fuser_embed_dim=hidden,
        memory_fuser_intermediate_dim=2 * hidden,
        image_size=side,
        num_maskmem=3,  # short memory windows, so that short test clips reach their ends
        max_object_pointers_in_encoder=4,
        max_cond_frame_num=2,
        initializer_range=init,
    )
    return Sam3VideoConfig(
        detector_config=detector,
        tracker_config=tracker,
        low_res_mask_size=4 * grid,
        score_threshold_detection=0.15,
        new_det_thresh=0.16,
        hotstart_delay=4,
        hotstart_unmatch_thresh=2,
        hotstart_dup_thresh=2,
        recondition_every_nth_frame=4,
        initializer_range=init,
    )


def sam3_processor(side: int = 1008):
    """A ``transformers.Sam3Processor`` built offline: ``Sam3ImageProcessor`` at ``side`` x
    ``side`` (its defaults: bilinear resize, scale to 0-1, mean and std 0.5) and CLIP's BPE
    tokenizer (SAM 3's text encoder uses CLIP's vocabulary; the processor pads to 32 tokens)."""
    from transformers import Sam3ImageProcessor, Sam3Processor

    from ovseg.models.tiny import clip_bpe_tokenizer

    image_processor = Sam3ImageProcessor(size={"height": side, "width": side})
    return Sam3Processor(image_processor=image_processor, tokenizer=clip_bpe_tokenizer())


def tiny_sam3(seed: int = 0) -> Sam3Bundle:
    """``"sam3-tiny-random"``: a :class:`~ovseg.proposals.sam3.Sam3Bundle` of a
    ``Sam3VideoModel`` of :func:`tiny_sam3_config` with its processor. Deterministic for a
    given ``seed``."""
    from transformers import Sam3VideoModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Sam3VideoModel(tiny_sam3_config())
        tracker = model.tracker_model  # parameters transformers starts at zero: random too
        for p in (tracker.no_memory_embedding, tracker.no_object_pointer):
            p.data.normal_(0.0, 0.2)
    return Sam3Bundle(model.eval(), sam3_processor(TINY_SAM3_IMAGE_SIZE), name=SAM3_TINY)


def _is_hub_id(spec: str) -> bool:
    if Path(spec).suffix in (".pt", ".pth", ".safetensors", ".bin"):
        return False
    return bool(re.fullmatch(r"[\w.-]+/[\w.-]*sam3[\w.-]*", spec, re.IGNORECASE))


def _is_folder(spec: str) -> bool:
    path = Path(spec).expanduser()
    return path.is_dir() and (path / "config.json").is_file()


def is_sam3_spec(spec) -> bool:
    """Whether ``spec`` names a SAM 3 model for :func:`build_sam3` (no I/O beyond checking
    whether a folder holds a SAM 3 ``config.json``)."""
    if is_sam3_model(spec):
        return True
    if isinstance(spec, Path):
        spec = str(spec)
    if not isinstance(spec, str):
        return False
    if spec in (SAM3, SAM3_TINY) or _is_hub_id(spec):
        return True
    return _is_folder(spec) and _folder_model_type(spec).startswith("sam3")


def _folder_model_type(folder: str) -> str:
    import json

    try:
        config = json.loads((Path(folder).expanduser() / "config.json").read_text())
    except (OSError, ValueError):
        return ""
    return str(config.get("model_type", "")) if isinstance(config, dict) else ""


def check_sam3_spec(spec) -> None:
    """Raise at once for a SAM 3 spec that could never load, without loading anything: the
    official name whose files are not in the Hugging Face cache (FileNotFoundError saying
    the repository is gated and how to fetch it)."""
    if isinstance(spec, str) and spec in SAM3_HUB_MODELS:
        _cached_config(SAM3_HUB_MODELS[spec])


def _cached_config(model: HubModel) -> None:
    from huggingface_hub import constants, try_to_load_from_cache

    found = try_to_load_from_cache(model.repo, "config.json")
    if not isinstance(found, str):
        raise FileNotFoundError(
            f"SAM 3 weights ({model.repo}) are not in the Hugging Face cache "
            f"({constants.HF_HUB_CACHE}; HF_HOME or HF_HUB_CACHE set it). {gated_help(model)}"
        )


def build_sam3(spec, device=None, *, random_weights: bool = False) -> Sam3Bundle:
    """A :class:`~ovseg.proposals.sam3.Sam3Bundle` in eval mode on ``device`` (see the module
    docstring for ``spec``).

    ``random_weights=True`` with ``"sam3"`` builds the official architecture with random
    weights (for timing only: it warns).

    Raises:
        FileNotFoundError: the official checkpoint or a hub id not in the cache (the message
            says how to fetch it), a folder that does not load.
        ValueError: an unknown name.
        TypeError: a spec of the wrong type.
    """
    from ovseg.models._device import RANDOM_WARNING as _RANDOM_WARNING
    from ovseg.models._device import resolve_device

    device = resolve_device(device)
    if isinstance(spec, Sam3Bundle):
        return spec.eval().to(device)
    if is_sam3_model(spec):
        return Sam3Bundle(spec.eval(), sam3_processor(_model_side(spec))).to(device)
    if isinstance(spec, Path):
        spec = str(spec)
    if not isinstance(spec, str):
        raise TypeError(f"sam must be 'sam3', a hub id, a folder or a SAM 3 model, got {spec!r}")
    if spec == SAM3_TINY:
        return tiny_sam3().to(device)
    if spec in SAM3_HUB_MODELS:
        model = SAM3_HUB_MODELS[spec]
        if random_weights:
            from transformers import Sam3VideoConfig, Sam3VideoModel

            warnings.warn(_RANDOM_WARNING.format(what="SAM 3"), UserWarning, stacklevel=2)
            built = Sam3VideoModel(Sam3VideoConfig()).eval()
            return Sam3Bundle(built, sam3_processor(_model_side(built)), name=spec).to(device)
        _cached_config(model)
        return _from_pretrained(model.repo, name=spec).to(device)
    if _is_hub_id(spec) or _is_folder(spec):
        return _from_pretrained(spec, name=spec).to(device)
    raise ValueError(
        f"unknown SAM 3 model {spec!r}; known names: {SAM3}, {SAM3_TINY}, or a Hugging Face id "
        "(e.g. facebook/sam3) or a local folder of a transformers SAM 3 checkpoint"
    )


def _model_side(model) -> int:
    config = model.config
    detector = getattr(config, "detector_config", None) or config
    size = detector.vision_config.image_size
    return int(size[0] if isinstance(size, (list, tuple)) else size)


def _from_pretrained(source: str, name: str) -> Sam3Bundle:
    """The checkpoint of a hub id (from the cache only) or a local folder: its config picks the
    class (``sam3_video`` -> ``Sam3VideoModel``, ``sam3`` -> ``Sam3Model``,
    ``sam3_lite_text`` -> ``Sam3LiteTextModel``)."""
    import transformers
    from transformers import AutoConfig, Sam3Processor

    from ovseg.models.clip_weights import hf_missing

    classes = {"sam3_video": "Sam3VideoModel", "sam3": "Sam3Model"}
    classes["sam3_lite_text"] = "Sam3LiteTextModel"
    try:
        config = AutoConfig.from_pretrained(source, local_files_only=True)
        kind = classes.get(config.model_type)
        if kind is None:
            raise ValueError(
                f"{source} holds a {config.model_type!r} model, not SAM 3 "
                f"(one of {sorted(classes)})"
            )
        model = getattr(transformers, kind).from_pretrained(source, local_files_only=True)
        processor = Sam3Processor.from_pretrained(source, local_files_only=True)
    except OSError as e:
        message = hf_missing(source, e)
        if not Path(source).expanduser().is_dir():
            message += ". A gated repository needs `hf auth login` (or HF_TOKEN) first"
        raise FileNotFoundError(message) from e
    return Sam3Bundle(model.eval(), processor, name=name)


def fetch_sam3(name: str = SAM3) -> str:
    """Download the transformers files of a SAM 3 hub model (``"sam3"`` or a hub id) into the
    Hugging Face cache; return the snapshot folder. The only function of ovseg that downloads
    SAM 3.

    Raises:
        OSError: a gated repository without access (the message says how to get it), no
            network, or another download failure.
    """
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    model = SAM3_HUB_MODELS.get(name) or HubModel(
        name=name, repo=name, gated=False, licence="see its model card", ignore=("*.pt", "*.pth")
    )
    try:
        return snapshot_download(model.repo, ignore_patterns=list(model.ignore))
    except GatedRepoError as e:
        raise OSError(gated_help(model)) from e
    except RepositoryNotFoundError as e:  # also what an anonymous request to a gated repo gets
        raise OSError(f"{model.repo} was not found or needs access. {gated_help(model)}") from e
    except OSError as e:
        raise OSError(
            f"could not download {model.repo} into {constants.HF_HUB_CACHE} ({e}); check the "
            f"network connection. {gated_help(model)}"
        ) from e
