"""Text query embeddings exactly as SCLIP, ClearCLIP and NACLIP build them.

For every query string: the 80 OpenAI ImageNet templates are filled in, tokenised, encoded
with ``model.encode_text``; each embedding is L2-normalised, the 80 are averaged and the mean
is L2-normalised again. Every synonym of a class is its own query. ovseg computes the same
numbers (up to float rounding) in one batched run of only the positions each prompt needs, and
keeps them (:func:`ovseg.scoring.vocabulary.text_embeddings`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

__all__ = ["OPENAI_IMAGENET_TEMPLATES", "query_embeddings"]

#: The 80 OpenAI ImageNet prompt templates in the references' order (``{}`` = the query).
OPENAI_IMAGENET_TEMPLATES: tuple[str, ...] = (
    "a bad photo of a {}.",
    "a photo of many {}.",
    "a sculpture of a {}.",
    "a photo of the hard to see {}.",
    "a low resolution photo of the {}.",
    "a rendering of a {}.",
    "graffiti of a {}.",
    "a bad photo of the {}.",
    "a cropped photo of the {}.",
    "a tattoo of a {}.",
    "the embroidered {}.",
    "a photo of a hard to see {}.",
    "a bright photo of a {}.",
    "a photo of a clean {}.",
    "a photo of a dirty {}.",
    "a dark photo of the {}.",
    "a drawing of a {}.",
    "a photo of my {}.",
    "the plastic {}.",
    "a photo of the cool {}.",
    "a close-up photo of a {}.",
    "a black and white photo of the {}.",
    "a painting of the {}.",
    "a painting of a {}.",
    "a pixelated photo of the {}.",
    "a sculpture of the {}.",
    "a bright photo of the {}.",
    "a cropped photo of a {}.",
    "a plastic {}.",
    "a photo of the dirty {}.",
    "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.",
    "a photo of the {}.",
    "a good photo of the {}.",
    "a rendering of the {}.",
    "a {} in a video game.",
    "a photo of one {}.",
    "a doodle of a {}.",
    "a close-up photo of the {}.",
    "a photo of a {}.",
    "the origami {}.",
    "the {} in a video game.",
    "a sketch of a {}.",
    "a doodle of the {}.",
    "a origami {}.",
    "a low resolution photo of a {}.",
    "the toy {}.",
    "a rendition of the {}.",
    "a photo of the clean {}.",
    "a photo of a large {}.",
    "a rendition of a {}.",
    "a photo of a nice {}.",
    "a photo of a weird {}.",
    "a blurry photo of a {}.",
    "a cartoon {}.",
    "art of a {}.",
    "a sketch of the {}.",
    "a embroidered {}.",
    "a pixelated photo of a {}.",
    "itap of the {}.",
    "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.",
    "a plushie {}.",
    "a photo of the nice {}.",
    "a photo of the small {}.",
    "a photo of the weird {}.",
    "the cartoon {}.",
    "art of the {}.",
    "a drawing of the {}.",
    "a photo of the large {}.",
    "a black and white photo of a {}.",
    "the plushie {}.",
    "a dark photo of a {}.",
    "itap of a {}.",
    "graffiti of the {}.",
    "a toy {}.",
    "itap of my {}.",
    "a photo of a cool {}.",
    "a photo of a small {}.",
    "a tattoo of the {}.",
)


def query_embeddings(
    model: torch.nn.Module,
    tokenizer: Callable[[list[str]], torch.Tensor],
    queries: Sequence[str],
    templates: Sequence[str] = OPENAI_IMAGENET_TEMPLATES,
) -> torch.Tensor:
    """Unit-norm query embeddings ``(Q, D)`` float32, as the references compute them (one
    query at a time, all 77 positions) up to float rounding, through ovseg's one text path:
    every query's templates in one batched run of only the positions needed, kept in memory
    and on disk (:func:`ovseg.scoring.vocabulary.text_embeddings`).

    Args:
        model: an open_clip CLIP model (``encode_text(tokens) -> (T, D)``, ``visual``).
        tokenizer: strings -> ``(T, context_length)`` token ids (e.g.
            ``open_clip.get_tokenizer(...)``; OpenAI's ``clip.tokenize`` gives the same ids).
        queries: query strings, used verbatim (no stripping).
        templates: format strings with one ``{}``.

    Returns:
        ``(len(queries), D)`` on the model's device: per query, mean over templates of the
        L2-normalised template embeddings, L2-normalised.
    """
    from ovseg.scoring.backends import OpenClipBackend
    from ovseg.scoring.vocabulary import text_embeddings

    if isinstance(queries, str) or not all(isinstance(q, str) for q in queries):
        raise TypeError("queries must be a sequence of strings")
    if not queries:
        raise ValueError("queries must not be empty")
    if not templates or not all(isinstance(t, str) and "{}" in t for t in templates):
        raise ValueError("templates must be a non-empty sequence of strings with one '{}'")
    backend = OpenClipBackend(model, tokenizer, name=type(model).__name__)
    return text_embeddings(list(queries), tuple(templates), backend)
