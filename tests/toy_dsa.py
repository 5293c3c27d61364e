"""A tiny hand-written :class:`LayerwiseDSA`: one-head causal attention over the top-k keys its own indexer
picks, residual, and an unembedding. Cheap enough to search many maps per test; ``gain[l] = 0`` makes layer
``l`` add nothing to the residual stream."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sglang_indexcache.inprocess.protocol import LayerState


class ToyDSA:
    def __init__(self, num_layers: int = 10, vocab: int = 50, dim: int = 16, index_topk: int = 3, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.num_layers, self.index_topk, self.vocab = num_layers, index_topk, vocab

        def rand(*shape, std=1.0):
            return torch.randn(*shape, generator=g) * std

        self.emb = rand(vocab, dim)
        self.wq, self.wk = rand(num_layers, dim, dim, std=dim ** -0.5), rand(num_layers, dim, dim, std=dim ** -0.5)
        self.wv, self.wo = rand(num_layers, dim, dim, std=dim ** -0.5), rand(num_layers, dim, dim, std=dim ** -0.5)
        self.gain = torch.ones(num_layers)
        self.unembed = rand(dim, vocab, std=dim ** -0.5) * 3

    def embed(self, input_ids):
        return LayerState(self.emb[input_ids], None, None)

    def layer(self, index, state, full):
        h = state.hidden
        seq = h.shape[1]
        causal = torch.ones(seq, seq, dtype=torch.bool).tril()
        if full:
            scores = (h @ self.wq[index]) @ (h @ self.wk[index]).transpose(1, 2)
            topk = scores.masked_fill(~causal, float("-inf")).topk(min(self.index_topk, seq), dim=-1).indices
        else:
            topk = state.topk
        chosen = torch.zeros(h.shape[0], seq, seq, dtype=torch.bool).scatter(-1, topk, True) & causal
        logits = (h @ self.wv[index]) @ h.transpose(1, 2) / h.shape[-1] ** 0.5
        attn = torch.softmax(logits.masked_fill(~chosen, float("-inf")), dim=-1)
        return LayerState(h + self.gain[index] * (attn @ h) @ self.wo[index], topk, None)

    def token_losses(self, state, input_ids):
        logits = F.layer_norm(state.hidden, state.hidden.shape[-1:]) @ self.unembed
        return F.cross_entropy(logits[:, :-1].transpose(1, 2), input_ids[:, 1:], reduction="none")
