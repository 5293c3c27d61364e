#!/usr/bin/env python3
"""Write a randomly initialised DeepSeek-V3 / V3.2 (DSA) checkpoint in Hugging Face layout.

What it runs and checks: sglang_indexcache.bench.random_checkpoint.

  python scripts/make_random_checkpoint.py --config config.json --out /tmp/rand-dsa --seed 0 --tokenizer
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sglang_indexcache.bench.random_checkpoint import DTYPES, Options, run


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], argument_default=argparse.SUPPRESS)
    p.add_argument("--config", type=Path, required=True, help="DeepSeek-V3 architecture config.json")
    p.add_argument("--out", type=Path, required=True, help="model directory; checkpoint files in it are replaced")
    p.add_argument("--std", type=float, help="standard deviation of the random weights")
    p.add_argument("--seed", type=int)
    p.add_argument("--dtype", choices=sorted(DTYPES))
    p.add_argument(
        "--device",
        choices=["cpu", "cuda"],
        help="where random numbers are drawn (default: cuda where available); a seed gives the same weights only "
        "on the same kind of device",
    )
    p.add_argument(
        "--nextn",
        action="store_true",
        help="also write the multi-token-prediction layer(s) after the last layer; only speculative decoding "
        "(--speculative-algorithm EAGLE/NEXTN with this directory as draft) reads them",
    )
    p.add_argument("--tokenizer", action="store_true", help="also write a word-level tokenizer (<t0> <t1> ...)")
    p.add_argument("--index-topk-freq", type=int, help="state this sharing schedule in config.json (HF key); the "
                   "Shared layers it gives get no indexer tensors")
    p.add_argument("--index-skip-topk-offset", type=int, help="with --index-topk-freq (HF key; default 2)")
    p.add_argument("--max-shard-gb", type=float, help="split the weights into files of at most this size")
    return p.parse_args(argv)



def main(argv=None) -> None:
    run(Options(**vars(parse_args(argv))))


if __name__ == "__main__":
    main()
