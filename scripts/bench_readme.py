"""Reproduce the README's performance table on one GPU: baseline vs IndexCache, side by side, with the bound.

What it runs and checks: sglang_indexcache.bench.readme_table.

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
