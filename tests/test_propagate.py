"""SAM 2 video propagation (ovseg.proposals.propagate / tracker) on a tiny random
``Sam2VideoModel`` and a short synthetic clip with moving objects: object ids, objects added
on later frames, reverse and both directions, start and count, streams, folders, the bounded
state (trimming drops only what is never read again), and clear errors for bad prompts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ovseg.proposals import propagate as propagate_module
from ovseg.proposals.propagate import propagate
from ovseg.proposals.tracker import FrameMasks, VideoTracker

H, W, T = 48, 64, 8


def tiny_video_config(image_size=128, num_maskmem=3, max_object_pointers=4):
    from transformers import (
        Sam2HieraDetConfig,
        Sam2VideoConfig,
        Sam2VideoMaskDecoderConfig,
        Sam2VideoPromptEncoderConfig,
        Sam2VisionConfig,
    )

    s, e, d = image_size, 16, 128
    hiera = Sam2HieraDetConfig(
        hidden_size=e,
        embed_dim_per_stage=[e, 2 * e, 4 * e, 8 * e],
        num_attention_heads_per_stage=[1, 2, 4, 8],
        blocks_per_stage=[1, 2, 2, 1],
        global_attention_blocks=[4],
        image_size=[s, s],
    )
    vision = Sam2VisionConfig(
        backbone_config=hiera,
        backbone_channel_list=[8 * e, 4 * e, 2 * e, e],
        backbone_feature_sizes=[[s // 4, s // 4], [s // 8, s // 8], [s // 16, s // 16]],
        fpn_hidden_size=d,
    )
    return Sam2VideoConfig(
        vision_config=vision,
        prompt_encoder_config=Sam2VideoPromptEncoderConfig(image_size=s, hidden_size=d),
        mask_decoder_config=Sam2VideoMaskDecoderConfig(
            hidden_size=d, mlp_dim=256, iou_head_hidden_dim=64, num_attention_heads=4
        ),
        image_size=s,
        num_maskmem=num_maskmem,
        max_object_pointers_in_encoder=max_object_pointers,
        memory_attention_rope_feat_sizes=[s // 16, s // 16],
        memory_attention_num_layers=1,
        memory_attention_hidden_size=d,
        memory_attention_feed_forward_hidden_size=128,
        memory_encoder_hidden_size=d,
        memory_encoder_output_channels=64,
        mask_downsampler_embed_dim=d,
        memory_fuser_embed_dim=d,
        memory_fuser_intermediate_dim=128,
    )


@pytest.fixture(scope="module")
def model():
    from transformers import Sam2VideoModel

    torch.manual_seed(0)
    m = Sam2VideoModel(tiny_video_config()).eval()
    with torch.no_grad():  # random weights see no object: make objects visible
        m.mask_decoder.pred_obj_score_head.proj_out.bias.add_(4.0)
        m.no_memory_embedding.normal_(0, 0.1)
    return m


def moving_clip(n=T):
    """A red square moving right and a green bar moving left on a fixed noisy background."""
    rng = np.random.default_rng(0)
    bg = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
    frames = []
    for t in range(n):
        f = bg.copy()
        f[8:24, 4 + 3 * t : 20 + 3 * t] = (250, 30, 30)
        f[30:42, 44 - 2 * t : 60 - 2 * t] = (20, 220, 40)
        frames.append(f)
    return frames


def square_mask(t=0):
    m = np.zeros((H, W), bool)
    m[8:24, 4 + 3 * t : 20 + 3 * t] = True
    return m


TWO = {0: {5: square_mask(), 9: {"points": [[50, 36], [5, 5]], "point_labels": [1, 0]}}}


def _run(model, frames, prompts, **kw):
    return list(propagate(model, frames, prompts, **kw))


def _same(a: list[FrameMasks], b: list[FrameMasks], atol=1e-5):
    assert [r.frame for r in a] == [r.frame for r in b]
    for x, y in zip(a, b, strict=True):
        assert x.obj_ids.tolist() == y.obj_ids.tolist()
        np.testing.assert_allclose(x.logits, y.logits, atol=atol, rtol=0)
        assert (x.masks != y.masks).mean() < 1e-3


def test_every_frame_gets_every_object(model):
    out = _run(model, moving_clip(), TWO)
    assert [r.frame for r in out] == list(range(T))
    for r in out:
        assert r.obj_ids.tolist() == [5, 9]
        assert r.masks.shape == (2, H, W) and r.masks.dtype == bool
        assert r.scores.dtype == np.float32 and ((r.scores >= 0) & (r.scores <= 1)).all()
        assert r.logits.shape == (2, 32, 32)
        assert r.masks.any(axis=(1, 2)).all()
    # A mask prompt is the object's mask on its frame (through the model's 32x32 logits).
    first = out[0].masks[0]
    iou = (first & square_mask()).sum() / (first | square_mask()).sum()
    assert iou > 0.8


def test_object_added_on_a_later_frame(model):
    prompts = {0: {1: square_mask()}, 3: {2: {"box": [38, 28, 56, 44]}}}
    clip = _run(model, moving_clip(), prompts)
    # A clip tracks every object on every frame (Meta's semantics).
    assert all(r.obj_ids.tolist() == [1, 2] for r in clip)
    stream = _run(model, iter(moving_clip()), prompts)
    assert [r.obj_ids.tolist() for r in stream] == [[1]] * 3 + [[1, 2]] * (T - 3)
    # Before object 2 joins, the stream tracks object 1 alone, exactly as a clip prompted
    # with object 1 alone does; on frame 3 object 2's box gives the same mask as in the clip.
    alone = _run(model, moving_clip(), {0: {1: square_mask()}})
    _same(stream[:3], alone[:3])
    np.testing.assert_allclose(stream[3].logits[1], clip[3].logits[1], atol=1e-5)


def test_stream_equals_clip_for_first_frame_prompts(model):
    _same(_run(model, iter(moving_clip()), TWO), _run(model, moving_clip(), TWO))
    numpy_keys = {np.int64(0): {np.int32(5): square_mask()}}
    assert [r.obj_ids.tolist() for r in _run(model, moving_clip(3), numpy_keys)] == [[5]] * 3


def test_reverse_both_start_and_count(model):
    last = {T - 1: {1: square_mask(T - 1)}}
    rev = _run(model, moving_clip(), last, direction="reverse")
    assert [r.frame for r in rev] == list(range(T - 1, -1, -1))
    assert all(r.masks[0].any() for r in rev)
    mid = {3: {1: square_mask(3)}}
    both = _run(model, moving_clip(), mid, direction="both")
    assert [r.frame for r in both] == [3, 4, 5, 6, 7, 2, 1, 0]
    _same(both[:5], _run(model, moving_clip(), mid))
    counted = _run(model, moving_clip(), mid, start_frame=2, max_frames=3)
    assert [r.frame for r in counted] == [2, 3, 4]
    back = _run(model, moving_clip(), mid, direction="reverse", max_frames=2)
    assert [r.frame for r in back] == [3, 2]


def test_trimming_drops_only_unread_state_and_bounds_it(model, monkeypatch):
    """On a clip longer than the memory windows (3 memory frames, 4 object pointers), outputs
    with the state trimmed equal outputs with everything kept, and the state stays small."""
    frames = moving_clip(14)
    prompts = {6: {1: square_mask(6), 2: {"points": [[40, 36]]}}}
    sizes = []
    trim = VideoTracker._trim

    def recording_trim(self, f, sign, keep=None):
        trim(self, f, sign, keep)
        for out in self.session.output_dict_per_obj.values():
            tracked = out["non_cond_frame_outputs"]
            with_memory = [t for t, o in tracked.items() if "maskmem_features" in o]
            sizes.append((len(tracked), len(with_memory)))
            assert all("high_res_masks" not in o for o in tracked.values())

    monkeypatch.setattr(VideoTracker, "_trim", recording_trim)
    trimmed = _run(model, frames, prompts, direction="both")
    window = max(3 - 1, 4 - 1)
    # Forward pass: at most `window` tracked frames behind; "both" also keeps the window after
    # the start frame for the reverse pass.
    assert max(n for n, _ in sizes) <= 2 * window + 1
    assert max(m for _, m in sizes) <= 2 * window + 1
    monkeypatch.setattr(VideoTracker, "_trim", lambda self, f, sign, keep=None: None)
    kept = _run(model, frames, prompts, direction="both")
    _same(trimmed, kept, atol=0)
    sizes.clear()
    monkeypatch.setattr(VideoTracker, "_trim", recording_trim)
    forward_only = _run(model, frames, prompts)
    assert len(forward_only) == 8 and max(n for n, _ in sizes) <= window


def test_folder_equals_sequence(model, tmp_path):
    from PIL import Image

    frames = moving_clip(T)
    for i, f in enumerate(frames):  # numeric order: 8.png before 10.png
        Image.fromarray(f).save(tmp_path / f"{2 * i + 2}.png")
    _same(_run(model, tmp_path, TWO), _run(model, np.stack(frames), TWO), atol=0)


def test_tracker_add_remove_and_correct(model):
    frames = moving_clip()
    tracker = VideoTracker(model)
    assert len(tracker.step(frames[0])) == 0
    first = tracker.add({3: square_mask()})
    assert first.obj_ids.tolist() == [3] and first.masks[0].any()
    tracker.step(frames[1])
    before = tracker.step(frames[2])
    both = tracker.add({4: {"points": [[50, 34]]}})
    assert both.obj_ids.tolist() == [3, 4]
    # Adding object 4 leaves object 3's result on that frame as it was.
    np.testing.assert_array_equal(both.logits[0], before.logits[0])
    tracker.remove(3)
    assert tracker.obj_ids == [4]
    assert tracker.step(frames[3]).obj_ids.tolist() == [4]
    tracker.remove(99)
    corrected = tracker.add({4: square_mask(3)})
    assert corrected.obj_ids.tolist() == [4]
    # A mask correction on a tracked frame replaces the object's mask there.
    fixed = corrected.masks[0]
    assert (fixed & square_mask(3)).sum() / (fixed | square_mask(3)).sum() > 0.8
    assert tracker.step(frames[4]).masks.shape == (1, H, W)


BAD = [
    ({9: {1: square_mask()}}, {}, ValueError, "outside|clip has 8 frames"),
    ({0: {1: np.zeros((H, W), bool)}}, {}, ValueError, "object 1 on frame 0: mask is empty"),
    ({0: {1: np.ones((H + 1, W), bool)}}, {}, ValueError, r"object 1 on frame 0: mask must be"),
    ({0: {1: {"mask": square_mask(), "points": [[3, 3]]}}}, {}, ValueError, "cannot join"),
    ({0: {1: {"box": [[0, 0, 5, 5], [1, 1, 6, 6]]}}}, {}, ValueError, "one box per object"),
    ({0: {1: {"points": [[W + 5, 3]]}}}, {}, ValueError, "outside"),
    ({0: {1: {"pointz": [[3, 3]]}}}, {}, ValueError, "unknown keys"),
    ({0: {"a": square_mask()}}, {}, ValueError, "object ids must be integers"),
    ({0: {}}, {}, ValueError, "non-empty mapping"),
    ({-1: {1: square_mask()}}, {}, ValueError, "integers >= 0"),
    ({}, {}, ValueError, "no prompts"),
    ([square_mask()], {}, TypeError, "must be a mapping"),
    (TWO, {"direction": "sideways"}, ValueError, "direction must be one of"),
    (TWO, {"max_frames": 0}, ValueError, "max_frames"),
    (TWO, {"start_frame": T}, ValueError, "start_frame"),
]


@pytest.mark.parametrize(("prompts", "options", "error", "match"), BAD)
def test_bad_prompts_fail_before_any_work(model, prompts, options, error, match, monkeypatch):
    def no_model_work(*args, **kwargs):
        raise AssertionError("the model ran before the prompts were checked")

    monkeypatch.setattr(VideoTracker, "_forward", no_model_work)
    with pytest.raises(error, match=match):
        propagate(model, moving_clip(), prompts, **options)


def test_bad_frames_and_streams(model, tmp_path):
    with pytest.raises(FileNotFoundError, match="frame folder not found"):
        propagate(model, tmp_path / "missing", TWO)
    with pytest.raises(ValueError, match="no images"):
        propagate(model, tmp_path, TWO)
    with pytest.raises(ValueError, match="all frames must share one size"):
        propagate(model, [np.zeros((H, W, 3), np.uint8), np.zeros((H, W + 1, 3), np.uint8)], TWO)
    with pytest.raises(ValueError, match=r"must be \(T, H, W, 3\)"):
        propagate(model, moving_clip()[0], TWO)
    with pytest.raises(ValueError, match="not a stream"):
        propagate(model, iter(moving_clip()), TWO, direction="reverse")
    with pytest.raises(ValueError, match=r"prompts on frames \[20\]: the stream ended"):
        _run(model, iter(moving_clip()), {0: {1: square_mask()}, 20: {2: square_mask()}})
    with pytest.raises(ValueError, match="object 2 on frame 3: mask must be"):
        next(propagate(model, iter(moving_clip()), {3: {2: np.ones((5, 5), bool)}}))
    with pytest.raises(TypeError, match="Sam2VideoModel"):
        propagate(object(), moving_clip(), TWO)
    with pytest.raises(RuntimeError, match="no frame yet"):
        VideoTracker(model).add({1: square_mask()})
    assert propagate_module.__all__ == ["FrameMasks", "propagate"]


def _meta_overrides(arch) -> list[str]:
    """Hydra overrides that give Meta's sam2.1 tiny config the architecture ``arch``."""
    dims = [arch.embed_dim * 2**i for i in range(len(arch.stages))]

    def seq(values):
        return "[" + ",".join(str(v) for v in values) + "]"

    return [
        f"++model.image_size={arch.image_size}",
        f"++model.image_encoder.trunk.embed_dim={arch.embed_dim}",
        f"++model.image_encoder.trunk.num_heads={arch.num_heads}",
        f"++model.image_encoder.trunk.stages={seq(arch.stages)}",
        f"++model.image_encoder.trunk.global_att_blocks={seq(arch.global_att_blocks)}",
        f"++model.image_encoder.trunk.window_pos_embed_bkg_spatial_size={seq(arch.window_pos_embed_bkg)}",
        f"++model.image_encoder.trunk.window_spec={seq(arch.window_spec)}",
        f"++model.image_encoder.neck.backbone_channel_list={seq(dims[::-1])}",
        *(
            f"++model.memory_attention.layer.{a}.feat_sizes={seq([arch.image_size // 16] * 2)}"
            for a in ("self_attention", "cross_attention")
        ),
        # the width of the neck, the SAM heads and the memory (arch.hidden)
        f"++model.image_encoder.neck.d_model={arch.hidden}",
        f"++model.image_encoder.neck.position_encoding.num_pos_feats={arch.hidden}",
        f"++model.memory_attention.d_model={arch.hidden}",
        f"++model.memory_attention.layer.d_model={arch.hidden}",
        *(
            f"++model.memory_attention.layer.{a}.embedding_dim={arch.hidden}"
            for a in ("self_attention", "cross_attention")
        ),
        f"++model.memory_encoder.in_dim={arch.hidden}",
        f"++model.memory_encoder.mask_downsampler.embed_dim={arch.hidden}",
        f"++model.memory_encoder.fuser.layer.dim={arch.hidden}",
        # Meta's post-processing settings (build_sam2_video_predictor's default) without its
        # hole filling, which needs Meta's CUDA extension and has no transformers counterpart.
        "++model.sam_mask_decoder_extra_args.dynamic_multimask_via_stability=true",
        "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_delta=0.05",
        "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_thresh=0.98",
        "++model.binarize_mask_from_pts_for_mem_enc=true",
        "++model.fill_hole_area=0",
    ]


@pytest.fixture(scope="module")
def meta_pair(tmp_path_factory):
    """Meta's SAM2VideoPredictor and ovseg's Sam2VideoModel (the sam2-tiny-random architecture)
    with the same random weights, through a Meta-format checkpoint file."""
    pytest.importorskip("sam2.build_sam", reason="Meta's sam2 package is not installed")
    from sam2.build_sam import build_sam2_video_predictor

    from ovseg.constants import SAM2_TINY
    from ovseg.models.sam2_weights import SAM2_ARCHS, build_sam2

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        meta = build_sam2_video_predictor(
            "configs/sam2.1/sam2.1_hiera_t.yaml",
            None,
            device="cpu",
            hydra_overrides_extra=_meta_overrides(SAM2_ARCHS[SAM2_TINY]),
            apply_postprocessing=False,
        ).eval()
        with torch.no_grad():
            for p in meta.parameters():
                p.add_(torch.randn_like(p) * 0.02)
            # Random weights see no object anywhere: make objects visible.
            meta.sam_mask_decoder.pred_obj_score_head.layers[2].bias.add_(4.0)
    path = tmp_path_factory.mktemp("sam2video") / "tiny.pt"
    torch.save({"model": meta.state_dict()}, path)
    ours = build_sam2(f"{SAM2_TINY}:{path}", "cpu", video=True)
    # Meta keeps memory features in bfloat16 and runs under CUDA autocast; in float32 on the
    # CPU its attention refuses them, so cast them back as transformers does.
    attention = meta.memory_attention.forward

    def float_memory(curr, memory, curr_pos=None, memory_pos=None, num_obj_ptr_tokens=0):
        return attention(curr, memory.float(), curr_pos, memory_pos, num_obj_ptr_tokens)

    meta.memory_attention.forward = float_memory
    return meta, ours


META_CASES = {
    # Points, a mask and (on a later frame) a box; Meta's forward pass, then its reverse pass.
    "both": (
        {
            2: {1: {"points": [[14, 16], [60, 5]], "point_labels": [1, 0]}, 2: square_mask(2)},
            4: {3: {"box": [34, 28, 54, 44]}},
        },
        "both",
    ),
    # Reverse from below a later prompt: what conditioning frame 4 computes for object 1 must
    # not reach the reverse pass (Meta never computes it).
    "reverse": ({2: {1: {"points": [[14, 16]]}}, 4: {2: {"points": [[44, 36]]}}}, "reverse"),
}


@pytest.mark.parametrize("case", list(META_CASES))
def test_equals_meta_video_predictor(meta_pair, tmp_path, case):
    from PIL import Image

    meta, ours = meta_pair
    prompts, direction = META_CASES[case]
    for i, f in enumerate(moving_clip(7)):
        Image.fromarray(f).save(tmp_path / f"{i:05d}.jpg", quality=95)
    state = meta.init_state(str(tmp_path))
    for f, objs in prompts.items():
        for obj_id, p in objs.items():
            if isinstance(p, np.ndarray):
                meta.add_new_mask(state, f, obj_id, p)
            else:
                labels = p.get("point_labels", [1] * len(p["points"])) if "points" in p else None
                meta.add_new_points_or_box(
                    state, f, obj_id, points=p.get("points"), labels=labels, box=p.get("box")
                )
    expected = {}
    with torch.inference_mode():
        for reverse in {"both": (False, True), "reverse": (True,)}[direction]:
            for f, ids, logits in meta.propagate_in_video(
                state, start_frame_idx=2, reverse=reverse
            ):
                expected.setdefault(f, (list(ids), logits[:, 0].clone()))
    got = list(propagate(ours, tmp_path, prompts, direction=direction))
    assert [r.frame for r in got] == list(expected)
    for r in got:
        ids, logits = expected[r.frame]
        assert r.obj_ids.tolist() == ids == sorted({i for o in prompts.values() for i in o})
        mine = torch.nn.functional.interpolate(
            torch.from_numpy(r.logits)[:, None], size=(H, W), mode="bilinear", align_corners=False
        )[:, 0]
        np.testing.assert_allclose(mine.numpy(), logits.numpy(), atol=2e-4, rtol=0)
        theirs = logits.numpy() > 0
        assert theirs.any(axis=(1, 2)).all()
        for a, b in zip(r.masks, theirs, strict=True):
            assert (a & b).sum() / (a | b).sum() >= 0.99  # pixels at logit ~0 may flip


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_equals_cpu_with_and_without_offload(model):
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        cpu = _run(model, moving_clip(), TWO, direction="both", start_frame=3)
        gpu = model.to("cuda")
        for offload in (False, True):
            got = _run(gpu, moving_clip(), TWO, direction="both", start_frame=3,
                       offload_state_to_cpu=offload)  # fmt: skip
            _same(cpu, got, atol=1e-4)
    finally:
        model.to("cpu")
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
