"""How far two captures of the same model and prompts are apart, label-free and (where it can tell) per set.

Overlaps do not depend on what the indices name, so two captures are compared on their layer x layer matrices
and per-position adjacent overlaps. A server's indices are KV-cache slots: only where its relabelled indices
provably are token positions (``labels_are_positions``) are the two captures' top-k sets compared directly.
"""

from __future__ import annotations

import torch

from ..kernels.overlap_result import PairwiseOverlap


def overlap_distance(a: PairwiseOverlap, b: PairwiseOverlap) -> dict[str, float]:
    """Max and mean |difference| of the mean-overlap matrices, and mean |difference| of the per-position
    adjacent overlaps (positions where both are defined)."""
    matrix = (a.mean() - b.mean()).abs()
    adjacent = (a.adjacent.to(b.adjacent.device) - b.adjacent).abs()
    return {"matrix_max_abs_diff": float(matrix.nan_to_num(0).max()),
            "matrix_mean_abs_diff": float(matrix.nanmean()),
            "adjacent_mean_abs_diff": float(adjacent.nanmean())}


def labels_are_positions(topk: torch.Tensor) -> bool:
    """True if every query that sees fewer keys than ``k`` selected exactly ``0 .. p`` in every layer: then the
    compact labels are the token positions (the cache slots were handed out in token order)."""
    _, positions, k = topk.shape
    short = min(positions, k)
    if short == 0:
        return False
    rank = torch.arange(k, device=topk.device)
    want = torch.where(rank <= torch.arange(short, device=topk.device)[:, None], rank, k)
    got = topk[:, :short].long()
    got = torch.where(got < 0, k, got).sort(dim=-1).values
    return bool((got == want).all())


def set_agreement(a: torch.Tensor, b: torch.Tensor, num_tokens: int) -> list[float]:
    """Per layer, the mean over positions of |A ∩ B| / |A| for two ``[layers, positions, k]`` captures that
    index the same tokens (positions where ``A`` is empty are left out)."""
    out = []
    for layer in range(a.shape[0]):
        hot_a = _one_hot(a[layer], num_tokens)
        hot_b = _one_hot(b[layer].to(a.device), num_tokens)
        size = hot_a.sum(-1)
        both = (hot_a & hot_b).sum(-1)
        keep = size > 0
        out.append(float((both[keep].double() / size[keep]).mean()))
    return out


def _one_hot(rows: torch.Tensor, num_tokens: int) -> torch.Tensor:
    hot = torch.zeros(rows.shape[0], num_tokens + 1, dtype=torch.bool, device=rows.device)
    idx = torch.where(rows < 0, num_tokens, rows).long()
    hot.scatter_(1, idx, True)
    return hot[:, :num_tokens]
