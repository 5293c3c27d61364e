"""A toy LayerwiseDSA whose layers select by slowly drifting random scores: neighbours agree, far layers less."""

from __future__ import annotations

import torch

from sglang_indexcache.inprocess.protocol import LayerState


class DriftingDSA:
    def __init__(self, num_layers: int = 6, index_topk: int = 4, vocab: int = 64, dim: int = 8, drift: float = 0.4,
                 seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.num_layers, self.index_topk = num_layers, index_topk
        self.embedding = torch.randn(vocab, dim, generator=g)
        base, projections = torch.randn(dim, dim, generator=g), []
        for _ in range(num_layers):
            projections.append(base)
            base = base + drift * torch.randn(dim, dim, generator=g)
        self.projections = projections
        self.device = torch.device("cpu")

    def embed(self, input_ids):
        return LayerState(hidden=self.embedding[input_ids])

    def layer(self, index, state, full):
        topk = state.topk
        if full:
            h = state.hidden
            scores = (h @ self.projections[index]) @ h.transpose(1, 2)
            seq = h.shape[1]
            causal = torch.ones(seq, seq, dtype=torch.bool).tril()
            scores = scores.masked_fill(~causal, float("-inf"))
            k = min(self.index_topk, seq)
            values, topk = scores.topk(k, dim=-1)
            topk = torch.where(values.isinf(), -1, topk)
            if k < self.index_topk:
                topk = torch.nn.functional.pad(topk, (0, self.index_topk - k), value=-1)
        return LayerState(hidden=state.hidden + 0.1 * torch.tanh(state.hidden), topk=topk)

    def token_losses(self, state, input_ids):
        return torch.zeros(input_ids.shape[0], input_ids.shape[1] - 1)


def make():
    return DriftingDSA()


def make_78():
    return DriftingDSA(num_layers=78, index_topk=4, drift=0.15)
