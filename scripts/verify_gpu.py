"""Launch real SGLang servers with and without IndexCache and check they agree; prints a table, writes JSON.

What it runs and checks: sglang_indexcache.bench.verification.

    python scripts/verify_gpu.py --model DIR --out results/
    source .gpukit/setup.sh && python scripts/verify_gpu.py --model DIR --out results/ --sglang 0.5.17

Every results file records the SGLang release each server reported (``sglang_served``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sglang_indexcache.bench.verification import Options, run


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], argument_default=argparse.SUPPRESS)
    ap.add_argument("--model")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--port", type=int)
    ap.add_argument("--prefill-len", type=int)
    ap.add_argument("--repeats", type=int)
    ap.add_argument("--only", nargs="*", help="run only these server names")
    ap.add_argument("--gpus", type=int, help="GPUs on this host: lanes of single-GPU servers, and TP/PP runs")
    ap.add_argument("--servers-per-gpu", type=int,
                    help="single-GPU servers run side by side on each GPU (started one at a time)")
    ap.add_argument("--mem-fraction-static")
    ap.add_argument("--server-args", help="more flags for every server, e.g. --disable-cuda-graph")
    ap.add_argument("--quick", action="store_true", help="leave out the 16-request concurrency check")
    ap.add_argument("--schedule-model", help="a checkpoint whose config.json states its own sharing schedule")
    ap.add_argument("--report", type=Path, help="only rebuild the table from an earlier run's raw.json")
    ap.add_argument("--sglang", help="the SGLang release the servers must run, e.g. 0.5.17 (recorded either way)")
    run(Options(**vars(ap.parse_args(argv))))


if __name__ == "__main__":
    main()
