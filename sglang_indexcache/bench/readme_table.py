"""Reproduce the README's performance table on one GPU: baseline vs IndexCache, side by side, with the bound.

Model: a DeepSeek-V3.2-shaped slice with dummy weights (by default scripts/models/v32-slice-8l.json: V3.2's
per-layer dims, 8 layers, 16 experts with top-8 routing), so the indexer's share of a layer matches the real
model. The maps are built for the config's layer count.

Steps, all on the same SGLang build and the same prompts:
  1. one server per map (stock SGLang, the all-F map through this package, 1/2, 1/4): prefill latency at each
     context length and single-request decode speed (bench.prefill_decode.measure);
  2. the indexer's share f of GPU kernel time on an eager twin of the all-F server, at every context length:
     the kernels launched inside the profiler range our indexer forward opens (its GEMMs included), in one
     prefill, in 16 decode steps of one request, and in 16 decode steps of a full KV pool; the Amdahl bound of a
     map keeping k of L indexers is 1 / (1 - (1 - k/L) f);
  3. on stock and 1/4: full-capacity decode (as many long requests as a fixed KV budget holds), and
     sglang.bench_serving on the same configuration as a second client.
Prints the table and writes bench_readme.json (+ bench.png) under ``out``; ``scripts/bench_readme.py`` is its
command line.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import json
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import requests

from ..names import ENV_DISABLE, ENV_MAP
from . import results as results_file
from .bound import amdahl_bound, indexer_share, load_trace
from .client import random_prompt
from .load import Options as LoadOptions
from .load import run as run_load
from .patterns import RATIO_MAPS, ratio_maps
from .prefill_decode import measure, plot, print_table, ratios
from .random_checkpoint import write_tokenizer
from .server import Server, map_file
from .serverinfo import requests_that_fit

WHAT = "bench_readme: the README's performance table, with the Amdahl bound"
MAP_NAMES = ("stock", *RATIO_MAPS)


@dataclass
class Options:
    config: Path
    out: Path
    lengths: list[int] = field(default_factory=lambda: [32768, 65536, 131072])
    decode_lengths: list[int] = field(default_factory=lambda: [65536, 131072])
    repeats: int = 2
    full_kv_len: int = 65536
    kv_budget: int = 1 << 20
    port: int = 31200
    server_args: str = ""
    maps: list[str] = field(default_factory=lambda: list(MAP_NAMES))
    reuse: Path | None = None


def model_dir(config: Path, out: Path) -> Path:
    """Config + an offline tokenizer (for the OpenAI API and bench_serving); weights are SGLang's dummy ones."""
    out.mkdir(parents=True, exist_ok=True)
    cfg = json.loads(config.read_text())
    (out / "config.json").write_text(json.dumps(cfg, indent=1))
    write_tokenizer(cfg, out)
    return out


PROFILE = {"activities": ["CPU", "GPU"], "with_stack": False, "record_shapes": False}
TRACE_POLL_S = 3


def latest_trace(out: Path, timeout: float = 180) -> Path:
    """The newest trace under ``out`` once the profiler has finished writing it (its size stops changing)."""
    deadline, last = time.time() + timeout, None
    while time.time() < deadline:
        traces = sorted(out.glob("*.trace.json*"), key=lambda p: p.stat().st_mtime)
        if traces:
            now = (traces[-1], traces[-1].stat().st_size)
            if now == last:
                return traces[-1]
            last = now
        time.sleep(TRACE_POLL_S)
    raise RuntimeError(f"no complete profiler trace written under {out} within {timeout:.0f}s")


def profile_prefill(url: str, out: Path, length: int, rng) -> Path:
    requests.post(f"{url}/start_profile", json={**PROFILE, "output_dir": str(out)}, timeout=60).raise_for_status()
    requests.post(f"{url}/generate", json={"input_ids": random_prompt(rng, length),
                                           "sampling_params": {"max_new_tokens": 1}}, timeout=600)
    requests.post(f"{url}/stop_profile", timeout=600).raise_for_status()
    return latest_trace(out)


def profile_decode(url: str, out: Path, length: int, batch: int, steps: int, rng) -> Path:
    """``steps`` decode steps of ``batch`` requests of ``length`` tokens, profiled once all of them decode.

    One request asks for just enough tokens and runs to its end, so it cannot overlap the next profile; a full
    batch asks for many (early requests decode while later ones prefill) and is aborted by closing the streams."""
    decoding = [threading.Event() for _ in range(batch)]
    done = threading.Event()
    new_tokens = 16 * steps if batch == 1 else 4096

    def stream(i: int) -> None:
        body = {"input_ids": random_prompt(rng, length), "stream": True,
                "sampling_params": {"max_new_tokens": new_tokens, "ignore_eos": True}}
        with requests.post(f"{url}/generate", json=body, stream=True, timeout=900) as response:
            for line in response.iter_lines():
                if line.startswith(b"data:"):
                    decoding[i].set()
                if done.is_set() and batch > 1:
                    return

    with cf.ThreadPoolExecutor(batch) as pool:
        futures = [pool.submit(stream, i) for i in range(batch)]
        try:
            for event in decoding:
                if not event.wait(900):
                    raise RuntimeError("a profiled request never started decoding")
            requests.post(f"{url}/start_profile", json={**PROFILE, "output_dir": str(out), "num_steps": steps},
                          timeout=60).raise_for_status()
            trace = latest_trace(out)
        finally:
            done.set()
        for f in futures:
            f.result()
    return trace


def profile_share(url: str, trace_dir: Path, prefill_lengths, decode_lengths, full_kv: tuple[int, int],
                  steps: int = 16) -> dict:
    """The indexer's share of GPU kernel time on an eager all-F server: one prefill per length, ``steps`` decode
    steps of one request per context length, and of a full KV pool (``full_kv`` = (length, requests))."""
    rng = np.random.default_rng(123)
    shares = {"prefill": {}, "decode": {}, "full-kv": {}}
    jobs = [("prefill", n, lambda out, n=n: profile_prefill(url, out, n, rng)) for n in prefill_lengths]
    jobs += [("decode", n, lambda out, n=n: profile_decode(url, out, n, 1, steps, rng)) for n in decode_lengths]
    if full_kv[1] > 0:
        jobs.append(("full-kv", full_kv[0],
                     lambda out: profile_decode(url, out, full_kv[0], full_kv[1], steps, rng)))
    for stage, n, run in jobs:
        out = trace_dir / f"{stage}-{n}"
        out.mkdir(parents=True, exist_ok=True)
        trace = run(out)
        shares[stage][str(n)] = {**indexer_share(load_trace(trace)), "trace": str(trace)}
        print(f"[profile] {stage} {n}: indexer share {shares[stage][str(n)]['share']:.3f}", flush=True)
    return shares


def itl_p50(load: dict) -> float:
    return load["rows"][0]["itl_s_p50"]


def rows_against_bound(maps: dict, speedups: dict, shares: dict, full_kv_speedup: float | None,
                       full_kv_len: int, n_layers: int) -> list[dict]:
    """Achieved speed-up vs stock next to the Amdahl bound from the indexer's share at the same context."""
    rows = []
    for name, pattern in maps.items():
        if pattern is None:
            continue
        kept = pattern.count("F")
        measured = [(stage, int(n), x) for stage in ("prefill", "decode") for n, x in speedups[name][stage].items()]
        if name == "1of4" and full_kv_speedup is not None:
            measured.append(("full-kv", full_kv_len, full_kv_speedup))
        for stage, n, achieved in measured:
            share = shares.get(stage, {}).get(str(n), {}).get("share")
            bound = amdahl_bound(share, kept, n_layers) if share is not None else None
            # Speed-ups are against stock SGLang; the all-F row shows the plugin's own overhead.
            rows.append({"map": name, "stage": stage, "context": n, "speedup": achieved, "share": share,
                         "bound": bound, "of_bound": achieved / bound if bound else None})
    return rows


def run(args: Options) -> dict:
    args.out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp())
    model = model_dir(args.config, tmp / "model")
    flags = ["--load-format", "dummy", "--max-total-tokens", str(args.kv_budget), "--context-length",
             str(max(args.lengths + args.decode_lengths) + 1024), "--cuda-graph-max-bs", "32",
             *args.server_args.split()]
    n_layers = json.loads(args.config.read_text())["num_hidden_layers"]
    reused = results_file.read(args.reuse) if args.reuse else {}
    results, load, started = dict(reused.get("results", {})), dict(reused.get("load", {})), time.time()
    shares = None
    all_maps = ratio_maps(n_layers)
    maps = {name: all_maps[name] for name in args.maps}

    def keep() -> None:
        # Each server's numbers are kept as soon as they exist: a later failure must not lose them.
        results_file.write(args.out / "partial.json", WHAT, args,
                           {"results": results, "indexer_share": shares, "load": load})

    for name, pattern in maps.items():
        env = {ENV_DISABLE: "1"} if pattern is None else \
            {ENV_MAP: map_file(tmp, name, pattern)}
        wants_load = name in ("stock", "1of4")
        if name not in results or (wants_load and name not in load):
            with Server(name, str(model), args.port, flags, env=env, logdir=args.out) as server:
                results[name] = asyncio.run(measure(
                    server.url, args.lengths, args.decode_lengths, 64, args.repeats, seed=0))
                if wants_load:
                    lt_out = args.out / f"loadtest-{name}"
                    load[name] = run_load(LoadOptions(
                        url=server.url, full_kv=True, input_len=args.full_kv_len, output_len=128, out=lt_out,
                        bench_serving=str(model) if name == "1of4" else None))
            keep()
            print(f"[{name}] done at {time.time() - started:.0f}s", flush=True)
        if name == "allF":
            # The indexer's kernels are attributed by the profiler range our forward opens, which CUDA-graph
            # replays do not pass through; so the share is measured on an eager twin of the all-F server.
            with Server("allF-eager", str(model), args.port, [*flags, "--disable-cuda-graph"], env=env,
                        logdir=args.out) as server:
                batch = requests_that_fit(server.url, args.full_kv_len, 4096)
                shares = profile_share(server.url, args.out / "traces", args.lengths, args.decode_lengths,
                                       (args.full_kv_len, batch))
            keep()
            print(f"[allF-eager] profiles done at {time.time() - started:.0f}s", flush=True)
    speedups = ratios(results, "stock")
    # Full-KV decode speed: the median gap between tokens with the pool full (tokens/s over the whole run would
    # mostly time the 64K prefills).
    full_kv_speedup = itl_p50(load["stock"]) / itl_p50(load["1of4"]) if {"stock", "1of4"} <= set(load) else None
    rows = rows_against_bound(maps, speedups, shares or {}, full_kv_speedup, args.full_kv_len, n_layers)
    report = {"results": results, "speedup_vs_stock": speedups, "indexer_share": shares, "rows": rows,
              "full_kv": {name: r["rows"][0] for name, r in load.items()},
              "bench_serving_1of4": load.get("1of4", {}).get("bench_serving"),
              "reused": str(args.reuse) if args.reuse else None, "wall_s": time.time() - started}
    results_file.write(args.out / "bench_readme.json", WHAT, args, report)
    plot(results, speedups, args.out / "bench.png")
    print_table(results, speedups)
    if shares:
        for stage, by_len in shares.items():
            if not by_len:
                continue
            n, longest = max(by_len.items(), key=lambda kv: int(kv[0]))
            print(f"\ntop {stage} kernels at {n} (us; indexer's part by profiler range):")
            for kernel, us, ours in longest["top_kernels"][:8]:
                print(f"  {us:12.0f} {ours:12.0f}  {kernel[:100]}")
    print(f"\n{'map':6s} {'stage':8s} {'context':>8s} {'speedup':>8s} {'share f':>8s} {'bound':>7s} {'of bound':>9s}")
    for r in rows:
        f = lambda x, fmt: format(x, fmt) if x is not None else "-"  # noqa: E731
        print(f"{r['map']:6s} {r['stage']:8s} {r['context']:8d} {r['speedup']:8.3f} {f(r['share'], '8.3f'):>8s} "
              f"{f(r['bound'], '7.3f'):>7s} {f(r['of_bound'], '9.3f'):>9s}")
    if full_kv_speedup is not None:
        st, q = report["full_kv"]["stock"], report["full_kv"]["1of4"]
        print(
            f"full KV at {args.full_kv_len} ({st['requests']} requests): median ITL stock "
            f"{1e3 * itl_p50(load['stock']):.2f} ms, 1/4 {1e3 * itl_p50(load['1of4']):.2f} ms; "
            f"output tok/s incl. prefill {st['output_tok_s']:.0f}"
            f" vs {q['output_tok_s']:.0f}"
        )
    if report["bench_serving_1of4"]:
        print(f"sglang.bench_serving, 1/4, same full-KV configuration: {report['bench_serving_1of4']}")
    print(f"total {time.time() - started:.0f}s")
    return report
