"""KV capacity per layer map: ``max_total_num_tokens`` and KV memory for all-F vs 1/2 vs 1/4, per KV dtype.

Shared layers get no index-key cache, so with the same memory fraction the pool holds more tokens. One
server per (map, KV dtype), dummy weights, same flags; prints a table and writes ``memory.json``.

    python scripts/memory_table.py --config scripts/models/v32-slice-8l.json --kv-dtypes bfloat16 fp8_e4m3 \
        --server-args "$GPUKIT_SGLANG_ARGS" --out results/memory
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sglang_indexcache.bench.memory import Options, run

MODELS = Path(__file__).resolve().parent / "models"


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], argument_default=argparse.SUPPRESS)
    ap.add_argument("--config", type=Path, default=MODELS / "v32-slice-8l.json")
    ap.add_argument("--kv-dtypes", nargs="+")
    ap.add_argument("--mem-fraction-static")
    ap.add_argument("--server-args", help="extra launch_server flags (a --kv-cache-dtype here is replaced)")
    ap.add_argument("--sglang", help="the SGLang release every server must report, e.g. 0.5.17 with the 0.5.17 kit")
    ap.add_argument("--port", type=int)
    ap.add_argument("--out", type=Path, required=True)
    return run(Options(**vars(ap.parse_args(argv))))


if __name__ == "__main__":
    main()
