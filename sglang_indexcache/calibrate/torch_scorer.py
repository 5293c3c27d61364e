"""Scoring maps in process on a :class:`LayerwiseDSA`, reusing every hidden state that provably has not changed.

A forward under a map depends, up to layer ``l``, only on the map's layers before ``l``. So:

- A candidate flip of layer ``j`` restarts at ``j`` from the committed map's state entering ``j``
  (layers ``0 .. j-1`` are not run again).
- After a flip of layer ``c`` is committed, a candidate ``j < c`` scored in the previous step ran under a map
  that differs from its new one only at ``c``: its own states up to the one entering ``c`` still hold, so it
  restarts at ``c``, not at ``j``.
- The winner's states become the committed map's: committing costs no forward.
- A flip whose layer selects exactly the top-k it would inherit (the state entering it and the one leaving
  it carry equal indices in every batch) changes nothing downstream: its loss is the committed loss, at no
  cost.

Every reuse is exact (the same tensors a full forward computes), so the search makes the same choices as one
that runs every candidate from the embedding (``naive.naive_search``), at a fraction of the layer forwards.
``layer_forwards`` counts them, in passes of one layer over the whole calibration set.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ..inprocess.protocol import LayerState, LayerwiseDSA
from ..inprocess.runner import check_pattern
from ..schedule import FULL
from .search import flip

DEFAULT_CACHE_BYTES = 4 << 30


@dataclass
class _Run:
    """States of one candidate's latest forward: ``states[l]`` (per batch) enters layer ``l``, for ``l > layer``
    (``num_layers``: the final state); ``loss`` is None once a later commit made its end result stale."""

    states: dict[int, list[LayerState]] = field(default_factory=dict)
    loss: float | None = None


class TorchScorer:
    def __init__(self, model: LayerwiseDSA, batches: Sequence[torch.Tensor], cache_bytes: int = DEFAULT_CACHE_BYTES):
        if not batches:
            raise ValueError("no calibration batches")
        self.model, self.batches = model, list(batches)
        self.num_layers = model.num_layers
        self.cache_bytes = cache_bytes
        self.layer_forwards = 0.0  # one unit: one layer over every batch
        self.skipped = 0  # candidates decided by equal top-k, without a forward
        self._embedded: list[LayerState] = []
        self._prefix: list[list[LayerState]] = []  # [layer][batch]: entering layer, under the committed map
        self._runs: dict[int, _Run] = {}
        self._bytes = 0

    # -- Scorer ---------------------------------------------------------------------------------------------

    @torch.no_grad()
    def start(self, pattern: str) -> float:
        check_pattern(self.model, pattern)
        self.pattern = pattern
        self._runs, self._bytes = {}, 0
        if not self._embedded:
            self._embedded = [self.model.embed(ids) for ids in self.batches]
        states, self.loss = self._forward(pattern, 0, self._embedded)
        self._prefix = [states[l] for l in range(self.num_layers + 1)]
        return self.loss

    @torch.no_grad()
    def candidate_loss(self, layer: int) -> float:
        if self.pattern[layer] != FULL or layer == 0:
            raise ValueError(f"layer {layer} cannot be flipped in {self.pattern}")
        if self._inherits_own_topk(layer):
            self.skipped += 1
            return self.loss
        run = self._runs.get(layer)
        start = max(run.states) if run is not None and run.states else layer
        entering = run.states[start] if start > layer else self._prefix[layer]
        states, loss = self._forward(flip(self.pattern, layer), start, entering)
        run = self._runs.setdefault(layer, _Run())
        self._keep(run, {l: s for l, s in states.items() if l > layer})
        run.loss = loss
        return loss

    @torch.no_grad()
    def commit(self, layer: int) -> float:
        new = flip(self.pattern, layer)
        run = self._runs.pop(layer, None)
        later = range(layer + 1, self.num_layers + 1)
        if self._inherits_own_topk(layer):
            loss = self.loss  # nothing downstream changes
        elif run is not None and run.loss is not None and all(l in run.states for l in later):
            loss = run.loss
            for l in later:
                self._prefix[l] = run.states[l]
        else:
            # Scored under an older map (several flips per step), or its states did not fit the budget.
            start = max(run.states) if run is not None and run.states else layer
            for l in range(layer + 1, start + 1):
                self._prefix[l] = run.states[l]
            entering = self._prefix[start] if start > layer else self._prefix[layer]
            states, loss = self._forward(new, start, entering)
            for l in range(start + 1, self.num_layers + 1):
                self._prefix[l] = states[l]
        if run is not None:
            self._bytes -= _size(run.states)
        for other in self._runs.values():
            stale = [l for l in other.states if l > layer]
            self._bytes -= _size({l: other.states.pop(l) for l in stale})
            other.loss = None
        self.pattern, self.loss = new, loss
        return loss

    # -- internals ------------------------------------------------------------------------------------------

    def _inherits_own_topk(self, layer: int) -> bool:
        """Layer ``layer`` (Full) leaves with exactly the indices it entered with, in every batch."""
        entering, leaving = self._prefix[layer], self._prefix[layer + 1]
        return all(a.topk is not None and b.topk is not None and torch.equal(a.topk, b.topk)
                   for a, b in zip(entering, leaving))

    def _forward(self, pattern: str, start: int, entering: list[LayerState]) -> tuple[dict, float]:
        """Run layers ``start ..`` under ``pattern``; returns the states entering ``start .. num_layers`` (the
        last being the final state) and the mean loss, summed exactly as ``runner.mean_loss`` sums it."""
        states: dict[int, list[LayerState]] = {start: list(entering)}
        current = list(entering)
        for index in range(start, self.num_layers):
            current = [self.model.layer(index, s, pattern[index] == FULL) for s in current]
            states[index + 1] = current
        self.layer_forwards += self.num_layers - start
        total, count = 0.0, 0
        for state, ids in zip(current, self.batches):
            losses = self.model.token_losses(state, ids)
            total += losses.double().sum().item()
            count += losses.numel()
        return states, total / count

    def _keep(self, run: _Run, states: dict[int, list[LayerState]]) -> None:
        """Keep a candidate's states for its next restart, within the cache budget (beyond it, that
        candidate restarts further back: the same result, more forwards)."""
        added = _size(states) - _size({l: run.states[l] for l in states if l in run.states})
        if self._bytes + added > self.cache_bytes:
            return
        run.states.update(states)
        self._bytes += added


def _size(states: dict[int, list[LayerState]]) -> int:
    return sum(s.hidden.numel() * s.hidden.element_size() for batch in states.values() for s in batch)
