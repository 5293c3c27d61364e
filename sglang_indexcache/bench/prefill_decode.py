"""Prefill latency and single-request decode speed for several layer maps, side by side in one run.

Each map gets its own server (same build, same flags, same prompts); the first map is the baseline and every
figure is also given as a ratio to it. Prompts are fresh random token ids, so the radix cache never serves a
prefix. Prints a table and writes ``bench.json`` and ``bench.png``; ``scripts/bench_prefill_decode.py`` is its
command line.

A map spec is ``NAME=MAP``; an empty MAP runs SGLang without IndexCache, ``native:FSSS...`` SGLang's own sharing
of that pattern (``index_topk_pattern``) without IndexCache. With ``url`` it measures one
server that is already running instead (one map, no launching).
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import numpy as np
from tqdm import tqdm

from ..names import ENV_DISABLE, ENV_MAP
from . import results
from .client import generate_native, random_prompt, require_loopback
from .server import Server

WHAT = "bench_prefill_decode: prefill latency and decode speed per layer map"


@dataclass
class Options:
    out: Path
    model: str | None = None
    url: str | None = None
    map: list[str] = field(default_factory=list)
    lengths: list[int] = field(default_factory=lambda: [32768, 65536, 131072])
    decode_lengths: list[int] = field(default_factory=lambda: [65536, 131072])
    decode_tokens: int = 64
    repeats: int = 3
    seed: int = 0
    port: int = 31100
    server_args: str = ""
    load_format: str | None = None
    sglang: str | None = None  # the SGLang release every server must report (e.g. 0.5.17 for the 0.5.17 kit)


async def measure(url: str, lengths, decode_lengths, decode_tokens: int, repeats: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    out = {"prefill_s": {}, "decode_tok_s": {}}
    async with aiohttp.ClientSession() as session:
        await generate_native(session, url, random_prompt(rng, 1024), 4)  # first-use kernel compiles
        jobs = [("prefill", n) for n in lengths] + [("decode", n) for n in decode_lengths]
        for kind, n in tqdm(jobs, desc=url, leave=False):
            await generate_native(session, url, random_prompt(rng, n), 2)  # warm this length
            samples = []
            for _ in range(repeats):
                if kind == "prefill":
                    r = await generate_native(session, url, random_prompt(rng, n), 1, stream=False)
                    samples.append(r.latency if r.ok else None)
                else:
                    r = await generate_native(session, url, random_prompt(rng, n), decode_tokens)
                    samples.append((r.output_tokens - 1) / (r.latency - r.ttft) if r.ok and r.ttft else None)
                if not r.ok:
                    raise RuntimeError(f"{kind} at {n} tokens failed: {r.error}")
            key = "prefill_s" if kind == "prefill" else "decode_tok_s"
            out[key][str(n)] = {"median": statistics.median(samples), "samples": samples}
    return out


def ratios(results: dict, baseline: str) -> dict:
    """Speed-up of each map over the baseline: prefill time ratio, decode throughput ratio."""
    base = results[baseline]
    out = {}
    for name, r in results.items():
        out[name] = {
            "prefill": {n: base["prefill_s"][n]["median"] / v["median"] for n, v in r["prefill_s"].items()},
            "decode": {n: v["median"] / base["decode_tok_s"][n]["median"] for n, v in r["decode_tok_s"].items()},
        }
    return out


def print_table(results: dict, speedups: dict) -> None:
    names = list(results)
    lengths = list(results[names[0]]["prefill_s"])
    decode = list(results[names[0]]["decode_tok_s"])
    header = (
        ["map"]
        + [f"prefill {int(n) // 1024}K s" for n in lengths]
        + [f"decode@{int(n) // 1024}K tok/s" for n in decode]
    )
    print(" | ".join(f"{h:>20s}" for h in header))
    for name in names:
        cells = [name]
        cells += [
            f"{results[name]['prefill_s'][n]['median']:.3f} ({speedups[name]['prefill'][n]:.2f}x)" for n in lengths
        ]
        cells += [
            f"{results[name]['decode_tok_s'][n]['median']:.1f} ({speedups[name]['decode'][n]:.2f}x)" for n in decode
        ]
        print(" | ".join(f"{c:>20s}" for c in cells))


def plot(results: dict, speedups: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name in results:
        p = speedups[name]["prefill"]
        d = speedups[name]["decode"]
        axes[0].plot([int(n) // 1024 for n in p], list(p.values()), marker="o", label=name)
        axes[1].plot([int(n) // 1024 for n in d], list(d.values()), marker="o", label=name)
    for ax, title in zip(axes, ["prefill speed-up vs baseline", "decode speed-up vs baseline (1 request)"]):
        ax.set_title(title)
        ax.set_xlabel("context (K tokens)")
        ax.axhline(1.0, color="grey", lw=0.5)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


NATIVE = "native:"  # NAME=native:FSSS...: SGLang's own sharing of that F/S pattern, IndexCache off


def server_env(spec: str | None) -> dict:
    """The environment of a server serving map ``spec`` (a file or shipped name); stock SGLang without one or
    with a ``native:`` pattern."""
    if not spec or spec.startswith(NATIVE):
        return {ENV_DISABLE: "1"}
    return {ENV_MAP: spec}


def server_flags(spec: str | None) -> list[str]:
    """A ``native:`` pattern goes to SGLang as its own schedule key."""
    if spec and spec.startswith(NATIVE):
        return ["--json-model-override-args", json.dumps({"index_topk_pattern": spec[len(NATIVE):]})]
    return []


def run(args: Options) -> dict:
    args.out.mkdir(parents=True, exist_ok=True)
    measured = {}
    if args.url:
        url = require_loopback(args.url)
        measured["server"] = asyncio.run(
            measure(url, args.lengths, args.decode_lengths, args.decode_tokens, args.repeats, args.seed)
        )
    else:
        if not args.model or not args.map:
            raise SystemExit("error: give --model and at least one --map, or --url")
        launch = args.server_args.split() + (["--load-format", args.load_format] if args.load_format else [])
        for spec in args.map:
            name, _, map_ = spec.partition("=")
            with Server(name, args.model, args.port, [*launch, *server_flags(map_)], env=server_env(map_),
                        logdir=args.out, sglang=args.sglang) as server:
                measured[name] = asyncio.run(measure(server.url, args.lengths, args.decode_lengths,
                                                    args.decode_tokens, args.repeats, args.seed))
    speedups = ratios(measured, next(iter(measured)))
    report = {
        "results": measured,
        "speedup_vs_baseline": speedups,
        "baseline": next(iter(measured)),
        "maps": args.map,
        "gpu": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }
    results.write(args.out / "bench.json", WHAT, args, report)
    plot(measured, speedups, args.out / "bench.png")
    print_table(measured, speedups)
    return report
