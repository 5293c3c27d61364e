"""Switch a serving model between layer maps under load; compare with fresh servers. Prints a table, writes JSON.

What it runs and checks: sglang_indexcache.bench.switching_check.

    python scripts/switch_under_load.py --model DIR --out results/switch --server-args "$GPUKIT_SGLANG_ARGS"
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sglang_indexcache.bench.switching_check import Options, run


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], argument_default=argparse.SUPPRESS)
    ap.add_argument("--model", required=True, help="a random-initialised checkpoint (make_random_checkpoint.py)")
    ap.add_argument("--sequence", nargs="+",
                    help="maps in switching order; the first is the start-up map")
    ap.add_argument("--concurrency", type=int)
    ap.add_argument("--load-lengths", type=int, nargs=2)
    ap.add_argument("--load-seconds", type=float, help="load before each switch")
    ap.add_argument("--port", type=int)
    ap.add_argument("--server-args")
    ap.add_argument("--sglang", help="the SGLang release every server must report, e.g. 0.5.17 with the 0.5.17 kit")
    ap.add_argument("--out", type=Path, required=True)
    return run(Options(**vars(ap.parse_args(argv))))


if __name__ == "__main__":
    main()
