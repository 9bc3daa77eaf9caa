"""Ground an instruction in an image: the region it names and a grasp point.

    python demos/ground.py IMAGE "pick up the blue cup" [--sam vit_b] [--clip ViT-B-16/openai]
                           [--negative person] [--category cup] [-o out.png]

The instruction's leading verb and article are stripped ("pick up the blue cup" -> "blue cup"),
the phrase is grounded with ``ovseg.grounding.ground`` over SAM's automatic proposals, and the
result is printed (box XYXY with x1, y1 exclusive, score, grasp point (x, y) in image pixels)
and drawn: tinted mask, box and a ringed cross on the grasp point.

Smoke run with the tiny random models (their groundings are meaningless; random SAM masks rarely
pass the default quality filters, hence the lowered ones):

    python demos/ground.py ../shared/data/camvid-val/images/<frame>.png "pick up the car" \
        --sam tiny-random --clip tiny-random --pred-iou-thresh 0 --stability-thresh 0
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ovseg.grounding import ground, phrase_from_instruction
from ovseg.pipeline import DEFAULT_CLIP, DEFAULT_SAM, Segmenter
from ovseg.proposals.grid import GridOptions


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("image", type=Path, help="image file")
    p.add_argument("instruction", help='e.g. "pick up the blue cup"')
    p.add_argument("--sam", default=DEFAULT_SAM, help=f"SAM model (default {DEFAULT_SAM})")
    p.add_argument("--clip", default=DEFAULT_CLIP, help=f"CLIP model (default {DEFAULT_CLIP})")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: CUDA if present)")
    p.add_argument(
        "--negative",
        action="append",
        default=[],
        metavar="NAME",
        help="a name the target must not be (repeatable)",
    )
    p.add_argument(
        "--category",
        default=None,
        help="category mode: keep regions labelled CATEGORY, rank them by the phrase",
    )
    p.add_argument(
        "--keep-verb",
        action="store_true",
        help="use the instruction as given, without stripping the verb",
    )
    p.add_argument("--points-per-side", type=int, default=32, help="automatic grid density")
    p.add_argument("--pred-iou-thresh", type=float, default=0.88, help="grid quality filter")
    p.add_argument("--stability-thresh", type=float, default=0.95, help="grid stability filter")
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        default=None,
        help="drawing to write (default: <image stem>_ground.png here)",
    )
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if not args.image.is_file():
        print(f"error: image not found: {args.image}", file=sys.stderr)
        return 2
    phrase = (
        args.instruction.strip() if args.keep_verb else phrase_from_instruction(args.instruction)
    )
    try:
        grid = GridOptions(
            points_per_side=args.points_per_side,
            pred_iou_thresh=args.pred_iou_thresh,
            stability_score_thresh=args.stability_thresh,
        )
        segmenter = Segmenter(args.sam, args.clip, args.device, grid=grid)
        result = ground(
            args.image, phrase, segmenter=segmenter, negatives=args.negative, category=args.category
        )
    except (ValueError, TypeError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"phrase: {phrase}")
    print(f"candidates: {len(result.candidates)} ranked, {len(result.rejected)} rejected")
    if not result.found:
        print("no region matches")
        return 1
    x0, y0, x1, y1 = result.box
    print(f"box (x0, y0, x1, y1): {x0} {y0} {x1} {y1}")
    print(f"score: {result.score:.4f}  (cosine {result.best.similarity:.4f})")
    print(f"grasp point (x, y): {result.point[0]} {result.point[1]}")
    out = args.output or Path(f"{args.image.stem}_ground.png")
    result.overlay().save(out)
    print(f"drawing: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
