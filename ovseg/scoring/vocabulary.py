"""The text side: class names, synonyms, prompt templates and cached text embeddings.

A class is written as one string; synonyms are separated by ``;`` (``"road; street"``) and the
class scores the maximum over its synonyms. Each name is embedded as the normalised mean of its
template embeddings (the CLIP prompt ensemble). Optional background names compete with the
classes: a region won by a background name is left unlabeled.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import torch

from ovseg.scoring.backends import ClipBackend


def _template_set(templates) -> tuple[str, ...]:
    return tuple(t("{}") for t in templates)


def template_sets() -> dict[str, tuple[str, ...]]:
    """Named template sets: ``imagenet`` (CLIP's 80 ImageNet templates), ``simple`` (its 7-template
    subset), ``photo`` (``"a photo of a {}."``) and ``none`` (the bare name)."""
    import open_clip

    return {
        "imagenet": _template_set(open_clip.OPENAI_IMAGENET_TEMPLATES),
        "simple": _template_set(open_clip.SIMPLE_IMAGENET_TEMPLATES),
        "photo": ("a photo of a {}.",),
        "none": ("{}",),
    }


def resolve_templates(templates: str | Sequence[str]) -> tuple[str, ...]:
    """A template-set name or a list of strings each holding one ``{}``."""
    if isinstance(templates, str):
        sets = template_sets()
        if templates not in sets:
            raise ValueError(
                f"unknown template set {templates!r}; known: {sorted(sets)}, "
                "or a list of strings with one '{}' each"
            )
        return sets[templates]
    out = tuple(templates)
    if not out or not all(isinstance(t, str) and t.count("{}") == 1 for t in out):
        raise ValueError(
            "templates must be a set name or a non-empty list of strings with "
            f"exactly one '{{}}' each, got {templates!r}"
        )
    return out


def parse_classes(text: str) -> list[str]:
    """Split a comma- or newline-separated class list (synonyms stay joined by ``;``)."""
    return [c.strip() for c in re.split(r"[,\n]", text) if c.strip()]


def validate_classes(classes, what: str = "classes", allow_empty: bool = False) -> list[str]:
    """Check a class list: a list of distinct, non-blank strings. Returns it stripped."""
    if isinstance(classes, str):
        raise TypeError(
            f"{what} must be a list of strings, not one string; e.g. {parse_classes(classes)!r}"
        )
    try:
        items = list(classes)
    except TypeError as e:
        raise TypeError(f"{what} must be a list of strings, got {type(classes).__name__}") from e
    if not items and not allow_empty:
        raise ValueError(f"{what} is empty: give at least one class name")
    for c in items:
        if not isinstance(c, str):
            raise TypeError(f"{what} must hold strings, got {c!r} ({type(c).__name__})")
        if not [s for s in c.split(";") if s.strip()]:
            raise ValueError(f"{what} holds a blank name: {c!r}")
    stripped = [c.strip() for c in items]
    seen = set()
    dupes = sorted({c for c in stripped if c.lower() in seen or seen.add(c.lower())})
    if dupes:
        raise ValueError(f"{what} has duplicate names: {dupes}")
    return stripped


def text_embeddings(
    names: Sequence[str], templates: Sequence[str], backend: ClipBackend
) -> torch.Tensor:
    """(M, D) float32 unit-norm embeddings of ``names``, on the backend's device: each name in
    every template (``{}`` replaced by the name), each embedding L2-normalised, the mean over
    templates L2-normalised again (the CLIP prompt ensemble).

    Names not yet known are embedded together in one batched, truncated run of the text tower
    (see :mod:`ovseg.scoring.text_tower`). Kept in memory on the backend per (name, templates)
    while its weights stay the same, and on disk between runs (see
    :mod:`ovseg.scoring.text_cache`; ``OVSEG_TEXT_CACHE=0`` turns that off).
    """
    from ovseg.scoring import text_cache

    templates = tuple(templates)
    token = text_cache.weights_token(backend.model)
    memory = backend.__dict__.get("_ovseg_text_cache")
    if memory is None or memory[0] != token:
        memory = backend.__dict__["_ovseg_text_cache"] = (token, {})
    known = memory[1]
    missing = [n for n in dict.fromkeys(names) if (n, templates) not in known]
    if missing:
        embedded = _embed_names(missing, templates, backend, text_cache)
        for n, e in zip(missing, embedded, strict=True):
            known[(n, templates)] = e
    return torch.stack([known[(n, templates)] for n in names])


def _ensemble(embeddings: torch.Tensor, n_names: int, n_templates: int) -> torch.Tensor:
    emb = embeddings.reshape(n_names, n_templates, -1)
    return torch.nn.functional.normalize(emb.mean(1), dim=-1)


def _embed_names(names: list[str], templates: tuple[str, ...], backend, text_cache) -> list:
    """Each name's ensemble embedding: from the disk cache where it has one, the others from
    one batched run of the text tower (then stored)."""

    def prompts(subset):
        return [t.replace("{}", n) for n in subset for t in templates]

    tokenizes = type(backend).tokenize is not ClipBackend.tokenize
    if not text_cache.enabled() or not tokenizes:  # in memory only
        return list(_ensemble(backend.encode_text(prompts(names)), len(names), len(templates)))
    tokens = {k: v.cpu() for k, v in backend.tokenize(prompts(names)).items()}
    identity = backend.text_identity()
    span = len(templates)
    keys = [
        text_cache.entry_key(
            identity, templates, n, {k: v[i * span : (i + 1) * span] for k, v in tokens.items()}
        )
        for i, n in enumerate(names)
    ]
    found = [text_cache.load(k) for k in keys]
    todo = [i for i, f in enumerate(found) if f is None]
    out = [None if f is None else torch.from_numpy(f).to(backend.device) for f in found]
    if todo:
        fresh = backend.encode_text(prompts([names[i] for i in todo]))
        for i, e in zip(todo, _ensemble(fresh, len(todo), span), strict=True):
            text_cache.store(keys[i], e)
            out[i] = e
    return out


class Vocabulary:
    """Classes (with ``;`` synonyms), templates and background names.

    Args:
        classes: K distinct non-blank strings, e.g. ``["road; street", "red truck"]``.
        templates: a template-set name (see :func:`template_sets`) or a list of strings.
        background: names that compete with the classes but label nothing.
    """

    def __init__(
        self,
        classes: Sequence[str],
        templates: str | Sequence[str] = "imagenet",
        background: Sequence[str] = (),
    ):
        self.classes = validate_classes(classes)
        self.background = validate_classes(background, "background", allow_empty=True)
        clash = {c.lower() for c in self.classes} & {b.lower() for b in self.background}
        if clash:
            raise ValueError(f"names are both classes and background: {sorted(clash)}")
        self.templates = resolve_templates(templates)
        self.names: list[str] = []
        owners: list[int] = []
        for i, entry in enumerate([*self.classes, *self.background]):
            for name in (s.strip() for s in entry.split(";")):
                if name:
                    self.names.append(name)
                    owners.append(i)
        self.owners = np.asarray(owners)

    @classmethod
    def from_entries(
        cls, entries: Sequence[Sequence[str]], templates: str | Sequence[str] = "imagenet"
    ) -> Vocabulary:
        """A vocabulary of classes given as lists of synonyms, each name used verbatim (not
        stripped or split): a method's class-name file, as its reference code reads it."""
        entries = [list(e) for e in entries]
        if not entries or not all(e and all(isinstance(n, str) and n for n in e) for e in entries):
            raise ValueError("entries must be a non-empty list of non-empty lists of names")
        vocab = cls.__new__(cls)
        vocab.classes = ["; ".join(e) for e in entries]
        vocab.background = []
        vocab.templates = resolve_templates(templates)
        vocab.names = [n for e in entries for n in e]
        vocab.owners = np.asarray([i for i, e in enumerate(entries) for _ in e])
        return vocab

    def __len__(self) -> int:
        return len(self.classes)

    def text_embeddings(self, backend: ClipBackend) -> torch.Tensor:
        """(M, D) unit-norm embeddings of every name (classes' synonyms, then background).

        Cached on the backend per (name, templates): a name is embedded once per model.
        """
        return text_embeddings(self.names, self.templates, backend)

    def probabilities(self, region_embeddings: torch.Tensor, backend: ClipBackend) -> np.ndarray:
        """Region embeddings (N, D) -> class probabilities float32 (N, K).

        Logits are ``logit_scale * cosine``, reduced by max over each class's synonyms, then a
        softmax over classes and background names. A region whose most probable entry is a
        background name gets all-zero class scores.
        """
        text = self.text_embeddings(backend).to(region_embeddings.device)
        # in float32 even under autocast (--half): the reduction below needs one dtype
        with torch.autocast(region_embeddings.device.type, enabled=False):
            logits = backend.logit_scale * region_embeddings.float() @ text.float().T
        n_entries = len(self.classes) + len(self.background)
        owners = torch.as_tensor(self.owners, device=logits.device)
        reduced = torch.full((logits.shape[0], n_entries), -torch.inf, device=logits.device)
        reduced = reduced.scatter_reduce(1, owners.expand_as(logits), logits, reduce="amax")
        probs = reduced.softmax(dim=1).cpu().numpy().astype(np.float32)
        k = len(self.classes)
        out = probs[:, :k].copy()
        if self.background:
            out[probs.argmax(1) >= k] = 0.0
        return out
