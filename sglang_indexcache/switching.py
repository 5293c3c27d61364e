"""Which maps a running server can switch to, and when a server cannot switch at all.

A server keeps index-key cache and indexer weights only for the layers that are Full in the map it started
with; Shared layers' were never allocated or loaded. So a running server can switch to any map whose Full
layers it started with, and to no other. Start with the widest map you will want (all-F keeps every
layer switchable, at the cost of the memory IndexCache would save).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .errors import MapError
from .keys import MAP_KEY, SCHEDULE_KEYS
from .layer_map import LayerMap
from .request import resolve_request

ENDPOINT = "POST /indexcache/map"
SWITCH_KEYS = ("map", *SCHEDULE_KEYS)  # a request body: a map name/path, or the HF schedule keys


def switch_request(body: Any, config: Mapping[str, Any], config_source: str) -> LayerMap:
    """The map a switch request asks for, checked against the model like a launch request."""
    if not isinstance(body, Mapping):
        raise MapError(ENDPOINT, "(body)", "not a JSON object",
                       'send {"map": "name-or-path.yaml"} or HF schedule keys such as {"index_topk_freq": 4}')
    unknown = sorted(set(body) - set(SWITCH_KEYS))
    if unknown:
        raise MapError(ENDPOINT, unknown[0], "unknown key", f"use one of {', '.join(SWITCH_KEYS)}")
    overrides = {MAP_KEY if k == "map" else k: v for k, v in body.items()}
    layer_map = resolve_request(None, overrides, config, config_source, request_source=ENDPOINT)
    if layer_map is None:
        raise MapError(ENDPOINT, "(body)", "no map given", f"give one of {', '.join(SWITCH_KEYS)}")
    return layer_map


def check_switchable(new: LayerMap, startup: LayerMap) -> None:
    """``new`` may only use Full layers that ``startup`` had: the others have no index-key cache or weights."""
    if new.num_layers != startup.num_layers:
        raise MapError(new.source, "num_layers", f"{new.num_layers} layers, the served model has "
                       f"{startup.num_layers}", "give a map for this model")
    missing = sorted(set(new.full_layers) - set(startup.full_layers))
    if missing:
        raise MapError(new.source, "pattern", f"layers {missing} are Full in this map but were Shared when the "
                       f"server started ({startup.pattern}), so they have no indexer weights or index-key cache",
                       "switch to a map whose Full layers the server started with, or restart the server with "
                       "this map (or with a wider one, e.g. all-F, to keep every layer switchable)")


def switch_refusal(server_args: Any) -> str | None:
    """Why a server started with these settings cannot switch maps at runtime; None when it can."""
    if not getattr(server_args, "disable_cuda_graph", False):
        return ("runtime map switching needs --disable-cuda-graph: captured CUDA graphs replay the layer roles "
                "they were captured with. Restart with the new map, or start the server with --disable-cuda-graph")
    if getattr(server_args, "pp_size", 1) > 1:
        return "runtime map switching is not supported with --pp-size > 1; restart with the new map"
    if getattr(server_args, "enable_two_batch_overlap", False):
        return "runtime map switching is not supported with --enable-two-batch-overlap; restart with the new map"
    if getattr(server_args, "tokenizer_worker_num", 1) > 1:
        return "runtime map switching is not supported with --tokenizer-worker-num > 1; restart with the new map"
    return None
