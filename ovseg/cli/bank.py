"""``ovseg bank build IMAGES -o BANK`` and ``ovseg bank info BANK``: CorrCLIPv2's memory banks.

Handlers return an exit code (0 ok, 1 failure); expected errors print one line to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys

DEFAULT_CLIPS = ("ViT-B-16-quickgelu/metaclip_fullcc", "ViT-B-16/dfn2b")
DEFAULT_DINO = "dino_vitb8"
DEFAULT_SAM = "sam2_hiera_large"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bank",
        help="build or inspect a CorrCLIPv2 memory bank",
        description="CorrCLIPv2's memory bank: region features of your own unlabeled images "
        "(masks, CLIP stores, VFM keys and a FAISS index, in the reference's file layout).",
    )
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])
    sub = parser.add_subparsers(dest="bank_command", metavar="COMMAND")

    p = sub.add_parser(
        "build",
        help="build a bank from a folder of images (resumable, incremental)",
        description="Build or extend a bank. Rerunning the same command resumes an "
        "interrupted build; rerunning it after adding images adds them (ids never change).",
        epilog="example (tiny random models, for a try): ovseg bank build IMAGES -o bank/ "
        "--sam tiny-random --clip tiny-random --dino tiny-random --vfm tiny-random",
    )
    p.add_argument("images", help="folder of images (searched recursively)")
    p.add_argument("-o", "--out", required=True, metavar="BANK", help="the bank folder")
    p.add_argument("-n", "--name", default="bank", help="bank name in its file names (bank)")
    p.add_argument(
        "--vfm",
        default=None,
        help="VFM of the index: hf:ORG/NAME (DINOv2 / DINOv3), a local transformers folder, "
        "or tiny-random (the reference's default is C-RADIOv3-L)",
    )
    p.add_argument("--vfm-key", default=None, help="the VFM's key in file names")
    p.add_argument(
        "--clip",
        nargs="+",
        default=list(DEFAULT_CLIPS),
        help="CLIP stores, main first then auxiliary (default: MetaCLIP B/16 and DFN B/16, "
        "as the reference's meta_b dfn_b)",
    )
    p.add_argument("--dino", default=DEFAULT_DINO, help="DINO of the CLIP stores (dino_vitb8)")
    masks = p.add_mutually_exclusive_group()
    masks.add_argument("--sam", default=None, help=f"SAM for the masks (default {DEFAULT_SAM})")
    masks.add_argument("--masks", default=None, help="folder of {stem}.npz masks instead")
    p.add_argument("--mask-model", default=None, help="tag of the masks folder (sam2)")
    p.add_argument("--short-side", type=int, default=448, help="CLIP stores' short side (448)")
    p.add_argument("--crop", type=int, default=336, help="CLIP stores' window (336)")
    p.add_argument("--rebuild-index", action="store_true", help="retrain the FAISS index")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:0 (default: auto)")
    p.add_argument("--random-weights", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_build)

    p = sub.add_parser("info", help="describe a bank folder")
    p.add_argument("bank", help="the bank folder")
    p.add_argument("--verify", action="store_true", help="hash every file against the record")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_info)


def _fail(message: str) -> int:
    print(f"ovseg bank: {message}", file=sys.stderr)
    return 1


def _cmd_build(args: argparse.Namespace) -> int:
    from ovseg.bank.build import list_images

    if args.vfm is None:
        return _fail("--vfm is required (e.g. hf:facebook/dinov2-with-registers-large)")
    try:
        list_images(args.images)  # before any model loads
        from ovseg.cli._args import check_device

        check_device(args.device)
    except (FileNotFoundError, ValueError) as e:
        return _fail(str(e))
    from ovseg.bank import build_bank
    from ovseg.bank.info import bank_info, format_info
    from ovseg.bank.models import resolve_vfm, sam_mask_fn
    from ovseg.methods.bank import BankMismatchError
    from ovseg.models.build import build_clip, build_dino, resolve_device

    device = resolve_device(args.device)
    try:
        vfm = resolve_vfm(args.vfm, device, key=args.vfm_key)
        clips = {s: build_clip(s, device, random_weights=args.random_weights) for s in args.clip}
        dino = build_dino(args.dino, device, random_weights=args.random_weights)
        sam = None if args.masks else (args.sam or DEFAULT_SAM)
        mask_fn = sam_mask_fn(sam, device, args.random_weights) if sam else None
        build_bank(
            args.images,
            args.out,
            clips=clips,
            vfm=vfm,
            dino=dino,
            name=args.name,
            mask_fn=mask_fn,
            masks_dir=args.masks,
            mask_model=args.mask_model or ("masks" if args.masks else "sam2"),
            specs={"sam": sam, "dino": args.dino, "vfm": args.vfm, "clips": list(args.clip)},
            progress=not args.no_progress,
            rebuild_index=args.rebuild_index,
            short_side=args.short_side,
            slide_crop=args.crop,
        )
    except (FileNotFoundError, ValueError, BankMismatchError, RuntimeError) as e:
        return _fail(str(e))
    print(format_info(bank_info(args.out)))
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from ovseg.bank.info import bank_info, format_info

    try:
        info = bank_info(args.bank, verify=args.verify)
    except (FileNotFoundError, ValueError) as e:
        return _fail(str(e))
    print(json.dumps(info, indent=2) if args.json else format_info(info))
    if args.verify and any(b.get("verified", True) is not True for b in info["banks"].values()):
        return 1
    return 0
