"""Pure-torch references that materialise the whole ``[heads, seq, seq]`` problem: for tests on small inputs."""

from __future__ import annotations

import torch

from .indexer import IndexerInputs


def causal_mask(seq: int, device: torch.device) -> torch.Tensor:
    return torch.ones(seq, seq, dtype=torch.bool, device=device).tril()


def topk_mask(topk: torch.Tensor, seq: int) -> torch.Tensor:
    """``[batch, seq, seq]`` bool from ``topk [batch, seq, k]`` by a loop over entries (``-1`` skipped)."""
    b, n, _ = topk.shape
    mask = torch.zeros(b, n, seq, dtype=torch.bool, device=topk.device)
    for bi in range(b):
        for t in range(n):
            for j in topk[bi, t].tolist():
                if j >= 0:
                    mask[bi, t, j] = True
    return mask


def attention(q, k, v, topk, scale):
    """Attention of ``q [b, h, n, d]`` over ``k, v [b, kvh, n, d]``, causal and restricted to ``topk``
    (``None``: dense). Returns the output and the head-averaged probabilities ``[b, n, n]``."""
    n = q.shape[2]
    groups = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(groups, 1), v.repeat_interleave(groups, 1)
    allowed = causal_mask(n, q.device)[None]
    if topk is not None:
        allowed = allowed & topk_mask(topk, n)
    scores = (q.float() @ k.float().transpose(-1, -2)) * scale
    p = scores.masked_fill(~allowed[:, None], float("-inf")).softmax(-1)
    return (p @ v.float()).to(q.dtype), p.mean(1)


def index_scores(inputs: IndexerInputs) -> torch.Tensor:
    """``I[b, t, s] = sum_h w[b, t, h] relu(q[b, h, t] . k[b, s])`` with ``-inf`` above the diagonal."""
    n = inputs.k.shape[1]
    scores = torch.zeros(inputs.k.shape[0], n, n)
    for h in range(inputs.q.shape[1]):
        scores += inputs.w[:, :, h, None].float() * (inputs.q[:, h].float() @ inputs.k.float().transpose(-1, -2)).relu()
    return scores.masked_fill(~causal_mask(n, scores.device), float("-inf"))


def kl_loss(p: torch.Tensor, scores: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Mean over query rows of ``KL(p || softmax(scores))`` over the ``allowed`` keys of each row."""
    logq = scores.masked_fill(~allowed, float("-inf")).log_softmax(-1)
    terms = torch.where(allowed & (p > 0), p * (p.clamp_min(1e-30).log() - logq), torch.zeros_like(p))
    return terms.sum(-1).mean()
