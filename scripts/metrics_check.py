"""Check a live server's Prometheus metrics against its own counters. Prints a table, writes JSON.

One server starts with a map, ``--enable-metrics`` and ``--admin-api-key`` (CUDA graphs as you pass them), serves
a few prompts of mixed lengths, then ``GET /metrics`` (SGLang's Prometheus endpoint) is compared layer by layer
with ``GET /indexcache``: the same call and skip counts, Full layers only calling, Shared layers only skipping,
and the Full-layer gauge equal to the map's count. Counters count forwards that run Python, so with CUDA graphs
on they cover prefills, not graph-replayed decode steps.

    python scripts/metrics_check.py --model DIR --out results/metrics --server-args "$GPUKIT_SGLANG_ARGS"
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sglang_indexcache.bench.metrics_check import Options, run


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], argument_default=argparse.SUPPRESS)
    ap.add_argument("--model", required=True)
    ap.add_argument("--pattern", help="F/S per layer; default: a Full layer every 4 from layer 0")
    ap.add_argument("--lengths", type=int, nargs="+")
    ap.add_argument("--port", type=int)
    ap.add_argument("--server-args")
    ap.add_argument("--sglang", help="the SGLang release every server must report, e.g. 0.5.17 with the 0.5.17 kit")
    ap.add_argument("--out", type=Path, required=True)
    return run(Options(**vars(ap.parse_args(argv))))


if __name__ == "__main__":
    sys.exit(main())
