"""Language grounding: referring phrases -> the best region(s) of an image.

``ground(image, "the red truck")`` scores candidate regions (SAM proposals, your own masks, or
masks from prompts) against a phrase with the segmenter's CLIP region scorer and returns a
:class:`GroundingResult`: the best region's mask, box, score and grasp point, plus every
candidate ranked.

Scores (all computed with :class:`~ovseg.scoring.vocabulary.Vocabulary`, i.e. template-averaged text
embeddings, ``;`` synonyms reduced by max, CLIP's logit scale):

- ``similarity``: cosine between the region embedding and the phrase embedding, in [-1, 1];
- ``score``: the phrase's probability in a softmax over the entries
  ``[phrase, *negatives, *background]`` with logits ``logit_scale * cosine``, in [0, 1].
  Candidates are ranked by ``score`` (ties by ``similarity``, then candidate order). With no
  negatives and no background every score is 1 and the ranking is by cosine alone, so the
  default keeps one background name, ``"background"``, to make scores absolute.

Rules:

- **negatives** join the softmax, so a region that resembles a negative scores lower; with
  ``drop_negatives=True`` (default) a region for which some negative is more probable than the
  phrase (equivalently: more similar) is removed from the ranking and listed in ``rejected``;
- **category** mode keeps only regions whose most probable entry among
  ``[category, *distractors, *background]`` is the category, then ranks those by the phrase
  (e.g. ``category="cup"``, phrase ``"blue cup"`` or ``"blue"``);
- **threshold**: ``None`` answers the single best region; a number answers every ranked region
  with ``score >= threshold`` (possibly none);
- an explicitly empty candidate list raises ``ValueError``; when nothing is found (the automatic
  grid or the prompts kept no region, or every candidate is filtered out) the result is empty
  (``found`` is False, ``mask``/``box``/``score``/``point`` are None).

With a segmenter whose method finds instances itself (``method="sam3"``) and no
``candidates``, the regions are that method's instances of the phrase (SAM 3's detector: its
score with the presence term ranks them; negatives are its background names; ``background``,
``category`` and grid options do not apply).

``Segmenter.ground`` and ``Segmenter.heatmap`` are the same functions bound to a segmenter.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ovseg.constants import DEFAULT_CLIP, DEFAULT_SAM
from ovseg.grounding.grasp import grasp_point, phrase_from_instruction
from ovseg.grounding.result import GroundingResult, Region
from ovseg.scoring.vocabulary import Vocabulary, validate_classes
from ovseg.structures import Masks

__all__ = [
    "DEFAULT_BACKGROUND",
    "GroundingResult",
    "Region",
    "grasp_point",
    "ground",
    "heatmap",
    "phrase_from_instruction",
]

DEFAULT_BACKGROUND = ("background",)
HEATMAP_MODES = ("softmax", "minmax")


def _names(value, what: str) -> list[str]:
    """A name list (one string is one name), validated like class lists."""
    return validate_classes([value] if isinstance(value, str) else value, what, allow_empty=True)


def _phrases(phrase) -> tuple[list[str], bool]:
    if isinstance(phrase, str):
        items, single = [phrase], True
    elif isinstance(phrase, (list, tuple)):
        items, single = list(phrase), False
        if not items:
            raise ValueError("phrase list is empty: give at least one phrase")
    else:
        raise TypeError(
            f"phrase must be a string or a list of strings, got {type(phrase).__name__}"
        )
    for p in items:
        if not isinstance(p, str):
            raise TypeError(f"phrases must be strings, got {p!r} ({type(p).__name__})")
        if not p.replace(";", "").strip():
            raise ValueError(f"phrase is empty or blank: {p!r}")
    return [p.strip() for p in items], single


def _competitors(phrase: str, negatives: list[str], background: list[str]) -> None:
    low = phrase.lower()
    for what, names in (("negatives", negatives), ("background", background)):
        if low in (n.lower() for n in names):
            raise ValueError(f"{what} contain the phrase itself: {phrase!r}")
    both = {n.lower() for n in negatives} & {b.lower() for b in background}
    if both:
        raise ValueError(f"names are both negatives and background: {sorted(both)}")


def _segmenter(segmenter, sam, clip, device):
    from ovseg.api import default_segmenter
    from ovseg.pipeline import Segmenter

    if segmenter is None:
        return default_segmenter(sam, clip, device)
    if not isinstance(segmenter, Segmenter):
        raise TypeError(f"segmenter must be an ovseg.Segmenter, got {type(segmenter).__name__}")
    return segmenter


def _nonempty(masks: Masks) -> Masks:
    return masks[np.flatnonzero(masks.masks.any(axis=(1, 2)))]


def _candidates(seg, array: np.ndarray, candidates, grid_options: dict) -> Masks:
    """Candidate masks; empty SAM masks are dropped, empty hand-made masks are an error."""
    shape = array.shape[:2]
    if grid_options and candidates is not None:
        raise ValueError(f"grid options {sorted(grid_options)} apply only without candidates=")
    if candidates is None:
        return _nonempty(seg.propose(**grid_options))
    if isinstance(candidates, dict):
        masks = _nonempty(seg.propose(**candidates))
    elif (
        isinstance(candidates, (list, tuple))
        and candidates
        and all(isinstance(c, dict) for c in candidates)
    ):
        masks = _nonempty(Masks.cat([seg.propose(**c) for c in candidates], shape))
    elif isinstance(candidates, Masks):
        masks = candidates
    elif isinstance(candidates, (np.ndarray, list, tuple)):
        if len(candidates) == 0:
            raise ValueError(
                "candidates= is empty: give masks or prompts, or None for the automatic grid"
            )
        arr = np.asarray(candidates)
        if arr.dtype != np.bool_:
            raise TypeError(f"candidate masks must be bool arrays, got dtype {arr.dtype}")
        masks = Masks.from_masks(arr[None] if arr.ndim == 2 else arr)
    else:
        raise TypeError(
            "candidates must be None, Masks, bool masks (N, H, W), a prompt dict "
            f"or a list of prompt dicts, got {type(candidates).__name__}"
        )
    if masks.shape != shape:
        raise ValueError(f"candidate masks are {masks.shape}, the image is {shape}")
    if not masks.masks.any(axis=(1, 2)).all():
        raise ValueError("candidate masks must not be empty (every mask needs a pixel)")
    return masks


def _rank(
    phrase: str,
    masks: Masks,
    emb: torch.Tensor,
    backend,
    templates,
    negatives,
    background,
    eligible: np.ndarray,
    rejected: dict[int, str],
    drop_negatives: bool,
    threshold: float | None,
    image: np.ndarray,
) -> GroundingResult:
    _competitors(phrase, negatives, background)
    vocab = Vocabulary([phrase, *negatives, *background], templates)
    probs = vocab.probabilities(emb, backend)
    text = vocab.text_embeddings(backend)[torch.as_tensor(vocab.owners == 0)]
    sims = (emb.float() @ text.to(emb.device).T).max(1).values.cpu().numpy()
    score = probs[:, 0]
    keep, rejected = eligible.copy(), dict(rejected)
    if negatives and drop_negatives:
        neg = probs[:, 1 : 1 + len(negatives)]
        for i in np.flatnonzero(keep & (neg.max(1) > score)):
            keep[i] = False
            rejected[int(i)] = f"negative {negatives[int(neg[i].argmax())]!r}"
    idx = np.flatnonzero(keep)
    idx = idx[np.lexsort((idx, -sims[idx], -score[idx]))]
    ranked = [
        Region(
            int(i),
            masks.masks[i],
            tuple(int(v) for v in masks.boxes[i]),
            float(score[i]),
            float(sims[i]),
            float(masks.scores[i]),
        )
        for i in idx
    ]
    matches = ranked[:1] if threshold is None else [r for r in ranked if r.score >= threshold]
    return GroundingResult(phrase, ranked, matches, rejected, threshold, image)


def ground(
    image,
    phrase: str | Sequence[str],
    *,
    candidates=None,
    negatives: str | Sequence[str] = (),
    category: str | None = None,
    distractors: str | Sequence[str] = (),
    background: str | Sequence[str] = DEFAULT_BACKGROUND,
    threshold: float | None = None,
    drop_negatives: bool = True,
    templates: str | Sequence[str] | None = None,
    segmenter=None,
    sam=DEFAULT_SAM,
    clip=DEFAULT_CLIP,
    device=None,
    **grid_options,
) -> GroundingResult | list[GroundingResult]:
    """Find the region of ``image`` a referring phrase names (rules: see the module docstring).

    Args:
        image: a path, ``PIL.Image`` or uint8 array (H, W, 3) / (H, W).
        phrase: a phrase (``"the red truck"``; ``;`` separates synonyms), or a list of phrases:
            then a list of results, one per phrase, from one set of candidates and embeddings.
        candidates: None (the automatic grid; ``grid_options`` apply), a ``Masks``, bool masks
            (N, H, W) or (H, W) or a list of (H, W), a prompt dict (``points``,
            ``point_labels``, ``boxes``, ``mask_input``, ``scribble``, as for
            ``Segmenter.propose``), or a list of prompt dicts (one proposal set each).
        negatives: names a region must not be (``["person"]``).
        category: category mode: keep regions whose best entry among
            ``[category, *distractors, *background]`` is ``category``.
        distractors: the names ``category`` competes with in category mode.
        background: names that compete in every softmax (default ``("background",)``).
        threshold: None for the best region, or a score in [0, 1]: every region at or above it.
        drop_negatives: remove regions a negative beats (True) or only down-weight them.
        templates: prompt-template set or list; None uses the segmenter's.
        segmenter: an ``ovseg.Segmenter``; None uses the cached default for ``sam``, ``clip``,
            ``device`` (as :func:`ovseg.segment`).

    Returns:
        A :class:`GroundingResult`, or a list of them when ``phrase`` is a list.

    Raises:
        ValueError: blank phrase, empty phrase list, no candidate regions, candidate masks of
            the wrong size or empty, bad threshold, a phrase repeated among its competitors.
        TypeError: a phrase, name list, candidates or segmenter of the wrong type.
    """
    phrases, single = _phrases(phrase)
    negatives = _names(negatives, "negatives")
    background = _names(background, "background")
    distractors = _names(distractors, "distractors")
    if category is not None:
        if not isinstance(category, str):
            raise TypeError(f"category must be one string, got {type(category).__name__}")
        category = _phrases(category)[0][0]
        _competitors(category, distractors, background)
    if threshold is not None:
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.floating)):
            raise TypeError(f"threshold must be a number or None, got {type(threshold).__name__}")
        if not 0.0 <= float(threshold) <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        threshold = float(threshold)
    seg = _segmenter(segmenter, sam, clip, device)
    templates = seg.templates if templates is None else templates
    if candidates is None and seg.method.finds_instances:
        if category is not None or grid_options:
            raise ValueError(
                f"method {seg.method.name!r} grounds a phrase by its own instances: category= "
                "and grid options apply to SAM's candidate masks scored by CLIP"
            )
        results = _by_instances(seg, image, phrases, negatives, threshold, templates)
        return results[0] if single else results
    with seg.lock, torch.inference_mode():
        array = seg.set_image(image)
        masks = _candidates(seg, array, candidates, grid_options)
        emb = seg.region_scorer.embed(array, masks) if len(masks) else None
    eligible, rejected = np.ones(len(masks), bool), {}
    if emb is None:
        results = [GroundingResult(p, [], [], {}, threshold, array) for p in phrases]
        return results[0] if single else results
    if category is not None:
        vocab = Vocabulary([category, *distractors, *background], templates)
        winner = vocab.probabilities(emb, seg.clip).argmax(1)
        entries = [*vocab.classes]
        for i in np.flatnonzero(winner != 0):
            eligible[i] = False
            rejected[int(i)] = f"category: best entry {entries[int(winner[i])]!r}"
    results = [
        _rank(
            p,
            masks,
            emb,
            seg.clip,
            templates,
            negatives,
            background,
            eligible,
            rejected,
            drop_negatives,
            threshold,
            array,
        )
        for p in phrases
    ]
    return results[0] if single else results


def _by_instances(seg, image, phrases, negatives, threshold, templates) -> list[GroundingResult]:
    """Grounding by a method that finds instances itself (``method="sam3"``): every phrase's
    instances in one pass, the negatives as background names (an instance that a
    higher-scoring instance of a negative covers is dropped), ranked by the method's score;
    ``similarity`` is NaN (no embedding), ``proposal_score`` the instance score."""
    from ovseg.image import load_image

    for p in phrases:
        _competitors(p, negatives, [])
    array = load_image(image)
    found = seg.instances(array, phrases, background=negatives, templates=templates)
    boxes = Masks.from_masks(found.mask).boxes
    results = []
    for k, phrase in enumerate(phrases):
        idx = np.flatnonzero(found.class_index == k)
        idx = idx[np.argsort(-found.score[idx], kind="stable")]
        ranked = [
            Region(int(i), found.mask[i], tuple(int(v) for v in boxes[i]), float(found.score[i]),
                   float("nan"), float(found.score[i]))
            for i in idx
        ]  # fmt: skip
        matches = ranked[:1] if threshold is None else [r for r in ranked if r.score >= threshold]
        results.append(GroundingResult(phrase, ranked, matches, {}, threshold, array))
    return results


def heatmap(
    image,
    phrase: str | Sequence[str],
    *,
    negatives: str | Sequence[str] = (),
    background: str | Sequence[str] = DEFAULT_BACKGROUND,
    mode: str = "softmax",
    templates: str | Sequence[str] | None = None,
    segmenter=None,
    sam=DEFAULT_SAM,
    clip=DEFAULT_CLIP,
    device=None,
) -> np.ndarray | list[np.ndarray]:
    """Similarity of a phrase over the image: float32 (H, W) in [0, 1] (a list for a list).

    The patch features of one dense CLIP pass (``DenseScorer.feature_map``) are scored per patch
    and upsampled bilinearly to the image size. ``mode="softmax"``: the phrase's probability
    against ``negatives`` and ``background`` per patch, as region scores are (needs at least one
    competitor); ``mode="minmax"``: the upsampled cosine rescaled to span exactly [0, 1] over
    this image (a relative map; all zeros when the cosine is constant).
    """
    if mode not in HEATMAP_MODES:
        raise ValueError(f"mode must be one of {HEATMAP_MODES}, got {mode!r}")
    phrases, single = _phrases(phrase)
    negatives, background = _names(negatives, "negatives"), _names(background, "background")
    if mode == "softmax" and not negatives and not background:
        raise ValueError("mode='softmax' needs at least one negative or background name")
    seg = _segmenter(segmenter, sam, clip, device)
    templates = seg.templates if templates is None else templates
    with seg.lock, torch.inference_mode():
        array = seg.set_image(image)
        feats = seg.dense_scorer.feature_map(array)
    fh, fw, d = feats.shape
    flat = feats.reshape(fh * fw, d)
    out = []
    for p in phrases:
        _competitors(p, negatives, background)
        vocab = Vocabulary([p, *negatives, *background], templates)
        if mode == "softmax":
            values = torch.from_numpy(vocab.probabilities(flat, seg.clip)[:, 0])
        else:
            text = vocab.text_embeddings(seg.clip)[torch.as_tensor(vocab.owners == 0)]
            values = (flat.float() @ text.to(flat.device).T).max(1).values.cpu()
        up = F.interpolate(
            values.reshape(1, 1, fh, fw).float(),
            size=array.shape[:2],
            mode="bilinear",
            align_corners=False,
        )[0, 0]
        if mode == "minmax":
            span = up.max() - up.min()
            up = (up - up.min()) / span if span > 0 else torch.zeros_like(up)
        out.append(up.clamp(0, 1).numpy().astype(np.float32))
    return out[0] if single else out
