"""What a bank folder holds: banks, stores, index parameters, ovseg's record, hash checks."""

from __future__ import annotations

from pathlib import Path

from ovseg.bank.build import file_sha256
from ovseg.bank.store import load_images, manifest_paths
from ovseg.methods.bank import bank_names, bank_root, import_faiss, read_manifest

__all__ = ["bank_info", "format_info"]


def _index_info(path: Path) -> dict:
    faiss = import_faiss()
    index = faiss.read_index(str(path))
    inner = faiss.downcast_index(index.index) if hasattr(index, "id_map") else index
    out = {"type": type(inner).__name__, "keys": int(index.ntotal), "dim": int(index.d)}
    if hasattr(inner, "nlist"):
        out["nlist"] = int(inner.nlist)
    if hasattr(inner, "pq"):
        out["m"], out["nbits"] = int(inner.pq.M), int(inner.pq.nbits)
    out["metric"] = "inner product" if inner.metric_type == faiss.METRIC_INNER_PRODUCT else "L2"
    return out


def bank_info(path: str | Path, verify: bool = False) -> dict:
    """``{"root", "banks": {name: {...}}}`` for the bank folder ``path``.

    Each bank lists its images and regions (from the manifest), its CLIP stores (shape,
    bytes), its indexes (type, keys, ``nlist``, ``m``, ``nbits``) and ovseg's record. With
    ``verify``, every file named in the record is hashed again: ``"verified"`` is True, or a
    list of the files that changed.
    """
    import torch

    root = bank_root(path)
    record = read_manifest(root).get("banks", {})
    banks = {}
    for name in bank_names(root):
        images = load_images(manifest_paths(root, name)[1])
        stores = {}
        for p in sorted((root / "clip_embeddings").glob(f"{name}_*.pt")):
            t = torch.load(p, map_location="cpu", weights_only=True, mmap=True)
            stores[p.stem[len(name) + 1 :]] = {
                "shape": list(t.shape),
                "dtype": str(t.dtype).removeprefix("torch."),
                "bytes": p.stat().st_size,
            }
        indexes = {
            p.stem[len(name) + 1 :]: {**_index_info(p), "bytes": p.stat().st_size}
            for p in sorted((root / "vfm_embeddings").glob(f"{name}_*.faiss"))
        }
        info = {
            "images": len(images) if images else None,
            "regions": sum(n for _, _, n in images) if images else None,
            "stores": stores,
            "indexes": indexes,
            "record": record.get(name),
        }
        if verify and record.get(name):
            changed = [
                rel
                for rel, meta in record[name]["files"].items()
                if not (root / rel).is_file() or file_sha256(root / rel) != meta["sha256"]
            ]
            info["verified"] = True if not changed else changed
        banks[name] = info
    return {"root": str(root), "banks": banks}


def format_info(info: dict) -> str:
    """A readable summary of :func:`bank_info`."""
    lines = [f"bank folder {info['root']}"]
    if not info["banks"]:
        lines.append("  no bank (no {bank}_{vfm}.faiss with a {bank}_{clip}.pt store)")
    for name, b in info["banks"].items():
        size = sum(s["bytes"] for s in b["stores"].values()) + sum(
            i["bytes"] for i in b["indexes"].values()
        )
        counts = (
            f"{b['images']} images, {b['regions']} regions"
            if b["images"] is not None
            else "no manifest"
        )
        lines.append(f"{name}: {counts}, {size / 2**20:.1f} MiB of stores and index")
        for key, s in b["stores"].items():
            lines.append(f"  CLIP store {key}: {s['shape']} {s['dtype']}, {s['bytes']:,} bytes")
        for key, i in b["indexes"].items():
            params = ", ".join(f"{k} {i[k]}" for k in ("nlist", "m", "nbits") if k in i)
            lines.append(
                f"  index {key}: {i['type']} ({i['metric']}{', ' + params if params else ''}), "
                f"{i['keys']} keys of {i['dim']} dims, {i['bytes']:,} bytes"
            )
        rec = b["record"]
        if rec is None:
            lines.append("  no ovseg record (a published bank, or the reference builder's)")
        else:
            models = ", ".join(f"{k}={v}" for k, v in sorted(rec.get("models", {}).items()))
            lines.append(f"  built by ovseg {rec['ovseg_version']} on {rec['updated']}")
            lines.append(f"  main {rec['main']}, auxiliary {rec['aux']}; {models}")
        if "verified" in b:
            ok = b["verified"] is True
            lines.append("  files match their hashes" if ok else f"  CHANGED: {b['verified']}")
    return "\n".join(lines)
