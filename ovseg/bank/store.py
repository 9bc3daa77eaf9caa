"""Bank files in the reference's formats: the region manifest, resumable ``.pt`` stores, the
FAISS index (``CorrCLIPv2/memory_bank_builder``: ``manifest.py``, ``pt_store.py``,
``generate_vfm_embeddings.update_faiss_cache``).

- Manifest (append-only): ``{bank}.manifest.txt`` line ``i`` = region id ``i`` = ``'{stem}#{idx}'``;
  ``{bank}.images.tsv`` = ``'{stem}\\t{start_id}\\t{num_regions}'`` per image in arrival order.
  A build appends the images not yet registered that have a mask, sorted by stem; an image
  without regions (mask all 0) is not registered. ``num_regions``: the nonzero ids of an int
  mask (``idx`` = rank among them), or the first dimension of a bool ``(N, H, W)`` mask.
- Store: ``{base}.f16.npy`` ``[N, D]`` float16 and ``{base}.done.npy`` ``[N]`` bool memmaps
  while building (a rerun resumes), then ``{base}.pt`` = ``torch.save`` of the ``[N, D]``
  float16 tensor; a finished ``.pt`` and a grown manifest import its rows as a prefix.
- Index: ``IndexIDMap2(IndexIVFPQ(IndexFlatIP(d), d, nlist, 32, 8))`` (metric L2, faiss's
  default) trained once on all keys, ``nlist = max(1, int(8 * sqrt(N)))``; keys L2-normalised
  (``v / (|v| + 1e-12)``); later builds ``add_with_ids`` the new ids only. Fewer keys than a
  product quantizer can train on (256) give ``IndexIDMap2(IndexFlatIP(d))`` instead (the
  reference's builder stops there; its segmentor reads both).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ovseg.methods.bank import FAISS_M, FAISS_NBITS, FAISS_NLIST_FACTOR, import_faiss

__all__ = [
    "SlotStore",
    "count_regions",
    "extend_manifest",
    "load_images",
    "manifest_paths",
    "update_index",
]

PQ_MIN_TRAIN = 2**FAISS_NBITS


def manifest_paths(root: Path, name: str) -> tuple[Path, Path]:
    base = root / "manifests" / name
    return Path(f"{base}.manifest.txt"), Path(f"{base}.images.tsv")


def load_images(images_tsv: Path) -> list[tuple[str, int, int]]:
    """``[(stem, start_id, num_regions), ...]`` in arrival order (empty if no file)."""
    out = []
    if images_tsv.is_file():
        for line in images_tsv.read_text().splitlines():
            if line:
                stem, start, n = line.split("\t")
                out.append((stem, int(start), int(n)))
    return out


def count_regions(mask: np.ndarray) -> int:
    """Regions of a mask as the manifest counts them."""
    if mask.ndim == 2:
        return int((np.unique(mask) != 0).sum())
    return int(mask.shape[0])


def extend_manifest(root: Path, name: str, stems: list[str], mask_dir: Path) -> list:
    """Register the images of ``stems`` that have a mask and are not registered yet (sorted
    by stem); returns the full image list."""
    manifest_txt, images_tsv = manifest_paths(root, name)
    manifest_txt.parent.mkdir(parents=True, exist_ok=True)
    images = load_images(images_tsv)
    known = {s for s, _, _ in images}
    next_id = sum(n for _, _, n in images)
    if manifest_txt.is_file():
        lines = manifest_txt.read_text().splitlines()
        if len(lines) != next_id:
            raise RuntimeError(f"{manifest_txt} has {len(lines)} ids, {images_tsv} {next_id}")
    new = sorted({s for s in stems if s not in known and (mask_dir / f"{s}.npz").is_file()})
    with open(manifest_txt, "a") as fm, open(images_tsv, "a") as fi:
        for stem in new:
            with np.load(mask_dir / f"{stem}.npz") as data:
                n = count_regions(data["instance_mask"])
            if n == 0:
                continue
            fi.write(f"{stem}\t{next_id}\t{n}\n")
            fm.writelines(f"{stem}#{i}\n" for i in range(n))
            images.append((stem, next_id, n))
            next_id += n
    return images


class SlotStore:
    """A ``[n, dim]`` float16 store filled row by row across runs, then finalised to
    ``{base}.pt`` (the reference's ``PtSlotWriter``, same intermediate files)."""

    def __init__(self, base: Path, n: int, dim: int):
        self.base = Path(base)
        self.data_path = Path(f"{base}.f16.npy")
        self.done_path = Path(f"{base}.done.npy")
        self.pt_path = Path(f"{base}.pt")
        self.n, self.dim = int(n), int(dim)
        self._data = self._done = None

    def create(self) -> None:
        seed = None
        if self.pt_path.exists() and not self.data_path.exists():
            seed = torch.load(self.pt_path, map_location="cpu", weights_only=True)
            if seed.ndim != 2 or seed.shape[0] > self.n or seed.shape[1] != self.dim:
                raise RuntimeError(
                    f"{self.pt_path} is {tuple(seed.shape)}, the manifest expects "
                    f"[{self.n}, {self.dim}] (the manifest only grows; delete it to rebuild)"
                )
            if seed.shape[0] == self.n:  # nothing new
                return
        self.base.parent.mkdir(parents=True, exist_ok=True)
        if not self.data_path.exists():
            np.lib.format.open_memmap(
                self.data_path, mode="w+", dtype=np.float16, shape=(self.n, self.dim)
            ).flush()
        if not self.done_path.exists():
            np.lib.format.open_memmap(
                self.done_path, mode="w+", dtype=bool, shape=(self.n,)
            ).flush()
        d = np.load(self.data_path, mmap_mode="r")
        if d.shape != (self.n, self.dim) or d.dtype != np.float16:
            raise RuntimeError(
                f"{self.data_path} is {d.shape} {d.dtype}, expected [{self.n}, {self.dim}] "
                "float16 (the manifest changed? delete the intermediate files)"
            )
        if seed is not None:
            k = seed.shape[0]
            data = np.load(self.data_path, mmap_mode="r+")
            data[:k] = seed.numpy()
            data.flush()
            done = np.load(self.done_path, mmap_mode="r+")
            done[:k] = True
            done.flush()

    def done_mask(self) -> np.ndarray:
        if not self.done_path.exists():  # finalised and complete
            return np.ones(self.n, bool)
        return np.array(np.load(self.done_path, mmap_mode="r"))

    def write(self, start: int, vecs: torch.Tensor) -> None:
        """Rows ``start .. start + len(vecs)`` (float16) and their done flags, flushed."""
        if self._data is None:
            self._data = np.load(self.data_path, mmap_mode="r+")
            self._done = np.load(self.done_path, mmap_mode="r+")
        arr = vecs.detach().cpu().to(torch.float16).numpy()
        self._data[start : start + len(arr)] = arr
        self._done[start : start + len(arr)] = True
        self._data.flush()
        self._done.flush()

    def finalize(self) -> bool:
        """Save ``{base}.pt`` (temp file, rename) once every row is written; True when done."""
        if not self.data_path.exists():
            return self.pt_path.exists()
        if not self.done_mask().all():
            return False
        data = torch.from_numpy(np.array(np.load(self.data_path, mmap_mode="r")))
        tmp = self.pt_path.with_name(self.pt_path.name + ".tmp")
        torch.save(data, tmp)
        os.replace(tmp, self.pt_path)
        self._data = self._done = None
        self.data_path.unlink()
        self.done_path.unlink()
        return True


def _normalized(vecs: np.ndarray) -> np.ndarray:
    vecs = vecs / (np.linalg.norm(vecs, axis=1, keepdims=True) + 1e-12)
    return np.ascontiguousarray(vecs, dtype="float32")


def update_index(pt_path: Path, faiss_path: Path, rebuild: bool = False) -> int:
    """Bring ``faiss_path`` up to date with the keys of ``pt_path`` (train on first build,
    then add the new ids); returns the number of keys added."""
    faiss = import_faiss()
    data = torch.load(pt_path, map_location="cpu", weights_only=True)
    n = int(data.shape[0])
    index, existing = None, set()
    if faiss_path.exists() and not rebuild:
        index = faiss.read_index(str(faiss_path))
        existing = set(faiss.vector_to_array(index.id_map).astype("int64").tolist())
    new_ids = [i for i in range(n) if i not in existing]
    if not new_ids:
        return 0
    vecs = _normalized(data[torch.as_tensor(new_ids, dtype=torch.long)].float().numpy())
    ids = np.asarray(new_ids, dtype="int64")
    dim = vecs.shape[1]
    if index is None:
        if n < PQ_MIN_TRAIN:
            index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        else:
            if dim % FAISS_M:
                raise ValueError(f"the VFM's dimension {dim} is not a multiple of m={FAISS_M}")
            nlist = max(1, int(FAISS_NLIST_FACTOR * np.sqrt(n)))
            ivf = faiss.IndexIVFPQ(faiss.IndexFlatIP(dim), dim, nlist, FAISS_M, FAISS_NBITS)
            ivf.train(vecs)
            index = faiss.IndexIDMap2(ivf)
    index.add_with_ids(vecs, ids)
    tmp = faiss_path.with_name(faiss_path.name + ".tmp")
    faiss.write_index(index, str(tmp))
    os.replace(tmp, faiss_path)
    return len(new_ids)
