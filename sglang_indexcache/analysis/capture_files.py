"""The files a server in capture mode writes for each flagged request, and how they are read back.

A request is flagged by its ``rid``: ``indexcache-capture-...``. Each prefill forward that holds one writes one
file per flagged request (``<dir>/<rid>/chunk-*.pt``) with the top-k of every layer that ran its indexer, the
query positions of the rows, and whether a size bound cut it short. The indices are those SGLang's sparse
attention reads (KV-cache slots or offsets into the batch, depending on the backend), the same labels for
every layer of one query, so overlaps are those of token positions; the reader relabels them compactly.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from ..names import CAPTURE_RID_PREFIX

DEFAULT_MAX_TOKENS = 65536
DEFAULT_MAX_BYTES = 8 << 30
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def is_flagged(rid) -> bool:
    return isinstance(rid, str) and rid.startswith(CAPTURE_RID_PREFIX)


def request_dir(root: Path, rid: str) -> Path:
    """One folder per request; the rid is reduced to a safe file name (it comes from the client)."""
    return Path(root) / _UNSAFE.sub("_", rid)[:200]


def write_chunk(root: Path, rid: str, layers: list[int], topk: torch.Tensor, positions: torch.Tensor,
                truncated: bool) -> Path:
    """``topk`` ``[layers, rows, k]`` and ``positions`` ``[rows]`` of one forward; written whole or not at all."""
    folder = request_dir(root, rid)
    folder.mkdir(parents=True, exist_ok=True)
    name = f"chunk-{int(positions[0]) if len(positions) else 0:09d}-{layers[0]:03d}-{os.getpid()}"
    tmp = folder / f".{name}.tmp"
    torch.save({"rid": rid, "layers": list(layers), "topk": topk.to(torch.int32).cpu(),
                "positions": positions.to(torch.int64).cpu(), "truncated": bool(truncated)}, tmp)
    path = folder / f"{name}.pt"
    os.replace(tmp, path)
    return path


def read_capture(root: Path, rid: str) -> dict | None:
    """``{"layers", "topk" [layers, positions, k] relabelled to 0..n-1, "num_tokens", "positions",
    "truncated"}`` for one request, or ``None`` if the server wrote nothing for it."""
    chunks = sorted(request_dir(root, rid).glob("chunk-*.pt"))
    if not chunks:
        return None
    rows: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}
    truncated = False
    for path in chunks:
        chunk = torch.load(path, weights_only=True)
        truncated |= chunk["truncated"]
        for i, layer in enumerate(chunk["layers"]):
            rows.setdefault(layer, []).append((chunk["positions"], chunk["topk"][i]))
    layers = sorted(rows)
    per_layer, positions = [], None
    for layer in layers:
        pos = torch.cat([p for p, _ in rows[layer]])
        order = torch.argsort(pos, stable=True)
        pos = pos[order]
        if positions is None:
            positions = pos
        elif not torch.equal(pos, positions):
            raise ValueError(f"{request_dir(root, rid)}: layer {layer} covers other positions than layer {layers[0]}")
        per_layer.append(torch.cat([t for _, t in rows[layer]])[order])
    topk, num_tokens = relabel(torch.stack(per_layer))
    return {"layers": layers, "topk": topk, "num_tokens": num_tokens, "positions": positions, "truncated": truncated}


def relabel(topk: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Indices mapped onto ``0 .. n-1`` (``-1`` kept): the same token keeps one label, so overlaps are unchanged."""
    valid = topk >= 0
    labels, inverse = torch.unique(topk[valid], return_inverse=True)
    out = torch.full_like(topk, -1, dtype=torch.int32)
    out[valid] = inverse.to(torch.int32)
    return out, int(labels.numel())
