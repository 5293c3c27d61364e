#!/usr/bin/env python3
"""What the installed start-up hook costs every Python process when no map is requested: prints a table, writes JSON.

    python scripts/startup_cost.py --out results/startup --runs 30
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sglang_indexcache.bench.startup import compare, site_pair  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--runs", type=int, default=30)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp())
    installed = work / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target",
                    str(installed), str(Path(__file__).resolve().parents[1])], check=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SGLANG_INDEXCACHE")}
    result = compare(*site_pair(installed, work), args.runs, env)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "startup.json").write_text(json.dumps({**result, "python": sys.version}, indent=1))
    print(f"\n| site dir | median start-up ({args.runs} runs) |\n|---|---|")
    print(f"| without the hook | {result['median_s']['without'] * 1e3:.1f} ms |")
    print(f"| with the hook | {result['median_s']['with'] * 1e3:.1f} ms |")
    print(f"| difference | {result['overhead_s'] * 1e3:+.1f} ms |")
    print(f"\nmodules imported beyond a plain start-up: {result['extra_modules'] or 'none'}")


if __name__ == "__main__":
    main()
