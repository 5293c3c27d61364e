#!/usr/bin/env python3
"""What the installed start-up hook costs every Python process when no map is requested: prints a table, writes JSON.

    python scripts/startup_cost.py --out results/startup --runs 30
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sglang_indexcache.bench.startup import run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--runs", type=int, default=30)
    args = ap.parse_args()
    run(args.out, args.runs, source=Path(__file__).resolve().parents[1])


if __name__ == "__main__":
    main()
