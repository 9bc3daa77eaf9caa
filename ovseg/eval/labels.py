"""Class-name files of the benchmarks and the tables that turn raw label values into classes.

A class-name file (``ovseg/eval/classnames/<kind>.txt``, or a dataset's ``classes.txt``) has one
class per line in label order: ``name`` or ``name: prompt; synonym; ...`` (``name`` is the report
name); blank lines and ``#`` comments are skipped. A lookup table maps every raw label value to a
class index, to the dataset's ignore index, or to an invalid marker (reading such a value fails).
"""

from __future__ import annotations

from importlib import resources

import numpy as np

IGNORE = 255  # the ignore index of benchmarks with at most 255 classes
IGNORE_WIDE = 65535  # ... and of those with more (16-bit labels: ADE20K-847, Context-459)
INVALID = -2  # a raw value that is neither a class nor ignored
# Cityscapes label id -> train id (the 19 evaluated classes); other ids are ignored.
_CITYSCAPES_EVALUATED = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)
CITYSCAPES_TRAIN_IDS = {label_id: i for i, label_id in enumerate(_CITYSCAPES_EVALUATED)}
# Raw COCO-Stuff maps store COCO category id - 1; these 11 ids are unused by COCO.
COCO_UNUSED_IDS = (11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90)


def parse_classnames(text: str) -> tuple[list[str], list[str]]:
    """Parse a class-name file: one class per line, ``name`` or ``name: prompt; synonym; ...``
    (a line without ``:`` but with ``;`` uses its first synonym as the name). Blank lines and
    ``#`` comments are skipped. Returns ``(names, prompts)``."""
    names, prompts = [], []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if ":" in line:
            name, prompt = (part.strip() for part in line.split(":", 1))
        else:
            name, prompt = line.split(";", 1)[0].strip(), line
        syns = [s.strip() for s in prompt.split(";") if s.strip()]
        if not name or not syns:
            raise ValueError(f"bad class-name line {raw!r}: expected 'name' or 'name: a; b'")
        names.append(name)
        prompts.append("; ".join(syns))
    if not names:
        raise ValueError("class-name file lists no classes")
    if len(set(names)) != len(names):
        raise ValueError("class names must be distinct")
    return names, prompts


def builtin_classnames(kind: str) -> tuple[list[str], list[str]]:
    """``(names, prompts)`` of a benchmark from ``ovseg/eval/classnames/<kind>.txt``."""
    folder = resources.files("ovseg.eval").joinpath("classnames")
    known = sorted(f.name[:-4] for f in folder.iterdir() if f.name.endswith(".txt"))
    if kind not in known:
        raise ValueError(f"no built-in class names for {kind!r}; known: {', '.join(known)}")
    return parse_classnames(folder.joinpath(f"{kind}.txt").read_text("utf-8"))


def lut_of(mapping: dict[int, int], size: int = 256) -> np.ndarray:
    """A table of ``size`` raw values: ``mapping``'s, every other value :data:`INVALID`."""
    lut = np.full(size, INVALID, np.int64)
    for raw, value in mapping.items():
        lut[raw] = value
    return lut


def identity_lut(k: int, ignore: int | None = IGNORE) -> np.ndarray:
    """Raw value v < k -> v; ``ignore`` -> IGNORE; anything else is invalid."""
    mapping = {v: v for v in range(k)}
    if ignore is not None:
        mapping[ignore] = IGNORE
    mapping.setdefault(IGNORE, INVALID)
    return lut_of(mapping)


def wide_lut(k: int) -> np.ndarray:
    """16-bit labels: raw value v < k -> v, 65535 -> :data:`IGNORE_WIDE`, else invalid."""
    lut = np.full(IGNORE_WIDE + 1, INVALID, np.int64)
    lut[:k] = np.arange(k)
    lut[IGNORE_WIDE] = IGNORE_WIDE
    return lut


def reduce_zero_lut(k: int) -> np.ndarray:
    """0 -> IGNORE, v in [1, k] -> v - 1, 255 -> IGNORE (ADE20K, VOC20, Context59)."""
    return lut_of({0: IGNORE, IGNORE: IGNORE, **{v: v - 1 for v in range(1, k + 1)}})
