"""What IndexCache is doing, where operators look: ``/server_info``, ``GET /indexcache`` and Prometheus.

- ``Scheduler.get_internal_state`` (workers) adds an ``indexcache`` entry: the active map, this process's
  effective pattern and the per-layer indexer call/skip counters. SGLang already relays this state from its
  schedulers to the HTTP server (``/server_info``).
- ``GET /indexcache`` (HTTP server) returns those entries, one per data-parallel rank. It is an admin
  endpoint: refused unless the server was started with ``--admin-api-key`` and the request carries it
  (checked by the endpoint itself, ``admin_auth``).
- With ``--enable-metrics``, workers export ``sglang:indexcache_indexer_calls_total`` and
  ``sglang:indexcache_indexer_skips_total`` per layer and ``sglang:indexcache_full_layers``, updated at most
  once a second from the counters (never per layer call, to keep the forward path free of it).
"""

from __future__ import annotations

import os
import time

from sglang_indexcache.counters import COUNTERS

from .registry import PatchRegistry
from .targets import HTTP_APP, HTTP_SERVER, SCHEDULER_CLASS, SCHEDULER_STATE

_ACTIVE: dict = {"map": None, "startup": None, "rank": 0, "switches": 0}


def set_active(process_map, rank: int) -> None:
    """The map this process was built with (None: no map)."""
    _ACTIVE.update(map=process_map, startup=process_map, rank=rank, switches=0)


def set_switched(process_map) -> None:
    """The map this process runs after a runtime switch; the start-up map still says what is allocated."""
    _ACTIVE.update(map=process_map, switches=_ACTIVE["switches"] + 1)


def startup_map():
    """The map this process was built with; its Full layers are the ones a switch may use."""
    return _ACTIVE["startup"]


def status() -> dict | None:
    process_map = _ACTIVE["map"]
    if process_map is None:
        return None
    return {
        "map": process_map.requested.label,
        "requested_pattern": process_map.requested.pattern,
        "pattern": process_map.effective.pattern,
        "full_layers": len(process_map.effective.full_layers),
        "num_layers": process_map.effective.num_layers,
        "forced": {str(layer): why for layer, why in process_map.forced.items()},
        "switchable_full_layers": list(_ACTIVE["startup"].effective.full_layers),
        "switches": _ACTIVE["switches"],
        "counters": COUNTERS.snapshot(),
        "rank": _ACTIVE["rank"],
        "pid": os.getpid(),
    }


def apply_scheduler_status(registry: PatchRegistry) -> None:
    cls = SCHEDULER_CLASS.resolve()
    SCHEDULER_STATE.resolve()
    if registry.is_applied(cls, "get_internal_state"):
        return

    def make(original):
        def get_internal_state(self, recv_req):
            out = original(self, recv_req)
            state = status()
            if state is not None:
                out.internal_state["indexcache"] = state
            return out

        return get_internal_state

    registry.wrap(cls, "get_internal_state", make, patch="scheduler_status")


def apply_admin_endpoint(registry: PatchRegistry) -> None:
    import importlib

    from .admin_auth import admin_route

    app = HTTP_APP.resolve()
    http_server = importlib.import_module(HTTP_SERVER)

    async def indexcache_status(_request):
        states = await http_server._global_state.tokenizer_manager.get_internal_state()
        return {"dp_ranks": [state.get("indexcache") for state in states]}

    if any(getattr(r, "path", None) == "/indexcache" for r in app.router.routes):
        return
    registry.append(app.router.routes, admin_route("/indexcache", "GET", indexcache_status),
                    patch="admin_endpoint", what="GET /indexcache")


class Metrics:
    """Prometheus counters fed from ``COUNTERS`` deltas."""

    def __init__(self, rank: int, interval_s: float = 1.0):
        # prometheus_client must be imported after SGLang has set PROMETHEUS_MULTIPROC_DIR.
        from prometheus_client import Counter, Gauge

        labels = ["rank", "layer"]
        self.calls = Counter("sglang:indexcache_indexer_calls", "Times a layer ran its DSA indexer.", labels)
        self.skips = Counter("sglang:indexcache_indexer_skips", "Times a Shared layer reused a Full layer's top-k.",
                             labels)
        self.full = Gauge("sglang:indexcache_full_layers", "Layers that run their indexer in this process.", ["rank"],
                          multiprocess_mode="mostrecent")
        self.rank, self.interval_s = str(rank), interval_s
        self._sent = {"calls": {}, "skips": {}}
        self._generation = COUNTERS.snapshot()["generation"]
        self._last = 0.0

    def maybe_flush(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
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
