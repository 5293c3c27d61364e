"""Everything IndexCache keeps in an SGLang process, in one place; ``reset()`` (called by ``revert()``) clears it.

- ``COUNTERS``: per-layer indexer runs and skips (``GET /indexcache``, ``/server_info``, Prometheus);
- ``STATE.plans``: this process's map per model shape, so every layer of one model gets the same plan;
- ``STATE.active`` / ``STATE.startup``: the map served now and the one the model was built with;
- ``STATE.metrics``: the Prometheus exporter, when ``--enable-metrics``;
- ``STATE.armed``: whether the post-import hooks are registered;
- ``STATE.features``: per optional feature, why this SGLang cannot serve it (None: it can), once probed.

Nothing here is keyed by object identity: a plan is keyed by what it is computed from (the requested map and
the model's layer count, pipeline stage and two-batch-overlap start), so a garbage-collected config whose id
is reused cannot hand its plan to another model.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class IndexerCounters:
    """``calls[l]``: times layer ``l`` ran its indexer; ``skips[l]``: times it reused another layer's top-k.

    Counted when the Python forward runs, so CUDA-graph replays (which skip Python) are not included.
    """

    calls: Counter = field(default_factory=Counter)
    skips: Counter = field(default_factory=Counter)
    forwards: int = 0
    generation: int = 0  # bumped by reset(), so consumers of deltas (Prometheus) know to start over
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, layer: int, ran: bool) -> None:
        with self._lock:
            (self.calls if ran else self.skips)[layer] += 1

    def record_forward(self) -> None:
        with self._lock:
            self.forwards += 1

    def reset(self) -> None:
        with self._lock:
            self.calls.clear()
            self.skips.clear()
            self.forwards = 0
            self.generation += 1

    def snapshot(self) -> dict:
        with self._lock:
            return {"forwards": self.forwards, "calls": dict(self.calls), "skips": dict(self.skips),
                    "generation": self.generation}


@dataclass
class ProcessState:
    plans: dict[tuple, Any] = field(default_factory=dict)  # (pattern, source, layers, stage, tbo start) -> ProcessMap
    active: Any = None  # the ProcessMap served now (None: no map)
    startup: Any = None  # the ProcessMap the model was built with; its Full layers are the ones a switch may use
    rank: int = 0
    switches: int = 0
    metrics: Any = None  # scheduler_status.Metrics, with --enable-metrics
    armed: bool = False
    features: dict[str, str | None] = field(default_factory=dict)


COUNTERS = IndexerCounters()
STATE = ProcessState()


def reset() -> None:
    """Forget everything this process recorded (the patches themselves are undone by ``revert()``)."""
    if STATE.metrics is not None:
        STATE.metrics.stop()  # its publishing thread
    STATE.__init__()
    COUNTERS.reset()


def set_active(process_map, rank: int) -> None:
    """The map this process was built with (None: no map)."""
    STATE.active, STATE.startup, STATE.rank, STATE.switches = process_map, process_map, rank, 0


def set_switched(process_map) -> None:
    """The map this process runs after a runtime switch; the start-up map still says what is allocated."""
    STATE.active = process_map
    STATE.switches += 1


def startup_map():
    """The map this process was built with; its Full layers are the ones a switch may use."""
    return STATE.startup
