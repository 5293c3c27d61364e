"""Time the Triton top-k overlap kernel against the pure-torch reference on one GPU.

The input a 200K-token prefill of a 61-layer model produces (200K positions x 61 layers x 2048 indices) is
100 GB as int32, so it is generated on the GPU a chunk of positions at a time and reduced chunk by chunk; only
the overlap calls are timed. Rows are causal (position p sees p + 1 tokens, so the first 2048 are short) and
each layer's row is a shifted window of a scattering permutation of the visible tokens, so neighbouring
layers overlap strongly and far ones less, with no two rows in the same order. Kernel and reference are timed
side by side on the same deepest positions (each sees ~200K tokens) and their results compared exactly; the
kernel alone then runs every position. ``scripts/bench_overlap.py`` is its command line.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..kernels.naive import topk_overlap_naive
from ..kernels.topk_overlap import finish, launch
from . import results as results_file

WHAT = "bench_overlap: the Triton top-k overlap kernel against the torch reference"


@dataclass
class Options:
    out: Path
    layers: list[int] = field(default_factory=lambda: [61, 78])
    positions: int = 200_000
    k: int = 2048
    chunk: int = 4096
    ref_positions: int = 512
    ref_chunk: int = 16
    blocks: list[int] = field(default_factory=lambda: [64, 128])
    warps: list[int] = field(default_factory=lambda: [4, 8])
    programs_per_sm: list[int] = field(default_factory=lambda: [4])
    max_seconds: float = 60.0


def coprime_steps(visible: torch.Tensor) -> torch.Tensor:
    """Per position a step near 0.618 x visible and coprime to it, so ``e -> e * step mod visible`` is a
    permutation that scatters neighbouring entries far apart (as top-k rows are: no locality)."""
    step = (visible.double() * 0.6180339887).long().clamp(min=1)
    for _ in range(64):
        step = torch.where(torch.gcd(step, visible) == 1, step, step + 1)
    return step


def generate(start: int, count: int, layers: int, k: int, device: str = "cuda") -> torch.Tensor:
    """``[layers, count, k]`` int32 rows for positions ``start .. start + count - 1``."""
    q = torch.arange(start, start + count, device=device, dtype=torch.int64)
    visible = q + 1
    shift = torch.tensor([37 * layer + 400 * (layer // 8) for layer in range(layers)], device=device)
    offset = (q * 2_654_435_761) % visible
    e = torch.arange(k, device=device)
    step = coprime_steps(visible)
    window = e[None, None, :] + shift[:, None, None]
    rows = (offset[None, :, None] + window * step[None, :, None]) % visible[None, :, None]
    rows = torch.where(e[None, None, :] < visible[None, :, None], rows, -1)
    return rows.to(torch.int32)


def timed(fn, repeats: int = 1) -> tuple[float, object]:
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        out = fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats, out


def kernel_call(topk, num_tokens, block, warps, programs):
    def run():
        buckets = torch.zeros(topk.shape[1], dtype=torch.int32, device=topk.device)
        lower = torch.zeros(1, topk.shape[0], topk.shape[0], dtype=torch.float64, device=topk.device)
        sizes = torch.empty(topk.shape[1], topk.shape[0], dtype=torch.int32, device=topk.device)
        adjacent = torch.empty(topk.shape[1], topk.shape[0] - 1, device=topk.device)
        launch(topk, buckets, num_tokens, lower, sizes, adjacent, block=block, num_warps=warps, programs=programs)
        return finish(lower, sizes, adjacent, buckets, 1)

    return run


def same(a, b) -> bool:
    return (torch.equal(a.sizes, b.sizes) and torch.equal(a.pair_count, b.pair_count)
            and torch.allclose(a.ratio_sum, b.ratio_sum, rtol=0, atol=1e-6)
            and torch.allclose(a.adjacent, b.adjacent, rtol=0, atol=1e-5, equal_nan=True))


def bench_layers(layers: int, args, sms: int, configs: list[tuple[int, int, int]]) -> dict:
    total, k = args.positions, args.k
    deep = generate(total - args.ref_positions, args.ref_positions, layers, k)
    tuning = []
    for block, warps, per_sm in configs:
        run = kernel_call(deep, total, block, warps, per_sm * sms)
        run()  # compile
        seconds, _ = timed(run, 2)
        tuning.append({"block": block, "warps": warps, "programs_per_sm": per_sm, "seconds": seconds})
        print(f"  L={layers} block={block} warps={warps} programs/SM={per_sm}: "
              f"{seconds * 1e6 / args.ref_positions:.1f} us/position", flush=True)
    best = min(tuning, key=lambda t: t["seconds"])
    run = kernel_call(deep, total, best["block"], best["warps"], best["programs_per_sm"] * sms)
    kernel_s, got = timed(run, 3)
    topk_overlap_naive(deep[:, :2], total)  # warm-up
    ref_s, want = timed(functools.partial(topk_overlap_naive, deep, total, chunk=args.ref_chunk))
    equal = same(got, want)
    del deep
    # Every position, a chunk at a time; only the overlap calls are timed. If the side-by-side timing says that
    # would take longer than --max-seconds, run the deepest positions that fit instead (and say so).
    run_positions = min(total, int(args.max_seconds / (kernel_s / args.ref_positions)))
    run_s, gen_s, sums = 0.0, 0.0, None
    for start in range(total - run_positions, total, args.chunk):
        count = min(args.chunk, total - start)
        g, topk = timed(functools.partial(generate, start, count, layers, k))
        s, part = timed(kernel_call(topk, total, best["block"], best["warps"], best["programs_per_sm"] * sms))
        gen_s, run_s = gen_s + g, run_s + s
        sums = part.ratio_sum[0] if sums is None else sums + part.ratio_sum[0]
        del topk
    adjacent = (sums.diagonal(-1) / run_positions).mean().item()
    per_pos_ref = ref_s / args.ref_positions
    return {
        "layers": layers, "positions": total, "k": k, "input_gb_int32": layers * total * k * 4 / 1e9,
        "tuning": tuning, "best": best,
        "side_by_side": {"positions": args.ref_positions, "num_tokens": total, "kernel_s": kernel_s,
                         "reference_s": ref_s, "ratio": ref_s / kernel_s, "equal": equal},
        "all_positions": {"positions_run": run_positions, "kernel_s": run_s, "generation_s": gen_s,
                          "chunks": -(-run_positions // args.chunk),
                          "reference_s_extrapolated": per_pos_ref * run_positions,
                          "mean_adjacent_overlap": adjacent},
    }


def run(args: Options) -> None:
    if not torch.cuda.is_available():
        raise SystemExit("error: bench_overlap.py needs a CUDA GPU")
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    configs = [(b, w, p) for b in args.blocks for w in args.warps for p in args.programs_per_sm]
    rows = []
    for layers in args.layers:  # tuned on the first layer count; the others run its best configuration
        rows.append(bench_layers(layers, args, sms, configs))
        best = rows[-1]["best"]
        configs = [(best["block"], best["warps"], best["programs_per_sm"])]
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "results": rows}
    results_file.write(args.out / "bench_overlap.json", WHAT, args, report)
    print(f"\n{report['gpu']}, k = {args.k}")
    print("| layers | positions | side by side: reference | kernel | ratio | equal | "
          "all positions: kernel | reference (extrapolated) | best config |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        s, a, b = r["side_by_side"], r["all_positions"], r["best"]
        print(
            f"| {r['layers']} | {s['positions']} of {r['positions']} | {s['reference_s']:.3f} s | "
            f"{s['kernel_s']:.4f} s | {s['ratio']:.1f}x | {s['equal']} | {a['kernel_s']:.2f} s "
            f"({a['positions_run']} x {r['k']}, {r['input_gb_int32'] * a['positions_run'] / r['positions']:.0f} GB) | "
            f"{a['reference_s_extrapolated']:.0f} s | "
            f"block {b['block']}, {b['warps']} warps, {b['programs_per_sm']}/SM |"
        )
