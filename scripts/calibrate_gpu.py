#!/usr/bin/env python3
"""The greedy layer search end to end on one GPU, through both backends on the same checkpoint and data.
Prints a table, writes JSON.

What it runs and checks: sglang_indexcache.bench.calibration_gpu.

    python scripts/calibrate_gpu.py --out results/calibrate --server-args "$GPUKIT_SGLANG_ARGS"
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sglang_indexcache.bench.calibration_gpu import Options, run

MODELS = Path(__file__).resolve().parent / "models"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], argument_default=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--config", type=Path, default=MODELS / "glm-dsa-8l-dense.json")
    p.add_argument("--sequences", type=int)
    p.add_argument("--seq-len", type=int)
    p.add_argument("--ratios", type=float, nargs="+")
    p.add_argument("--port", type=int)
    p.add_argument("--server-args")
    return run(Options(**vars(p.parse_args(argv))))


if __name__ == "__main__":
    raise SystemExit(main())
