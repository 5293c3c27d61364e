#!/usr/bin/env python3
"""Searched vs uniform maps on the retrofit testbed: calibrate on prose and on code, evaluate every map on the
held-out prose and code. Prints a table, writes JSON.

1. ``sglang-indexcache calibrate`` on each domain's calibration split (the testbed's bundled token files).
2. The mean next-token loss on each domain's held-out split of: all-F, uniform maps (``freq`` 2, 4, 8: layer 0
   and every freq-th layer Full, the same Full count as the searched map of that ratio), and the maps searched
   on prose and on code.

    python scripts/calibrate_testbed.py --out results/calibrate-testbed
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sglang_indexcache.bench.calibration_testbed import Options, run


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], argument_default=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--model", help="testbed, or testbed:FILE.safetensors")
    p.add_argument("--splits", type=Path, help="default: the testbed's bundled splits")
    p.add_argument("--calibration-tokens", type=int)
    p.add_argument("--seq-len", type=int, help="default: twice the model's index_topk")
    p.add_argument("--heldout-windows", type=int)
    p.add_argument("--ratios", type=float, nargs="+")
    p.add_argument("--device")
    return run(Options(**vars(p.parse_args(argv))))


if __name__ == "__main__":
    raise SystemExit(main())
