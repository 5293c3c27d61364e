"""Time the Triton top-k overlap kernel against the pure-torch reference on one GPU.

What it runs and checks: sglang_indexcache.bench.overlap_timing.

    python scripts/bench_overlap.py --out results/overlap-bench
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sglang_indexcache.bench import overlap_timing
from sglang_indexcache.bench.overlap_timing import Options, run


def main(argv=None) -> None:
    usage = __doc__.split("\n\n")[-1]
    parser = argparse.ArgumentParser(description=overlap_timing.__doc__ + "\n" + usage,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
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
