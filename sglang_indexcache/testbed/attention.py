"""Main attention restricted to a selected key set, computed a block of queries at a time.

The selection is applied as a mask on the selected keys (never as a correction of the dense result), so a
Shared layer attending through another layer's top-k behaves as SGLang's sparse MLA does. Only
``[heads, block, seq]`` scores exist at once, never ``[heads, seq, seq]`` for the whole batch.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F

from .indexer import causal_block_mask


def blocks(seq: int, block: int) -> Iterator[tuple[int, int]]:
    for start in range(0, seq, block):
        yield start, min(start + block, seq)


def selection_mask(topk: torch.Tensor, keys: int) -> torch.Tensor:
    """``[batch, rows, keys]`` bool from top-k rows ``[batch, rows, k]`` (``-1`` entries select nothing)."""
    idx = torch.where(topk >= 0, topk, keys).long()
    mask = torch.zeros(*topk.shape[:-1], keys + 1, dtype=torch.bool, device=topk.device)
    return mask.scatter_(-1, idx.clamp(max=keys), True)[..., :keys]


def allowed_keys(topk: torch.Tensor | None, start: int, stop: int, device: torch.device) -> torch.Tensor:
    """Keys ``0..stop-1`` that queries ``start..stop-1`` attend: causal, and within ``topk`` when given."""
    causal = causal_block_mask(start, stop, stop, device)
    if topk is None:
        return causal[None]
    return selection_mask(topk[:, start:stop], stop) & causal


def attend_block(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor, scale: float, probs: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One block of queries ``q [batch, heads, rows, d]`` over keys ``k, v [batch, kv_heads, keys, d]``.

    Returns the output ``[batch, heads, rows, d]`` and, with ``probs``, the head-averaged attention distribution
    ``[batch, rows, keys]`` (DSA's indexer target), in float32.
    """
    groups = q.shape[1] // k.shape[1]
    if not probs:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed[:, None], scale=scale, enable_gqa=groups > 1)
        return out, None
    k = k.repeat_interleave(groups, dim=1)
    v = v.repeat_interleave(groups, dim=1)
    scores = torch.matmul(q, k.transpose(-1, -2)).float() * scale
    p = scores.masked_fill(~allowed[:, None], float("-inf")).softmax(dim=-1)
    return torch.matmul(p.to(v.dtype), v), p.mean(dim=1)


def blockwise_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, topk: torch.Tensor | None, scale: float, block: int
) -> torch.Tensor:
    """Causal attention of ``q [batch, heads, seq, d]``, restricted to ``topk [batch, seq, k]`` unless ``None``."""
    seq = q.shape[2]
    if topk is None and q.device.type != "cpu":
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=q.shape[1] != k.shape[1])
    out = []
    for start, stop in blocks(seq, block):
        allowed = allowed_keys(topk, start, stop, q.device)
        out.append(attend_block(q[:, :, start:stop], k[:, :, :stop], v[:, :, :stop], allowed, scale)[0])
    return torch.cat(out, dim=2)
