"""CorrCLIPv2's memory bank: region features of unlabeled images, read for retrieval.

A bank folder has the layout of the reference's ``memory_bank/`` (``zdk258/CorrCLIP``,
``CorrCLIPv2/memory_bank_builder``), so the published banks (Hugging Face dataset
``dk258/CorrCLIPv2``) and banks built by its builder load unchanged::

    BANK/clip_embeddings/{bank}_{clip}.pt      [N, D] float16 tensor (torch.save), row = region id
    BANK/vfm_embeddings/{bank}_{vfm}.faiss     IndexIDMap2(IndexIVFPQ) over the VFM region keys
    BANK/vfm_embeddings/{bank}_{vfm}.pt        [N, D_vfm] float16 keys (the index's source)
    BANK/manifests/{bank}.manifest.txt         line i (0-based) = region id i, '{stem}#{idx}'
    BANK/manifests/{bank}.images.tsv           '{stem}\\t{start_id}\\t{num_regions}' per image
    BANK/masks/{bank}/{mask_model}/{stem}.npz  'instance_mask': int (H, W), 0 = unsegmented
    BANK/ovseg-bank.json                       ovseg's record (models, settings, file hashes)

(``BANK`` may also be the folder holding ``memory_bank/``.) The ``.pt`` stores are float16
``[N, D]``, one row per region id of the manifest; the index's ids are those rows.
``{clip}`` keys: ``metaclip_b`` (MetaCLIP ViT-B/16 QuickGELU, ``metaclip_fullcc``),
``metaclip_l`` (ViT-L/14), ``dfnclip_b`` (``apple/DFN2B-CLIP-ViT-B-16``), ``dfnclip_l``; other
CLIPs get their ovseg name made file-safe (:func:`clip_store_key`).

Retrieval (the reference's ``_faiss_search``): the inner index searched with
``nprobe = min(256, nlist)`` (IVF indexes only), positions mapped through the IDMap2's
``id_map`` to store rows, ``-1`` for missing neighbours. The index: ``IndexIVFPQ`` over an
``IndexFlatIP`` quantizer with faiss's default metric (L2) on L2-normalised keys,
``nlist = max(1, int(8 * sqrt(N)))``, ``m = 32`` sub-quantizers of 8 bits. Support feature of
a query (:meth:`MemoryBank.support`): the mean of its neighbours' store rows, L2-normalised.

FAISS runs on the CPU (``faiss-cpu``); a GPU build of faiss is used when present
(``StandardGpuResources`` and a CUDA device), never required.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

__all__ = [
    "CLIP_STORE_KEYS",
    "FAISS_M",
    "FAISS_NBITS",
    "FAISS_NLIST_FACTOR",
    "MANIFEST_FILE",
    "NPROBE_MAX",
    "BankMismatchError",
    "MemoryBank",
    "bank_root",
    "clip_store_key",
    "fingerprint",
    "import_faiss",
    "open_for_run",
]

FAISS_M = 32
FAISS_NBITS = 8
FAISS_NLIST_FACTOR = 8
NPROBE_MAX = 256
MANIFEST_FILE = "ovseg-bank.json"

CLIP_STORE_KEYS = {
    "ViT-B-16-quickgelu/metaclip_fullcc": "metaclip_b",
    "ViT-L-14-quickgelu/metaclip_fullcc": "metaclip_l",
    "hf-hub:apple/DFN2B-CLIP-ViT-B-16": "dfnclip_b",
    "ViT-B-16/dfn2b": "dfnclip_b",
    "hf-hub:apple/DFN2B-CLIP-ViT-L-14": "dfnclip_l",
    "ViT-L-14-quickgelu/dfn2b": "dfnclip_l",
}
"""ovseg CLIP names -> the reference's store keys (``--clip meta_b`` etc. of its builder)."""


class BankMismatchError(ValueError):
    """The bank was built with other models than the run's (or its files disagree)."""


def import_faiss():
    try:
        import faiss
    except ImportError as e:  # pragma: no cover - faiss-cpu is a dependency
        raise ImportError("memory banks need FAISS: pip install faiss-cpu") from e
    return faiss


def clip_store_key(name: str) -> str:
    """The store key of a CLIP by its ovseg name: the reference's key for its four CLIPs,
    else the name with every character outside ``[A-Za-z0-9.-]`` replaced by ``-``."""
    if name in CLIP_STORE_KEYS:
        return CLIP_STORE_KEYS[name]
    return re.sub(r"[^A-Za-z0-9.-]+", "-", name).strip("-") or "clip"


def fingerprint(module: nn.Module) -> str:
    """A short SHA-256 of a model's parameter names, shapes and leading values (the first
    4,096 of each tensor): tells models with other weights apart without hashing them all."""
    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        flat = t.detach().reshape(-1)[:4096].float().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(flat.numpy().tobytes())
    return h.hexdigest()[:16]


def bank_root(path: str | Path) -> Path:
    """The folder with ``clip_embeddings/`` and ``vfm_embeddings/`` (``path`` or its
    ``memory_bank/``). Raises FileNotFoundError when there is none."""
    p = Path(path).expanduser()
    if not p.is_dir():
        raise FileNotFoundError(f"bank folder not found: {p}")
    for cand in (p, p / "memory_bank"):
        if (cand / "vfm_embeddings").is_dir() and (cand / "clip_embeddings").is_dir():
            return cand
    raise FileNotFoundError(
        f"{p} is not a memory bank: it has no clip_embeddings/ and vfm_embeddings/ folders "
        "(build one with `ovseg bank build IMAGES -o BANK`)"
    )


def bank_names(root: Path) -> list[str]:
    """Bank names with an index in ``root`` (``{bank}_{vfm}.faiss``, split at the last ``_``
    that leaves a store ``{bank}_*.pt``)."""
    stores = {p.stem for p in (root / "clip_embeddings").glob("*.pt")}
    names = set()
    for f in (root / "vfm_embeddings").glob("*.faiss"):
        parts = f.stem.split("_")
        for i in range(len(parts) - 1, 0, -1):
            prefix = "_".join(parts[:i])
            if any(s.startswith(prefix + "_") for s in stores):
                names.add(prefix)
                break
    return sorted(names)


def read_manifest(root: Path) -> dict:
    path = root / MANIFEST_FILE
    if not path.is_file():
        return {}
    return json.loads(path.read_text())


@dataclass
class MemoryBank:
    """An opened bank: its index and the stores a run reads.

    Attributes:
        root: the bank folder. name: the bank's name (``coco``, ``monet``, ...).
        vfm: the VFM key of the index. stores: store key -> ``[N, D]`` float16 tensor.
        index: the faiss ``IndexIDMap2``. record: ovseg's record of the bank (``{}`` for a
        published bank or one from the reference's builder).
        aux_clip: the auxiliary CLIP backend whose text scores the second store (DMCE), or
        None.
    """

    root: Path
    name: str
    vfm: str
    index: object
    stores: dict[str, Tensor]
    record: dict = field(default_factory=dict)
    aux_clip: object = None
    _search_index: object = None
    _id_map: np.ndarray | None = None

    def __post_init__(self):
        faiss = import_faiss()
        inner = faiss.downcast_index(self.index.index)
        self._id_map = faiss.vector_to_array(self.index.id_map).astype("int64")
        if hasattr(inner, "nlist"):
            inner.nprobe = min(NPROBE_MAX, inner.nlist)
        self._search_index = _maybe_gpu(faiss, inner)

    @property
    def dim(self) -> int:
        """Dimension of the index's keys (the VFM's ``D``)."""
        return int(self.index.d)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        vfm: str,
        clips: dict[str, str | None] | list[str],
        name: str | None = None,
        fingerprints: dict[str, str] | None = None,
    ) -> MemoryBank:
        """Open a bank for a run, refusing one built with other models.

        Args:
            path: the bank folder (see the module docstring).
            vfm: the run's VFM key (``vfm.name``): the index ``{bank}_{vfm}.faiss`` must exist.
            clips: the store keys the run reads (main CLIP first, then the auxiliary one),
                as a list or as ``{key: ovseg CLIP name}``.
            name: the bank's name; None: the only one in the folder.
            fingerprints: ``{key: fingerprint}`` of the run's models (``vfm`` and store keys),
                compared with ovseg's record when the bank has one.

        Raises:
            FileNotFoundError: no bank there, or no bank of that name.
            BankMismatchError: no index for this VFM, no store for a CLIP, dimensions that
                disagree, or models with other weights than the ones recorded.
        """
        faiss = import_faiss()
        root = bank_root(path)
        names = bank_names(root)
        if name is None:
            if len(names) != 1:
                raise FileNotFoundError(
                    f"{root} holds {'no bank' if not names else 'banks ' + ', '.join(names)}"
                    + ("; name the one to use" if names else "")
                )
            name = names[0]
        elif name not in names:
            raise FileNotFoundError(f"no bank named {name!r} in {root} (found: {names or None})")
        record = read_manifest(root).get("banks", {}).get(name, {})
        index_path = root / "vfm_embeddings" / f"{name}_{vfm}.faiss"
        if not index_path.is_file():
            built = sorted(
                p.stem[len(name) + 1 :] for p in (root / "vfm_embeddings").glob(f"{name}_*.faiss")
            )
            raise BankMismatchError(
                f"bank {name!r} in {root} was built with VFM {', '.join(built)}, this run's VFM "
                f"is {vfm!r}: run with that VFM, or build the bank with it "
                f"(`ovseg bank build IMAGES -o {root} --vfm ...`)"
            )
        keys = list(clips)
        stores = {}
        for key in keys:
            store_path = root / "clip_embeddings" / f"{name}_{key}.pt"
            if not store_path.is_file():
                built = sorted(
                    p.stem[len(name) + 1 :] for p in (root / "clip_embeddings").glob(f"{name}_*.pt")
                )
                raise BankMismatchError(
                    f"bank {name!r} in {root} has CLIP stores for {', '.join(built)}, not for "
                    f"this run's CLIP {key!r}: run with one of those CLIPs, or build the bank "
                    f"with this one (`ovseg bank build IMAGES -o {root} --clip ...`)"
                )
            data = torch.load(store_path, map_location="cpu", weights_only=True)
            if not isinstance(data, Tensor) or data.ndim != 2 or data.dtype != torch.float16:
                raise BankMismatchError(f"{store_path} is not an [N, D] float16 tensor")
            stores[key] = data
        index = faiss.read_index(str(index_path))
        rows = {k: v.shape[0] for k, v in stores.items()}
        id_max = int(faiss.vector_to_array(index.id_map).max()) if index.ntotal else -1
        for key, n in rows.items():
            if id_max >= n:
                raise BankMismatchError(
                    f"bank {name!r}: the index has region id {id_max} but store {key} has only "
                    f"{n} rows (files from different builds?)"
                )
        for key, fp in (fingerprints or {}).items():
            recorded = record.get("fingerprints", {}).get(key)
            if recorded is not None and recorded != fp:
                raise BankMismatchError(
                    f"bank {name!r} was built with another {key!r} model than this run's "
                    f"(weights fingerprint {recorded}, this run {fp}): rebuild the bank with "
                    "the run's models or run with the bank's"
                )
        return cls(root, name, vfm, index, stores, record)

    def check_dims(self, vfm_dim: int, clip_dims: dict[str, int]) -> None:
        """Raise BankMismatchError when the index or a store disagrees with a model's size."""
        if self.dim != vfm_dim:
            raise BankMismatchError(
                f"bank {self.name!r}: index keys are {self.dim}-d, the run's VFM gives {vfm_dim}"
            )
        for key, d in clip_dims.items():
            if self.stores[key].shape[1] != d:
                raise BankMismatchError(
                    f"bank {self.name!r}: store {key} is {self.stores[key].shape[1]}-d, the "
                    f"run's CLIP embeds in {d}"
                )

    def search(self, queries: np.ndarray | Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` neighbours of unit-norm queries ``(R, D)``: distances ``(R, k)`` float32
        and store rows ``(R, k)`` int64 (``-1`` where the index returns none)."""
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be an int >= 1, got {k!r}")
        if isinstance(queries, Tensor):
            queries = queries.detach().float().cpu().numpy()
        q = np.ascontiguousarray(queries, dtype=np.float32)
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ValueError(f"queries must be (R, {self.dim}), got {q.shape}")
        dist, pos = self._search_index.search(q, k)
        n = self._id_map.shape[0]
        rows = np.where(pos >= 0, self._id_map[np.clip(pos, 0, max(n - 1, 0))], -1)
        return dist, rows.astype(np.int64)

    def support(self, rows: np.ndarray, key: str) -> Tensor:
        """Support features ``(R, D)`` float32: per query, the mean of its neighbours' rows of
        store ``key`` (``-1`` skipped), L2-normalised."""
        store = self.stores[key]
        out = []
        for r in np.asarray(rows):
            valid = torch.as_tensor(r[r != -1], dtype=torch.long)
            out.append(store[valid].float().mean(0))
        return torch.nn.functional.normalize(torch.stack(out), dim=-1)


def open_for_run(path, clip, vfm, aux_clip=None, name: str | None = None) -> MemoryBank:
    """Open a bank for a run's models, refusing one built with others.

    Args:
        path: the bank folder. clip: the main CLIP backend (``.name``, ``.model``).
        vfm: the VFM (``.name``, ``.dim``). aux_clip: the auxiliary CLIP backend (DMCE) or
        None. name: the bank's name (None: the only one in the folder).

    Raises:
        FileNotFoundError, BankMismatchError: see :meth:`MemoryBank.open`.
    """
    backends = [clip] if aux_clip is None else [clip, aux_clip]
    keys = [clip_store_key(b.name) for b in backends]
    prints = {k: fingerprint(b.model) for k, b in zip(keys, backends, strict=True)}
    if isinstance(vfm, nn.Module):
        prints[vfm.name] = fingerprint(vfm)
    bank = MemoryBank.open(path, vfm=vfm.name, clips=keys, name=name, fingerprints=prints)
    dims = {k: int(b.model.visual.output_dim) for k, b in zip(keys, backends, strict=True)}
    bank.check_dims(int(vfm.dim), dims)
    bank.aux_clip = aux_clip
    return bank


def _maybe_gpu(faiss, index):
    """The index on the GPU when faiss has GPU support and torch sees a CUDA device."""
    if not (hasattr(faiss, "StandardGpuResources") and torch.cuda.is_available()):
        return index
    try:
        res = faiss.StandardGpuResources()
        gpu = faiss.index_cpu_to_gpu(res, int(torch.cuda.current_device()), index)
        if hasattr(index, "nprobe"):
            gpu.nprobe = index.nprobe
        gpu._ovseg_res = res  # keep the resources alive with the index
        return gpu
    except (RuntimeError, AttributeError):  # a faiss build without usable GPU support
        return index
