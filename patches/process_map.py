"""The layer map this SGLang process runs: the requested map, plus the layers this process must compute.

The server's main process resolves and validates the request and hands the concrete pattern to every
worker through the environment (workers are spawned, so that is what they inherit).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from sglang_indexcache.layer_map import LayerMap
from sglang_indexcache.names import ENV_PATTERN, ENV_SOURCE

from .state import STATE
from .targets import GLOBAL_SERVER_ARGS, PP_GROUP, PP_INDICES


@dataclass(frozen=True)
class ProcessMap:
    requested: LayerMap
    effective: LayerMap
    forced: dict[int, str]  # layer -> why this process computes it although the map says S

    def startup_line(self, where: str) -> str:
        forced = "".join(f"; layer {l} computes ({why})" for l, why in sorted(self.forced.items()))
        return (f"IndexCache active [{where}]: map {self.requested.label}, "
                f"pattern {self.effective.pattern}, {len(self.effective.full_layers)}/{self.effective.num_layers} "
                f"Full{forced}")


def requested_map() -> LayerMap | None:
    pattern = os.environ.get(ENV_PATTERN)
    if not pattern:
        return None
    return LayerMap(pattern, source=os.environ.get(ENV_SOURCE, ENV_PATTERN))


def export(layer_map: LayerMap) -> None:
    os.environ[ENV_PATTERN] = layer_map.pattern
    os.environ[ENV_SOURCE] = layer_map.label


def plan(layer_map: LayerMap, num_layers: int, stage: tuple[int, int], tbo_start: int | None) -> ProcessMap:
    """Force Full the layers that would otherwise read indices this process never computed.

    ``stage`` is this pipeline stage's ``[start, end)``; ``tbo_start`` is the first layer that two-batch
    overlap runs on micro-batches (their own forward batches, so nothing computed before the split reaches
    them), or None when two-batch overlap is off.
    """
    if layer_map.num_layers != num_layers:
        raise RuntimeError(f"IndexCache map {layer_map.source} has {layer_map.num_layers} layers but the model "
                           f"being built has {num_layers}")
    start, end = stage
    forced = {}
    if not layer_map.is_full(start):
        forced[start] = "first layer of this pipeline stage"
    if tbo_start is not None and start < tbo_start < end and not layer_map.is_full(tbo_start):
        forced[tbo_start] = "first two-batch-overlap layer"
    return ProcessMap(layer_map, layer_map.with_full(forced), forced)


def plan_for(config) -> ProcessMap | None:
    """This process's map for a model config, computed once per model shape; None when no map is requested."""
    layer_map = requested_map()
    if layer_map is None:
        return None
    num_layers = config.num_hidden_layers
    key = (layer_map.pattern, layer_map.source, num_layers, _stage(num_layers), _tbo_start(config))
    if key not in STATE.plans:
        STATE.plans[key] = plan(layer_map, *key[2:])
    return STATE.plans[key]


def _stage(num_layers: int) -> tuple[int, int]:
    try:
        group = PP_GROUP.resolve()()
    except AssertionError:  # no pipeline group initialised: a single stage
        return 0, num_layers
    return tuple(PP_INDICES.resolve()(num_layers, group.rank_in_group, group.world_size))


def _tbo_start(config) -> int | None:
    if not getattr(GLOBAL_SERVER_ARGS.resolve()(), "enable_two_batch_overlap", False):
        return None
    return getattr(config, "first_k_dense_replace", 0)
