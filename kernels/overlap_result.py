"""The result both overlap implementations return, and how chunks of positions combine."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class PairwiseOverlap:
    """Top-k overlap between every pair of layers, summed over query positions.

    The overlap of layers ``i`` and ``j`` at one position is ``|T_i ∩ T_j| / min(|T_i|, |T_j|)``, where ``T`` is
    the set of valid (non ``-1``) indices of a row. For full rows that is the ``|T_i ∩ T_j| / k`` of the paper;
    for rows shorter than ``k`` (a query that sees fewer than ``k`` keys) it is the share of the smaller set
    that the other also picked, so identical sets give 1 at every position. A pair is undefined (and left out
    of the sums) where either row is empty.

    ``ratio_sum``: ``[buckets, L, L]`` float64, the sum of the overlap over the positions of each bucket where
    the pair is defined; ``pair_count``: ``[buckets, L, L]`` int64, how many such positions;
    ``sizes``: ``[positions, L]`` int32, ``|T|`` per row; ``adjacent``: ``[positions, L - 1]`` float32, the
    overlap of layers ``i + 1`` and ``i`` at each position (NaN where undefined).
    """

    ratio_sum: torch.Tensor
    pair_count: torch.Tensor
    sizes: torch.Tensor
    adjacent: torch.Tensor

    @property
    def num_layers(self) -> int:
        return self.ratio_sum.shape[-1]

    def mean(self, bucket: int | None = None) -> torch.Tensor:
        """``[L, L]`` mean overlap over all positions (or one bucket's); NaN for pairs never defined."""
        s, c = (self.ratio_sum.sum(0), self.pair_count.sum(0)) if bucket is None else (
            self.ratio_sum[bucket], self.pair_count[bucket])
        return torch.where(c > 0, s / c.clamp(min=1), torch.nan)

    def merge(self, other: PairwiseOverlap) -> PairwiseOverlap:
        """Both chunks' positions, in order (sums add; per-position rows are concatenated)."""
        return PairwiseOverlap(
            self.ratio_sum + other.ratio_sum.to(self.ratio_sum.device),
            self.pair_count + other.pair_count.to(self.pair_count.device),
            torch.cat([self.sizes, other.sizes.to(self.sizes.device)]),
            torch.cat([self.adjacent, other.adjacent.to(self.adjacent.device)]),
        )


def check_inputs(topk: torch.Tensor, buckets: torch.Tensor | None, num_buckets: int) -> torch.Tensor:
    """Validate shapes; returns ``buckets`` as int32 ``[positions]`` (all zero when not given)."""
    if topk.dim() != 3:
        raise ValueError(f"topk must be [layers, positions, k], got shape {tuple(topk.shape)}")
    if topk.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"topk must hold integer token indices, got {topk.dtype}")
    positions = topk.shape[1]
    if buckets is None:
        return torch.zeros(positions, dtype=torch.int32, device=topk.device)
    if buckets.shape != (positions,):
        raise ValueError(f"buckets must be [positions] = [{positions}], got {tuple(buckets.shape)}")
    if positions and (int(buckets.min()) < 0 or int(buckets.max()) >= num_buckets):
        raise ValueError(f"buckets must lie in [0, {num_buckets})")
    return buckets.to(device=topk.device, dtype=torch.int32)


def pair_counts(sizes: torch.Tensor, buckets: torch.Tensor, num_buckets: int) -> torch.Tensor:
    """Per bucket, how many positions have both rows of a pair non-empty: ``[buckets, L, L]`` int64."""
    nonempty = (sizes > 0).double()
    onehot = torch.nn.functional.one_hot(buckets.long(), num_buckets).double()
    return torch.einsum("pb,pi,pj->bij", onehot, nonempty, nonempty).round().long()
