"""Forwards of a :class:`LayerwiseDSA` under a schedule: loss, top-k capture, and restarts from cached states."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from ..schedule import FULL
from .protocol import LayerState, LayerwiseDSA


def check_pattern(model: LayerwiseDSA, pattern: str) -> None:
    if len(pattern) != model.num_layers:
        raise ValueError(f"pattern has {len(pattern)} layers but the model has {model.num_layers}")
    if pattern[:1] != FULL:
        raise ValueError("layer 0 must be Full: a Shared layer needs an earlier Full layer's top-k")


@torch.no_grad()
def run_layers(
    model: LayerwiseDSA,
    pattern: str,
    state: LayerState,
    start: int = 0,
    stop: int | None = None,
    keep: list[LayerState] | None = None,
) -> LayerState:
    """Run layers ``start .. stop-1`` under ``pattern`` from ``state`` (the state entering ``start``).

    With ``keep``, the state entering each layer is appended to it, so a later forward under a map that agrees
    with ``pattern`` on the layers before ``j`` can restart at ``j`` from ``keep[j - start]``.
    """
    stop = model.num_layers if stop is None else stop
    for index in range(start, stop):
        if keep is not None:
            keep.append(state)
        state = model.layer(index, state, pattern[index] == FULL)
    return state


@torch.no_grad()
def token_losses(model: LayerwiseDSA, pattern: str, input_ids: torch.Tensor) -> torch.Tensor:
    """Per-position next-token loss ``[batch, seq - 1]`` of ``input_ids`` under ``pattern``."""
    check_pattern(model, pattern)
    return model.token_losses(run_layers(model, pattern, model.embed(input_ids)), input_ids)


@torch.no_grad()
def mean_loss(model: LayerwiseDSA, pattern: str, batches: Iterable[torch.Tensor]) -> float:
    """Mean next-token loss over every predicted position of every batch (positions weigh equally)."""
    total, count = 0.0, 0
    for input_ids in batches:
        losses = token_losses(model, pattern, input_ids)
        total += losses.double().sum().item()
        count += losses.numel()
    if count == 0:
        raise ValueError("no positions to score: every batch needs at least two tokens")
    return total / count


@torch.no_grad()
def capture_topk(model: LayerwiseDSA, input_ids: torch.Tensor, layers: Sequence[int] | None = None) -> torch.Tensor:
    """Every layer's own top-k under all-Full, ``[layers, batch, seq, k]`` (``-1`` pads short rows)."""
    wanted = range(model.num_layers) if layers is None else layers
    state, out = model.embed(input_ids), {}
    for index in range(max(wanted) + 1):
        state = model.layer(index, state, True)
        if index in wanted:
            out[index] = state.topk
    return torch.stack([out[i] for i in wanted])
