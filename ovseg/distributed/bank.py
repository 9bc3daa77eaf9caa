"""``ovseg bank build --ray`` and :func:`build_bank_ray`: a memory bank built by Ray workers.

The driver makes every check of a local build (:func:`ovseg.bank.build.plan_build`; it builds
the CLIPs, the VFM and DINO once on its CPU to fingerprint them, so a bank built with other
models is refused before any work) and lists the images that still need features. Ray Data
streams them to a pool of workers (Ray actors), each holding the models (SAM, CLIPs, VFM,
DINO), built once. Per image a worker writes what a local build computes for it: the mask
(``masks/{bank}/{mask_model}/{stem}.npz``, unless it is there) and a part file with the
image's rows of every store, float16, under ``BANK/ray_parts/{bank}-{digest}/{stem}.pt``
(temp name, then renamed; ``digest`` names the models and settings, so parts from other
models are never mixed in). The driver then does a local build's last steps with the parts
in place of the models: the manifest (new images sorted by stem), the stores, the FAISS
index and ovseg's record, and removes the parts. The bank equals a local build's: the same
files, the stores bit-identical for the same models, device and CPU threads (see
``threads_per_worker``).

Faults: an image that fails stops the run with its error (as a local build); the parts of
the images done are kept, so the same command again resumes with the others. A worker that
dies is replaced by Ray and its batch retried. The bank folder must be readable and writable
by every worker (a shared file system on a cluster of several machines).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

__all__ = ["PARTS", "BankWorker", "build_bank_ray"]

PARTS = "ray_parts"


class BankWorker:
    """The per-worker models of a distributed build, called on batches of ``{"stem",
    "path"}`` rows; returns ``{"stem", "regions", "prints"}`` per image (the weights
    fingerprints as JSON, which the driver compares with its own)."""

    def __init__(
        self, specs: dict, settings: dict, mask_dir: str, parts: str, device=None,
        threads: int = 1, fault_once: str | None = None,
    ):  # fmt: skip
        from ovseg.bank.build import model_prints, store_keys
        from ovseg.bank.models import bank_models
        from ovseg.distributed._ray import set_threads

        set_threads(threads)
        models = bank_models(device=device, **specs)
        self.keys, self.vfm, self.dino = store_keys(models.clips), models.vfm, models.dino
        self.mask_fn, self.settings = models.mask_fn, settings
        self.mask_dir, self.parts, self.fault_once = Path(mask_dir), Path(parts), fault_once
        self.prints = json.dumps(model_prints(self.keys, self.vfm, self.dino), sort_keys=True)

    def __call__(self, batch: dict) -> dict:
        from ovseg.distributed.segment import exit_once

        if self.fault_once:
            exit_once(self.fault_once)
        regions = [
            self.one(str(s), str(p)) for s, p in zip(batch["stem"], batch["path"], strict=True)
        ]
        stems = [str(s) for s in batch["stem"]]
        return {"stem": stems, "regions": regions, "prints": [self.prints] * len(stems)}

    def one(self, stem: str, path: str) -> int:
        """Mask (read, or made and written) and part file of one image; its region count."""
        import torch

        from ovseg.bank.build import region_features
        from ovseg.bank.features import read_bank_image
        from ovseg.bank.store import count_regions, save_mask

        image = read_bank_image(path)
        mask_path = self.mask_dir / f"{stem}.npz"
        if mask_path.is_file():
            with np.load(mask_path) as data:
                mask = data["instance_mask"]
        elif self.mask_fn is None:
            raise FileNotFoundError(f"{stem}: no mask in {self.mask_dir}")
        else:
            mask = np.asarray(self.mask_fn(image))
            save_mask(mask_path, mask)
        n = count_regions(mask)
        stores = {}
        if n:
            feats = region_features(self.keys, self.vfm, self.dino, image, mask, self.settings)
            stores = {k: v.detach().cpu().to(torch.float16) for k, v in feats.items()}
        part = self.parts / f"{stem}.pt"
        tmp = part.with_name(f".{part.name}.{os.getpid()}.tmp")
        torch.save({"regions": n, "stores": stores}, tmp)
        os.replace(tmp, part)
        return n


def _todo(plan, parts: Path) -> list[str]:
    """The stems of ``plan`` without a part file that are not registered, or registered with
    a row missing in a store."""
    from ovseg.bank.store import load_images, manifest_paths, rows_done

    listed = load_images(manifest_paths(plan.root, plan.name)[1])
    total = sum(n for _, _, n in listed)
    done = None
    for key in plan.store_dims():
        folder = "vfm_embeddings" if key == plan.vfm.name else "clip_embeddings"
        rows = rows_done(plan.root / folder / f"{plan.name}_{key}", total)
        done = rows if done is None else done & rows
    complete = {s for s, start, n in listed if done[start : start + n].all()}
    return [
        s for s in sorted(plan.stems) if s not in complete and not (parts / f"{s}.pt").is_file()
    ]


def build_bank_ray(
    images, out, *, clips, vfm, dino: str = "dino_vitb8", sam: str | None = None,
    masks_dir=None, name: str = "bank", mask_model: str | None = None, vfm_key=None,
    device=None, random_weights: bool = False, short_side: int = 448, slide_crop: int = 336,
    rebuild_index: bool = False, ray_options=None, progress: bool = False,
) -> dict:  # fmt: skip
    """Build or extend bank ``name`` in ``out`` from the images under ``images`` with Ray
    workers (see the module docstring); the same bank as :func:`ovseg.bank.build_bank`.

    Args:
        clips: CLIP specs, main first. vfm, dino, sam: the other models' specs (``sam``
            None: ``masks_dir`` holds every image's ``{stem}.npz``). vfm_key: the VFM's key
            in file names. device: the workers' (CUDA needs ``ray_options.gpus_per_worker``).
        ray_options: a :class:`~ovseg.distributed._ray.RayOptions` (None: a local Ray here,
            one worker per CPU, this process's torch threads in each).
        the rest: as :func:`ovseg.bank.build_bank`.

    Returns:
        ovseg's record of the bank.

    Raises:
        FileNotFoundError, ValueError, BankMismatchError: as a local build, before any work.
        RuntimeError: Ray failed (no cluster, an image's error, workers with other weights).
    """
    from tqdm import tqdm

    from ovseg.bank.build import plan_build
    from ovseg.bank.models import bank_models
    from ovseg.cli._ray_args import check_worker_device
    from ovseg.distributed._ray import RayOptions, connect, require_ray, worker_error
    from ovseg.distributed.segment import FAULT_ENV

    options = ray_options or RayOptions()
    if (sam is None) == (masks_dir is None):
        raise ValueError("give exactly one of sam (a SAM model) and masks_dir")
    check_worker_device(device, options.gpus_per_worker)
    require_ray()
    mask_model = mask_model or ("masks" if masks_dir else "sam2")
    specs = {"clips": list(clips), "vfm": vfm, "dino": dino, "random_weights": random_weights,
             "vfm_key": vfm_key}  # fmt: skip
    here = bank_models(device="cpu", sam=None, **specs)  # to fingerprint, on the driver
    plan = plan_build(
        images, out, clips=here.clips, vfm=here.vfm, dino=here.dino, name=name,
        masks_dir=masks_dir, mask_model=mask_model, short_side=short_side,
        slide_crop=slide_crop, specs={"sam": sam, "dino": dino, "vfm": vfm, "clips": list(clips)},
    )  # fmt: skip
    parts = plan.root / PARTS / f"{plan.name}-{plan.digest()}"
    todo = _todo(plan, parts)
    if todo and masks_dir is not None:
        absent = [s for s in todo if not (plan.mask_dir / f"{s}.npz").is_file()]
        if absent:
            raise FileNotFoundError(f"{len(absent)} images have no mask in {plan.mask_dir}: "
                                    f"{absent[:3]}")  # fmt: skip
    if todo:
        parts.mkdir(parents=True, exist_ok=True)
        plan.mask_dir.mkdir(parents=True, exist_ok=True)
        expected = json.dumps(plan.prints, sort_keys=True)
        items = [{"stem": s, "path": str(plan.stems[s].resolve())} for s in todo]
        kwargs = {
            "specs": specs | {"sam": sam}, "settings": plan.settings,
            "mask_dir": str(plan.mask_dir.resolve()), "parts": str(parts.resolve()),
            "device": device, "threads": options.threads(),
            "fault_once": os.environ.get(FAULT_ENV) or None,
        }  # fmt: skip
        try:
            with (
                connect(options.address) as ray,
                options.worker_pool(ray, len(items)) as pool,
            ):
                blocks = -(-len(items) // options.batch_size)
                rows = ray.data.from_items(items, override_num_blocks=blocks).map_batches(
                    BankWorker, fn_constructor_kwargs=kwargs, **pool
                )
                bar = tqdm(total=len(items), desc="bank", unit="img", disable=not progress)
                for row in rows.iter_rows():
                    if row["prints"] != expected:
                        raise RuntimeError(
                            f"a worker built other weights than the driver ({row['prints']}, "
                            f"here {expected}): give every machine the same weight files"
                        )
                    bar.update(1)
                bar.close()
        except Exception as e:
            if type(e).__module__.startswith("ray"):
                raise RuntimeError(f"the Ray run failed: {worker_error(e)}") from e
            raise
    return _assemble(plan, parts, rebuild_index)


def _assemble(plan, parts: Path, rebuild_index: bool) -> dict:
    """A local build's last steps, the rows read from the part files."""
    import torch

    from ovseg.bank.build import finish_build, open_stores, pending
    from ovseg.bank.store import extend_manifest

    listed = extend_manifest(plan.root, plan.name, list(plan.stems), plan.mask_dir)
    stores, done = open_stores(plan, listed)
    for stem, start, n in pending(listed, done):
        path = parts / f"{stem}.pt"
        if not path.is_file():
            raise RuntimeError(f"{stem}: registered in the manifest, but no worker wrote its rows")
        part = torch.load(path, map_location="cpu", weights_only=True)
        if part["regions"] != n:
            raise RuntimeError(f"{stem}: {part['regions']} regions, the manifest says {n}")
        for key, store in stores.items():
            if not done[key][start : start + n].all():
                store.write(start, part["stores"][key])
    record = finish_build(plan, listed, stores, rebuild_index)
    shutil.rmtree(parts, ignore_errors=True)
    if parts.parent.is_dir() and not any(parts.parent.iterdir()):
        parts.parent.rmdir()
    return record
