"""SAM 2: Meta-checkpoint conversion, the builder's errors, and prompted masks against Meta's own
``SAM2ImagePredictor`` on the same tiny random weights (skipped when Meta's ``sam2`` package is
not installed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conditioning import assert_equal_where, midpoint_threshold, top2_gap

from ovseg.constants import SAM2_TINY
from ovseg.models import weights
from ovseg.models.build import build_sam, check_sam_spec
from ovseg.models.sam2_weights import SAM2_ARCHS, build_sam2, convert_meta_state_dict
from ovseg.proposals.prompts import make_prompt
from ovseg.proposals.sam2 import Sam2Proposer

# Masks are logits > 0. ovseg's and Meta's low-resolution logits agree to 1e-4 (asserted
# below; ~1e-5 measured), and so do the bilinearly upsampled ones: a pixel whose logit is
# farther than LOGIT_TOL from 0 is on the same side in both, on any CPU. Nearer pixels (a
# handful per mask) may go either way and are not compared.
LOGIT_TOL = 1e-3

# Meta's tiny config with ovseg's tiny architecture (SAM2_ARCHS["sam2-tiny-random"]).
META_TINY = [
    "++model.image_size=256",
    "++model.image_encoder.trunk.embed_dim=16",
    "++model.image_encoder.trunk.num_heads=1",
    "++model.image_encoder.trunk.stages=[1,2,1,1]",
    "++model.image_encoder.trunk.global_att_blocks=[2]",
    "++model.image_encoder.trunk.window_pos_embed_bkg_spatial_size=[4,4]",
    "++model.image_encoder.trunk.window_spec=[8,4,4,4]",
    "++model.image_encoder.neck.backbone_channel_list=[128,64,32,16]",
    "++model.image_encoder.neck.d_model=128",
    "++model.image_encoder.neck.position_encoding.num_pos_feats=128",
    "++model.memory_attention.d_model=128",
    "++model.memory_attention.layer.d_model=128",
    "++model.memory_attention.layer.self_attention.embedding_dim=128",
    "++model.memory_attention.layer.cross_attention.embedding_dim=128",
    "++model.memory_encoder.in_dim=128",
    "++model.memory_encoder.mask_downsampler.embed_dim=128",
    "++model.memory_encoder.fuser.layer.dim=128",
]


def meta_tiny(seed: int = 0):
    """Meta's SAM2Base of ovseg's tiny architecture, every weight randomised."""
    from sam2.build_sam import build_sam2 as meta_build

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = meta_build(
            "configs/sam2.1/sam2.1_hiera_t.yaml",
            ckpt_path=None,
            device="cpu",
            hydra_overrides_extra=META_TINY,
        )
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


@pytest.fixture(scope="module")
def meta(tmp_path_factory):
    """(Meta model, path of its Meta-format checkpoint {"model": state_dict})."""
    pytest.importorskip("sam2.build_sam", reason="Meta's sam2 package is not installed")
    model = meta_tiny()
    path = tmp_path_factory.mktemp("sam2") / "tiny.pt"
    torch.save({"model": model.state_dict()}, path)
    return model, path


@pytest.fixture(scope="module")
def image():
    rs = np.random.RandomState(0)
    img = np.zeros((90, 130, 3), np.uint8)
    img[:40] = (135, 190, 235)
    img[40:] = (90, 90, 90)
    img[50:80, 10:60] = (200, 30, 30)
    return np.clip(img + rs.randint(0, 30, img.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def pair(meta, image):
    """(our proposer, Meta's predictor), both with ``image`` set."""
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    model, path = meta
    ours = Sam2Proposer(build_sam(f"{SAM2_TINY}:{path}", "cpu"))
    ours.set_image(image)
    ref = SAM2ImagePredictor(model)
    s = model.image_size  # the predictor's feature sizes are written for 1024x1024 inputs
    ref._bb_feat_sizes = [(s // 4, s // 4), (s // 8, s // 8), (s // 16, s // 16)]
    ref.set_image(image)
    return ours, ref


def _cases(h: int, w: int, low: int):
    mask = np.random.RandomState(1).randn(1, low, low).astype(np.float32) * 4
    box = np.array([0.2 * w, 0.3 * h, 0.7 * w, 0.9 * h])
    return {
        "one point": dict(point_coords=[[0.4 * w, 0.6 * h]], point_labels=[1]),
        "points +/-": dict(
            point_coords=[[0.4 * w, 0.6 * h], [0.8 * w, 0.2 * h], [0.1 * w, 0.1 * h]],
            point_labels=[1, 0, 1],
            multimask_output=False,
        ),
        "box": dict(box=box, multimask_output=False),
        "box and point": dict(
            box=box, point_coords=[[0.5 * w, 0.5 * h]], point_labels=[0], multimask_output=False
        ),
        "boxes": dict(box=np.stack([box, [0, 0, 0.5 * w, 0.5 * h]]), multimask_output=False),
        "point and mask": dict(
            point_coords=[[0.3 * w, 0.4 * h]],
            point_labels=[1],
            mask_input=mask,
            multimask_output=False,
        ),  # fmt: skip
        "mask only": dict(mask_input=mask),
    }


@pytest.mark.parametrize(
    "case",
    ["one point", "points +/-", "box", "box and point", "boxes", "point and mask", "mask only"],
)
def test_prompted_masks_equal_meta_predictor(pair, image, case):
    ours, ref = pair
    kwargs = _cases(*image.shape[:2], ours.low_res_side)[case]
    kwargs = {k: np.asarray(v) if isinstance(v, list) else v for k, v in kwargs.items()}
    masks, scores, low = ours.predict_arrays(**kwargs)
    ref_logits, ref_scores, ref_low = ref.predict(**kwargs, return_logits=True)
    assert masks.dtype == bool and masks.shape == ref_logits.shape
    clear = np.abs(ref_logits) > LOGIT_TOL
    assert_equal_where(masks, ref_logits > 0, clear, 0.999, "mask pixels")
    np.testing.assert_allclose(scores, ref_scores, atol=1e-5)
    np.testing.assert_allclose(low, ref_low, atol=1e-4)
    assert np.abs(low).max() <= 32.0


def test_image_embedding_equals_meta(pair):
    ours, ref = pair
    torch.testing.assert_close(ours.features[2], ref._features["image_embed"], atol=1e-5, rtol=0)
    for a, b in zip(ours.features[:2], ref._features["high_res_feats"], strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_predict_prompt_policy(pair, image):
    """predict(Prompt) keeps the best of three for one click and one mask per box."""
    ours, ref = pair
    h, w = image.shape[:2]
    got = ours.predict(make_prompt((h, w), points=[[50, 60]]))
    logits, scores, _ = ref.predict(
        point_coords=np.array([[50.0, 60.0]]), point_labels=[1], return_logits=True
    )
    assert top2_gap(scores) > 1e-3  # the best of three is clear (scores agree to 1e-5)
    best = int(np.argmax(scores))
    assert len(got) == 1
    clear = np.abs(logits[best]) > LOGIT_TOL
    assert_equal_where(got.masks[0], logits[best] > 0, clear, 0.999, "mask pixels")
    boxes = make_prompt((h, w), boxes=[[10, 10, 60, 50], [70, 20, 120, 80]])
    assert len(ours.predict(boxes)) == 2
    rough = np.zeros((h, w), bool)
    rough[40:80, 20:70] = True
    assert ours.predict(make_prompt((h, w), mask=rough)).masks.shape == (1, h, w)


def test_embedding_cache():
    p = Sam2Proposer(build_sam(SAM2_TINY, "cpu"))
    a = np.full((40, 50, 3), 100, np.uint8)
    b = np.full((40, 50, 3), 200, np.uint8)
    assert p.set_image(a) and p.set_image(b)
    assert not p.set_image(a) and p.encoder_calls == 2
    assert p.image_shape == (40, 50)
    p.clear_cache()
    with pytest.raises(RuntimeError, match="set_image"):
        p.image_shape  # noqa: B018


def test_meta_checkpoint_loads_into_image_and_video_models(meta):
    model, path = meta
    state = model.state_dict()
    video = build_sam2(f"{SAM2_TINY}:{path}", "cpu", video=True)
    assert type(video).__name__ == "Sam2VideoModel"
    converted = convert_meta_state_dict(state)
    ours = video.state_dict()
    assert set(converted) == set(ours)
    for key, value in converted.items():
        assert torch.equal(ours[key], value), key
    torch.testing.assert_close(
        ours["prompt_encoder.point_embed.weight"][2],
        state["sam_prompt_encoder.point_embeddings.2.weight"][0],
    )


def test_tiny_model_is_deterministic():
    a, b = build_sam2(SAM2_TINY, "cpu"), build_sam2(SAM2_TINY, "cpu")
    for (k, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), k


def test_registry_entries():
    assert set(weights.SAM2_CHECKPOINTS) == {n for n in SAM2_ARCHS if n != SAM2_TINY}
    c = weights.SAM2_CHECKPOINTS["sam2.1_hiera_tiny"]
    assert c.url == "https://dl.fbaipublicfiles.com/segment_anything_2/092824/sam2.1_hiera_tiny.pt"
    assert weights.SAM2_CHECKPOINTS["sam2_hiera_large"].url.endswith("072824/sam2_hiera_large.pt")
    assert "sam2.1_hiera_base_plus" in weights.all_checkpoints()


def test_missing_official_checkpoint_names_the_command(tmp_path, monkeypatch):
    monkeypatch.setenv(weights.ENV_VAR, str(tmp_path))
    with pytest.raises(FileNotFoundError, match="ovseg weights download sam2.1_hiera_small"):
        build_sam("sam2.1_hiera_small", "cpu")


def test_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown SAM model.*sam2.1_hiera_tiny"):
        check_sam_spec("sam2.1_hiera_teeny")
    with pytest.raises(ValueError, match="unknown SAM 2 model"):
        build_sam2("hiera_tiny", "cpu")
    with pytest.raises(FileNotFoundError, match="not found"):
        check_sam_spec(f"sam2.1_hiera_tiny:{tmp_path / 'nope.pt'}")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot load checkpoint"):
        build_sam(f"sam2.1_hiera_tiny:{junk}", "cpu")
    sam1 = tmp_path / "sam1.pt"
    torch.save({"image_encoder.patch_embed.proj.weight": torch.zeros(1)}, sam1)
    with pytest.raises(ValueError, match="not a Meta SAM 2 checkpoint"):
        build_sam(f"{SAM2_TINY}:{sam1}", "cpu")
    with pytest.raises(FileNotFoundError, match="ovseg weights download hf:facebook/sam2"):
        build_sam("facebook/sam2.1-hiera-tiny", "cpu")


def test_mismatched_weights_name_the_keys(meta, tmp_path):
    model, path = meta
    with pytest.raises(ValueError, match=r"does not fit.*sam2.1_hiera_tiny.*shape mismatches"):
        build_sam(f"sam2.1_hiera_tiny:{path}", "cpu")
    state = dict(model.state_dict())
    state.pop("sam_mask_decoder.iou_token.weight")
    state["extra.weight"] = torch.zeros(1)
    bad = tmp_path / "bad.pt"
    torch.save({"model": state}, bad)
    with pytest.raises(ValueError, match=r"missing keys \(1\): mask_decoder.iou_token.weight"):
        build_sam(f"{SAM2_TINY}:{bad}", "cpu")
    with pytest.raises(ValueError, match=r"unexpected keys \(1\): extra.weight"):
        build_sam(f"{SAM2_TINY}:{bad}", "cpu")


MEDIAN = "median"  # pred_iou_thresh: between the candidates' middle predicted IoUs
OFF = dict(pred_iou_thresh=0.0, stability_score_thresh=0.0)
GRID_CASES = {
    "defaults": dict(),
    "filters off": OFF,
    "filters and NMS off": dict(OFF, box_nms_thresh=1.0),
    "filters on": dict(pred_iou_thresh=MEDIAN, stability_score_thresh=0.3, points_per_batch=5),
    "one mask per point": dict(OFF, multimask_output=False, pred_iou_thresh=MEDIAN),
    "m2m": dict(OFF, use_m2m=True, pred_iou_thresh=MEDIAN),
}  # fmt: skip


@pytest.mark.parametrize("case", list(GRID_CASES))
def test_automatic_masks_equal_meta_generator(meta, pair, image, case, monkeypatch):
    """Same masks, in the same order, with the same predicted IoUs as Meta's generator.

    Every decision is kept clear of rounding: the IoU threshold sits in a gap of the
    candidates' IoUs (which agree to 1e-5), their sorted IoUs (NMS order) are apart, the
    stability scores are clear of their threshold, and mask pixels are compared where ovseg's
    logit is farther than LOGIT_TOL from 0."""
    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

    import ovseg.proposals.sam2_grid as sam2_grid
    from ovseg.proposals.sam2_grid import Sam2GridOptions, automatic_masks_sam2

    model, _ = meta
    ours, ref = pair
    options = dict(points_per_side=4, **GRID_CASES[case])
    seen = {"iou": [], "stability": [], "out": []}
    filter_, upsample = sam2_grid._filter, sam2_grid._upsample

    def filtering(proposer, low, iou, o, kept):
        seen["iou"].append(iou.clone())
        up = proposer.upsample(low[:, None])[:, 0]
        seen["stability"].append(sam2_grid._stability(up, 0.0, o.stability_score_offset))
        return filter_(proposer, low, iou, o, kept)

    def upsampling(proposer, low, scores, *args):
        seen["out"].append(proposer.upsample(low[:, None])[:, 0].numpy())
        return upsample(proposer, low, scores, *args)

    monkeypatch.setattr(sam2_grid, "_filter", filtering)
    monkeypatch.setattr(sam2_grid, "_upsample", upsampling)
    if options.get("pred_iou_thresh") == MEDIAN:  # so that about half the candidates pass
        every = dict(options, **OFF, box_nms_thresh=1.0, use_m2m=False)
        scores = automatic_masks_sam2(ours, Sam2GridOptions(**every)).scores
        options["pred_iou_thresh"] = midpoint_threshold(scores, 0.5, min_gap=1e-4)
        seen = {k: [] for k in seen}
    generator = SAM2AutomaticMaskGenerator(model, **options)
    generator.predictor._bb_feat_sizes = ref._bb_feat_sizes
    expected = generator.generate(image)
    got = automatic_masks_sam2(ours, Sam2GridOptions(**options))
    candidates = torch.cat(seen["iou"]).numpy()
    assert np.diff(np.sort(candidates)).min() > 2e-5  # NMS visits them in the same order
    stability = torch.cat(seen["stability"]).numpy()
    o = Sam2GridOptions(**options)
    if o.stability_score_thresh > 0:
        assert np.abs(stability - o.stability_score_thresh).min() > 0.01
    assert len(got) == len(expected)
    assert len(got) > 0 or case == "defaults"  # random weights rarely pass Meta's defaults
    if case == "filters and NMS off":
        assert len(got) == 3 * 16
    if expected:
        logits = seen["out"][-1]  # ovseg's, of the masks it returns
        clear = np.abs(logits) > LOGIT_TOL
        assert_equal_where(got.masks, logits > 0, clear, 0.999, "mask pixels")
        meta_masks = np.stack([r["segmentation"] for r in expected])
        assert_equal_where(got.masks, meta_masks, clear, 0.999, "mask pixels")
        scores = [r["predicted_iou"] for r in expected]
        np.testing.assert_allclose(got.scores, scores, atol=1e-5)


def test_grid_options():
    from ovseg.proposals.grid import GridOptions
    from ovseg.proposals.sam2_grid import Sam2GridOptions

    o = Sam2GridOptions()
    assert (o.points_per_side, o.points_per_batch, o.pred_iou_thresh) == (32, 64, 0.8)
    assert (o.stability_score_thresh, o.box_nms_thresh, o.multimask_output, o.use_m2m) == (
        0.95,
        0.7,
        True,
        False,
    )
    assert isinstance(o, GridOptions)
    with pytest.raises(ValueError, match="adaptive"):
        Sam2GridOptions(adaptive=True)
    with pytest.raises(TypeError, match="use_m2m"):
        Sam2GridOptions(use_m2m="yes")


def test_segmenter_with_sam2(image):
    from ovseg.pipeline import Segmenter
    from ovseg.proposals.sam2_grid import Sam2GridOptions

    with pytest.warns(UserWarning, match="quality filters off"):
        seg = Segmenter(SAM2_TINY, "tiny-random", device="cpu", method="sam-clip")
    assert isinstance(seg.grid, Sam2GridOptions) and seg.grid.pred_iou_thresh == 0.0
    assert isinstance(seg.proposer, Sam2Proposer)
    auto = seg.propose(image, points_per_side=4, box_nms_thresh=1.0, multimask_output=False)
    assert len(auto) == 16 and auto.masks.shape[1:] == image.shape[:2]
    assert len(seg.propose(image, points_per_side=2, use_m2m=True, box_nms_thresh=1.0)) == 12
    result = seg.segment(image, ["road", "car"], points_per_side=4)
    assert result.label_map.shape == image.shape[:2]
    clicked = seg.segment(image, ["road", "car"], points=[[30, 60]])
    assert len(clicked.segments) <= 1
    sam1 = Segmenter("tiny-random", "tiny-random", device="cpu", method="naclip")
    with pytest.raises(ValueError, match="SAM 2's grid"):
        sam1.propose(image, use_m2m=True)
    with pytest.raises(ValueError, match="SAM 1's ViT encoder"):
        Segmenter(SAM2_TINY, "tiny-random", device="cpu", method="trident", dino="tiny-random")
    from ovseg.app.ui import describe_models

    assert "Sam2Model" in describe_models(seg)
    with pytest.raises(ValueError, match="need a SAM 2 model"):
        Segmenter("tiny-random", "tiny-random", device="cpu", grid=Sam2GridOptions())


def test_bench_plain_side_is_meta_on_the_same_weights(image):
    """ovseg bench --sam sam2-...: Meta's generator (plain) and ovseg's give the same masks."""
    pytest.importorskip("sam2.build_sam", reason="Meta's sam2 package is not installed")
    from ovseg.bench.plain_sam2 import PlainSam2Pipeline, build_pair, meta_config
    from ovseg.models.tiny import tiny_clip
    from ovseg.proposals.sam2_grid import Sam2GridOptions, automatic_masks_sam2

    assert meta_config("sam2.1_hiera_base_plus") == ("configs/sam2.1/sam2.1_hiera_b+.yaml", [])
    assert meta_config("sam2_hiera_large")[0] == "configs/sam2/sam2_hiera_l.yaml"
    meta_model, ours = build_pair(SAM2_TINY, "cpu", random_weights=False)
    grid = dict(points_per_side=4, **OFF)
    plain = PlainSam2Pipeline(meta_model, tiny_clip(), 64, (0.5,) * 3, (0.5,) * 3, grid=grid)
    masks, _, _ = plain.proposals(image)
    proposer = Sam2Proposer(ours)
    proposer.set_image(image)
    np.testing.assert_array_equal(
        automatic_masks_sam2(proposer, Sam2GridOptions(**grid)).masks, masks
    )
    plain.predictor.set_image(image)
    assert plain.click((40.0, 50.0), image, torch.eye(32)[:2]).dtype == bool


def test_eval_oracle_proposals_with_sam2(image):
    from ovseg.eval.predict import _SamOnly

    sam_only = _SamOnly(SAM2_TINY, "cpu", random_weights=False)
    assert isinstance(sam_only.proposer, Sam2Proposer)
    masks = sam_only.propose(image, points_per_side=2, box_nms_thresh=1.0, **OFF)
    assert len(masks) == 12 and masks.masks.shape[1:] == image.shape[:2]
