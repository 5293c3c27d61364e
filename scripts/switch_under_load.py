"""Switch a serving model between layer maps under load; compare with fresh servers. Prints a table, writes JSON.

1. One server starts with the first map (all-F by default, so every layer stays switchable), with
   ``--disable-cuda-graph`` and ``--admin-api-key``.
2. Concurrent long requests run the whole time; every few seconds ``POST /indexcache/map`` switches to the
   next map. After each switch the load pauses, fixed probe prompts run cold (greedy, prompt logprobs), and
   the load resumes. Every request of the load must succeed.
3. One fresh server per map, started with that map, runs the same probes, twice (its own run-to-run noise:
   SGLang's DSA path is not bitwise reproducible, see verify_gpu.py).
The switched server's probes must match the fresh server of the same map within that noise, and differ from
the fresh all-F server's beyond it (the check is sensitive).

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
    ap.add_argument("--out", type=Path, required=True)
    return run(Options(**vars(ap.parse_args(argv))))


if __name__ == "__main__":
    main()
