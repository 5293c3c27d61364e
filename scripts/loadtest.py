"""Load test a running SGLang server: a concurrency sweep (closed loop) or a fixed request rate (open loop),
and a full-capacity decode mode that keeps as many long-context requests running as the KV pool holds.

    python scripts/loadtest.py --url http://127.0.0.1:30000 --input-len 8192 --output-len 256 \
        --concurrency 1 4 16 --num-requests 64 --out results/load
    python scripts/loadtest.py --url http://127.0.0.1:30000 --full-kv --input-len 65536 --output-len 128
    python scripts/loadtest.py --url ... --api openai --model NAME ...     # through the OpenAI client

Reports input/output tokens per second, TTFT/TPOT/ITL percentiles and errors; writes ``loadtest.json``. Every
run is bounded by ``--num-requests`` and ``--time-limit`` and only targets loopback addresses.
``--bench-serving TOKENIZER`` also runs ``python -m sglang.bench_serving`` (random-ids) on the first
configuration, for a second opinion from a client this project did not write.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sglang_indexcache.bench.load import Options, run


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], argument_default=argparse.SUPPRESS)
    ap.add_argument("--url", required=True)
    ap.add_argument("--api", choices=["native", "openai"])
    ap.add_argument("--model", help="model name for the OpenAI API (see /v1/models)")
    ap.add_argument("--input-len", type=int)
    ap.add_argument("--output-len", type=int)
    ap.add_argument("--concurrency", type=int, nargs="*")
    ap.add_argument("--request-rate", type=float, nargs="*", help="open-loop rates (req/s)")
    ap.add_argument("--num-requests", type=int)
    ap.add_argument("--full-kv", action="store_true", help="one round of as many requests as the KV pool holds")
    ap.add_argument("--time-limit", type=float, help="seconds per configuration")
    ap.add_argument("--seed", type=int)
    ap.add_argument("--bench-serving", metavar="TOKENIZER", help="also run sglang.bench_serving with this tokenizer")
    ap.add_argument("--out", type=Path)
    return run(Options(**vars(ap.parse_args(argv))))


if __name__ == "__main__":
    main()
