#!/usr/bin/env python3
"""The greedy layer search end to end on one GPU, through both backends on the same checkpoint and data.
Prints a table, writes JSON.

1. A random-initialised 8-layer ``GlmMoeDsaForCausalLM`` checkpoint (``scripts/models/glm-dsa-8l-dense.json``,
   ``make_random_checkpoint.py``), which SGLang serves and transformers loads alike (its indexer RoPE is
   interleaved in both: ``indexer_rope_interleave``).
2. One SGLang server with this package, all-F (every layer switchable), ``--disable-cuda-graph``: the server
   backend's search (``sglang-indexcache calibrate --backend server``), with its wall time and server
   evaluations against the plain search's and the paper's full-search counts. Then the all-F map scored
   again: the server's run-to-run noise on this loss.
3. The in-process backend (transformers on the GPU) on the same checkpoint and sequences: its search, and its
   losses for the server's maps, step by step.

Random weights say nothing about quality: this measures the mechanics, the cost, and how the two backends'
losses agree.

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
