"""DSA's lightning indexer, sized for a small dense model, with blockwise scoring and top-k selection.

Score of key ``s`` for query ``t``: ``I[t, s] = sum_h w[t, h] * ReLU(q[t, h] . k[s])`` with one shared key head
(MQA-style, LayerNorm on the key), RoPE on the first ``rope_dim`` dimensions of query and key (NeoX layout, as
DeepSeek-V3.2 fixed it), and per-token head weights scaled by ``(heads * head_dim) ** -0.5``. The FP8 and
Hadamard steps of the reference are storage/speed choices of the serving kernel and are left out.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class IndexerConfig:
    hidden_size: int
    heads: int = 4
    head_dim: int = 64
    rope_dim: int = 32
    rope_theta: float = 10000.0

    def to_dict(self) -> dict:
        return asdict(self)


def rope_tables(positions: torch.Tensor, dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin ``[batch, seq, dim]`` for NeoX-layout rotary embedding of ``dim`` dimensions."""
    inv_freq = 1.0 / theta ** (torch.arange(0, dim, 2, device=positions.device, dtype=torch.float32) / dim)
    angles = positions.float()[..., None] * inv_freq
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the first ``cos.shape[-1]`` dims of ``x`` (``[..., seq, d]``); the rest pass through."""
    dim = cos.shape[-1]
    rot, rest = x[..., :dim], x[..., dim:]
    half = dim // 2
    rotated = torch.cat([-rot[..., half:], rot[..., :half]], dim=-1)
    return torch.cat([rot * cos + rotated * sin, rest], dim=-1)


@dataclass
class IndexerInputs:
    """Per-token projections: ``q [batch, heads, seq, head_dim]``, ``k [batch, seq, head_dim]``,
    ``w [batch, seq, heads]``."""

    q: torch.Tensor
    k: torch.Tensor
    w: torch.Tensor


class LightningIndexer(nn.Module):
    def __init__(self, config: IndexerConfig):
        super().__init__()
        if config.rope_dim % 2 or config.rope_dim > config.head_dim:
            raise ValueError(f"rope_dim must be even and at most head_dim, got {config.rope_dim}/{config.head_dim}")
        self.config = config
        self.wq = nn.Linear(config.hidden_size, config.heads * config.head_dim, bias=False)
        self.wk = nn.Linear(config.hidden_size, config.head_dim, bias=False)
        self.k_norm = nn.LayerNorm(config.head_dim, eps=1e-6)
        self.weights_proj = nn.Linear(config.hidden_size, config.heads, bias=False)

    def project(self, x: torch.Tensor, positions: torch.Tensor) -> IndexerInputs:
        """``x``: the layer's normed input ``[batch, seq, hidden]``; ``positions`` ``[batch, seq]``."""
        c = self.config
        b, n, _ = x.shape
        cos, sin = rope_tables(positions, c.rope_dim, c.rope_theta)
        cos, sin = cos.to(x.dtype), sin.to(x.dtype)
        q = self.wq(x).view(b, n, c.heads, c.head_dim).transpose(1, 2)
        q = apply_rope(q, cos[:, None], sin[:, None])
        k = apply_rope(self.k_norm(self.wk(x)), cos, sin)
        w = self.weights_proj(x) * (c.heads * c.head_dim) ** -0.5
        return IndexerInputs(q=q, k=k, w=w)


def causal_block_mask(start: int, stop: int, seq: int, device: torch.device) -> torch.Tensor:
    """``[stop - start, seq]`` bool: query ``start + i`` may see key ``j`` iff ``j <= start + i``."""
    rows = torch.arange(start, stop, device=device)[:, None]
    return torch.arange(seq, device=device)[None, :] <= rows


def index_scores(inputs: IndexerInputs, start: int, stop: int) -> torch.Tensor:
    """Index scores of queries ``start..stop-1`` against every key, ``[batch, stop - start, seq]``, with
    ``-inf`` on keys a query may not see."""
    q = inputs.q[:, :, start:stop]
    logits = torch.einsum("bhqd,bkd->bhqk", q, inputs.k).relu()
    scores = torch.einsum("bhqk,bqh->bqk", logits, inputs.w[:, start:stop])
    visible = causal_block_mask(start, stop, inputs.k.shape[1], q.device)
    return scores.float().masked_fill(~visible, float("-inf"))


def select_topk(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Top-``k`` key indices per query row of ``scores`` ``[batch, rows, seq]``; ``-1`` where a row sees fewer."""
    kk = min(k, scores.shape[-1])
    values, idx = scores.topk(kk, dim=-1)
    idx = idx.masked_fill(values == float("-inf"), -1)
    if kk < k:
        idx = torch.cat([idx, idx.new_full((*idx.shape[:-1], k - kk), -1)], dim=-1)
    return idx


@torch.no_grad()
def indexer_topk(inputs: IndexerInputs, k: int, block: int) -> torch.Tensor:
    """Top-k of every query, computed ``block`` queries at a time: ``[batch, seq, k]``."""
    seq = inputs.k.shape[1]
    return torch.cat([select_topk(index_scores(inputs, s, min(s + block, seq)), k) for s in range(0, seq, block)], 1)


def random_topk(positions: torch.Tensor, k: int, block: int, generator: torch.Generator) -> torch.Tensor:
    """A uniformly random causal selection of ``k`` keys per query (the no-information baseline), with the
    same ``-1`` padding as :func:`indexer_topk`."""
    b, seq = positions.shape
    out = []
    for start in range(0, seq, block):
        stop = min(start + block, seq)
        noise = torch.rand(b, stop - start, seq, generator=generator, device=generator.device)
        visible = causal_block_mask(start, stop, seq, noise.device)
        out.append(select_topk(noise.masked_fill(~visible, float("-inf")), k))
    return torch.cat(out, dim=1).to(positions.device)
