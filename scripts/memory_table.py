"""KV capacity per layer map: ``max_total_num_tokens`` and KV memory for all-F vs 1/2 vs 1/4, per KV dtype.

Shared layers get no index-key cache, so with the same memory fraction the pool holds more tokens. One
server per (map, KV dtype), dummy weights, same flags; prints a table and writes ``memory.json``.

    python scripts/memory_table.py --config scripts/models/v32-slice-8l.json --kv-dtypes bfloat16 fp8_e4m3 \
        --server-args "$GPUKIT_SGLANG_ARGS" --out results/memory
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sglang_indexcache.bench.server import Server, map_file  # noqa: E402
from sglang_indexcache.schedule import pattern_from_freq  # noqa: E402


def maps_for(num_layers: int) -> dict[str, str | None]:
    """Stock SGLang, then all-F, 1/2 and 1/4 with a Full layer every 1, 2 and 4 layers from layer 0, so the
    Shared fraction of a short slice is that of the full model (V3.2 at 1/4: 45 of 61 layers Shared)."""
    return {"stock": None, **{name: pattern_from_freq(num_layers, k, offset=1)
                              for name, k in (("allF", 1), ("1of2", 2), ("1of4", 4))}}


def capacity(url: str) -> dict:
    info = requests.get(f"{url}/server_info", timeout=30).json()
    state = (info.get("internal_states") or [{}])[0]
    return {"max_total_num_tokens": int(info.get("max_total_num_tokens") or state["memory_usage"]["token_capacity"]),
            "kv_cache_gb": state.get("memory_usage", {}).get("kvcache"),
            "weights_gb": state.get("memory_usage", {}).get("weight")}


def without(flags: list[str], name: str) -> list[str]:
    """``flags`` less ``name`` and its value."""
    if name not in flags:
        return flags
    i = flags.index(name)
    return flags[:i] + flags[i + 2:]


def backend_flags(extra: list[str], kv_dtype: str) -> list[str]:
    """SGLang decodes an fp8 DSA cache with ``flashmla_kv`` on Hopper; a bf16-only decode backend is swapped."""
    if kv_dtype == "fp8_e4m3" and "--nsa-decode-backend" in extra:
        return [*without(extra, "--nsa-decode-backend"), "--nsa-decode-backend", "flashmla_kv"]
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


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", type=Path, default=ROOT / "scripts" / "models" / "v32-slice-8l.json")
    ap.add_argument("--kv-dtypes", nargs="+", default=["bfloat16"])
    ap.add_argument("--mem-fraction-static", default="0.8")
    ap.add_argument("--server-args", default="", help="extra launch_server flags (a --kv-cache-dtype here is replaced)")
    ap.add_argument("--port", type=int, default=31300)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    model = Path(tempfile.mkdtemp()) / "model"
    model.mkdir()
    (model / "config.json").write_text(args.config.read_text())
    n_layers = json.loads(args.config.read_text())["num_hidden_layers"]
    extra = without(args.server_args.split(), "--kv-cache-dtype")
    rows = []
    for kv_dtype in args.kv_dtypes:
        for name, pattern in maps_for(n_layers).items():
            env = {"SGLANG_INDEXCACHE_DISABLE": "1"}
            if pattern is not None:
                env = {"SGLANG_INDEXCACHE_MAP": map_file(args.out, f"map-{name}", pattern)}
            flags = ["--load-format", "dummy", "--skip-tokenizer-init", "--disable-cuda-graph", "--skip-server-warmup",
                     "--kv-cache-dtype", kv_dtype, "--mem-fraction-static", args.mem_fraction_static,
                     *backend_flags(extra, kv_dtype)]
            try:
                with Server(f"{name}-{kv_dtype}", str(model), args.port, flags, env=env, logdir=args.out) as server:
                    rows.append({"map": name, "pattern": pattern, "kv_dtype": kv_dtype, **capacity(server.url),
                                 "serves": serves(server.url)})
            except RuntimeError as e:
                rows.append({"map": name, "pattern": pattern, "kv_dtype": kv_dtype, "error": str(e)})
    rows = with_ratios([r for r in rows if "error" not in r]) + [r for r in rows if "error" in r]
    (args.out / "memory.json").write_text(json.dumps(rows, indent=1))
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


if __name__ == "__main__":
    main()
