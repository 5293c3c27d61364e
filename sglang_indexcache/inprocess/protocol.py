"""The interface a PyTorch DSA model implements to be run layer by layer under a ``LayerMap``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch


@dataclass
class LayerState:
    """What flows between decoder layers for one batch.

    ``hidden``: the residual stream entering the next layer, ``[batch, seq, hidden]``.
    ``topk``: the top-k indices the most recent Full layer selected, ``[batch, seq, k]`` (``-1`` pads query rows
    with fewer than ``k`` visible keys); ``None`` before any layer ran. A Shared layer attends through it.
    ``extra``: whatever else the model carries between layers (position embeddings, masks), never changed by a
    layer, so states cached under one map can seed a forward under another.
    """

    hidden: torch.Tensor
    topk: torch.Tensor | None = None
    extra: Any = None


@runtime_checkable
class LayerwiseDSA(Protocol):
    """A DSA causal LM that runs one decoder layer at a time.

    Implementations: the retrofit testbed (``sglang_indexcache.testbed``) and transformers'
    ``GlmMoeDsaForCausalLM``. All methods run under ``torch.no_grad()`` by the caller's choice; none keeps state
    between calls, so one model can be evaluated under many maps.
    """

    num_layers: int
    index_topk: int

    def embed(self, input_ids: torch.Tensor) -> LayerState:
        """The state entering layer 0 for ``input_ids`` ``[batch, seq]``."""
        ...

    def layer(self, index: int, state: LayerState, full: bool) -> LayerState:
        """Run decoder layer ``index``. ``full``: run its indexer and attend through (and return) its own
        top-k; otherwise attend through ``state.topk`` unchanged."""
        ...

    def token_losses(self, state: LayerState, input_ids: torch.Tensor) -> torch.Tensor:
        """Next-token cross-entropy per predicted position, ``[batch, seq - 1]``, from the final state."""
        ...
