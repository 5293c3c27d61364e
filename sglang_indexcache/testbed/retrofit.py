"""A pretrained Llama-family causal LM with a lightning indexer in every layer: a DSA model, run layer by layer.

The base model's weights are used as they are (frozen); each decoder layer gets a :class:`LightningIndexer`
whose top-k restricts that layer's attention. :class:`RetrofitDSA` implements
:class:`~sglang_indexcache.inprocess.LayerwiseDSA`, so every tool that takes a layer map runs on it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..inprocess.protocol import LayerState
from .attention import blockwise_attention
from .indexer import IndexerConfig, LightningIndexer, indexer_topk

# A selection override: (layer index, the layer's normed input, positions) -> top-k [batch, seq, k].
Selector = Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class Positions:
    """What every layer needs besides the residual stream: token positions and the base model's RoPE tables."""

    ids: torch.Tensor
    rope: tuple[torch.Tensor, torch.Tensor]


@dataclass
class AttentionInputs:
    x: torch.Tensor  # the layer's normed input [batch, seq, hidden]
    q: torch.Tensor  # [batch, heads, seq, head_dim], RoPE applied
    k: torch.Tensor  # [batch, kv_heads, seq, head_dim]
    v: torch.Tensor
    scale: float


def rotate_pair(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
    def rot(x):
        half = x.shape[-1] // 2
        return torch.cat([-x[..., half:], x[..., :half]], dim=-1)

    cos, sin = cos[:, None], sin[:, None]
    return q * cos + rot(q) * sin, k * cos + rot(k) * sin


class RetrofitDSA(nn.Module):
    """``lm``: a transformers Llama-family ``*ForCausalLM`` (``model.embed_tokens``, ``model.layers``,
    ``model.norm``, ``model.rotary_emb``, ``lm_head``). ``indexers``: one per decoder layer; new random ones
    of ``indexer_config`` when omitted."""

    def __init__(
        self,
        lm: nn.Module,
        index_topk: int,
        indexers: nn.ModuleList | None = None,
        indexer_config: IndexerConfig | None = None,
        block: int = 256,
    ):
        super().__init__()
        self.lm = lm.eval().requires_grad_(False)
        layers = lm.model.layers
        if indexers is None:
            config = indexer_config or IndexerConfig(hidden_size=lm.config.hidden_size)
            indexers = nn.ModuleList(LightningIndexer(config) for _ in layers)
        if len(indexers) != len(layers):
            raise ValueError(f"{len(indexers)} indexers for a model of {len(layers)} layers")
        self.indexers = indexers
        self.num_layers = len(layers)
        self.index_topk = index_topk
        self.block = block
        self.selector: Selector | None = None

    @property
    def device(self) -> torch.device:
        return self.lm.model.embed_tokens.weight.device

    def embed(self, input_ids: torch.Tensor) -> LayerState:
        hidden = self.lm.model.embed_tokens(input_ids)
        ids = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
        rope = self.lm.model.rotary_emb(hidden, ids)
        return LayerState(hidden=hidden, topk=None, extra=Positions(ids=ids, rope=rope))

    def attention_inputs(self, index: int, state: LayerState) -> AttentionInputs:
        attn = self.lm.model.layers[index].self_attn
        x = self.lm.model.layers[index].input_layernorm(state.hidden)
        b, n, _ = x.shape
        q = attn.q_proj(x).view(b, n, -1, attn.head_dim)
        k = attn.k_proj(x).view(b, n, -1, attn.head_dim)
        v = attn.v_proj(x).view(b, n, -1, attn.head_dim).transpose(1, 2)
        if hasattr(attn, "q_norm"):  # Qwen3-style per-head norms before RoPE
            q, k = attn.q_norm(q), attn.k_norm(k)
        q, k = rotate_pair(q.transpose(1, 2), k.transpose(1, 2), *state.extra.rope)
        return AttentionInputs(x=x, q=q, k=k, v=v, scale=attn.scaling)

    def select(self, index: int, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Layer ``index``'s own top-k from its normed input (or the installed :attr:`selector`'s)."""
        if self.selector is not None:
            return self.selector(index, x, positions)
        indexer = self.indexers[index]
        dtype = indexer.wq.weight.dtype
        return indexer_topk(indexer.project(x.to(dtype), positions), self.index_topk, self.block)

    def finish(self, index: int, state: LayerState, attn_out: torch.Tensor, topk: torch.Tensor | None) -> LayerState:
        """Output projection, residual and MLP after attention ``attn_out [batch, heads, seq, head_dim]``."""
        layer = self.lm.model.layers[index]
        b, _, n, _ = attn_out.shape
        hidden = state.hidden + layer.self_attn.o_proj(attn_out.transpose(1, 2).reshape(b, n, -1))
        hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
        return LayerState(hidden=hidden, topk=topk, extra=state.extra)

    def layer(self, index: int, state: LayerState, full: bool) -> LayerState:
        a = self.attention_inputs(index, state)
        topk = self.select(index, a.x, state.extra.ids) if full else state.topk
        if topk is None:
            raise ValueError(f"layer {index} is Shared but no earlier Full layer produced a top-k")
        return self.finish(index, state, blockwise_attention(a.q, a.k, a.v, topk, a.scale, self.block), topk)

    def dense_layer(self, index: int, state: LayerState) -> LayerState:
        """Layer ``index`` of the base model: full causal attention, no indexer (``state.topk`` passes through)."""
        a = self.attention_inputs(index, state)
        return self.finish(index, state, blockwise_attention(a.q, a.k, a.v, None, a.scale, self.block), state.topk)

    def token_losses(self, state: LayerState, input_ids: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
        hidden = self.lm.model.norm(state.hidden)[:, :-1]
        targets = input_ids[:, 1:]
        out = []
        for s in range(0, targets.shape[1], chunk):
            logits = self.lm.lm_head(hidden[:, s : s + chunk]).float()
            out.append(F.cross_entropy(logits.transpose(1, 2), targets[:, s : s + chunk], reduction="none"))
        return torch.cat(out, dim=1)


@torch.no_grad()
def dense_token_losses(model: RetrofitDSA, input_ids: torch.Tensor) -> torch.Tensor:
    """Per-position loss of the base model (every layer dense), ``[batch, seq - 1]``."""
    state = model.embed(input_ids)
    for index in range(model.num_layers):
        state = model.dense_layer(index, state)
    return model.token_losses(state, input_ids)
