"""Pure-torch reference for the pairwise top-k overlap (``topk_overlap.py`` is the Triton kernel).

Each position's rows become one-hot rows over the token axis and one batched matrix product gives every
intersection at once. Simple and exact, but it writes ``L x num_tokens`` values per position, so it is slow for
long sequences: it is the reference the kernel is tested and timed against.
"""

from __future__ import annotations

import torch

from .overlap_result import PairwiseOverlap, check_inputs, pair_counts


@torch.no_grad()
def topk_overlap_naive(topk: torch.Tensor, num_tokens: int | None = None, buckets: torch.Tensor | None = None,
                       num_buckets: int = 1, chunk: int = 16) -> PairwiseOverlap:
    """See :func:`sglang_indexcache.kernels.topk_overlap.topk_overlap`; same arguments and result."""
    buckets = check_inputs(topk, buckets, num_buckets)
    layers, positions, _ = topk.shape
    if num_tokens is None:
        num_tokens = int(topk.max()) + 1 if topk.numel() else 0
    ratio_sum = torch.zeros(num_buckets, layers, layers, dtype=torch.float64, device=topk.device)
    sizes, adjacent = [], []
    lower, upper = torch.arange(1, layers), torch.arange(layers - 1)
    for start in range(0, positions, chunk):
        rows = topk[:, start:start + chunk].transpose(0, 1).long()  # [c, L, k]
        valid = (rows >= 0) & (rows < num_tokens)
        onehot = torch.zeros(*rows.shape[:2], num_tokens + 1, device=topk.device)
        onehot.scatter_(2, torch.where(valid, rows, num_tokens), 1.0)  # repeats set the same one: sets
        onehot = onehot[..., :num_tokens]
        inter = onehot @ onehot.transpose(1, 2)
        n = inter.diagonal(dim1=1, dim2=2)
        denom = torch.minimum(n[:, :, None], n[:, None, :])
        ratio = torch.where(denom > 0, inter.double() / denom.clamp(min=1).double(), torch.nan)
        ratio_sum.index_add_(0, buckets[start:start + chunk].long(), ratio.nan_to_num(0.0))
        sizes.append(n.int())
        adjacent.append(ratio[:, lower, upper].float())
    sizes = torch.cat(sizes) if sizes else torch.zeros(0, layers, dtype=torch.int32, device=topk.device)
    adjacent = torch.cat(adjacent) if adjacent else torch.zeros(0, max(layers - 1, 0), device=topk.device)
    return PairwiseOverlap(ratio_sum, pair_counts(sizes, buckets, num_buckets), sizes, adjacent)
