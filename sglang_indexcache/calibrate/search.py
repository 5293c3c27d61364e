"""The training-free greedy layer search (IndexCache, Bai et al. 2026, §3.1), over any :class:`Scorer`.

Start all-Full. Each step flips to Shared, tentatively, every layer still Full that may be flipped, scores each
resulting map by the mean next-token loss on the same calibration batches, and commits the flip that raises
the loss least (ties: the lower layer). One run gives the whole removal order and the loss after every step,
so the maps of every ratio are nested prefixes of it.

With ``blocks`` (one per pipeline stage) the first layer of each block stays Full and every step commits one
flip per block, each the best of its own block under the same map: as many flips per step as there are
blocks, so about that many times fewer steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ..schedule import FULL, SHARED


class Scorer(Protocol):
    """Scores maps by mean next-token loss on fixed calibration batches, for a search that moves one flip at a
    time. The scorer holds the committed map; caches keyed on it are its own business."""

    num_layers: int

    def start(self, pattern: str) -> float:
        """Make ``pattern`` the committed map (a fresh search or a resumed one); returns its loss."""
        ...

    def candidate_loss(self, layer: int) -> float:
        """Loss of the committed map with ``layer`` flipped to Shared; the committed map does not change."""
        ...

    def commit(self, layer: int) -> float:
        """Flip ``layer`` to Shared in the committed map; returns the new map's loss."""
        ...


def flip(pattern: str, layer: int) -> str:
    if pattern[layer] != FULL:
        raise ValueError(f"layer {layer} is already Shared in {pattern}")
    return pattern[:layer] + SHARED + pattern[layer + 1:]


def full_count(ratio: float, num_layers: int) -> int:
    """Full layers a map of ``ratio`` keeps: the ratio times the layer count, rounded up, layer 0 included."""
    if not 0 < ratio <= 1:
        raise ValueError(f"ratio {ratio} is not in (0, 1]")
    return max(1, math.ceil(ratio * num_layers - 1e-9))


def stage_blocks(num_layers: int, stages: int) -> list[tuple[int, int]]:
    """Contiguous blocks of layers, one per pipeline stage, the earlier ones one layer longer when uneven."""
    if not 1 <= stages <= num_layers:
        raise ValueError(f"{stages} stages for {num_layers} layers")
    base, extra = divmod(num_layers, stages)
    blocks, start = [], 0
    for stage in range(stages):
        stop = start + base + (stage < extra)
        blocks.append((start, stop))
        start = stop
    return blocks


@dataclass
class SearchState:
    """Everything a search has decided: enough to write its maps, and to resume it exactly."""

    num_layers: int
    fixed: list[int]
    base_loss: float
    order: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)  # the step each flip was committed in (blocks: several)
    evaluations: int = 0  # candidate maps scored (the base map not counted)

    @property
    def pattern(self) -> str:
        return pattern_after(self.num_layers, self.order)

    def removable(self) -> list[int]:
        pattern = self.pattern
        return [l for l in range(self.num_layers) if pattern[l] == FULL and l not in self.fixed]

    def to_json(self) -> dict:
        return {"num_layers": self.num_layers, "fixed": self.fixed, "base_loss": self.base_loss,
                "order": self.order, "loss": self.loss, "steps": self.steps, "evaluations": self.evaluations}

    @classmethod
    def from_json(cls, data: dict) -> SearchState:
        return cls(**{k: data[k] for k in ("num_layers", "fixed", "base_loss", "order", "loss", "steps",
                                           "evaluations")})


def pattern_after(num_layers: int, order: Sequence[int]) -> str:
    chars = [FULL] * num_layers
    for layer in order:
        chars[layer] = SHARED
    return "".join(chars)


def best(losses: dict[int, float]) -> int:
    """The candidate with the lowest loss; ties go to the lower layer, so reruns and resumes agree."""
    return min(losses, key=lambda layer: (losses[layer], layer))


def greedy_search(
    scorer: Scorer,
    min_full: int,
    *,
    fixed: Sequence[int] = (0,),
    blocks: Sequence[tuple[int, int]] | None = None,
    state: SearchState | None = None,
    on_step: Callable[[SearchState], None] | None = None,
    on_candidate: Callable[[int, float], None] | None = None,
) -> SearchState:
    """Flip layers to Shared until ``min_full`` remain Full (or nothing can be flipped); returns the state.

    ``state``: a checkpointed search to continue (its map is re-established in the scorer first).
    ``on_step`` runs after every committed step (checkpointing), ``on_candidate`` after every candidate scored.
    """
    n = scorer.num_layers
    fixed = sorted({0, *fixed, *(start for start, _ in blocks or ())})
    if state is None:
        state = SearchState(n, fixed, scorer.start(FULL * n))
        if on_step is not None:
            on_step(state)
    else:
        if state.num_layers != n or state.fixed != fixed:
            raise ValueError("the checkpoint was made for another layer count or other fixed layers")
        scorer.start(state.pattern)
    while state.removable() and n - len(state.order) > min_full:
        losses = {}
        for layer in state.removable():
            losses[layer] = scorer.candidate_loss(layer)
            state.evaluations += 1
            if on_candidate is not None:
                on_candidate(layer, losses[layer])
        step = (state.steps[-1] + 1) if state.steps else 1
        budget = n - len(state.order) - min_full
        for layer in _winners(losses, blocks)[:budget]:
            state.order.append(layer)
            state.loss.append(scorer.commit(layer))
            state.steps.append(step)
        if on_step is not None:
            on_step(state)
    return state


def _winners(losses: dict[int, float], blocks: Sequence[tuple[int, int]] | None) -> list[int]:
    """The flips one step commits: the best candidate, or with blocks each block's best, best first."""
    if not blocks:
        return [best(losses)]
    winners = []
    for start, stop in blocks:
        inside = {l: v for l, v in losses.items() if start <= l < stop}
        if inside:
            winners.append(best(inside))
    return sorted(winners, key=lambda layer: (losses[layer], layer))


def candidates_per_step(num_removable: int, num_steps: int) -> list[int]:
    """How many candidates each step of a plain (one flip per step) search scores."""
    return [num_removable - step for step in range(num_steps)]


def knee(num_layers: int, base_loss: float, losses: Sequence[float]) -> int | None:
    """Full-layer count at the knee of loss vs layers removed: the point farthest below the chord from the
    first to the last point (the loss stays flat while easy layers go, then climbs). None without a bend."""
    ys = [base_loss, *losses]
    if len(ys) < 3 or ys[-1] <= ys[0]:
        return None
    span = ys[-1] - ys[0]
    last = len(ys) - 1
    gaps = [(k / last) - (y - ys[0]) / span for k, y in enumerate(ys)]
    k = max(range(len(ys)), key=lambda i: (gaps[i], -i))
    return None if gaps[k] <= 0 else num_layers - k
