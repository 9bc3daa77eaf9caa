"""Fast-path properties: one dense CLIP pass per image, batched crops, and caches that
invalidate when the image or the vocabulary changes."""

from __future__ import annotations

import numpy as np
import pytest

from ovseg.models.build import build_clip
from ovseg.models.tiny import tiny_sam
from ovseg.proposals.sam import Proposer
from ovseg.scoring.regions import CropScorer, DenseScorer, EnsembleScorer
from ovseg.scoring.vocabulary import Vocabulary
from ovseg.structures import Masks


class Calls:
    """Counts calls of a backend method by wrapping it on the instance."""

    def __init__(self, obj, name):
        self.n, original = 0, getattr(obj, name)

        def counted(*args, **kwargs):
            self.n += 1
            return original(*args, **kwargs)

        setattr(obj, name, counted)


def _masks(image: np.ndarray, n: int, seed: int = 0) -> Masks:
    rng = np.random.default_rng(seed)
    h, w = image.shape[:2]
    out = np.zeros((n, h, w), bool)
    for i in range(n):
        y, x = rng.integers(0, h - 10), rng.integers(0, w - 10)
        out[i, y : y + rng.integers(2, 40), x : x + rng.integers(2, 40)] = True
    return Masks.from_masks(out)


@pytest.mark.parametrize("n", [1, 7, 40])
def test_dense_scorer_one_image_pass_for_any_n(synthetic_image, n):
    backend = build_clip("tiny-random", "cpu")
    dense, crops = Calls(backend, "dense_features"), Calls(backend, "encode_images")
    emb = DenseScorer(backend).embed(synthetic_image, _masks(synthetic_image, n))
    assert emb.shape[0] == n
    assert (dense.n, crops.n) == (1, 0)


def test_dense_cache_follows_the_image(synthetic_image):
    backend = build_clip("tiny-random", "cpu")
    dense = Calls(backend, "dense_features")
    scorer = DenseScorer(backend)
    masks = _masks(synthetic_image, 5)
    first = scorer.embed(synthetic_image, masks)
    again = scorer.embed(synthetic_image.copy(), masks)  # same content: cached
    assert dense.n == 1
    np.testing.assert_array_equal(first.numpy(), again.numpy())
    other = synthetic_image.copy()
    other[0, 0] = 255 - other[0, 0]
    scorer.embed(other, masks)
    assert dense.n == 2


@pytest.mark.parametrize("n,batch", [(1, 32), (32, 32), (33, 32), (10, 4)])
def test_crop_scorer_batches(synthetic_image, n, batch):
    backend = build_clip("tiny-random", "cpu")
    crops = Calls(backend, "encode_images")
    emb = CropScorer(backend, batch_size=batch).embed(synthetic_image, _masks(synthetic_image, n))
    assert emb.shape[0] == n
    assert crops.n == -(-n // batch)


def test_ensemble_is_one_dense_pass_plus_crop_batches(synthetic_image):
    backend = build_clip("tiny-random", "cpu")
    dense, crops = Calls(backend, "dense_features"), Calls(backend, "encode_images")
    EnsembleScorer(backend).embed(synthetic_image, _masks(synthetic_image, 40))
    assert (dense.n, crops.n) == (1, 2)


def test_image_embedding_cache_invalidates_on_new_image(synthetic_image):
    proposer = Proposer(tiny_sam(), cache_size=2)
    other = synthetic_image[::-1].copy()
    third = synthetic_image[:, ::-1].copy()
    assert proposer.set_image(synthetic_image) is True
    assert proposer.set_image(synthetic_image.copy()) is False
    assert proposer.encoder_calls == 1
    proposer.set_image(other)
    assert proposer.encoder_calls == 2
    proposer.set_image(synthetic_image)  # still in the LRU: no encoder call
    assert proposer.encoder_calls == 2
    proposer.set_image(third)  # evicts `other`, the least recently used
    proposer.set_image(other)
    assert proposer.encoder_calls == 4


def test_text_cache_invalidates_on_vocabulary_change():
    backend = build_clip("tiny-random", "cpu")
    seen: list[list[str]] = []
    original = backend.encode_text

    def recording(texts):
        seen.append(list(texts))
        return original(texts)

    backend.encode_text = recording
    Vocabulary(["road", "sky"], templates="simple").text_embeddings(backend)
    Vocabulary(["sky", "road"], templates="simple").text_embeddings(backend)
    assert len(seen) == 1
    Vocabulary(["road", "car"], templates="simple").text_embeddings(backend)
    assert len(seen) == 2 and all("car" in t and "road" not in t for t in seen[1])
    Vocabulary(["road"], templates=["a {} in a street"]).text_embeddings(backend)
    assert seen[-1] == ["a road in a street"]
