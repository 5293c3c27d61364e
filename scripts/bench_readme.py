"""Reproduce the README's performance table on one GPU: baseline vs IndexCache, side by side, with the bound.

Model: a DeepSeek-V3.2-shaped slice with dummy weights (scripts/models/v32-slice-8l.json: V3.2's per-layer dims,
8 layers, 16 experts with top-8 routing), so the indexer's share of a layer matches the real model.

Steps, all on the same SGLang build and the same prompts:
  1. one server per map (stock SGLang, the all-F map through this package, 1/2, 1/4): prefill latency at each
     context length and single-request decode speed (bench_prefill_decode.measure);
  2. the indexer's share f of GPU kernel time on an eager twin of the all-F server, at every context length:
     the kernels launched inside the profiler range our indexer forward opens (its GEMMs included), in one
     prefill, in 16 decode steps of one request, and in 16 decode steps of a full KV pool; the Amdahl bound of a
     map keeping k of L indexers is 1 / (1 - (1 - k/L) f);
  3. on stock and 1/4: full-capacity decode (as many long requests as a fixed KV budget holds), and
     sglang.bench_serving on the same configuration as a second client.
Prints the table and writes bench_readme.json (+ bench.png) under --out.

    python scripts/bench_readme.py --out results/readme
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sglang_indexcache.bench.readme_table import MAP_NAMES, Options, run

MODELS = Path(__file__).resolve().parent / "models"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], argument_default=argparse.SUPPRESS)
    ap.add_argument("--config", type=Path, default=MODELS / "v32-slice-8l.json")
    ap.add_argument("--lengths", type=int, nargs="+")
    ap.add_argument("--decode-lengths", type=int, nargs="*")
    ap.add_argument("--repeats", type=int)
    ap.add_argument("--full-kv-len", type=int)
    ap.add_argument("--kv-budget", type=int, help="--max-total-tokens for every server")
    ap.add_argument("--port", type=int)
    ap.add_argument("--server-args", help="extra launch_server flags, e.g. the GPU kit's")
    ap.add_argument("--maps", nargs="+", choices=MAP_NAMES, help="stock must stay first")
    ap.add_argument("--reuse", type=Path, help="an earlier run's partial.json (same build): keep its timings and "
                    "load tests, and only measure what it lacks")
    ap.add_argument("--out", type=Path, required=True)
    return run(Options(**vars(ap.parse_args(argv))))


if __name__ == "__main__":
    main()
