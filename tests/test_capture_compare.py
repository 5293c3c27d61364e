"""Comparing two captures: the distances are zero for a capture against itself and grow with the difference;
``labels_are_positions`` tells slot labels in token order from any other labelling."""

import torch

from sglang_indexcache.analysis.compare import labels_are_positions, overlap_distance, set_agreement
from sglang_indexcache.kernels.naive import topk_overlap_naive


def causal_topk(layers: int, positions: int, k: int, seed: int) -> torch.Tensor:
    """Each layer picks a random k of the keys each query sees (all of them when it sees fewer than k)."""
    g = torch.Generator().manual_seed(seed)
    out = torch.full((layers, positions, k), -1, dtype=torch.int64)
    for layer in range(layers):
        for p in range(positions):
            seen = torch.randperm(p + 1, generator=g)[:k]
            out[layer, p, : seen.numel()] = seen
    return out


def test_distance_is_zero_on_itself_and_positive_between_different_captures():
    a, b = causal_topk(4, 40, 8, 0), causal_topk(4, 40, 8, 1)
    same = overlap_distance(topk_overlap_naive(a, 40), topk_overlap_naive(a.clone(), 40))
    assert same == {"matrix_max_abs_diff": 0.0, "matrix_mean_abs_diff": 0.0, "adjacent_mean_abs_diff": 0.0}
    other = overlap_distance(topk_overlap_naive(a, 40), topk_overlap_naive(b, 40))
    assert other["adjacent_mean_abs_diff"] > 0.01 and other["matrix_max_abs_diff"] > 0


def test_labels_are_positions_only_for_token_order():
    topk = causal_topk(3, 30, 8, 2)
    assert labels_are_positions(topk)
    permuted = torch.randperm(30, generator=torch.Generator().manual_seed(3))
    relabelled = torch.where(topk >= 0, permuted[topk.clamp(min=0)], -1)
    assert not labels_are_positions(relabelled)


def test_set_agreement_per_layer():
    a = causal_topk(2, 30, 8, 4)
    b = a.clone()
    b[1] = causal_topk(1, 30, 8, 5)[0]
    same, other = set_agreement(a, b, 30)
    assert same == 1.0
    assert 0 < other < 1
