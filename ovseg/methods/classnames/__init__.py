"""Each dense method's own class-name files for the eight benchmarks (and, for CorrCLIPv2,
ADE20K-847 and PASCAL Context-459).

``<method>/<dataset>.txt`` are the references' ``configs/cls_<dataset>.txt`` verbatim: one
line per class (class index = line number), synonyms on one line separated by the method's
separator (SCLIP and NACLIP ``", "``, ClearCLIP ``","``, ProxyCLIP and CorrCLIP ``"; "``).
Nothing is stripped except the line break, exactly as the references read them (so
Context60's last entry is ``"wood "``). CorrCLIP's files are ProxyCLIP's with ``"people"`` for
``"person"`` (and COCO-Object's background line without ``"bed"``). CorrCLIPv2's
(``CorrCLIPv2/configs/``) are CorrCLIP's except Cityscapes (``"people, person"``, one query)
and its two extra files: ``ade847.txt`` (``cls_ade20k847.txt``, the 847 ADE20K-full names of
detectron2's ``prepare_ade20k_full_sem_seg.py``, each line one query such as
``"building, edifice"``) and ``context459.txt`` (``cls_context459.txt``).
"""

from __future__ import annotations

from importlib import resources

from ovseg.methods.config import ALL_DATASETS

__all__ = ["SEPARATORS", "class_names", "query_list"]

SEPARATORS = {"sclip": ", ", "clearclip": ",", "naclip": ", ", "proxyclip": "; ", "corrclip": "; ",
              "trident": "; ", "corrclipv2": "; "}  # fmt: skip
_SAME_FILES = {"trident": "proxyclip"}  # Trident's class files are ProxyCLIP's, byte for byte
_FALLBACK = {"corrclipv2": "corrclip"}  # CorrCLIPv2's files that equal CorrCLIP's are not copied


def class_names(method: str, dataset: str) -> list[list[str]]:
    """Classes of ``dataset`` as ``method`` names them: a list (one entry per class, in
    label order) of lists of synonyms (each synonym is its own text query)."""
    if method not in SEPARATORS:
        raise ValueError(f"method must be one of {tuple(SEPARATORS)}, got {method!r}")
    if dataset not in ALL_DATASETS:
        raise ValueError(f"dataset must be one of {ALL_DATASETS}, got {dataset!r}")
    root = resources.files(__name__)
    path = root.joinpath(_SAME_FILES.get(method, method), f"{dataset}.txt")
    if not path.is_file() and method in _FALLBACK:
        path = root.joinpath(_FALLBACK[method], f"{dataset}.txt")
    if not path.is_file():
        raise ValueError(f"method {method!r} has no class-name file for {dataset!r}")
    with path.open("r", encoding="utf-8") as f:
        lines = f.readlines()
    sep = SEPARATORS[method]
    return [[name.replace("\n", "") for name in line.split(sep)] for line in lines]


def query_list(classes: list[list[str]]) -> tuple[list[str], list[int]]:
    """Flatten ``classes`` into the query strings and the class index of each query."""
    queries: list[str] = []
    query_class: list[int] = []
    for idx, names in enumerate(classes):
        queries.extend(names)
        query_class.extend([idx] * len(names))
    return queries, query_class
