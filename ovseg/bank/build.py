"""Build (or extend) a CorrCLIPv2 memory bank from a folder of unlabeled images.

The reference's four steps (``CorrCLIPv2/memory_bank_builder/build.py``), each resumable:

1. masks: class-agnostic regions per image -> ``masks/{bank}/{mask_model}/{stem}.npz``
   (``instance_mask``: int ``(H, W)``, 0 = unsegmented); images that have one are skipped.
   ovseg's masks: SAM / SAM 2 automatic masks with the reference's build settings
   (``pred_iou_thresh`` 0.7, ``stability_score_thresh`` 0.7, SAM 2 three masks per point,
   32 x 32 points) painted by area ascending, or a folder of such ``.npz`` files.
2. manifest: new images appended (:func:`~ovseg.bank.store.extend_manifest`).
3. CLIP stores, one per CLIP (main first, auxiliary second):
   :func:`~ovseg.bank.features.clip_region_features` into ``clip_embeddings/{bank}_{key}.pt``.
4. VFM keys: :func:`~ovseg.bank.features.vfm_region_features` into
   ``vfm_embeddings/{bank}_{vfm}.pt``, then the index ``{bank}_{vfm}.faiss``.

Every step writes only what is missing, so rerunning after a stop resumes, and rerunning
after adding images extends the bank (existing ids never change). Last, ovseg's record
``ovseg-bank.json`` (models, settings, fingerprints, SHA-256 of every bank file) is rewritten.
A bank is only extended with the models it was built with.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ovseg.bank.features import (
    BANK_CLIP_SETTINGS,
    clip_region_features,
    read_bank_image,
    vfm_region_features,
)
from ovseg.bank.store import SlotStore, extend_manifest, update_index
from ovseg.constants import OPENAI_MEAN, OPENAI_STD
from ovseg.methods.bank import (
    MANIFEST_FILE,
    BankMismatchError,
    bank_names,
    clip_store_key,
    fingerprint,
    read_manifest,
)

__all__ = ["BANK_MASK_SETTINGS", "IMAGE_EXTS", "build_bank", "file_sha256", "list_images"]

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tiff")
BANK_MASK_SETTINGS = {"pred_iou_thresh": 0.7, "stability_score_thresh": 0.7}
"""The reference's build-time SAM / SAM 2 settings (``generate_mask.BUILD_KWARGS``)."""


def list_images(folder: str | Path) -> dict[str, Path]:
    """``{stem: path}`` of the images under ``folder`` (recursive, by extension).

    Raises:
        FileNotFoundError: no such folder, or no image in it.
        ValueError: two images share a stem (the bank keys regions by stem).
    """
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {root}")
    found: dict[str, Path] = {}
    clashes = []
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.name.lower().endswith(IMAGE_EXTS):
            if path.stem in found:
                clashes.append(f"{found[path.stem]} and {path}")
            found.setdefault(path.stem, path)
    if clashes:
        raise ValueError(f"images must have distinct file stems; clashes: {clashes[:3]}")
    if not found:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTS)}) under {root}")
    return found


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _save_mask(path: Path, ids: np.ndarray) -> None:
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez_compressed(tmp, instance_mask=ids)
    os.replace(tmp, path)


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _progress(iterable, desc: str, total: int, enabled: bool):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, unit="img")


def build_bank(
    images: str | Path,
    out: str | Path,
    *,
    clips: dict[str, object],
    vfm,
    dino,
    name: str = "bank",
    mask_fn: Callable[[np.ndarray], np.ndarray] | None = None,
    masks_dir: str | Path | None = None,
    mask_model: str = "sam2",
    specs: dict | None = None,
    progress: bool = True,
    rebuild_index: bool = False,
    short_side: int = BANK_CLIP_SETTINGS["short_side"],
    slide_crop: int = BANK_CLIP_SETTINGS["slide_crop"],
) -> dict:
    """Build or extend bank ``name`` in ``out`` from the images under ``images``.

    Args:
        clips: ``{spec: ClipBackend}``, main CLIP first (its store key is
            :func:`~ovseg.methods.bank.clip_store_key` of the backend's name).
        vfm: a VFM (:mod:`ovseg.methods.vfm`); its ``name`` keys the index.
        dino: the DINO ViT of the CLIP stores' correlations (the reference: ViT-B/8).
        mask_fn: RGB uint8 image -> int id map (0 = unsegmented); or ``masks_dir``: a folder
            of ``{stem}.npz`` masks used as they are.
        mask_model: the tag of the mask folder (``masks/{name}/{mask_model}``).
        specs: what to record about the models (``{"sam": ..., "dino": ..., ...}``).
        rebuild_index: retrain the index on all keys instead of adding the new ones.
        short_side, slide_crop: the CLIP stores' resize and window (the reference builder's
            ``--slide_short`` 448 and ``--slide_crop`` 336; stride 112, padding to 56).

    Returns:
        ovseg's record of the bank (as written to ``ovseg-bank.json``).

    Raises:
        FileNotFoundError: no images, or a ``masks_dir`` that does not exist.
        ValueError: a bad name, no masks source, or no CLIP.
        BankMismatchError: the bank exists with other models.
    """
    if not name or not all(c.isalnum() or c in "-." for c in name):
        raise ValueError(f"bank name must be letters, digits, '-' or '.', got {name!r}")
    if (mask_fn is None) == (masks_dir is None):
        raise ValueError("give exactly one of mask_fn (a SAM model) and masks_dir")
    if not clips:
        raise ValueError("a bank needs at least one CLIP")
    stems = list_images(images)
    settings = {**BANK_CLIP_SETTINGS, "short_side": short_side, "slide_crop": slide_crop}
    for k in ("short_side", "slide_crop"):
        if isinstance(settings[k], bool) or not isinstance(settings[k], int) or settings[k] < 1:
            raise ValueError(f"{k} must be an int >= 1, got {settings[k]!r}")
    if slide_crop < settings["slide_stride"]:
        raise ValueError(f"slide_crop must be >= the stride {settings['slide_stride']}")
    root = Path(out).expanduser()
    if masks_dir is not None:
        mask_dir = Path(masks_dir).expanduser()
        if not mask_dir.is_dir():
            raise FileNotFoundError(f"masks folder not found: {mask_dir}")
    else:
        mask_dir = root / "masks" / name / mask_model
    keys = {clip_store_key(getattr(b, "name", s)): b for s, b in clips.items()}
    if len(keys) != len(clips):
        raise ValueError(f"the CLIPs need distinct store keys, got {list(keys)} for {list(clips)}")
    if vfm.name in keys:
        raise ValueError(f"the VFM's key {vfm.name!r} is also a CLIP's")
    prints = {k: fingerprint(b.model) for k, b in keys.items()}
    if isinstance(vfm, torch.nn.Module):
        prints[vfm.name] = fingerprint(vfm)
    prints["dino"] = fingerprint(dino)
    manifest = read_manifest(root) if root.is_dir() else {}
    old = manifest.get("banks", {}).get(name)
    if old is not None:
        for k, fp in prints.items():
            if old.get("fingerprints", {}).get(k, fp) != fp:
                raise BankMismatchError(
                    f"bank {name!r} in {root} was built with another {k!r} model; "
                    "extend it with the same models, or build a new bank (-n NAME)"
                )
        if old.get("clip_settings", settings) != settings:
            raise BankMismatchError(
                f"bank {name!r} was built with CLIP settings {old['clip_settings']}, not {settings}"
            )
    elif root.is_dir() and name in bank_names(root):
        raise BankMismatchError(
            f"bank {name!r} in {root} has no ovseg record (the reference's builder made it); "
            "extend it with that builder, or build a new bank (-n NAME)"
        )

    # 1. masks
    mask_dir.mkdir(parents=True, exist_ok=True)
    todo = [s for s in sorted(stems) if not (mask_dir / f"{s}.npz").is_file()]
    if todo and mask_fn is None:
        raise FileNotFoundError(f"{len(todo)} images have no mask in {mask_dir}: {todo[:3]}")
    for stem in _progress(todo, "masks", len(todo), progress):
        _save_mask(mask_dir / f"{stem}.npz", np.asarray(mask_fn(read_bank_image(stems[stem]))))

    # 2. manifest
    listed = extend_manifest(root, name, list(stems), mask_dir)
    total = sum(n for _, _, n in listed)

    # 3-4. stores: one pass over the images that still miss a row in any store
    stores = {}
    for key, backend in keys.items():
        d = int(backend.model.visual.output_dim)
        stores[key] = SlotStore(root / "clip_embeddings" / f"{name}_{key}", total, d)
    stores[vfm.name] = SlotStore(root / "vfm_embeddings" / f"{name}_{vfm.name}", total, vfm.dim)
    done = {}
    for key, store in stores.items():
        store.create()
        done[key] = store.done_mask()
    work = [
        (stem, start, n)
        for stem, start, n in listed
        if any(not done[k][start : start + n].all() for k in stores)
    ]
    missing = [s for s, _, _ in work if s not in stems]
    if missing:
        raise FileNotFoundError(f"registered images missing from {images}: {missing[:3]}")
    for stem, start, n in _progress(work, "features", len(work), progress):
        image = read_bank_image(stems[stem])
        with np.load(mask_dir / f"{stem}.npz") as data:
            mask = data["instance_mask"]
        for key, store in stores.items():
            if done[key][start : start + n].all():
                continue
            if key == vfm.name:
                vecs = vfm_region_features(vfm, image, mask)
            else:
                vecs = _clip_features(keys[key], dino, image, mask, settings)
            if len(vecs) != n:
                raise RuntimeError(f"{stem}: {len(vecs)} regions, the manifest says {n}")
            store.write(start, vecs)
    for store in stores.values():
        if not store.finalize():
            raise RuntimeError(f"{store.data_path}: rows left unwritten")
    index_path = root / "vfm_embeddings" / f"{name}_{vfm.name}.faiss"
    update_index(stores[vfm.name].pt_path, index_path, rebuild=rebuild_index)
    return _record(
        root, name, manifest, keys, vfm, prints, specs, mask_dir, mask_model, listed, settings
    )


def _clip_features(backend, dino, image, mask, s) -> torch.Tensor:
    mean, std = tuple(backend.mean), tuple(backend.std)
    if np.allclose(mean, OPENAI_MEAN) and np.allclose(std, OPENAI_STD):
        mean, std = None, None
    return clip_region_features(
        backend.model.visual,
        dino,
        image,
        mask,
        short_side=s["short_side"],
        slide_crop=s["slide_crop"],
        slide_stride=s["slide_stride"],
        pad=s["pad"],
        mean=mean,
        std=std,
    )


def _record(root, name, manifest, keys, vfm, prints, specs, mask_dir, mask_model, listed, s):
    from ovseg import __version__

    files = {}
    rel = [
        *(f"clip_embeddings/{name}_{k}.pt" for k in keys),
        f"vfm_embeddings/{name}_{vfm.name}.pt",
        f"vfm_embeddings/{name}_{vfm.name}.faiss",
        f"manifests/{name}.manifest.txt",
        f"manifests/{name}.images.tsv",
    ]
    for r in rel:
        p = root / r
        files[r] = {"bytes": p.stat().st_size, "sha256": file_sha256(p)}
    record = {
        "vfm": vfm.name,
        "vfm_dim": vfm.dim,
        "clips": {k: getattr(b, "name", k) for k, b in keys.items()},
        "main": next(iter(keys)),
        "aux": list(keys)[1] if len(keys) > 1 else None,
        "fingerprints": prints,
        "mask_model": mask_model,
        "masks": str(mask_dir),
        "mask_settings": BANK_MASK_SETTINGS,
        "clip_settings": s,
        "models": dict(specs or {}),
        "images": len(listed),
        "regions": sum(n for _, _, n in listed),
        "files": files,
        "updated": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "ovseg_version": __version__,
    }
    manifest = {"format": 1, **manifest}
    manifest.setdefault("banks", {})[name] = record
    _write_json(root / MANIFEST_FILE, manifest)
    return record
