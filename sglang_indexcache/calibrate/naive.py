"""The greedy search as the paper states it: every candidate map scored by a full forward from the embedding.

The reference the fast search (``search.greedy_search`` with ``TorchScorer``) is tested against: the same
removal order, the same losses, at every step.
"""

from __future__ import annotations

from collections.abc import Callable

from ..schedule import FULL
from .search import best, flip


def naive_search(loss: Callable[[str], float], num_layers: int, min_full: int) -> tuple[list[int], list[float], float]:
    """``(order, losses, base_loss)`` of flipping layers 1.. to Shared until ``min_full`` remain Full."""
    pattern = FULL * num_layers
    base = loss(pattern)
    order, losses = [], []
    while pattern.count(FULL) > min_full:
        scores = {l: loss(flip(pattern, l)) for l in range(1, num_layers) if pattern[l] == FULL}
        winner = best(scores)
        pattern = flip(pattern, winner)
        order.append(winner)
        losses.append(scores[winner])
    return order, losses, base
