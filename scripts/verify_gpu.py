"""Launch real SGLang servers with and without IndexCache and check they agree; prints a table, writes JSON.

Checks (one model, same seed, greedy decoding):
  1. all-F map through the plugin == stock SGLang (no plugin): output ids and prompt logprobs;
  2. maps with Shared layers == SGLang's native ``index_topk_pattern`` with the same pattern (output ids;
     logprob differences reported);
  3. indexer calls per forward == Full layers, Shared layers' index-key cache never written;
  4. CUDA graphs on and off, chunked prefill (prompts longer than --chunked-prefill-size), a radix-cache
     prefix hit, and 16 concurrent mixed-length requests vs their solo runs;
  5. sensitivity (all-F and 1/4 differ on long prompts) and a prefill-speed sanity check at 64K;
  6. with --schedule-model (a checkpoint whose config states its own schedule and that ships no indexer weights
     for its Shared layers, see make_random_checkpoint.py --index-topk-freq): served with no request == served
     with that schedule requested explicitly, and both differ from stock SGLang's reading of the same config.

Equality is judged by sglang_indexcache.bench.verdict: the mean |prompt-logprob difference| over every compared
position against a noise floor measured in the same run (two launches of the same server, and one server
answering the same cold prompt twice).

Usage (GPU host with SGLang installed and this package installed next to it):
    python scripts/verify_gpu.py --model DIR --out results/
The model should be a random-initialised checkpoint at realistic scale (scripts/make_random_checkpoint.py):
SGLang's dummy weights are so small that outputs barely depend on which tokens the indexer picks.
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
    run(Options(**vars(ap.parse_args(argv))))


if __name__ == "__main__":
    main()
