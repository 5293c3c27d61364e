"""Per-layer counts of indexer runs and skips in this process."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field

# Profiler range around each indexer run, so traces attribute every kernel it launches to the indexer.
PROFILER_RANGE = "indexcache::indexer"


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


COUNTERS = IndexerCounters()
