"""Reproduce the README's performance table on one GPU: baseline vs IndexCache, side by side, with the bound.

Model: a DeepSeek-V3.2-shaped slice with dummy weights (scripts/models/v32-slice-8l.json: V3.2's per-layer dims,
8 layers, 16 experts with top-8 routing), so the indexer's share of a layer matches the real model.

Steps, all on the same SGLang build and the same prompts:
  1. one server per map (stock SGLang, the all-F map through this package, 1/2, 1/4): prefill latency at each
     context length and single-request decode speed (bench_prefill_decode.measure);
  2. on the all-F server, the indexer's share f of GPU time from profiler traces (one prefill, 32 decode steps);
     the Amdahl bound of a map keeping k of L indexers is 1 / (1 - (1 - k/L) f);
  3. on stock and 1/4: full-capacity decode (as many long requests as a fixed KV budget holds), and
     sglang.bench_serving on the same configuration as a second client.
Prints the table and writes bench_readme.json (+ bench.png) under --out.

    python scripts/bench_readme.py --out results/readme
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import bench_prefill_decode  # noqa: E402
import loadtest  # noqa: E402
import make_random_checkpoint  # noqa: E402

from sglang_indexcache.bench.bound import (  # noqa: E402
    INDEXER_KERNELS,
    amdahl_bound,
    indexer_share,
    kernel_times,
)
from sglang_indexcache.bench.client import random_prompt  # noqa: E402
from sglang_indexcache.bench.server import Server, map_file  # noqa: E402

MAPS = {"stock": None, "allF": "FFFFFFFF", "1of2": "FSFSFSFS", "1of4": "FSSSFSSS"}


def model_dir(config: Path, out: Path) -> Path:
    """Config + an offline tokenizer (for the OpenAI API and bench_serving); weights are SGLang's dummy ones."""
    out.mkdir(parents=True, exist_ok=True)
    cfg = json.loads(config.read_text())
    (out / "config.json").write_text(json.dumps(cfg, indent=1))
    make_random_checkpoint.write_tokenizer(cfg, out)
    return out


def profile_share(url: str, trace_dir: Path, length: int, decode_steps: int) -> dict:
    """Indexer share of GPU kernel time in one prefill and in ``decode_steps`` decode steps."""
    rng = np.random.default_rng(123)
    shares = {}
    for stage in ("prefill", "decode"):
        out = trace_dir / stage
        out.mkdir(parents=True, exist_ok=True)
        body = {"output_dir": str(out), "activities": ["GPU"]}
        if stage == "prefill":
            requests.post(f"{url}/start_profile", json=body, timeout=60).raise_for_status()
            requests.post(f"{url}/generate", json={"input_ids": random_prompt(rng, length),
                                                   "sampling_params": {"max_new_tokens": 1}}, timeout=600)
            requests.post(f"{url}/stop_profile", timeout=600).raise_for_status()
        else:
            # Start profiling once the long request is decoding, for a fixed number of steps.
            with requests.post(f"{url}/generate", json={"input_ids": random_prompt(rng, length), "stream": True,
                                                        "sampling_params": {"max_new_tokens": 4 * decode_steps,
                                                                            "ignore_eos": True}},
                               stream=True, timeout=600) as response:
                lines = response.iter_lines()
                next(line for line in lines if line.startswith(b"data:"))
                requests.post(f"{url}/start_profile", json={**body, "num_steps": decode_steps}, timeout=60)
                for _ in lines:
                    pass
        time.sleep(5)  # traces are written asynchronously
        traces = sorted(out.glob("*.trace.json*"), key=lambda p: p.stat().st_mtime)
        if not traces:
            raise RuntimeError(f"no profiler trace written under {out}")
        times = kernel_times(traces[-1])
        shares[stage] = {"share": indexer_share(times), "trace": str(traces[-1]),
                         "top_kernels": sorted(times.items(), key=lambda kv: -kv[1])[:12]}
    return shares


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", type=Path, default=ROOT / "scripts" / "models" / "v32-slice-8l.json")
    ap.add_argument("--lengths", type=int, nargs="+", default=[32768, 65536, 131072])
    ap.add_argument("--decode-lengths", type=int, nargs="*", default=[65536, 131072])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--full-kv-len", type=int, default=65536)
    ap.add_argument("--kv-budget", type=int, default=1 << 20, help="--max-total-tokens for every server")
    ap.add_argument("--port", type=int, default=31200)
    ap.add_argument("--server-args", default="", help="extra launch_server flags, e.g. the GPU kit's")
    ap.add_argument("--maps", nargs="+", choices=list(MAPS), default=list(MAPS), help="stock must stay first")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp())
    model = model_dir(args.config, tmp / "model")
    flags = ["--load-format", "dummy", "--max-total-tokens", str(args.kv_budget), "--context-length",
             str(max(args.lengths + args.decode_lengths) + 1024), "--cuda-graph-max-bs", "32",
             *args.server_args.split()]
    n_layers = json.loads(args.config.read_text())["num_hidden_layers"]
    results, shares, load, started = {}, None, {}, time.time()
    maps = {name: MAPS[name] for name in args.maps}
    for name, pattern in maps.items():
        env = {"SGLANG_INDEXCACHE_DISABLE": "1"} if pattern is None else \
            {"SGLANG_INDEXCACHE_MAP": map_file(tmp, name, pattern)}
        with Server(name, str(model), args.port, flags, env=env, logdir=args.out) as server:
            results[name] = asyncio.run(bench_prefill_decode.measure(
                server.url, args.lengths, args.decode_lengths, 64, args.repeats, seed=0))
            if name == "allF":
                shares = profile_share(server.url, args.out / "traces", args.lengths[min(1, len(args.lengths) - 1)],
                                       32)
            if name in ("stock", "1of4"):
                lt_out = args.out / f"loadtest-{name}"
                load[name] = loadtest.main(["--url", server.url, "--full-kv", "--input-len", str(args.full_kv_len),
                                            "--output-len", "128", "--out", str(lt_out)]
                                           + (["--bench-serving", str(model)] if name == "1of4" else []))
        # Each server's numbers are kept as soon as they exist: a later failure must not lose them.
        (args.out / "partial.json").write_text(json.dumps({"results": results, "indexer_share": shares,
                                                          "load": load}, indent=1))
        print(f"[{name}] done at {time.time() - started:.0f}s", flush=True)
    speedups = bench_prefill_decode.ratios(results, "stock")
    rows = []
    for name, pattern in maps.items():
        if pattern is None or shares is None:
            continue
        kept = pattern.count("F")
        for stage, key in (("prefill", "prefill"), ("decode", "decode")):
            bound = amdahl_bound(shares[stage]["share"], kept, n_layers)
            for n, achieved in speedups[name][key].items():
                # Speed-ups are against stock SGLang; the all-F row shows the plugin's own overhead.
                rows.append({"map": name, "stage": stage, "context": int(n), "speedup": achieved, "bound": bound,
                             "of_bound": achieved / bound})
    full_kv = {name: r["rows"][0]["output_tok_s"] for name, r in load.items()}
    report = {"results": results, "speedup_vs_stock": speedups, "indexer_share": shares, "rows": rows,
              "full_kv_decode_tok_s": full_kv, "bench_serving_1of4": load.get("1of4", {}).get("bench_serving"),
              "wall_s": time.time() - started}
    (args.out / "bench_readme.json").write_text(json.dumps(report, indent=1))
    bench_prefill_decode.plot(results, speedups, args.out / "bench.png")
    bench_prefill_decode.print_table(results, speedups)
    if shares:
        print(f"\nindexer share of GPU time (all-F): prefill {shares['prefill']['share']:.3f}, "
              f"decode {shares['decode']['share']:.3f}")
        for stage in ("prefill", "decode"):
            print(f"top {stage} kernels (us; * = counted as indexer):")
            for name, us in shares[stage]["top_kernels"][:8]:
                print(f"  {'*' if INDEXER_KERNELS.search(name) else ' '} {us:12.0f}  {name[:110]}")
    print(f"{'map':6s} {'stage':8s} {'context':>8s} {'speedup':>8s} {'bound':>7s} {'of bound':>9s}")
    for r in rows:
        print(f"{r['map']:6s} {r['stage']:8s} {r['context']:8d} {r['speedup']:8.3f} {r['bound']:7.3f} {r['of_bound']:9.3f}")
    if "stock" in full_kv and "1of4" in full_kv:
        print(f"full-KV decode at {args.full_kv_len}: stock {full_kv['stock']:.0f} tok/s, 1/4 {full_kv['1of4']:.0f} "
              f"tok/s ({full_kv['1of4'] / full_kv['stock']:.2f}x)")
    if report["bench_serving_1of4"]:
        print(f"sglang.bench_serving, 1/4, same full-KV configuration: {report['bench_serving_1of4']}")
    print(f"total {time.time() - started:.0f}s")
    return report


if __name__ == "__main__":
    main()
