"""Streaming reduction of captured top-k into pairwise overlap, split by how deep in the context a query is."""

from __future__ import annotations

import torch

from ..kernels.overlap_result import PairwiseOverlap


def depth_edges(index_topk: int, max_position: int) -> list[int]:
    """Bucket edges over query positions: ``[0, k)`` (a query that sees at most ``k`` keys keeps them all, so
    every layer agrees trivially), then doublings ``[k, 2k)``, ``[2k, 4k)``, ... past ``max_position``."""
    edges = [0, index_topk]
    while edges[-1] <= max_position:
        edges.append(edges[-1] * 2)
    return edges


def overlap_of(topk: torch.Tensor, num_tokens: int, buckets: torch.Tensor, num_buckets: int,
               backend: str = "auto") -> PairwiseOverlap:
    """The Triton kernel on a GPU, the torch reference elsewhere (or as asked: ``triton`` / ``torch``)."""
    if backend == "auto":
        backend = "triton" if topk.is_cuda else "torch"
    if backend == "triton":
        from ..kernels.topk_overlap import topk_overlap

        return topk_overlap(topk, num_tokens, buckets, num_buckets)
    from ..kernels.naive import topk_overlap_naive

    return topk_overlap_naive(topk, num_tokens, buckets, num_buckets)


class OverlapAccumulator:
    """Adds up the overlap of one captured sequence after another (each ``[layers, positions, k]``)."""

    def __init__(self, layers: list[int], index_topk: int, max_position: int, backend: str = "auto") -> None:
        self.layers, self.index_topk, self.backend = list(layers), index_topk, backend
        self.edges = depth_edges(index_topk, max_position)
        self.result: PairwiseOverlap | None = None
        self.positions: list[torch.Tensor] = []
        self.sequences = 0

    @property
    def num_buckets(self) -> int:
        return len(self.edges) - 1

    def bucket_of(self, positions: torch.Tensor) -> torch.Tensor:
        edges = torch.tensor(self.edges[1:-1], dtype=torch.long)
        return torch.bucketize(positions.long().cpu(), edges, right=True).to(torch.int32)

    def add(self, topk: torch.Tensor, positions: torch.Tensor | None = None, num_tokens: int | None = None) -> None:
        """One sequence's capture; ``positions``: each row's query position (default ``0 .. n-1``)."""
        if topk.shape[0] != len(self.layers):
            raise ValueError(f"capture has {topk.shape[0]} layers, expected {len(self.layers)}")
        if positions is None:
            positions = torch.arange(topk.shape[1])
        if positions.numel() and int(positions.max()) >= self.edges[-1]:
            raise ValueError(f"position {int(positions.max())} is past the last depth bucket ({self.edges[-1]})")
        if self.backend == "auto" and not topk.is_cuda and torch.cuda.is_available():
            topk = topk.cuda()  # the kernel, not the reference, for captures read from disk
        buckets = self.bucket_of(positions).to(topk.device)
        part = overlap_of(topk, num_tokens, buckets, self.num_buckets, self.backend)
        part = _to_cpu(part)
        self.result = part if self.result is None else self.result.merge(part)
        self.positions.append(positions.long().cpu())
        self.sequences += 1

    def all_positions(self) -> torch.Tensor:
        return torch.cat(self.positions) if self.positions else torch.zeros(0, dtype=torch.long)

    def bucket_range(self, bucket: int) -> tuple[int, int]:
        return self.edges[bucket], self.edges[bucket + 1]


def _to_cpu(part: PairwiseOverlap) -> PairwiseOverlap:
    return PairwiseOverlap(part.ratio_sum.cpu(), part.pair_count.cpu(), part.sizes.cpu(), part.adjacent.cpu())
