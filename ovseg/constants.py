"""Constants shared across ovseg: one definition each."""

UNLABELED = -1
"""``label_map`` value of a pixel no class fits."""

PNG_UNLABELED = 255
"""Pixel value of unlabeled pixels in exported label PNGs."""

DEFAULT_SAM = "vit_b"
DEFAULT_CLIP = "ViT-B-16/openai"

TINY = "tiny-random"
"""Registry name of the tiny random test models (SAM, CLIP, DINO)."""
HF_TINY = "hf-tiny-random"

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)
SAM_PIXEL_STD = (58.395, 57.12, 57.375)
