"""Quality presets: one word picks a method and the models it was published with.

=========  ==========  =========================================  ==========================
preset     method      models (CLIP / DINO or VFM / SAM)          published mIoU, 8-benchmark
                                                                  average (ViT-B/16 CLIP)
=========  ==========  =========================================  ==========================
fast       NACLIP      ViT-B-16 OpenAI / none / vit_b (prompts)   42.5
balanced   Trident     ViT-B-16 OpenAI / dino_vitb16 / vit_b      45.8
best       CorrCLIP    ViT-B-16 MetaCLIP / dino_vitb8 / SAM 2.1-L 51.0
bank       CorrCLIPv2  ViT-B-16 MetaCLIP / C-RADIOv3-L / SAM 2.1-L 58.5 (with the COCO bank;
                       and DFN ViT-B/16 for the bank's second                 57.8 with MONET)
                       store
=========  ==========  =========================================  ==========================

``ovseg.segment`` and ``ovseg segment`` use :data:`DEFAULT_QUALITY` when no model or method is
given; models or a method given by the caller take precedence over the preset's. ``best``
needs no memory bank; a ``bank`` given with ``best`` (or with no quality and no method) turns
on CorrCLIPv2, the ``bank`` preset.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ovseg.constants import DEFAULT_CLIP, DEFAULT_METHOD, DEFAULT_SAM, SAM2_TINY, TINY


@dataclass(frozen=True)
class Preset:
    """A method with the models of its published numbers."""

    method: str
    clip: str
    sam: str | None
    dino: str | None
    published_miou: float  # average over the eight benchmarks of the methods' papers
    vfm: str | None = None
    aux_clip: str | None = None


PRESETS: dict[str, Preset] = {
    "fast": Preset("naclip", "ViT-B-16/openai", "vit_b", None, 42.5),
    "balanced": Preset("trident", "ViT-B-16/openai", "vit_b", "dino_vitb16", 45.8),
    "best": Preset(
        "corrclip", "ViT-B-16-quickgelu/metaclip_fullcc", "sam2.1_hiera_large", "dino_vitb8", 51.0
    ),
    "bank": Preset(
        "corrclipv2",
        "ViT-B-16-quickgelu/metaclip_fullcc",
        "sam2.1_hiera_large",
        None,
        58.5,
        vfm="radiov3",
        aux_clip="ViT-B-16/dfn2b",
    ),
}
QUALITIES = tuple(PRESETS)
DEFAULT_QUALITY = "best"
MODEL_KEYS = ("method", "clip", "sam", "dino", "vfm", "aux_clip")
_MODELS = ("sam", "clip", "dino", "vfm", "aux_clip")


def tiny_models(models: dict) -> dict:
    """``models`` with each model replaced by its tiny random stand-in of the same kind (SAM 3
    for a SAM 3 name, SAM 2 for a SAM 2 name, SAM 1 otherwise; CLIP; DINO): the method that
    would run with real weights runs, in seconds, with meaningless labels."""
    from ovseg.models.sam2_weights import is_sam2_spec
    from ovseg.models.sam3_weights import SAM3_TINY, is_sam3_spec

    out = dict(models)
    if out.get("sam") is not None:
        sam = out["sam"]
        out["sam"] = SAM3_TINY if is_sam3_spec(sam) else SAM2_TINY if is_sam2_spec(sam) else TINY
    out["clip"] = TINY
    for kind in ("dino", "vfm"):
        if out.get(kind) is not None:
            out[kind] = TINY
    out["aux_clip"] = None  # the tiny bank has one CLIP store
    return out


def resolve_models(
    quality: str | None, given: dict, tiny: bool = False, bank: bool = False
) -> dict:
    """The method and models to build: ``{"method", "clip", "sam", "dino"}``.

    ``given`` holds what the caller passed (keys of :data:`MODEL_KEYS`; ``sam=None`` means no
    SAM). With a ``quality``, its preset fills what is not given. Without one, nothing given
    means :data:`DEFAULT_QUALITY`; anything given means the plain defaults for the rest
    (``DEFAULT_SAM``, ``DEFAULT_CLIP``, ``DEFAULT_METHOD``, no DINO), so an explicit model set
    is never mixed with a preset's models silently. ``tiny``: the same method, every model
    replaced by its tiny random stand-in (:func:`tiny_models`); models given are refused.
    ``bank``: a memory bank is given, which turns ``best`` (or nothing given) into ``bank``.
    """
    unknown = set(given) - set(MODEL_KEYS)
    if unknown:
        raise TypeError(f"unknown model option(s) {sorted(unknown)}; expected {MODEL_KEYS}")
    if quality is not None and quality not in PRESETS:
        raise ValueError(f"quality must be one of {QUALITIES}, got {quality!r}")
    if tiny:
        models = sorted(k for k in given if k in _MODELS)
        if models:
            raise ValueError(f"tiny replaces every model: do not give {models} with it")
        return tiny_models(resolve_models(quality, given, bank=bank))
    if quality is None and not given:
        quality = DEFAULT_QUALITY
    if bank and quality == "best" and "method" not in given:
        quality = "bank"
    if quality is None:
        base = {"method": DEFAULT_METHOD, "clip": DEFAULT_CLIP, "sam": DEFAULT_SAM}
        base.update({k: None for k in ("dino", "vfm", "aux_clip")})
    else:
        base = asdict(PRESETS[quality])
        del base["published_miou"]
    return {**base, **given}
