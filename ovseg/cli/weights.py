"""``ovseg weights list | download NAME | verify [NAME ...]``: manage SAM checkpoints.

Handlers return an exit code (0 ok, 1 failure); expected errors print one line to stderr.
"""

from __future__ import annotations

import argparse
import sys

from ovseg.models import weights
from ovseg.models.hub import EOMT_HUB_MODELS, PUBLISHED_BANKS, SAM3_HUB_MODELS
from ovseg.models.presets import PRESETS

CLIP_NOTE = (
    "CLIP weights: `ovseg weights download ARCH/TAG` (an open_clip pretrained tag, e.g. "
    "ViT-B-16/openai) stores them in the open_clip/ subfolder of the weights folder; "
    "`ovseg weights download hf:ORG/NAME` stores a Hugging Face model in the Hugging Face cache "
    "(HF_HOME, default ~/.cache/huggingface). Models are built from these caches only, never "
    "online."
)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``weights`` command and its ``list``/``download``/``verify`` subcommands."""
    parser = subparsers.add_parser(
        "weights",
        help="list, download and verify SAM checkpoints",
        description=f"Manage SAM checkpoints in {weights.ENV_VAR} "
        f"(default: the repository's weights/ folder or ~/.cache/ovseg/weights).",
    )
    parser.set_defaults(func=lambda args: _usage(parser))
    sub = parser.add_subparsers(dest="weights_command", metavar="COMMAND")

    p = sub.add_parser("list", help="show known checkpoints and their cache status")
    p.add_argument(
        "--quick", action="store_true", help="check file sizes only, do not hash cached files"
    )
    p.add_argument(
        "--clip", action="store_true", help="also print every open_clip ARCH/TAG pretrained name"
    )
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("download", help="download and verify checkpoints")
    p.add_argument(
        "names",
        nargs="+",
        metavar="NAME",
        help="one or more of: "
        f"{', '.join([*weights.all_checkpoints(), *SAM3_HUB_MODELS, *EOMT_HUB_MODELS])}, "
        f"{', '.join(PUBLISHED_BANKS)}, "
        "a CLIP spec "
        "(ARCH/TAG for open_clip, hf:ORG/NAME), or a quality preset "
        f"({', '.join(PRESETS)}: every model it uses)",
    )
    p.add_argument("--force", action="store_true", help="download again even if cached")
    p.add_argument("--dir", default=None, help="destination folder (default: weights folder)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_download)

    p = sub.add_parser("verify", help="check cached checkpoints' size and SHA-256")
    p.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help="checkpoints (or a pinned CLIP ARCH/TAG) to verify (default: every cached one); "
        "'ok' means the published size and SHA-256, 'loads' a file with none published",
    )
    p.set_defaults(func=_cmd_verify)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _error(message: object) -> int:
    print(f"ovseg weights: error: {message}", file=sys.stderr)
    return 1


def _human(size: int | None) -> str:
    if size is None:
        return "?"
    value, units = float(size), ["B", "KiB", "MiB", "GiB"]
    while value >= 1024 and len(units) > 1:
        value /= 1024
        units.pop(0)
    return f"{value:.1f} {units[0]}" if units[0] != "B" else f"{size} B"


def _status(name: str, quick: bool) -> str:
    checkpoint = weights.get_checkpoint(name)
    path = weights.cached_path(name)
    if not path.is_file():
        return "missing"
    if not checkpoint.pinned:
        return "unpinned"  # no published size or SHA-256: checked when it loads
    if quick:
        size = path.stat().st_size
        return "present" if checkpoint.size in (None, size) else "bad size"
    try:
        weights.verify(path, checkpoint)
    except (ValueError, OSError):
        return "BAD"
    return "verified"


def _cmd_list(args: argparse.Namespace) -> int:
    rows = [("NAME", "ARCH", "SIZE", "STATUS", "PATH")]
    for name, checkpoint in weights.all_checkpoints().items():
        rows.append(
            (
                name,
                checkpoint.arch,
                _human(checkpoint.size),
                _status(name, args.quick),
                str(weights.cached_path(name)),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    folder = weights.weights_dir()
    print(f"SAM, SAM 2, DINO and RADIO checkpoints in {folder} (override with {weights.ENV_VAR}):")
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row[:4], widths, strict=True)]
        print("  " + "  ".join([*cells, row[4]]))
    for name, hub in {**SAM3_HUB_MODELS, **EOMT_HUB_MODELS}.items():
        gated = ", gated: `hf auth login` first" if hub.gated else ""
        print(f"  {name}  Hugging Face {hub.repo} ({hub.licence}{gated}): {_hub_status(hub)}")
    for name, bank in PUBLISHED_BANKS.items():
        there = (weights.weights_dir() / "banks" / name / bank.files[-1]).is_file()
        print(f"  {name}  CorrCLIPv2 bank, Hugging Face dataset {bank.repo} ({bank.size}): "
              f"{'downloaded' if there else 'missing'}")  # fmt: skip
    print()
    print(CLIP_NOTE)
    try:
        import open_clip

        tags = [f"{arch}/{tag}" for arch, tag in open_clip.list_pretrained()]
    except ImportError:
        print("open_clip is not installed; pip install open_clip_torch to use its tags.")
        return 0
    if args.clip:
        print("\n".join(tags))
    else:
        print(
            f"{len(tags)} open_clip pretrained tags are known; `ovseg weights list --clip` "
            "prints them."
        )
    return 0


def _expand(names: list[str]) -> list[str]:
    """Names with each quality preset replaced by its models, in order, without repeats."""
    out: list[str] = []
    for name in names:
        preset = PRESETS.get(name)
        models = [preset.sam, preset.dino, preset.clip] if preset else [name]
        out += [m for m in models if m is not None and m not in out]
    return out


def _cmd_download(args: argparse.Namespace) -> int:
    for name in _expand(args.names):
        code = _download_one(name, args)
        if code:
            return code
    return 0


def _hub_status(hub) -> str:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(hub.repo, hub.weights_file)
    return f"cached, {found}" if isinstance(found, str) else "missing"


def _download_one(name: str, args: argparse.Namespace) -> int:
    if name in PUBLISHED_BANKS:
        from ovseg.models.hub import fetch_bank

        try:
            folder = fetch_bank(name, args.dir)
        except OSError as e:
            return _error(f"could not download {name}: {e}")
        print(f"{folder}  (use it as --bank {folder})")
        return 0
    if name in SAM3_HUB_MODELS:
        from ovseg.models.sam3_weights import fetch_sam3

        try:
            print(fetch_sam3(name))
        except OSError as e:
            return _error(e)
        return 0
    if name in EOMT_HUB_MODELS:
        from ovseg.models.eomt_weights import fetch_eomt

        try:
            print(fetch_eomt(name))
        except OSError as e:
            return _error(e)
        return 0
    if name not in weights.all_checkpoints() and ("/" in name or ":" in name):
        return _download_clip(name)
    try:
        path = weights.download(
            name, force=args.force, progress=not args.no_progress, dest_dir=args.dir
        )
    except (ValueError, OSError) as e:
        return _error(e)
    print(path)
    return 0


def _download_clip(spec: str) -> int:
    """CLIP weights: an open_clip tag into the weights folder's open_clip/, a Hugging Face id
    into the Hugging Face cache; then the model is built once from the cache as a check."""
    from ovseg.models.build import build_clip
    from ovseg.models.clip_weights import fetch_clip

    try:
        where = fetch_clip(spec)
        backend = build_clip(spec, "cpu")
    except (ValueError, TypeError, OSError, RuntimeError) as e:
        return _error(e)
    print(f"{backend.name}: cached in {where}")
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    names = args.names or [
        *(n for n in weights.all_checkpoints() if weights.cached_path(n).is_file()),
        *(spec for spec in _clip_specs() if _clip_file(spec) is not None),
    ]
    if not names:
        print(f"no cached checkpoints in {weights.weights_dir()}; nothing to verify")
        return 0
    failed = 0
    for name in names:
        try:
            print(_verify_one(name))
        except (ValueError, OSError) as e:
            failed += 1
            _error(e)
    return 1 if failed else 0


def _verify_one(name: str) -> str:
    """Check one cached file: ``ok`` only for a file of the published size and SHA-256; a file
    with nothing published must at least load as a state dict (``loads``)."""
    if name not in weights.all_checkpoints() and name in _clip_specs():
        from ovseg.models.clip_weights import verify_clip_file

        path = _clip_file(name)
        if path is None:
            raise FileNotFoundError(f"CLIP weights {name} are not cached")
        pinned = verify_clip_file(name, path)
    else:
        checkpoint = weights.get_checkpoint(name)
        path = weights.cached_path(name)
        weights.verify(path, checkpoint)
        pinned = checkpoint.pinned
    if pinned:
        return f"ok  {name}  {path}"
    weights.load_state_dict(path)
    return f"loads  {name}  {path}  (no published size or SHA-256: read as a state dict only)"


def _clip_specs() -> list[str]:
    return list(dict.fromkeys(spec for spec, _ in weights.CLIP_FILES))


def _clip_file(spec: str):
    """The cached file of an open_clip ``ARCH/TAG``, or None (open_clip missing included)."""
    try:
        from ovseg.models.clip_weights import open_clip_file

        arch, _, tag = spec.partition("/")
        return open_clip_file(arch, tag)
    except (ImportError, RuntimeError, ValueError):
        return None
