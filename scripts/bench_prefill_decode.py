"""Prefill latency and single-request decode speed for several layer maps, side by side in one run.

Each map gets its own server (same build, same flags, same prompts); the first map is the baseline and every
figure is also given as a ratio to it. Prompts are fresh random token ids, so the radix cache never serves a
prefix. Prints a table and writes ``bench.json`` and ``bench.png``.

    python scripts/bench_prefill_decode.py --model DIR --load-format dummy \
        --map stock= --map allF=all-F.yaml --map 1of4=deepseek-v3.2/uniform-1of4 \
        --lengths 32768 65536 131072 --decode-lengths 65536 131072 --out results/bench

A map spec is ``NAME=MAP``; an empty MAP runs SGLang without IndexCache, ``native:FSSS...`` SGLang's own sharing
of that pattern without IndexCache. With ``--url`` the script measures one
server that is already running instead (one map, no launching).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sglang_indexcache.bench.prefill_decode import Options, run


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], argument_default=argparse.SUPPRESS)
    ap.add_argument("--model", help="model directory (launches one server per map)")
    ap.add_argument("--url", help="measure this running server instead (loopback only)")
    ap.add_argument("--map", action="append", metavar="NAME=MAP",
                    help="repeatable; the first is the baseline; an empty MAP means SGLang without IndexCache, "
                         "native:FSSS... SGLang's own sharing of that pattern")
    ap.add_argument("--lengths", type=int, nargs="+")
    ap.add_argument("--decode-lengths", type=int, nargs="*")
    ap.add_argument("--decode-tokens", type=int)
    ap.add_argument("--repeats", type=int)
    ap.add_argument("--seed", type=int)
    ap.add_argument("--port", type=int)
    ap.add_argument("--server-args", help="extra launch_server flags, one string")
    ap.add_argument("--sglang", help="the SGLang release every server must report, e.g. 0.5.17 with the 0.5.17 kit")
    ap.add_argument("--load-format")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    if not getattr(args, "url", None) and (not getattr(args, "model", None) or not getattr(args, "map", None)):
        ap.error("give --model and at least one --map, or --url")
    return run(Options(**vars(args)))


if __name__ == "__main__":
    main()
