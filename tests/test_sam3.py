"""SAM 3: the builder, batched text prompts against the official ``transformers`` pipeline run
once per prompt, synonyms and background names, and the ``sam3`` method's probabilities,
labels and instances, on the tiny random model (``sam3-tiny-random``) and CamVid frames.

Comparisons are well-conditioned: instance thresholds are chosen in gaps of the reference scores
(at least 1e-3 from every score), and masks are compared exactly except where the reference
mask probability lies within 1e-4 of the mask threshold (the count of such pixels is bounded).
"""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ovseg.models.build import build_sam, check_sam_spec, sam_names
from ovseg.models.sam3_weights import SAM3_TINY, build_sam3, fetch_sam3, tiny_sam3
from ovseg.proposals.sam3 import Sam3Bundle
from ovseg.proposals.sam3_detector import Sam3Detector

CAMVID_CLASSES = [
    "sky", "building", "pole", "road", "sidewalk", "tree", "sign symbol", "fence", "car",
    "pedestrian", "bicyclist",
]  # fmt: skip
SCORE_MARGIN = 1e-3
MASK_BAND = 1e-4


@pytest.fixture(scope="module")
def sam() -> Sam3Bundle:
    return build_sam3(SAM3_TINY, "cpu")


@pytest.fixture(scope="module")
def images(camvid_dir) -> list[np.ndarray]:
    from ovseg.image import load_image

    frames = sorted((camvid_dir / "images").glob("*.png"))
    return [load_image(frames[0]), load_image(frames[len(frames) // 2])]


def official(sam: Sam3Bundle, image: np.ndarray, prompt: str):
    """The transformers pipeline for one prompt: processor -> Sam3Model; raw outputs."""
    inputs = sam.processor(images=image, text=prompt, return_tensors="pt")
    with torch.inference_mode():
        return sam.detector(**inputs)


def official_instances(sam, out, size, threshold: float, mask_threshold: float = 0.5):
    """``post_process_instance_segmentation`` on the official outputs, plus the reference mask
    probabilities at the image size (to find pixels too close to the mask threshold)."""
    post = sam.processor.post_process_instance_segmentation
    res = post(out, threshold=threshold, mask_threshold=mask_threshold, target_sizes=[size])[0]
    scores = (out.pred_logits.sigmoid() * out.presence_logits.sigmoid())[0]
    keep = scores > threshold
    prob = out.pred_masks[0][keep].sigmoid()
    if len(prob):
        prob = F.interpolate(prob[None], size=size, mode="bilinear", align_corners=False)[0]
    return res, prob.reshape(len(prob), *size).numpy()


def scores_of(out) -> np.ndarray:
    return (out.pred_logits.sigmoid() * out.presence_logits.sigmoid())[0].numpy()


def pick_threshold(scores: np.ndarray, upper: float = 1.0) -> float:
    """A threshold below ``upper`` in a wide gap of ``scores`` near their median, at least
    SCORE_MARGIN from every score."""
    s = np.unique(scores)
    gaps = np.diff(s)
    ok = np.nonzero((gaps > 2 * SCORE_MARGIN) & (s[1:] <= upper))[0]
    assert len(ok), "no gap wide enough between the reference scores"
    i = ok[np.argmin(np.abs(ok - len(s) / 2) - gaps[ok] / gaps.max())]
    t = float((s[i] + s[i + 1]) / 2)
    assert np.abs(scores - t).min() >= SCORE_MARGIN
    return t


def assert_same_masks(ours: np.ndarray, ref: np.ndarray, ref_prob: np.ndarray, thr: float):
    """Equal wherever the reference probability is not within MASK_BAND of ``thr``."""
    assert ours.shape == ref.shape
    ambiguous = np.abs(ref_prob - thr) < MASK_BAND
    assert np.array_equal(ours[~ambiguous], ref[~ambiguous])
    assert ambiguous.sum() <= 1e-3 * max(ambiguous.size, 1)


# --------------------------------------------------------------------------------- building


def test_tiny_builds_offline_and_deterministically(sam):
    assert isinstance(sam, Sam3Bundle) and sam.has_tracker and sam.side == 112
    assert type(sam.detector).__name__ == "Sam3Model"
    again = tiny_sam3()
    for (k, a), (_, b) in zip(sam.state_dict().items(), again.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    assert isinstance(build_sam(SAM3_TINY, "cpu"), Sam3Bundle)
    assert build_sam3(sam, "cpu") is sam
    wrapped = build_sam3(sam.model, "cpu")  # a built model gets the official processor
    assert isinstance(wrapped, Sam3Bundle) and wrapped.side == 112
    assert {"sam3", SAM3_TINY} <= set(sam_names())
    check_sam_spec(SAM3_TINY)


def test_official_name_without_cache_says_gated(monkeypatch, tmp_path):
    import huggingface_hub.constants as hub

    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path))
    for call in (lambda: build_sam("sam3"), lambda: check_sam_spec("sam3")):
        with pytest.raises(FileNotFoundError, match="gated") as e:
            call()
        assert "ovseg weights download sam3" in str(e.value) and "hf auth login" in str(e.value)


def test_fetch_of_gated_repo_says_how_to_get_access(monkeypatch):
    import httpx2
    import huggingface_hub
    from huggingface_hub.errors import GatedRepoError

    def refuse(repo, **kwargs):
        request = httpx2.Request("GET", f"https://huggingface.co/{repo}")
        raise GatedRepoError("403", response=httpx2.Response(403, request=request))

    monkeypatch.setattr(huggingface_hub, "snapshot_download", refuse)
    with pytest.raises(OSError, match="gated repository") as e:
        fetch_sam3("sam3")
    assert "https://huggingface.co/facebook/sam3" in str(e.value)


BAD_SPECS = [("sam3-huge", ValueError), (3, TypeError), ("nowhere/sam3-x", FileNotFoundError)]


@pytest.mark.parametrize("spec, error", BAD_SPECS)
def test_bad_specs(spec, error):
    with pytest.raises(error):
        build_sam3(spec, "cpu")


# ------------------------------------------------------- batched text prompts vs official


def test_batched_prompts_equal_the_official_pipeline_per_class(sam, images, synthetic_image):
    for image in [*images, synthetic_image]:
        size = tuple(image.shape[:2])
        outs = [official(sam, image, c) for c in CAMVID_CLASSES]
        threshold = pick_threshold(np.concatenate([scores_of(o) for o in outs]))
        refs = [official_instances(sam, o, size, threshold) for o in outs]
        assert sum(len(r["scores"]) for r, _ in refs) > 0
        assert sum(len(r["scores"]) < 20 for r, _ in refs) > 0  # some queries below threshold
        for batch in (len(CAMVID_CLASSES), 4, 1):
            det = Sam3Detector(sam, batch_size=batch)
            found = det.instances(image, CAMVID_CLASSES, threshold=threshold)
            for k, (ref, prob) in enumerate(refs):
                mine = found[found.class_index == k]
                assert len(mine) == len(ref["scores"]), (batch, k)
                assert np.all(mine.query_index == k)
                np.testing.assert_allclose(mine.score, ref["scores"].numpy(), atol=1e-4, rtol=0)
                np.testing.assert_allclose(mine.box, ref["boxes"].numpy(), atol=1e-3, rtol=0)
                masks = ref["masks"].bool().numpy().reshape(len(mine), *size)
                if batch == 1:  # the same operations on the same tensors: bit for bit
                    assert np.array_equal(mine.score, ref["scores"].numpy())
                    assert np.array_equal(mine.mask, masks)
                else:
                    assert_same_masks(mine.mask, masks, prob, 0.5)
        assert sam.encoder_calls >= 1


def test_image_and_prompts_are_encoded_once(sam, synthetic_image):
    bundle = Sam3Bundle(sam.model, sam.processor)
    det = Sam3Detector(bundle, batch_size=4)
    det.instances(synthetic_image, CAMVID_CLASSES, threshold=0.3)
    det.probabilities(synthetic_image, CAMVID_CLASSES, threshold=0.3)
    assert bundle.encoder_calls == 1 and det.text_calls == 3 and det.detector_calls == 3
    det.instances(synthetic_image, ["car", "road"], threshold=0.3)  # prompts already embedded
    assert bundle.encoder_calls == 1 and det.text_calls == 3 and det.detector_calls == 4


def test_synonyms_and_background_names(sam, images):
    image = images[0]
    size = tuple(image.shape[:2])
    queries, owners = ["road", "street", "car", "sky"], [0, 0, 1, 2]
    outs = [official(sam, image, q) for q in queries]
    both = min(scores_of(o).max() for o in outs[:2])  # both synonyms find something
    threshold = pick_threshold(np.concatenate([scores_of(o) for o in outs]), upper=both)
    refs = [official_instances(sam, o, size, threshold)[0] for o in outs]
    det = Sam3Detector(sam)
    # dedup off: every prompt's own official instances, background ones removed
    every = det.instances(image, queries, owners, 2, threshold=threshold, dedup_iou=1.0)
    assert list(every.query_index) == [q for q in range(3) for _ in refs[q]["scores"]]
    assert list(every.class_index) == [owners[q] for q in every.query_index]
    # dedup on: the greedy rule, computed here from the official outputs
    iou = 0.5
    pool = [
        (float(s), q, r["masks"][i].bool().numpy())
        for q, r in enumerate(refs)
        for i, s in enumerate(r["scores"])
    ]
    kept: list[tuple] = []
    for s, q, m in sorted(pool, key=lambda t: -t[0]):
        covered = any(
            q2 != q
            and (owners[q2] == owners[q] or owners[q2] >= 2)
            and (m & m2).sum() / max((m | m2).sum(), 1) >= iou
            for _, q2, m2 in kept
        )
        if not covered:
            kept.append((s, q, m))
    expected = np.array(sorted((q, s) for s, q, _ in kept if owners[q] < 2))
    found = det.instances(image, queries, owners, 2, threshold=threshold, dedup_iou=iou)
    got = np.array(sorted(zip(found.query_index.tolist(), found.score.tolist(), strict=True)))
    assert got.shape == expected.shape and np.array_equal(got[:, 0], expected[:, 0])
    np.testing.assert_allclose(got[:, 1], expected[:, 1], atol=1e-4, rtol=0)
    assert len(found) < len(every)  # the rule did drop something on this frame


def test_bad_arguments(sam, synthetic_image):
    det = Sam3Detector(sam)
    with pytest.raises(TypeError):
        det.instances(synthetic_image, "car")
    with pytest.raises(ValueError, match="empty"):
        det.instances(synthetic_image, [])
    with pytest.raises(ValueError, match="threshold"):
        det.instances(synthetic_image, ["car"], threshold=1.5)
    with pytest.raises(ValueError, match="RGB uint8"):
        det.instances(synthetic_image.astype(np.float32), ["car"])
    with pytest.raises(ValueError, match="32"):
        det.instances(synthetic_image, [" ".join(["car"] * 40)])
    with pytest.raises(ValueError, match="batch_size"):
        Sam3Detector(sam, batch_size=0)


# -------------------------------------------------------------------------- the method


def reference_probabilities(sam, image, queries, owners, semantic=True) -> torch.Tensor:
    """The documented formula from the official per-prompt outputs."""
    grids = {}
    for q, prompt in zip(queries, owners, strict=True):
        out = official(sam, image, q)
        s = out.pred_logits.sigmoid()[0] * out.presence_logits.sigmoid()[0]
        p = (s[:, None, None] * out.pred_masks[0].sigmoid()).amax(0)
        if semantic:
            sem = out.presence_logits.sigmoid()[0] * out.semantic_seg[0, 0].sigmoid()
            p = torch.maximum(p, sem)
        grids[prompt] = torch.maximum(grids[prompt], p) if prompt in grids else p
    grid = torch.stack([grids[e] for e in range(len(grids))])
    size = tuple(image.shape[:2])
    return F.interpolate(grid[None], size=size, mode="bilinear", align_corners=False)[0]


def test_method_probabilities_labels_and_instances(sam, images):
    from ovseg.methods.sam3 import Sam3
    from ovseg.scoring.vocabulary import Vocabulary

    image = images[1]
    vocab = Vocabulary(["road; street", "car", "tree"], templates="none", background=["sky"])
    models = types.SimpleNamespace(sam=sam)
    method = Sam3(batch_size=3)
    config = method.config(threshold=0.2)
    with pytest.raises(RuntimeError, match="probabilities"):
        method.finish(image, None, None, models, config)
    probs = method.probabilities(image, vocab, models, config)
    assert probs.dtype == torch.float32 and probs.shape == (4, *image.shape[:2])
    ref = reference_probabilities(sam, image, vocab.names, vocab.owners)
    torch.testing.assert_close(probs, ref, atol=1e-5, rtol=0)
    no_sem = method.probabilities(image, vocab, models, method.config(semantic=False))
    ref = reference_probabilities(sam, image, vocab.names, vocab.owners, semantic=False)
    torch.testing.assert_close(no_sem, ref, atol=1e-5, rtol=0)

    rows = torch.cat([probs[:3], probs[3:].amax(0, keepdim=True)])  # the Segmenter's rows
    labels = method.predict(rows, config, background=3)
    best, arg = rows.max(0)
    clear = (best - config.background_threshold).abs() > 1e-4
    expected = np.where(best.numpy() < 0.2 * 0.5, 3, arg.numpy())
    assert labels.dtype == np.int64 and np.array_equal(labels[clear], expected[clear.numpy()])
    assert config.background_threshold == pytest.approx(0.1)

    done = method.finish(image, rows, labels, models, config)
    found = method.instances(image, vocab, models, config)
    assert np.array_equal(done.labels, labels) and np.array_equal(done.masks, found.mask)
    assert np.array_equal(done.mask_classes, found.class_index) and len(found) > 0
    assert set(found.class_index.tolist()) <= {0, 1, 2}
    assert np.all((done.mask_scores > 0.2) & (done.mask_scores <= 1))
    # every pixel of an instance has at least threshold * mask_threshold for its class
    for m, c in zip(found.mask, found.class_index, strict=True):
        assert (rows[c].numpy()[m] > 0.1 - 1e-6).all()


def test_method_config():
    from ovseg.methods.sam3 import Sam3, Sam3Config

    assert Sam3.name == "sam3" and Sam3.needs == frozenset({"sam"})
    assert "threshold" in Sam3Config.options() and "method" not in Sam3Config.options()
    assert Sam3Config(prob_threshold=0.3).background_threshold == 0.3
    for bad in (dict(threshold=1.5), dict(mask_threshold=-0.1), dict(batch_size=0),
                dict(semantic="yes"), dict(dedup_iou=float("nan"))):  # fmt: skip
        with pytest.raises(ValueError):
            Sam3(**bad)
    with pytest.raises(ValueError, match="unknown option"):
        Sam3(coarse_thresh=0.1)
    with pytest.raises(ValueError, match="SAM 3 model"):
        Sam3().probabilities(None, None, types.SimpleNamespace(sam=object()), Sam3Config())
