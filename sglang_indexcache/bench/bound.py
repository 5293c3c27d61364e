"""What skipping indexers can buy at most, from the indexer's share of GPU time."""

from __future__ import annotations

import bisect
import gzip
import json
import re
from collections import defaultdict
from pathlib import Path

from sglang_indexcache.names import PROFILER_RANGE

# Kernels recognisable as the lightning indexer's by name alone (DeepGEMM MQA logits, top-k, fp8 quantisation,
# Hadamard rotation, index-key store). Its projections (wq_b, wk, weights_proj), k-norm and RoPE run as generic
# kernels, so a share by name is a lower bound; it is reported beside the share by profiler range for comparison.
INDEXER_KERNELS = re.compile(
    r"mqa_logits|paged_mqa|fast_topk|topk_transform|act_quant|hadamard|index_k|store_index|indexer", re.I)

_LAUNCH_CATEGORIES = ("cuda_runtime", "cuda_driver")


def amdahl_bound(share: float, kept: int, layers: int) -> float:
    """Best speed-up from keeping ``kept`` of ``layers`` indexers when they take ``share`` of the time."""
    if not 0 <= share <= 1 or not 0 < kept <= layers:
        raise ValueError(f"need 0 <= share <= 1 and 0 < kept <= layers, got {share}, {kept}, {layers}")
    return 1 / (1 - (1 - kept / layers) * share)


def load_trace(trace_path: str | Path) -> list[dict]:
    """The events of a PyTorch profiler Chrome trace (.json or .json.gz)."""
    path = Path(trace_path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as f:
        events = json.load(f)
    return events.get("traceEvents", []) if isinstance(events, dict) else events


def kernel_times(events: list[dict]) -> dict[str, float]:
    """Total GPU time per kernel name (microseconds)."""
    totals: dict[str, float] = defaultdict(float)
    for e in events:
        if e.get("ph") == "X" and e.get("cat") == "kernel":
            totals[e["name"]] += float(e.get("dur", 0))
    return dict(totals)


def range_kernel_times(events: list[dict], range_name: str = PROFILER_RANGE) -> dict[str, float]:
    """GPU time per kernel name of the kernels launched while the CPU thread was inside ``range_name``.

    A kernel belongs to the range when its launch call (runtime or driver API, matched by correlation id) lies
    within one of the range's spans on the same thread. Kernels replayed from a CUDA graph were launched at
    capture, outside any span, so profile eager forwards."""
    spans: dict[tuple, list[tuple[float, float]]] = defaultdict(list)
    for e in events:
        if e.get("ph") == "X" and e.get("name") == range_name and e.get("cat") == "user_annotation":
            spans[(e.get("pid"), e.get("tid"))].append((float(e["ts"]), float(e["ts"]) + float(e.get("dur", 0))))
    for thread in spans.values():
        thread.sort()
    inside: set = set()
    for e in events:
        thread = spans.get((e.get("pid"), e.get("tid")))
        if not thread or e.get("cat") not in _LAUNCH_CATEGORIES or "correlation" not in e.get("args", {}):
            continue
        i = bisect.bisect_right(thread, (float(e["ts"]), float("inf"))) - 1
        if i >= 0 and thread[i][0] <= float(e["ts"]) <= thread[i][1]:
            inside.add(e["args"]["correlation"])
    totals: dict[str, float] = defaultdict(float)
    for e in events:
        if e.get("ph") == "X" and e.get("cat") == "kernel" and e.get("args", {}).get("correlation") in inside:
            totals[e["name"]] += float(e.get("dur", 0))
    return dict(totals)


def indexer_share(events: list[dict]) -> dict:
    """The indexer's share of GPU kernel time: by profiler range (every kernel the indexer launched) and, for
    comparison, by kernel name. Raises if the trace holds no kernels or no indexer range (a trace of CUDA-graph
    replays, or of a server without an active map, cannot be attributed)."""
    times = kernel_times(events)
    total = sum(times.values())
    if total == 0:
        raise ValueError("the trace holds no GPU kernels")
    in_range = range_kernel_times(events)
    if not in_range:
        raise ValueError(f"no kernel was launched inside a {PROFILER_RANGE!r} range: profile an eager forward "
                         "(no CUDA graph) of a server with an active map, with CPU and GPU activities")
    return {
        "share": sum(in_range.values()) / total,
        "share_by_name": sum(t for name, t in times.items() if INDEXER_KERNELS.search(name)) / total,
        "total_us": total,
        # (name, all its time, the part launched by the indexer): generic kernels can be both
        "top_kernels": sorted(((name, t, in_range.get(name, 0.0)) for name, t in times.items()),
                              key=lambda k: -k[1])[:12],
    }
