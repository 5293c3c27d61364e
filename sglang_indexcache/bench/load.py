"""Load test a running SGLang server: a concurrency sweep (closed loop) or a fixed request rate (open loop),
and a full-capacity decode mode that keeps as many long-context requests running as the KV pool holds.

Reports input/output tokens per second, TTFT/TPOT/ITL percentiles and errors; writes ``loadtest.json``. Every
run is bounded by ``num_requests`` and ``time_limit`` and only targets loopback addresses. ``bench_serving``
(a tokenizer) also runs ``python -m sglang.bench_serving`` (random-ids) on the first
configuration, for a second opinion from a client this project did not write. ``scripts/loadtest.py`` is its
command line.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import aiohttp
import numpy as np
from tqdm import tqdm

from . import results
from .client import generate_native, generate_openai, random_prompt, require_loopback
from .serverinfo import requests_that_fit
from .stats import summarize

WHAT = "loadtest: throughput and latency percentiles under load"


@dataclass
class Options:
    url: str
    api: str = "native"
    model: str | None = None
    input_len: int = 8192
    output_len: int = 256
    concurrency: list[int] = field(default_factory=lambda: [1, 4, 16])
    request_rate: list[float] = field(default_factory=list)
    num_requests: int = 64
    full_kv: bool = False
    time_limit: float = 600
    seed: int = 0
    bench_serving: str | None = None
    out: Path = Path("results/loadtest")


async def run_load(url: str, prompts: list[list[int]], output_len: int, *, concurrency: int | None,
                   rate: float | None, time_limit: float, api: str, model: str | None, seed: int) -> dict:
    """Closed loop with ``concurrency`` workers, or open loop with Poisson arrivals at ``rate`` req/s."""
    results, deadline = [], time.perf_counter() + time_limit
    bar = tqdm(total=len(prompts), desc=f"c={concurrency}" if rate is None else f"rate={rate}", leave=False)
    client = None
    if api == "openai":
        from openai import AsyncOpenAI

        client = AsyncOpenAI(base_url=f"{url}/v1", api_key="EMPTY", timeout=time_limit)
    async with aiohttp.ClientSession() as session:

        async def one(prompt):
            if time.perf_counter() > deadline:
                return
            if client is not None:
                r = await generate_openai(client, model, prompt, output_len)
            else:
                r = await generate_native(session, url, prompt, output_len, timeout=time_limit)
            results.append(r)
            bar.update()

        start = time.perf_counter()
        if rate is None:
            queue = list(prompts)

            async def worker():
                while queue and time.perf_counter() < deadline:
                    await one(queue.pop())

            await asyncio.gather(*(worker() for _ in range(concurrency)))
        else:
            gaps = np.random.default_rng(seed).exponential(1 / rate, size=len(prompts))
            tasks = []
            for prompt, gap in zip(prompts, gaps):
                if time.perf_counter() > deadline:
                    break
                tasks.append(asyncio.create_task(one(prompt)))
                await asyncio.sleep(gap)
            await asyncio.gather(*tasks)
        wall = time.perf_counter() - start
    bar.close()
    return summarize(results, wall)


# sglang.bench_serving imports HF `datasets` at start-up for its MMMU loader, which random-ids never uses; where
# `datasets` is not installed it gets an empty module, so SGLang's client still runs unchanged.
BENCH_SERVING = """
import importlib.util, runpy, sys, types
if importlib.util.find_spec("datasets") is None:
    sys.modules["datasets"] = types.ModuleType("datasets")
    sys.modules["datasets"].load_dataset = None
runpy.run_module("sglang.bench_serving", run_name="__main__", alter_sys=True)
"""


def bench_serving(url: str, tokenizer: str, input_len: int, output_len: int, num: int, concurrency: int,
                  out: Path) -> dict:
    """SGLang's own benchmark client on the same configuration; a failure is reported, not raised."""
    parsed = urlparse(url)
    result_file = out / "bench_serving.jsonl"
    cmd = [sys.executable, "-c", BENCH_SERVING, "--backend", "sglang", "--host", parsed.hostname,
           "--port", str(parsed.port), "--dataset-name", "random-ids", "--tokenize-prompt", "--tokenizer", tokenizer,
           "--random-input-len", str(input_len), "--random-output-len", str(output_len), "--random-range-ratio", "1.0",
           "--num-prompts", str(num), "--max-concurrency", str(concurrency), "--output-file", str(result_file)]
    done = subprocess.run(cmd, timeout=3600, capture_output=True, text=True)
    (out / "bench_serving.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0 or not result_file.exists():
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"sglang.bench_serving exited with {done.returncode}: {tail}"}
    row = json.loads(result_file.read_text().strip().splitlines()[-1])
    keys = ("input_throughput", "output_throughput", "median_ttft_ms", "p99_ttft_ms", "median_tpot_ms",
            "median_itl_ms", "completed")
    return {k: row.get(k) for k in keys}


def print_rows(rows: list[dict]) -> None:
    cols = ["config", "requests", "errors", "input_tok_s", "output_tok_s", "ttft_s_p50", "ttft_s_p99", "tpot_s_p50",
            "tpot_s_p99", "itl_s_p50", "itl_s_p99"]
    print(" ".join(f"{c:>13s}" for c in cols))
    for r in rows:
        cells = [r.get(c) for c in cols]
        print(" ".join(f"{c:13.4g}" if isinstance(c, float) else f"{str(c):>13s}" for c in cells))


def run(args: Options) -> dict:
    url = require_loopback(args.url)
    args.out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    configs = []
    if args.full_kv:
        n = requests_that_fit(url, args.input_len, args.output_len)
        configs.append(("full-kv", n, None, n))
    else:
        configs += [(f"c={c}", c, None, args.num_requests) for c in args.concurrency]
        configs += [(f"rate={r}", None, r, args.num_requests) for r in args.request_rate]
    rows = []
    for name, concurrency, rate, count in configs:
        prompts = [random_prompt(rng, args.input_len) for _ in range(count)]
        row = asyncio.run(run_load(url, prompts, args.output_len, concurrency=concurrency, rate=rate,
                                   time_limit=args.time_limit, api=args.api, model=args.model, seed=args.seed))
        rows.append({"config": name, **row})
    report = {"url": url, "api": args.api, "input_len": args.input_len, "output_len": args.output_len, "rows": rows}
    if args.bench_serving:
        first = configs[0]
        report["bench_serving"] = {"config": first[0], **bench_serving(
            url, args.bench_serving, args.input_len, args.output_len, first[3], first[1] or 1, args.out)}
    results.write(args.out / "loadtest.json", WHAT, args, report)
    print_rows(rows)
    if "bench_serving" in report:
        print("sglang.bench_serving on", report["bench_serving"])
    return report
