"""What IndexCache is doing in a scheduler, where operators look: ``/server_info`` and Prometheus.

- ``Scheduler.get_internal_state`` adds an ``indexcache`` entry: the active map, this process's effective
  pattern and the per-layer indexer call/skip counters. SGLang already relays this state from its schedulers
  to the HTTP server (``/server_info``, and ``GET /indexcache``: ``main/admin_endpoint.py``).
- With ``--enable-metrics``, workers export ``sglang:indexcache_indexer_calls_total`` and
  ``sglang:indexcache_indexer_skips_total`` per layer and ``sglang:indexcache_full_layers``, published once a
  second by a daemon thread of the scheduler process. Not from the forward: it stays free of Prometheus, and
  forwards replayed from a CUDA graph (decode, and SGLang 0.5.17's prefill graphs) run no Python, so an idle
  server would otherwise keep its last counts unpublished.
"""

from __future__ import annotations

import logging
import os
import threading
import time

from sglang_indexcache.names import METRIC_CALLS, METRIC_FULL_LAYERS, METRIC_SKIPS

from ..registry import PatchRegistry
from ..state import COUNTERS, STATE
from ..targets import SCHEDULER_CLASS

logger = logging.getLogger("sglang_indexcache")


def status() -> dict | None:
    """This process's entry in SGLang's internal state; None when it serves no map."""
    process_map = STATE.active
    if process_map is None:
        return None
    return {
        "map": process_map.requested.label,
        "requested_pattern": process_map.requested.pattern,
        "pattern": process_map.effective.pattern,
        "full_layers": len(process_map.effective.full_layers),
        "num_layers": process_map.effective.num_layers,
        "forced": {str(layer): why for layer, why in process_map.forced.items()},
        "switchable_full_layers": list(STATE.startup.effective.full_layers),
        "switches": STATE.switches,
        "counters": COUNTERS.snapshot(),
        "rank": STATE.rank,
        "pid": os.getpid(),
    }


def apply_scheduler_status(registry: PatchRegistry) -> None:
    cls = SCHEDULER_CLASS.resolve()

    def make(original):
        def get_internal_state(self, recv_req):
            out = original(self, recv_req)
            state = status()
            if state is not None:
                out.internal_state["indexcache"] = state
            return out

        return get_internal_state

    registry.wrap(cls, "get_internal_state", make, patch="scheduler_status")


class Metrics:
    """Prometheus counters fed from ``COUNTERS`` deltas; ``start()`` publishes them every ``interval_s``."""

    def __init__(self, rank: int, interval_s: float = 1.0):
        # prometheus_client must be imported after SGLang has set PROMETHEUS_MULTIPROC_DIR.
        from prometheus_client import Counter, Gauge

        labels = ["rank", "layer"]
        self.calls = Counter(METRIC_CALLS, "Times a layer ran its DSA indexer.", labels)
        self.skips = Counter(METRIC_SKIPS, "Times a Shared layer reused a Full layer's top-k.",
                             labels)
        self.full = Gauge(METRIC_FULL_LAYERS, "Layers that run their indexer in this process.", ["rank"],
                          multiprocess_mode="mostrecent")
        self.rank, self.interval_s = str(rank), interval_s
        self._sent = {"calls": {}, "skips": {}}
        self._generation = COUNTERS.snapshot()["generation"]
        self._last = 0.0
        self._lock = threading.Lock()  # the publishing thread and direct callers (tests) share ``_sent``
        self._stop = threading.Event()

    def start(self) -> Metrics:
        threading.Thread(target=self._publish_forever, name="indexcache-metrics", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _publish_forever(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.maybe_flush()
            except Exception as e:  # noqa: BLE001 - metrics are optional; the server goes on without them
                logger.warning("IndexCache: metrics publishing stopped: %s: %s", type(e).__name__, e)
                return

    def maybe_flush(self, now: float | None = None) -> bool:
        with self._lock:
            return self._flush(time.monotonic() if now is None else now)

    def _flush(self, now: float) -> bool:
        if now - self._last < self.interval_s:
            return False
        self._last = now
        snap = COUNTERS.snapshot()
        if snap["generation"] != self._generation:  # the counters restarted (a map switch): so do our deltas
            self._generation, self._sent = snap["generation"], {"calls": {}, "skips": {}}
        for kind, metric in (("calls", self.calls), ("skips", self.skips)):
            for layer, count in snap[kind].items():
                delta = count - self._sent[kind].get(layer, 0)
                if delta > 0:
                    metric.labels(rank=self.rank, layer=str(layer)).inc(delta)
                    self._sent[kind][layer] = count
        state = status()
        if state is not None:
            self.full.labels(rank=self.rank).set(state["full_layers"])
        return True
