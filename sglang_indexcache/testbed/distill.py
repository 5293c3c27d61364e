"""DSA's indexer objective, layer by layer and blockwise: KL from the layer's head-averaged attention to the
indexer's distribution, over every visible key (dense warm-up) or over the selected set only (sparse stage).

The base model is frozen, so each layer's loss depends on its own indexer alone: the caller can backward one
layer at a time, and only one layer's ``[block, seq]`` score graphs are alive at once.
"""

from __future__ import annotations

import torch

from ..inprocess.protocol import LayerState
from .attention import allowed_keys, attend_block, blocks
from .indexer import index_scores, indexer_topk
from .retrofit import RetrofitDSA

MASKED = -1e9  # finite, so that 0 * log q stays 0 on keys outside the row's set


def kl_terms(p: torch.Tensor, scores: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Summed ``KL(p || softmax(scores))`` of every row of a block, each over its ``allowed`` keys."""
    logq = torch.where(allowed, scores, MASKED).log_softmax(-1)
    logp = p.clamp_min(1e-30).log()
    return torch.where(allowed, p * (logp - logq), 0.0).sum()


def layer_kl(model: RetrofitDSA, index: int, state: LayerState, sparse: bool) -> tuple[torch.Tensor, LayerState]:
    """Layer ``index``'s indexer loss (mean over query rows) and the state after the layer.

    Dense warm-up (``sparse=False``): the layer attends densely and the target is its whole attention row.
    Sparse stage: the layer attends through its indexer's own top-k, and both distributions are renormalised
    over that set. The indexer's input is detached either way, so no gradient reaches the base model.
    """
    with torch.no_grad():
        a = model.attention_inputs(index, state)
    indexer = model.indexers[index]
    positions = state.extra.ids
    inputs = indexer.project(a.x.detach().to(indexer.wq.weight.dtype), positions)
    topk = None
    if sparse:
        with torch.no_grad():
            topk = indexer_topk(inputs, model.index_topk, model.block)
    total = torch.zeros((), device=a.x.device)
    outs = []
    for start, stop in blocks(a.q.shape[2], model.block):
        allowed = allowed_keys(topk, start, stop, a.q.device)
        with torch.no_grad():
            out, p = attend_block(a.q[:, :, start:stop], a.k[:, :, :stop], a.v[:, :, :stop], allowed, a.scale, True)
        outs.append(out)
        total = total + kl_terms(p, index_scores(inputs, start, stop)[..., :stop], allowed)
    loss = total / (a.q.shape[0] * a.q.shape[2])
    with torch.no_grad():
        after = model.finish(index, state, torch.cat(outs, dim=2).to(a.v.dtype), topk)
    return loss, after
