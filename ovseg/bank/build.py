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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ovseg.bank.features import (
    BANK_CLIP_SETTINGS,
    clip_region_features,
    read_bank_image,
    vfm_region_features,
)
from ovseg.bank.store import (
    IMAGE_EXTS,
    SlotStore,
    extend_manifest,
    file_sha256,
    list_images,
    save_mask,
    update_index,
    write_json,
)
from ovseg.constants import OPENAI_MEAN, OPENAI_STD
from ovseg.methods.bank import (
    MANIFEST_FILE,
    BankMismatchError,
    bank_names,
    clip_store_key,
    fingerprint,
    read_manifest,
)

__all__ = [
    "BANK_MASK_SETTINGS",
    "IMAGE_EXTS",
    "BuildPlan",
    "build_bank",
    "file_sha256",
    "finish_build",
    "list_images",
    "model_prints",
    "open_stores",
    "pending",
    "plan_build",
    "region_features",
    "save_mask",
    "store_keys",
]

BANK_MASK_SETTINGS = {"pred_iou_thresh": 0.7, "stability_score_thresh": 0.7}
"""The reference's build-time SAM / SAM 2 settings (``generate_mask.BUILD_KWARGS``)."""


def _progress(iterable, desc: str, total: int, enabled: bool):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, unit="img")


@dataclass
class BuildPlan:
    """A checked build before any image is read: the bank, its images and models, what the
    models' weights hash to, the ovseg record before this build, and the CLIP settings."""

    root: Path
    name: str
    stems: dict[str, Path]
    mask_dir: Path
    mask_model: str
    keys: dict[str, object]
    vfm: object
    dino: object
    prints: dict[str, str]
    manifest: dict
    settings: dict
    specs: dict | None

    def digest(self) -> str:
        """12 hex digits naming what a build computes per image (models, settings, masks)."""
        text = json.dumps(
            [self.prints, self.settings, self.mask_model, str(self.mask_dir)], sort_keys=True
        )
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def store_dims(self) -> dict[str, int]:
        """``{store key: row dimension}``: the CLIP stores, then the VFM keys."""
        dims = {k: int(b.model.visual.output_dim) for k, b in self.keys.items()}
        return dims | {self.vfm.name: int(self.vfm.dim)}


def model_prints(keys: dict, vfm, dino) -> dict[str, str]:
    """Weights fingerprints (:func:`~ovseg.methods.bank.fingerprint`) of a build's models."""
    prints = {k: fingerprint(b.model) for k, b in keys.items()}
    if isinstance(vfm, torch.nn.Module):
        prints[vfm.name] = fingerprint(vfm)
    prints["dino"] = fingerprint(dino)
    return prints


def store_keys(clips: dict[str, object]) -> dict[str, object]:
    """``{store key: backend}`` of ``{spec: backend}`` (main CLIP first)."""
    keys = {clip_store_key(getattr(b, "name", s)): b for s, b in clips.items()}
    if len(keys) != len(clips):
        raise ValueError(f"the CLIPs need distinct store keys, got {list(keys)} for {list(clips)}")
    return keys


def plan_build(
    images: str | Path,
    out: str | Path,
    *,
    clips: dict[str, object],
    vfm,
    dino,
    name: str = "bank",
    masks_dir: str | Path | None = None,
    mask_model: str = "sam2",
    specs: dict | None = None,
    short_side: int = BANK_CLIP_SETTINGS["short_side"],
    slide_crop: int = BANK_CLIP_SETTINGS["slide_crop"],
) -> BuildPlan:
    """Every check of :func:`build_bank` (same arguments) before any image is read; the
    models are only fingerprinted. Raises as :func:`build_bank`."""
    if not name or not all(c.isalnum() or c in "-." for c in name):
        raise ValueError(f"bank name must be letters, digits, '-' or '.', got {name!r}")
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
    keys = store_keys(clips)
    if vfm.name in keys:
        raise ValueError(f"the VFM's key {vfm.name!r} is also a CLIP's")
    prints = model_prints(keys, vfm, dino)
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
    return BuildPlan(
        root, name, stems, mask_dir, mask_model, keys, vfm, dino, prints, manifest, settings,
        specs,
    )  # fmt: skip


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
    if (mask_fn is None) == (masks_dir is None):
        raise ValueError("give exactly one of mask_fn (a SAM model) and masks_dir")
    plan = plan_build(
        images, out, clips=clips, vfm=vfm, dino=dino, name=name, masks_dir=masks_dir,
        mask_model=mask_model, specs=specs, short_side=short_side, slide_crop=slide_crop,
    )  # fmt: skip
    stems, mask_dir = plan.stems, plan.mask_dir

    # 1. masks
    mask_dir.mkdir(parents=True, exist_ok=True)
    todo = [s for s in sorted(stems) if not (mask_dir / f"{s}.npz").is_file()]
    if todo and mask_fn is None:
        raise FileNotFoundError(f"{len(todo)} images have no mask in {mask_dir}: {todo[:3]}")
    for stem in _progress(todo, "masks", len(todo), progress):
        save_mask(mask_dir / f"{stem}.npz", np.asarray(mask_fn(read_bank_image(stems[stem]))))

    # 2. manifest
    listed = extend_manifest(plan.root, plan.name, list(stems), mask_dir)

    # 3-4. stores: one pass over the images that still miss a row in any store
    stores, done = open_stores(plan, listed)
    work = pending(listed, done)
    missing = [s for s, _, _ in work if s not in stems]
    if missing:
        raise FileNotFoundError(f"registered images missing from {images}: {missing[:3]}")
    for stem, start, n in _progress(work, "features", len(work), progress):
        image = read_bank_image(stems[stem])
        with np.load(mask_dir / f"{stem}.npz") as data:
            mask = data["instance_mask"]
        only = [k for k in stores if not done[k][start : start + n].all()]
        feats = region_features(plan.keys, plan.vfm, plan.dino, image, mask, plan.settings, only)
        for key, vecs in feats.items():
            if len(vecs) != n:
                raise RuntimeError(f"{stem}: {len(vecs)} regions, the manifest says {n}")
            stores[key].write(start, vecs)
    return finish_build(plan, listed, stores, rebuild_index)


def open_stores(plan: BuildPlan, listed: list) -> tuple[dict, dict]:
    """The stores of ``plan`` sized for the manifest ``listed`` (created or resumed), and
    which of their rows are written: ``({key: SlotStore}, {key: bool [N]})``."""
    total = sum(n for _, _, n in listed)
    stores, done = {}, {}
    for key, dim in plan.store_dims().items():
        folder = "vfm_embeddings" if key == plan.vfm.name else "clip_embeddings"
        store = SlotStore(plan.root / folder / f"{plan.name}_{key}", total, dim)
        store.create()
        stores[key], done[key] = store, store.done_mask()
    return stores, done


def pending(listed: list, done: dict) -> list:
    """The ``(stem, start, n)`` of ``listed`` with a row missing in any store."""
    return [
        (stem, start, n)
        for stem, start, n in listed
        if any(not d[start : start + n].all() for d in done.values())
    ]


def region_features(keys, vfm, dino, image, mask, settings, only=None) -> dict:
    """``{store key: (N, D) float32}`` of one image's regions: every CLIP store of ``keys``
    (:func:`~ovseg.bank.features.clip_region_features`) and the VFM keys
    (:func:`~ovseg.bank.features.vfm_region_features`); ``only``: those store keys."""
    out = {}
    for key in [*keys, vfm.name]:
        if only is not None and key not in only:
            continue
        if key == vfm.name:
            out[key] = vfm_region_features(vfm, image, mask)
        else:
            out[key] = _clip_features(keys[key], dino, image, mask, settings)
    return out


def finish_build(plan: BuildPlan, listed: list, stores: dict, rebuild_index: bool) -> dict:
    """Finalise the stores, bring the index up to date, write and return ovseg's record."""
    for store in stores.values():
        if not store.finalize():
            raise RuntimeError(f"{store.data_path}: rows left unwritten")
    index_path = plan.root / "vfm_embeddings" / f"{plan.name}_{plan.vfm.name}.faiss"
    update_index(stores[plan.vfm.name].pt_path, index_path, rebuild=rebuild_index)
    return _record(plan, listed)


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


def _record(plan: BuildPlan, listed: list) -> dict:
    from ovseg import __version__

    root, name, keys, vfm, s = plan.root, plan.name, plan.keys, plan.vfm, plan.settings
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
        "fingerprints": plan.prints,
        "mask_model": plan.mask_model,
        "masks": str(plan.mask_dir),
        "mask_settings": BANK_MASK_SETTINGS,
        "clip_settings": s,
        "models": dict(plan.specs or {}),
        "images": len(listed),
        "regions": sum(n for _, _, n in listed),
        "files": files,
        "updated": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "ovseg_version": __version__,
    }
    manifest = {"format": 1, **plan.manifest}
    manifest.setdefault("banks", {})[name] = record
    write_json(root / MANIFEST_FILE, manifest)
    return record
