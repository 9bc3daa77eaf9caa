"""Quality presets: one word picks a method and the models it was published with.

=========  ==========  =========================================  ==========================
preset     method      models (CLIP / DINO / SAM)                 published mIoU, 8-benchmark
                                                                  average (ViT-B/16 CLIP)
=========  ==========  =========================================  ==========================
fast       NACLIP      ViT-B-16 OpenAI / none / vit_b (prompts)   42.5
balanced   Trident     ViT-B-16 OpenAI / dino_vitb16 / vit_b      45.8
best       CorrCLIP    ViT-B-16 MetaCLIP / dino_vitb8 / SAM 2.1-L 51.0
=========  ==========  =========================================  ==========================

``ovseg.segment`` and ``ovseg segment`` use :data:`DEFAULT_QUALITY` when no model or method is
given; models or a method given by the caller take precedence over the preset's.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ovseg.constants import DEFAULT_CLIP, DEFAULT_METHOD, DEFAULT_SAM


@dataclass(frozen=True)
class Preset:
    """A method with the models of its published numbers."""

    method: str
    clip: str
    sam: str | None
    dino: str | None
    published_miou: float  # average over the eight benchmarks of the methods' papers


PRESETS: dict[str, Preset] = {
    "fast": Preset("naclip", "ViT-B-16/openai", "vit_b", None, 42.5),
    "balanced": Preset("trident", "ViT-B-16/openai", "vit_b", "dino_vitb16", 45.8),
    "best": Preset(
        "corrclip", "ViT-B-16-quickgelu/metaclip_fullcc", "sam2.1_hiera_large", "dino_vitb8", 51.0
    ),
}
QUALITIES = tuple(PRESETS)
DEFAULT_QUALITY = "best"
MODEL_KEYS = ("method", "clip", "sam", "dino")


def resolve_models(quality: str | None, given: dict) -> dict:
    """The method and models to build: ``{"method", "clip", "sam", "dino"}``.

    ``given`` holds what the caller passed (keys of :data:`MODEL_KEYS`; ``sam=None`` means no
    SAM). With a ``quality``, its preset fills what is not given. Without one, nothing given
    means :data:`DEFAULT_QUALITY`; anything given means the plain defaults for the rest
    (``DEFAULT_SAM``, ``DEFAULT_CLIP``, ``DEFAULT_METHOD``, no DINO), so an explicit model set
    is never mixed with a preset's models silently.
    """
    unknown = set(given) - set(MODEL_KEYS)
    if unknown:
        raise TypeError(f"unknown model option(s) {sorted(unknown)}; expected {MODEL_KEYS}")
    if quality is not None and quality not in PRESETS:
        raise ValueError(f"quality must be one of {QUALITIES}, got {quality!r}")
    if quality is None and not given:
        quality = DEFAULT_QUALITY
    if quality is None:
        base = {"method": DEFAULT_METHOD, "clip": DEFAULT_CLIP, "sam": DEFAULT_SAM, "dino": None}
    else:
        base = asdict(PRESETS[quality])
        del base["published_miou"]
    return {**base, **given}
