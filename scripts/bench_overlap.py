"""Time the Triton top-k overlap kernel against the pure-torch reference on one GPU.

The input a 200K-token prefill of a 61-layer model produces (200K positions x 61 layers x 2048 indices) is
100 GB as int32, so it is generated on the GPU a chunk of positions at a time and reduced chunk by chunk; only
the overlap calls are timed. Rows are causal (position p sees p + 1 tokens, so the first 2048 are short) and
each layer's row is a shifted window of a scattering permutation of the visible tokens, so neighbouring
layers overlap strongly and far ones less, with no two rows in the same order. Kernel and reference are timed
side by side on the same deepest positions (each sees ~200K tokens) and their results compared exactly; the
kernel alone then runs every position.

    python scripts/bench_overlap.py --out results/overlap-bench
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sglang_indexcache.bench.overlap_timing import Options, run


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     argument_default=argparse.SUPPRESS)
    parser.add_argument("--layers", type=int, nargs="+")
    parser.add_argument("--positions", type=int)
    parser.add_argument("--k", type=int)
    parser.add_argument("--chunk", type=int, help="positions generated and reduced at a time")
    parser.add_argument("--ref-positions", type=int, help="positions timed side by side")
    parser.add_argument("--ref-chunk", type=int, help="the reference's positions per batched matmul")
    parser.add_argument("--blocks", type=int, nargs="+")
    parser.add_argument("--warps", type=int, nargs="+")
    parser.add_argument("--programs-per-sm", type=int, nargs="+")
    parser.add_argument("--max-seconds", type=float, help="cap on the all-positions kernel time")
    parser.add_argument("--out", type=Path, required=True)
    run(Options(**vars(parser.parse_args(argv))))


if __name__ == "__main__":
    main()
