"""Constants shared across ovseg: one definition each."""

UNLABELED = -1
"""``label_map`` value of a pixel no class fits."""

PNG_UNLABELED = 255
"""Pixel value of unlabeled pixels in exported label PNGs."""

PNG_UNLABELED_WIDE = 65535
"""Pixel value of unlabeled pixels in 16-bit label PNGs (benchmarks with over 255 classes)."""

PNG_MAX_CLASSES = 255
"""Most classes a label PNG holds (values 0-254; 255 is unlabeled)."""

DEFAULT_SAM = "vit_b"
DEFAULT_CLIP = "ViT-B-16/openai"
DEFAULT_METHOD = "naclip"
"""The best published training-free method the default weights (CLIP ViT-B/16, no DINO) run:
NACLIP with PAMR, 42.5 mIoU averaged over eight benchmarks (SCLIP 39.1, ClearCLIP 38.1)."""
REGION_METHOD = "sam-clip"
"""ovseg's first recipe: SAM's automatic masks, each scored by a CLIP region scorer."""

TINY = "tiny-random"
"""Registry name of the tiny random test models (SAM, CLIP, DINO)."""
HF_TINY = "hf-tiny-random"
SAM2_TINY = "sam2-tiny-random"
"""Registry name of the tiny random SAM 2 (transformers' classes, 256x256 input)."""

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)
SAM_PIXEL_STD = (58.395, 57.12, 57.375)

APP_MAX_SIDE = 2048
"""The app segments an upload whose longer side is above it downsized to it
(``build_app(max_side=)``, ``ovseg app --max-side``): its memory and time stay those of a
4-megapixel image."""

EOMT = "eomt"
"""Registry name of EoMT-L COCO panoptic 640 (``tue-mps/coco_panoptic_eomt_large_640``), the
checkpoint of CorrCLIP's ``eomt`` mask generator."""
EOMT_TINY = "eomt-tiny-random"
"""Registry name of the tiny random EoMT (transformers' classes, 64x64 input)."""
