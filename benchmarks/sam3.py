"""SAM 3 on K text prompts: the official per-class loop against ovseg's batched path, side by
side in one run (the same as ``ovseg bench --sam SAM --method sam3``; see
:mod:`ovseg.bench.sam3` for what each side does).

    python benchmarks/sam3.py [--sam sam3] [--device cpu] [--repeats 2] [--batch-size 8]
                              [--data ../shared/data/camvid-val] [-o benchmarks/results]

``--sam sam3`` builds the official architecture (848M parameters, 1008x1008 input) with random
weights: timing only. Writes ``sam3_<sam>_<device>.json`` and ``.md``; exits 1 when the two
sides do not find the same instances.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ovseg.bench.sam3 import run_sam3_bench, sam3_markdown, write_sam3_results

CAMVID = Path(os.environ.get("OVSEG_CAMVID") or Path(__file__).resolve().parents[2] / "shared"
              / "data" / "camvid-val")  # fmt: skip


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sam", default="sam3", help="sam3 (random weights) or sam3-tiny-random")
    ap.add_argument("--data", type=Path, default=CAMVID)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("-o", "--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args(argv)
    result = run_sam3_bench(
        args.sam, args.device, args.repeats, args.batch_size, args.data,
        progress=lambda msg: print(msg, flush=True),
    )  # fmt: skip
    write_sam3_results(result, args.out)
    print(sam3_markdown(result))
    return 0 if result["same_instances"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
