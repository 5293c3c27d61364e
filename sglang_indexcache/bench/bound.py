"""What skipping indexers can buy at most, from the indexer's share of GPU time."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

# Kernels the DSA lightning indexer launches in SGLang (DeepGEMM MQA logits, top-k and its transforms,
# the fp8 quantisation, Hadamard rotation and index-key store); matched case-insensitively. The indexer's
# small projections (wq_b, wk, weights_proj) and k_norm run as generic GEMM/norm kernels that cannot be told
# apart by name; at V3.2's sizes they are a few percent of the indexer at 32K+ tokens, so the share (and the
# bound) is slightly low. bench_readme.py prints the top kernels with their attribution so this can be checked.
INDEXER_KERNELS = re.compile(
    r"mqa_logits|paged_mqa|fast_topk|topk_transform|act_quant|hadamard|index_k|store_index|indexer", re.I)


def amdahl_bound(share: float, kept: int, layers: int) -> float:
    """Best speed-up from keeping ``kept`` of ``layers`` indexers when they take ``share`` of the time."""
    if not 0 <= share <= 1 or not 0 < kept <= layers:
        raise ValueError(f"need 0 <= share <= 1 and 0 < kept <= layers, got {share}, {kept}, {layers}")
    return 1 / (1 - (1 - kept / layers) * share)


def kernel_times(trace_path: str | Path) -> dict[str, float]:
    """Total GPU time per kernel name (microseconds) from a PyTorch profiler Chrome trace (.json or .json.gz)."""
    path = Path(trace_path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as f:
        events = json.load(f)
    events = events.get("traceEvents", events) if isinstance(events, dict) else events
    totals: dict[str, float] = {}
    for e in events:
        if e.get("ph") == "X" and e.get("cat") == "kernel":
            totals[e["name"]] = totals.get(e["name"], 0.0) + float(e.get("dur", 0))
    return totals


def indexer_share(times: dict[str, float]) -> float:
    total = sum(times.values())
    if total == 0:
        raise ValueError("the trace holds no GPU kernels")
    return sum(t for name, t in times.items() if INDEXER_KERNELS.search(name)) / total
