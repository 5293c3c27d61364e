"""Hugging Face transformers' ``GlmMoeDsaForCausalLM`` as a :class:`LayerwiseDSA`.

The model is built with every indexer (all Full), so one instance can be run under any map. A Shared layer
runs transformers' own shared path: its attention gets the previous layer's top-k as ``prev_topk_indices`` and
its indexer is not called, exactly what the same layer does in a model built with ``index_topk_pattern``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F

from ..names import SCHEDULE_KEYS
from .protocol import LayerState


class GlmMoeDsaLayerwise:
    """Runs a ``GlmMoeDsaForCausalLM`` (all of whose layers have an indexer) one decoder layer at a time."""

    def __init__(self, model):
        config = model.config
        missing = [i for i, t in enumerate(config.indexer_types) if t != "full"]
        if missing:
            raise ValueError(f"layers {missing} were built without an indexer; build the model all-Full "
                             "(GlmMoeDsaLayerwise.from_pretrained does) so that any map can be run")
        self.model = model.eval()
        self.num_layers = config.num_hidden_layers
        self.index_topk = config.index_topk

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str = "cpu", dtype: torch.dtype | None = None):
        """Load a checkpoint directory all-Full, whatever schedule its config names."""
        from transformers import AutoConfig, GlmMoeDsaForCausalLM

        config = AutoConfig.from_pretrained(path)
        for key in SCHEDULE_KEYS:
            if hasattr(config, key):
                setattr(config, key, None)
        config.indexer_types = ["full"] * config.num_hidden_layers
        model = GlmMoeDsaForCausalLM.from_pretrained(path, config=config, dtype=dtype or torch.float32)
        return cls(model.to(device))

    @property
    def device(self) -> torch.device:
        return self.model.lm_head.weight.device

    def embed(self, input_ids: torch.Tensor) -> LayerState:
        from transformers.masking_utils import create_causal_mask

        inner = self.model.model
        hidden = inner.embed_tokens(input_ids.to(self.device))
        position_ids = torch.arange(hidden.shape[1], device=hidden.device).unsqueeze(0)
        # Forced even where SDPA could skip it: the indexer masks future keys with it.
        mask = create_causal_mask(config=self.model.config, inputs_embeds=hidden, attention_mask=None,
                                  past_key_values=None, position_ids=position_ids, allow_is_causal_skip=False)
        extra = {"position_embeddings": inner.rotary_emb(hidden, position_ids=position_ids),
                 "position_ids": position_ids, "attention_mask": mask}
        return LayerState(hidden, None, extra)

    def layer(self, index: int, state: LayerState, full: bool) -> LayerState:
        decoder = self.model.model.layers[index]
        if not full and state.topk is None:
            raise ValueError(f"layer {index} is Shared but no earlier Full layer ran")
        with _indexer_off(decoder.self_attn, off=not full):
            hidden, topk = decoder(state.hidden, prev_topk_indices=None if full else state.topk, **state.extra)
        return LayerState(hidden, topk, state.extra)

    def token_losses(self, state: LayerState, input_ids: torch.Tensor) -> torch.Tensor:
        logits = self.model.lm_head(self.model.model.norm(state.hidden)).float()
        targets = input_ids.to(logits.device)[:, 1:]
        losses = F.cross_entropy(logits[:, :-1].flatten(0, 1), targets.flatten(), reduction="none")
        return losses.view(targets.shape)


@contextmanager
def _indexer_off(attention, off: bool) -> Iterator[None]:
    """transformers decides Full or Shared by whether the attention has an indexer: hide it for a Shared call."""
    if not off:
        yield
        return
    indexer = attention.indexer
    attention.indexer = None
    try:
        yield
    finally:
        attention.indexer = indexer
