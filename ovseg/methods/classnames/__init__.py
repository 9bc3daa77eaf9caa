"""Each dense method's own class-name files for the eight benchmarks.

``<method>/<dataset>.txt`` are the references' ``configs/cls_<dataset>.txt`` verbatim: one
line per class (class index = line number), synonyms on one line separated by the method's
separator (SCLIP and NACLIP ``", "``, ClearCLIP ``","``, ProxyCLIP and CorrCLIP ``"; "``).
Nothing is stripped except the line break, exactly as the references read them (so
Context60's last entry is ``"wood "``). CorrCLIP's files are ProxyCLIP's with ``"people"`` for
``"person"`` (and COCO-Object's background line without ``"bed"``).
"""

from __future__ import annotations

from importlib import resources

from ovseg.methods.config import DATASETS

__all__ = ["SEPARATORS", "class_names", "query_list"]

SEPARATORS = {"sclip": ", ", "clearclip": ",", "naclip": ", ", "proxyclip": "; ", "corrclip": "; ",
              "trident": "; "}  # fmt: skip
_SAME_FILES = {"trident": "proxyclip"}  # Trident's class files are ProxyCLIP's, byte for byte


def class_names(method: str, dataset: str) -> list[list[str]]:
    """Classes of ``dataset`` as ``method`` names them: a list (one entry per class, in
    label order) of lists of synonyms (each synonym is its own text query)."""
    if method not in SEPARATORS:
        raise ValueError(f"method must be one of {tuple(SEPARATORS)}, got {method!r}")
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")
    folder = _SAME_FILES.get(method, method)
    path = resources.files(__name__).joinpath(folder, f"{dataset}.txt")
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
