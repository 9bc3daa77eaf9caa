"""The registry of official checkpoints: where each file comes from, its size and SHA-256.

One frozen :class:`Checkpoint` per official file records its download URL, its exact size in
bytes and its SHA-256 (checked before use: size first, then the hash), the preprocessing it
expects, and ``source``: where the size and hash were read. Meta and Facebook publish neither
for SAM 2 or DINO; the public Hugging Face repositories that mirror the files show each Git LFS
file's SHA-256 and size (its pointer: ``oid sha256:...``, ``size ...``), and ``source`` names
the page (a commit adding the file, or the file's page) they were taken from. An entry whose
file no such page was found for has ``size``/``sha256`` None and says so in ``source``: it is
checked key by key and shape by shape when it is loaded, never by ``ovseg weights verify``
alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from ovseg.constants import OPENAI_MEAN, OPENAI_STD, SAM_PIXEL_MEAN, SAM_PIXEL_STD

__all__ = [
    "CLIP_FILES",
    "DINO_CHECKPOINTS",
    "RADIO_CHECKPOINTS",
    "SAM2_CHECKPOINTS",
    "SAM_CHECKPOINTS",
    "Checkpoint",
]

_HF = "https://huggingface.co"
NOT_FOUND = "not found: no public page giving this file's size and SHA-256 was found"


@dataclass(frozen=True)
class Checkpoint:
    """One downloadable checkpoint.

    Attributes:
        name: registry key, e.g. ``"vit_b"``.
        arch: the architecture: a ``segment_anything.sam_model_registry`` key
            (``vit_b``/``vit_l``/``vit_h``), a SAM 2 architecture (``sam2.1_hiera_tiny``...,
            see :mod:`ovseg.models.sam2_weights`), a DINO ViT (``dino_vitb8``...) or an
            open_clip architecture (CLIP files).
        url: official download URL.
        filename: file name in the weights folder.
        size: exact size in bytes, or ``None`` when unknown (size check skipped).
        sha256: lowercase hex SHA-256; a full 64-digit digest, or a published prefix (then only
            the prefix is compared), or ``None`` when unknown (hash check skipped).
        input_size: side of the square model input in pixels (longest side resized to this).
        pixel_mean, pixel_std: RGB normalisation on the 0-255 scale.
        source: where ``size`` and ``sha256`` were read (URLs), or why there are none.
    """

    name: str
    arch: str
    url: str
    filename: str
    size: int | None
    sha256: str | None
    input_size: int = 1024
    pixel_mean: tuple[float, float, float] = SAM_PIXEL_MEAN
    pixel_std: tuple[float, float, float] = SAM_PIXEL_STD
    source: str | None = None

    @property
    def pinned(self) -> bool:
        """Whether the file is checked by size or hash (else only when it is loaded)."""
        return self.size is not None or self.sha256 is not None


def _sam(arch: str, tag: str, size: int, sha256: str) -> Checkpoint:
    filename = f"sam_{arch}_{tag}.pth"
    url = f"https://dl.fbaipublicfiles.com/segment_anything/{filename}"
    source = (
        "https://github.com/computational-cell-analytics/micro-sam micro_sam/util.py "
        "(checksums); vit_b's size is the server's Content-Length"
    )
    return Checkpoint(arch, arch, url, filename, size, sha256, source=source)


# Note the hex tag in SAM's file names is NOT a prefix of the file's SHA-256.
SAM_CHECKPOINTS: dict[str, Checkpoint] = {
    c.name: c
    for c in (
        _sam("vit_b", "01ec64", 375_042_383,
             "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912"),
        _sam("vit_l", "0b3195", 1_249_524_607,
             "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622"),
        _sam("vit_h", "4b8939", 2_564_550_879,
             "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e"),
    )
}  # fmt: skip

# SAM 2.1 (September 2024): the four files as mirrored, byte for byte, by several Hugging Face
# repositories; sizes and digests from the Git LFS pointers of the first commit named.
_SAM21 = f"{_HF}/camenduru/sam2-1-hiera/commit/cdd35a45a78a3a93bc99988f4b56db40131a823a"
# SAM 2.0 (July 2024): Meta's own Hugging Face repositories (facebook/sam2-hiera-*) hold the
# same files; sizes and digests from the Git LFS pointers of the commit named.
_SAM20 = f"{_HF}/martintomov/comfy/commit/9a1fa804ed16fd78d848dedb2447b344910d0f4e"
_SAM2_PINS: dict[str, tuple[int, str, str]] = {
    "sam2.1_hiera_tiny": (
        156_008_466, "7402e0d864fa82708a20fbd15bc84245c2f26dff0eb43a4b5b93452deb34be69",
        f"{_SAM21}; also {_HF}/Promethe-us/sam2/commit/d105770bf428b28f3527a9b9d0c7ef2a26511b8a",
    ),
    "sam2.1_hiera_small": (
        184_416_285, "6d1aa6f30de5c92224f8172114de081d104bbd23dd9dc5c58996f0cad5dc4d38", _SAM21,
    ),
    "sam2.1_hiera_base_plus": (
        323_606_802, "a2345aede8715ab1d5d31b4a509fb160c5a4af1970f199d9054ccfb746c004c5",
        f"{_SAM21}; also {_HF}/Promethe-us/sam2/commit/d105770bf428b28f3527a9b9d0c7ef2a26511b8a",
    ),
    "sam2.1_hiera_large": (
        898_083_611, "2647878d5dfa5098f2f8649825738a9345572bae2d4350a2468587ece47dd318",
        f"{_SAM21}; also {_HF}/datasets/phenanthra/tmp/discussions/2/files and "
        f"{_HF}/tictag-io-demo/sam2.1-hiera-large/blob/main/sam2.1_hiera_large.pt",
    ),
    "sam2_hiera_tiny": (
        155_906_050, "65b50056e05bcb13694174f51bb6da89c894b57b75ccdf0ba6352c597c5d1125",
        f"{_HF}/facebook/sam2-hiera-tiny/commit/a8e4b467be69abf1c58fb327abc2935aaa890d1e; "
        f"also {_SAM20}",
    ),
    "sam2_hiera_small": (
        184_309_650, "95949964d4e548409021d47b22712d5f1abf2564cc0c3c765ba599a24ac7dce3",
        f"{_SAM20}; digest also {_HF}/facebook/sam2-hiera-small (sam2_hiera_small.pt page)",
    ),
    "sam2_hiera_base_plus": (
        323_493_298, "d0bb7f236400a49669ffdd1be617959a8b1d1065081789d7bbff88eded3a8071",
        f"{_SAM20}; digest also {_HF}/facebook/sam2-hiera-base-plus "
        "(sam2_hiera_base_plus.pt page)",
    ),
    "sam2_hiera_large": (
        897_952_466, "7442e4e9b732a508f80e141e7c2913437a3610ee0c77381a66658c3a445df87b",
        f"{_SAM20}; also {_HF}/spaces/sahirp/text_2_segment_any_vid/commit/"
        "cd3178c946590819a06432be5b2a4fa84c5ade41 and "
        f"{_HF}/merve/sam2-hiera-large/blob/main/sam2_hiera_large.pt",
    ),
}  # fmt: skip


def _sam2(name: str) -> Checkpoint:
    folder = "092824" if name.startswith("sam2.1") else "072824"
    url = f"https://dl.fbaipublicfiles.com/segment_anything_2/{folder}/{name}.pt"
    size, sha256, source = _SAM2_PINS[name]
    return Checkpoint(name, name, url, f"{name}.pt", size, sha256, source=source)


# The official SAM 2.1 and SAM 2.0 checkpoints, as listed by facebookresearch/sam2's
# checkpoints/download_ckpts.sh.
SAM2_CHECKPOINTS: dict[str, Checkpoint] = {
    c.name: c
    for c in (
        _sam2(f"{version}_hiera_{size}")
        for version in ("sam2.1", "sam2")
        for size in ("tiny", "small", "base_plus", "large")
    )
}

_DINO_PINS: dict[str, tuple[int | None, str | None, str]] = {
    "dino_vitb16": (
        343_242_485, "bf34ad0f424b9029b593e8dc3ed553bf26e88bcba0d32bf3e62a6209cb64c85e",
        f"{_HF}/HoraceYan/FlyGCL/commit/97f2dcdc56665e8096e4d7bb7feeac076fc20b68 "
        "(DINO/dino_vitbase16_pretrain.pth); digest also "
        f"{_HF}/Xiaomabufei/lumos/blob/main/dino_vitbase16_pretrain.pth",
    ),
    "dino_vitb8": (None, None, NOT_FOUND),
    "dino_vits8": (None, None, NOT_FOUND),
    "dino_vits16": (None, None, NOT_FOUND),
}  # fmt: skip


def _dino(name: str, stem: str) -> Checkpoint:
    url = f"https://dl.fbaipublicfiles.com/dino/{stem}/{stem}.pth"
    size, sha256, source = _DINO_PINS[name]
    # DINO normalises with ImageNet's mean and std, the same numbers as SAM's.
    return Checkpoint(name, name, url, f"{stem}.pth", size, sha256, 224, source=source)


# The official DINO backbones (facebookresearch/dino README, "backbone only"; ViT-S 21M and
# ViT-B 85M parameters, as the README gives them).
DINO_CHECKPOINTS: dict[str, Checkpoint] = {
    c.name: c
    for c in (
        _dino("dino_vitb8", "dino_vitbase8_pretrain"),
        _dino("dino_vitb16", "dino_vitbase16_pretrain"),
        _dino("dino_vits8", "dino_deitsmall8_pretrain"),
        _dino("dino_vits16", "dino_deitsmall16_pretrain"),
    )
}


def _clip(spec: str, repo: str, filename: str, size, sha256, source: str) -> Checkpoint:
    arch = spec.partition("/")[0]
    url = f"{_HF}/{repo}/resolve/main/{filename}"
    return Checkpoint(spec, arch, url, filename, size, sha256, 224, source=source)


# The files open_clip fetches for the presets' CLIP tags (its Hugging Face hub entries; the
# safetensors file first), keyed by (ARCH/TAG, file name). A file of the tag that has no entry
# here (the .bin twin, other tags) is checked by open_clip's loader only.
CLIP_FILES: dict[tuple[str, str], Checkpoint] = {
    (c.name, c.filename): c
    for c in (
        _clip(
            "ViT-B-16-quickgelu/metaclip_fullcc", "timm/vit_base_patch16_clip_224.metaclip_2pt5b",
            "open_clip_model.safetensors", None,  # the page gives "599 MB", not the bytes
            "e27e40b34d2ab0843674646075255648c3e64bc78b2c26b3220dffc9d69a1c03",
            f"{_HF}/timm/vit_base_patch16_clip_224.metaclip_2pt5b/blob/main/"
            "open_clip_model.safetensors (SHA-256 only)",
        ),
        _clip(
            "ViT-B-16/openai", "timm/vit_base_patch16_clip_224.openai",
            "open_clip_model.safetensors", None, None,
            f"{NOT_FOUND} (OpenAI's own ViT-B-16.pt, whose SHA-256 is in its URL, is another "
            "file: open_clip fetches timm's conversion)",
        ),
    )
}  # fmt: skip


def _radio(name: str, repo: str, filename: str, size: int | None, sha256: str | None, side: int):
    url = f"https://huggingface.co/nvidia/{repo}/resolve/main/{filename}"
    mean = tuple(round(255 * m, 6) for m in OPENAI_MEAN)  # the input conditioner's defaults
    std = tuple(round(255 * s, 6) for s in OPENAI_STD)
    source = (
        f"{_HF}/nvidia/RADIO/commit/5409f826 (Git LFS pointers)" if size is not None else NOT_FOUND
    )
    return Checkpoint(name, name, url, filename, size, sha256, side, mean, std, source)


# The torch.hub files of NVlabs/RADIO's radio/common.py (fp16 "_half" training checkpoints,
# read without pickled code by ovseg.models.radio_weights); input_size = RADIO's preferred
# resolution. RADIOv2.5 sizes and SHA-256: the Git LFS pointers of huggingface.co/nvidia/RADIO
# commit 5409f826 ("Release RADIOv2.5 ViT-B/L models (#9)"). No digest of the C-RADIOv3 files
# was found published, so those checks are skipped; the weights are checked key by key and
# shape by shape when they are loaded.
RADIO_CHECKPOINTS: dict[str, Checkpoint] = {
    c.name: c
    for c in (
        _radio(
            "radio_v2.5-b",
            "RADIO",
            "radio-v2.5-b_half.pth.tar",
            649_011_254,
            "6bff4bd732d815136652d454598e8fe6c6f4e658716d5e6a697f0e6b60bd8a98",
            768,
        ),
        _radio(
            "radio_v2.5-l",
            "RADIO",
            "radio-v2.5-l_half.pth.tar",
            1_104_806_006,
            "50324e8cb086885126a896ad9ecbac46355cf0e4c1d8363763b01693a4618ff1",
            768,
        ),
        _radio("c-radio_v3-b", "C-RADIOv3-B", "c-radio_v3-b_half.pth.tar", None, None, 512),
        _radio("c-radio_v3-l", "C-RADIOv3-L", "c-radio-v3_l_half.pth.tar", None, None, 512),
    )
}
