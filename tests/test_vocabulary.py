import numpy as np
import pytest
import torch

from ovseg.models.build import build_clip
from ovseg.scoring.vocabulary import Vocabulary, parse_classes, resolve_templates, template_sets


@pytest.fixture(scope="module")
def clip():
    return build_clip("tiny-random", "cpu")


def test_parse_classes_splits_commas_and_newlines_keeps_synonyms():
    assert parse_classes("road; street, red truck\nsky,, ") == ["road; street", "red truck", "sky"]


def test_template_sets():
    sets = template_sets()
    assert len(sets["imagenet"]) == 80 and all(t.count("{}") == 1 for t in sets["imagenet"])
    assert resolve_templates(["{} here"]) == ("{} here",)
    with pytest.raises(ValueError, match="known"):
        resolve_templates("fancy")
    with pytest.raises(ValueError, match="exactly one"):
        resolve_templates(["no placeholder"])


@pytest.mark.parametrize(
    "classes, error, match",
    [
        ([], ValueError, "empty"),
        (["road", " "], ValueError, "blank"),
        (["road", ";"], ValueError, "blank"),
        (["road", "Road"], ValueError, "duplicate"),
        (["road", " road "], ValueError, "duplicate"),
        ("road, sky", TypeError, "not one string"),
        (["road", 3], TypeError, "strings"),
        (None, TypeError, "list of strings"),
    ],
)
def test_bad_class_lists(classes, error, match):
    with pytest.raises(error, match=match):
        Vocabulary(classes)


def test_background_may_not_repeat_a_class():
    with pytest.raises(ValueError, match="both classes and background"):
        Vocabulary(["road", "sky"], background=["Sky"])


def test_text_embedding_is_normalised_template_mean_and_cached(clip):
    vocab = Vocabulary(["road; street", "sky"], templates=["a {}.", "the {} here."])
    assert vocab.names == ["road", "street", "sky"]
    emb = vocab.text_embeddings(clip)
    assert emb.shape == (3, 32)
    ref = clip.encode_text(["a street.", "the street here."]).mean(0)
    torch.testing.assert_close(emb[1], ref / ref.norm(), atol=1e-6, rtol=0)

    calls = []
    original = clip.encode_text
    clip.encode_text = lambda texts: calls.append(list(texts)) or original(texts)
    try:
        vocab.text_embeddings(clip)
        assert calls == []  # cached per (name, templates)
        Vocabulary(["sky", "car"], templates=["a {}.", "the {} here."]).text_embeddings(clip)
        assert calls == [["a car.", "the car here."]]  # only the new name
        Vocabulary(["sky"], templates=["{}"]).text_embeddings(clip)
        assert calls[-1] == ["sky"]  # new templates, new embedding
    finally:
        del clip.encode_text


def test_probabilities_take_max_over_synonyms_then_softmax(clip):
    vocab = Vocabulary(["road; street", "sky"], templates="none")
    regions = torch.nn.functional.normalize(
        torch.randn(5, 32, generator=torch.Generator().manual_seed(0)), dim=-1
    )
    probs = vocab.probabilities(regions, clip)
    text = vocab.text_embeddings(clip)
    logits = clip.logit_scale * regions @ text.T
    reduced = torch.stack([logits[:, :2].max(1).values, logits[:, 2]], 1)
    np.testing.assert_allclose(probs, reduced.softmax(1).numpy(), atol=1e-6)
    assert probs.shape == (5, 2) and np.allclose(probs.sum(1), 1, atol=1e-5)


def test_background_winner_zeroes_class_scores(clip):
    vocab = Vocabulary(["road"], templates="none", background=["sky"])
    text = vocab.text_embeddings(clip)
    regions = torch.stack([text[0], text[1]])  # exactly the road / the sky embedding
    probs = vocab.probabilities(regions, clip)
    assert probs[0, 0] > 0.5 and probs[1, 0] == 0.0


def test_probabilities_under_autocast_stay_float32(clip):
    # --half runs scoring under autocast, where a matmul comes out in half precision; the
    # reduction over synonyms must still work and give the float32 numbers (found on a GPU)
    vocab = Vocabulary(["road; street", "sky"], templates="none")
    regions = torch.nn.functional.normalize(
        torch.randn(5, 32, generator=torch.Generator().manual_seed(0)), dim=-1
    )
    expected = vocab.probabilities(regions, clip)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        probs = vocab.probabilities(regions, clip)
    assert probs.dtype == np.float32
    np.testing.assert_allclose(probs, expected, atol=1e-6)
