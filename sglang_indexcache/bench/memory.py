"""KV capacity per layer map: ``max_total_num_tokens`` and KV memory for all-F vs 1/2 vs 1/4, per KV dtype.

Shared layers get no index-key cache, so with the same memory fraction the pool holds more tokens. One
server per (map, KV dtype), dummy weights, same flags; prints a table and writes ``memory.json``.
``scripts/memory_table.py`` is its command line.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import requests

from ..names import ENV_DISABLE, ENV_MAP
from . import results
from .patterns import ratio_maps
from .server import Server, map_file
from .serverinfo import capacity

WHAT = "memory_table: KV capacity per layer map and KV dtype"


@dataclass
class Options:
    config: Path
    out: Path
    kv_dtypes: list[str] = field(default_factory=lambda: ["bfloat16"])
    mem_fraction_static: str = "0.8"
    server_args: str = ""
    port: int = 31300
    sglang: str | None = None  # the SGLang release every server must report (e.g. 0.5.17 for the 0.5.17 kit)


def without(flags: list[str], name: str) -> list[str]:
    """``flags`` less ``name`` and its value."""
    if name not in flags:
        return flags
    i = flags.index(name)
    return flags[:i] + flags[i + 2:]


DECODE_BACKEND_FLAGS = ("--dsa-decode-backend", "--nsa-decode-backend")  # the nsa name is an alias from 0.5.14


def backend_flags(extra: list[str], kv_dtype: str) -> list[str]:
    """SGLang decodes an fp8 DSA cache with ``flashmla_kv`` on Hopper; a bf16-only decode backend is swapped
    under whichever name the server arguments gave it."""
    if kv_dtype == "fp8_e4m3":
        for flag in DECODE_BACKEND_FLAGS:
            if flag in extra:
                return [*without(extra, flag), flag, "flashmla_kv"]
    return extra


def serves(url: str) -> str:
    """One short greedy request, so a row proves the pool it reports also works."""
    try:
        r = requests.post(f"{url}/generate", json={"input_ids": list(range(100, 1100)),
                                                   "sampling_params": {"max_new_tokens": 4, "temperature": 0}},
                          timeout=300)
        r.raise_for_status()
        return "yes"
    except requests.RequestException as e:
        return f"no: {e}"[:200]


def with_ratios(rows: list[dict]) -> list[dict]:
    """Tokens relative to the stock server of the same KV dtype."""
    base = {r["kv_dtype"]: r["max_total_num_tokens"] for r in rows if r["map"] == "stock"}
    return [{**r, "tokens_vs_stock": r["max_total_num_tokens"] / base[r["kv_dtype"]] if r["kv_dtype"] in base
             else None} for r in rows]


def run(args: Options) -> list[dict]:
    args.out.mkdir(parents=True, exist_ok=True)
    model = Path(tempfile.mkdtemp()) / "model"
    model.mkdir()
    (model / "config.json").write_text(args.config.read_text())
    n_layers = json.loads(args.config.read_text())["num_hidden_layers"]
    extra = without(args.server_args.split(), "--kv-cache-dtype")
    rows = []
    for kv_dtype in args.kv_dtypes:
        for name, pattern in ratio_maps(n_layers).items():
            env = {ENV_DISABLE: "1"}
            if pattern is not None:
                env = {ENV_MAP: map_file(args.out, f"map-{name}", pattern)}
            flags = ["--load-format", "dummy", "--skip-tokenizer-init", "--disable-cuda-graph", "--skip-server-warmup",
                     "--kv-cache-dtype", kv_dtype, "--mem-fraction-static", args.mem_fraction_static,
                     *backend_flags(extra, kv_dtype)]
            try:
                with Server(f"{name}-{kv_dtype}", str(model), args.port, flags, env=env, logdir=args.out,
                            sglang=args.sglang) as server:
                    rows.append({"map": name, "pattern": pattern, "kv_dtype": kv_dtype, **capacity(server.url),
                                 "serves": serves(server.url)})
            except RuntimeError as e:
                rows.append({"map": name, "pattern": pattern, "kv_dtype": kv_dtype, "error": str(e)})
    rows = with_ratios([r for r in rows if "error" not in r]) + [r for r in rows if "error" in r]
    results.write(args.out / "memory.json", WHAT, args, rows)
    print(f"{'kv dtype':10s} {'map':6s} {'pattern':12s} {'max_total_num_tokens':>21s} {'vs stock':>9s} {'KV GB':>7s}"
          f"  serves")
    for r in rows:
        if "error" in r:
            print(f"{r['kv_dtype']:10s} {r['map']:6s} FAILED: {r['error']}")
            continue
        ratio = f"{r['tokens_vs_stock']:.3f}" if r["tokens_vs_stock"] else ""
        print(f"{r['kv_dtype']:10s} {r['map']:6s} {str(r['pattern']):12s} {r['max_total_num_tokens']:21d} {ratio:>9s} "
              f"{r['kv_cache_gb'] if r['kv_cache_gb'] is not None else '':>7}  {r['serves']}")
    return rows
